//! Property tests of the `.pth` reader: generated checkpoints read back exactly, and
//! damaged ones (bytes flipped, overwritten with edge values, inserted, removed, cut off),
//! real or generated, are an error naming the source or a consistent result: never a panic,
//! and never an allocation the input does not back.
//!
//! Damage to the archive's bytes is mostly caught by the CRC-32 checks, so one property
//! damages an entry's content and re-zips it with valid checksums, which is what reaches
//! the pickle machine and the storage decoding.

mod common;

use std::io::{Cursor, Read, Write};
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use repopt_models::pth::read_pth_bytes;
use repopt_tensor::testing::alloc::{TrackingAllocator, largest_allocation};
use repopt_tensor::testing::damage::{Damage, EDGE_WORDS, apply};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator;

// ---------------------------------------------------------------------------------------
// Generated checkpoints
// ---------------------------------------------------------------------------------------

/// Element types as (torch storage class, bytes per element).
const DTYPES: [(&str, usize); 4] = [
    ("FloatStorage", 4),
    ("HalfStorage", 2),
    ("BFloat16Storage", 2),
    ("DoubleStorage", 8),
];

#[derive(Clone, Debug)]
struct TensorSpec {
    dtype: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
    offset: usize,
    /// The storage's bytes: at least what the view reaches, sometimes more.
    raw: Vec<u8>,
}

impl TensorSpec {
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The view's values in C order, decoded independently of the reader.
    fn expected(&self) -> Vec<f32> {
        let size = DTYPES[self.dtype].1;
        let mut out = Vec::with_capacity(self.numel());
        for flat in 0..self.numel() {
            let mut rest = flat;
            let mut pos = self.offset;
            for (&n, &s) in self.shape.iter().zip(&self.stride).rev() {
                pos += (rest % n) * s;
                rest /= n;
            }
            let b = self.raw[pos * size..(pos + 1) * size].to_vec();
            out.push(match self.dtype {
                0 => f32::from_le_bytes(b.try_into().unwrap()),
                1 => half::f16::from_le_bytes(b.try_into().unwrap()).to_f32(),
                2 => half::bf16::from_le_bytes(b.try_into().unwrap()).to_f32(),
                _ => f64::from_le_bytes(b.try_into().unwrap()) as f32,
            });
        }
        out
    }
}

#[derive(Clone, Debug)]
struct CheckpointSpec {
    tensors: Vec<TensorSpec>,
    /// None: no byte-order record (as before PyTorch 2.1); Some(big endian).
    byte_order: Option<bool>,
    deflate: bool,
}

fn tensor_spec() -> impl Strategy<Value = TensorSpec> {
    (0usize..4, 0usize..=3)
        .prop_flat_map(|(dtype, dims)| {
            (
                Just(dtype),
                prop::collection::vec(0usize..=4, dims),
                prop::collection::vec(0usize..=4, dims),
                0usize..3,
                0usize..3,
            )
        })
        .prop_flat_map(|(dtype, shape, stride, offset, extra)| {
            let reach = if shape.contains(&0) {
                0
            } else {
                1 + shape
                    .iter()
                    .zip(&stride)
                    .map(|(n, s)| (n - 1) * s)
                    .sum::<usize>()
            };
            let bytes = (offset + reach + extra) * DTYPES[dtype].1;
            prop::collection::vec(any::<u8>(), bytes).prop_map(move |raw| TensorSpec {
                dtype,
                shape: shape.clone(),
                stride: stride.clone(),
                offset,
                raw,
            })
        })
}

fn checkpoint_spec() -> impl Strategy<Value = CheckpointSpec> {
    (
        prop::collection::vec(tensor_spec(), 1..4),
        prop::option::of(any::<bool>()),
        any::<bool>(),
    )
        .prop_map(|(tensors, byte_order, deflate)| CheckpointSpec {
            tensors,
            byte_order,
            deflate,
        })
}

/// A protocol-2 pickle shaped like torch.save's, one `_rebuild_tensor_v2` per tensor.
fn pickle(tensors: &[TensorSpec]) -> Vec<u8> {
    fn int(p: &mut Vec<u8>, v: usize) {
        p.push(b'J');
        p.extend_from_slice(&(v as i32).to_le_bytes());
    }
    fn string(p: &mut Vec<u8>, s: &str) {
        p.push(b'X');
        p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    }
    fn ints(p: &mut Vec<u8>, v: &[usize]) {
        p.push(b'(');
        v.iter().for_each(|&x| int(p, x));
        p.push(b't');
    }
    let mut p = b"\x80\x02ccollections\nOrderedDict\n)R(".to_vec();
    for (i, t) in tensors.iter().enumerate() {
        string(&mut p, &format!("t{i}"));
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        string(&mut p, "storage");
        p.extend_from_slice(format!("ctorch\n{}\n", DTYPES[t.dtype].0).as_bytes());
        string(&mut p, &i.to_string());
        string(&mut p, "cpu");
        int(&mut p, t.raw.len() / DTYPES[t.dtype].1);
        p.extend_from_slice(b"tQ");
        int(&mut p, t.offset);
        ints(&mut p, &t.shape);
        ints(&mut p, &t.stride);
        p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtR");
    }
    p.extend_from_slice(b"u.");
    p
}

fn build(spec: &CheckpointSpec) -> Vec<u8> {
    let mut entries = vec![("ckpt/data.pkl".to_string(), pickle(&spec.tensors))];
    if let Some(big) = spec.byte_order {
        let order: &[u8] = if big { b"big" } else { b"little" };
        entries.push(("ckpt/byteorder".into(), order.to_vec()));
    }
    for (i, t) in spec.tensors.iter().enumerate() {
        let mut raw = t.raw.clone();
        if spec.byte_order == Some(true) {
            // The spec's bytes are little-endian elements; a big-endian writer reverses each.
            raw.chunks_mut(DTYPES[t.dtype].1).for_each(<[u8]>::reverse);
        }
        entries.push((format!("ckpt/data/{i}"), raw));
    }
    let method = if spec.deflate {
        CompressionMethod::Deflated
    } else {
        CompressionMethod::Stored
    };
    zip_of(&entries, method)
}

fn zip_of(entries: &[(String, Vec<u8>)], method: CompressionMethod) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(method);
    for (name, data) in entries {
        writer.start_file(name.as_str(), opts).unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn entries_of(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut zip = ZipArchive::new(Cursor::new(archive)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut entry = zip.by_index(i).unwrap();
            let name = entry.name().unwrap().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Damage
// ---------------------------------------------------------------------------------------

fn damage() -> impl Strategy<Value = Vec<Damage>> {
    let one = prop_oneof![
        4 => (any::<u64>(), 1u8..).prop_map(|(at, mask)| Damage::Flip { at, mask }),
        2 => (any::<u64>(), prop::sample::select(EDGE_WORDS.to_vec()))
            .prop_map(|(at, word)| Damage::Word { at, word }),
        1 => (any::<u64>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Damage::Insert { at, bytes }),
        1 => (any::<u64>(), 1usize..32).prop_map(|(at, len)| Damage::Remove { at, len }),
        1 => any::<u64>().prop_map(|at| Damage::Truncate { at }),
    ];
    prop::collection::vec(one, 1..4)
}

/// The reader on `bytes`: an error naming the source, or tensors whose data fits their
/// shape; and no single allocation beyond a small multiple of the input, except, for a
/// successful read, the largest tensor returned (expanded views can make a tensor larger
/// than the file; the reader caps those per file).
fn read_is_sound(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (result, largest) = largest_allocation(|| read_pth_bytes(bytes, "damaged.pth"));
    let output = result.as_ref().map_or(0, |tensors| {
        let largest_tensor = tensors.iter().map(|t| t.data.len()).max();
        largest_tensor.unwrap_or(0) * std::mem::size_of::<f32>()
    });
    let bound = (64 * bytes.len() + (4 << 20)).max(output);
    prop_assert!(
        largest <= bound,
        "{largest} bytes requested at once while reading {} bytes",
        bytes.len()
    );
    match result {
        Ok(tensors) => {
            for t in tensors {
                prop_assert_eq!(
                    t.data.len(),
                    t.shape.iter().product::<usize>(),
                    "{}",
                    t.name
                );
            }
        }
        Err(e) => prop_assert!(e.to_string().starts_with("damaged.pth: "), "{e}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Seeds: generated checkpoints, and the official files when present
// ---------------------------------------------------------------------------------------

fn official() -> &'static [Vec<u8>] {
    static FILES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    FILES.get_or_init(|| {
        let Some(dir) = common::shared_data("the .pth property tests on the official files") else {
            return Vec::new();
        };
        ["RepOptGhostNet_0_5x_scales.pth", "RepOpt-VGG-B1-scales.pth"]
            .iter()
            .map(|f| std::fs::read(dir.join("official-scales").join(f)).unwrap())
            .collect()
    })
}

/// An archive to damage: a generated checkpoint or, when present, an official file.
fn seed() -> BoxedStrategy<Vec<u8>> {
    let generated = checkpoint_spec().prop_map(|spec| build(&spec));
    if official().is_empty() {
        return generated.boxed();
    }
    let official = any::<Index>().prop_map(|i| i.get(official()).clone());
    prop_oneof![generated, official].boxed()
}

/// `cases` per property, unless `PROPTEST_CASES` asks for another count (a longer run
/// before a release, say); failing inputs are kept beside this file and replayed first.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn generated_checkpoints_read_back_exactly(spec in checkpoint_spec()) {
        let tensors = read_pth_bytes(&build(&spec), "generated.pth")
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(tensors.len(), spec.tensors.len());
        for (i, (got, want)) in tensors.iter().zip(&spec.tensors).enumerate() {
            prop_assert_eq!(&got.name, &format!("t{i}"));
            prop_assert_eq!(&got.shape, &want.shape);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(
                bits(&got.data),
                bits(&want.expected())
            );
        }
    }
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn damaged_archives_are_errors_or_sound(seed in seed(), damage in damage()) {
        read_is_sound(&apply(seed, &damage))?;
    }

    #[test]
    fn damaged_entries_with_valid_checksums_are_errors_or_sound(
        seed in seed(),
        entry in any::<Index>(),
        pickle in any::<bool>(),
        damage in damage(),
    ) {
        let mut entries = entries_of(&seed);
        let target = if pickle {
            entries.iter().position(|(n, _)| n.ends_with("/data.pkl")).unwrap()
        } else {
            entry.index(entries.len())
        };
        let content = std::mem::take(&mut entries[target].1);
        entries[target].1 = apply(content, &damage);
        read_is_sound(&zip_of(&entries, CompressionMethod::Stored))?;
    }
}
