//! Property tests of the dataset readers (IDX, CIFAR) and of the config file parser:
//! generated files read back exactly, and damaged or arbitrary ones are an error naming the
//! file or a consistent result: never a panic, and never an allocation the file does not
//! back (a count read from a damaged header, say).

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use repopt_tensor::testing::alloc::{TrackingAllocator, largest_allocation};
use repopt_tensor::testing::damage::{Damage, EDGE_WORDS, apply};
use repopt_train::TrainConfig;
use repopt_train::config::{DatasetKind, OptimizerKind};
use repopt_train::data::{Split, load_cifar10, load_cifar100, read_idx_images, read_idx_labels};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator;

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

/// Up to `max` changes; none in about a third of the cases, so intact files are read too.
fn damage(max: usize) -> impl Strategy<Value = Vec<Damage>> {
    let one = prop_oneof![
        4 => (any::<u64>(), 1u8..).prop_map(|(at, mask)| Damage::Flip { at, mask }),
        2 => (any::<u64>(), prop::sample::select(EDGE_WORDS.to_vec()))
            .prop_map(|(at, word)| Damage::Word { at, word }),
        1 => (any::<u64>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Damage::Insert { at, bytes }),
        1 => (any::<u64>(), 1usize..32).prop_map(|(at, len)| Damage::Remove { at, len }),
        1 => any::<u64>().prop_map(|at| Damage::Truncate { at }),
    ];
    prop_oneof![
        1 => Just(Vec::new()),
        2 => prop::collection::vec(one, 1..=max),
    ]
}

/// Runs `read` and checks that no single allocation exceeded a small multiple of `len`
/// bytes of input (gzip may legitimately expand a small file a thousandfold).
fn bounded<T>(len: usize, read: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    let (out, largest) = largest_allocation(read);
    let bound = 2048 * len + (1 << 20);
    prop_assert!(
        largest <= bound,
        "{largest} bytes requested at once for {len} bytes of input"
    );
    Ok(out)
}

fn err_names(err: impl ToString, path: &Path) -> Result<(), TestCaseError> {
    let msg = err.to_string();
    prop_assert!(msg.contains(&path.display().to_string()), "{msg}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// IDX
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct IdxFile {
    images: bool,
    magic: u32,
    /// count, then rows and cols for an images file.
    dims: Vec<u32>,
    payload: Vec<u8>,
    gzip: bool,
}

impl IdxFile {
    fn bytes(&self) -> Vec<u8> {
        let mut v = self.magic.to_be_bytes().to_vec();
        self.dims.iter().for_each(|d| v.extend(d.to_be_bytes()));
        v.extend(&self.payload);
        if !self.gzip {
            return v;
        }
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&v).unwrap();
        enc.finish().unwrap()
    }

    /// Whether the header is valid and the payload exactly what it announces.
    fn consistent(&self) -> bool {
        let want = if self.images { 0x803 } else { 0x801 };
        self.magic == want
            && self.dims.iter().skip(1).all(|&d| d > 0)
            && Some(self.payload.len() as u64) == size(&self.dims)
    }
}

/// The payload size `dims` announce, if it fits in 64 bits.
fn size(dims: &[u32]) -> Option<u64> {
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)))
}

fn idx_file() -> impl Strategy<Value = IdxFile> {
    let dim = prop_oneof![4 => 0u32..6, 1 => any::<u32>()];
    let magic = prop_oneof![8 => Just(None), 1 => any::<u32>().prop_map(Some)];
    (
        any::<bool>(),
        magic,
        prop::collection::vec(dim, 3),
        any::<bool>(),
    )
        .prop_flat_map(|(images, magic, mut dims, gzip)| {
            if !images {
                dims.truncate(1);
            }
            let magic = magic.unwrap_or(if images { 0x803 } else { 0x801 });
            let len = match size(&dims) {
                Some(size) if size <= 1024 => {
                    let size = size as usize;
                    prop_oneof![4 => Just(size), 1 => 0..size + 2].boxed()
                }
                _ => (0usize..64).boxed(),
            };
            (len, Just((images, magic, dims, gzip)))
        })
        .prop_flat_map(|(len, (images, magic, dims, gzip))| {
            prop::collection::vec(any::<u8>(), len).prop_map(move |payload| IdxFile {
                images,
                magic,
                dims: dims.clone(),
                payload,
                gzip,
            })
        })
}

// ---------------------------------------------------------------------------------------
// CIFAR
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct CifarFile {
    hundred: bool,
    /// Label bytes of each record (coarse and fine for CIFAR-100).
    labels: Vec<Vec<u8>>,
    /// Seeds of each record's pixels.
    seeds: Vec<u8>,
    /// Bytes after the last record.
    tail: Vec<u8>,
}

impl CifarFile {
    fn pixels(seed: u8) -> impl Iterator<Item = u8> {
        (0..3072u32).map(move |i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed))
    }

    fn bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for (label, &seed) in self.labels.iter().zip(&self.seeds) {
            v.extend(label);
            v.extend(Self::pixels(seed));
        }
        v.extend(&self.tail);
        v
    }

    fn classes(&self) -> usize {
        if self.hundred { 100 } else { 10 }
    }

    fn consistent(&self) -> bool {
        let (coarse, fine) = if self.hundred {
            (20, 100)
        } else {
            (u8::MAX, 10)
        };
        !self.labels.is_empty()
            && self.tail.is_empty()
            && self.labels.iter().all(|l| match l.as_slice() {
                [c, f] => *c < coarse && *f < fine,
                [f] => *f < fine,
                _ => false,
            })
    }
}

fn cifar_file() -> impl Strategy<Value = CifarFile> {
    any::<bool>().prop_flat_map(|hundred| {
        let label = if hundred {
            prop::collection::vec(prop_oneof![4 => 0u8..20, 1 => any::<u8>()], 2)
        } else {
            prop::collection::vec(prop_oneof![4 => 0u8..10, 1 => any::<u8>()], 1)
        };
        let tail =
            prop_oneof![4 => Just(Vec::new()), 1 => prop::collection::vec(any::<u8>(), 1..8)];
        (prop::collection::vec((label, any::<u8>()), 0..4), tail).prop_map(
            move |(records, tail)| {
                let (labels, seeds) = records.into_iter().unzip();
                CifarFile {
                    hundred,
                    labels,
                    seeds,
                    tail,
                }
            },
        )
    })
}

// ---------------------------------------------------------------------------------------
// Config files
// ---------------------------------------------------------------------------------------

/// Configs whose every value is in its domain, so an intact file must load as written.
fn train_config() -> impl Strategy<Value = TrainConfig> {
    (
        prop::sample::select(DatasetKind::ALL.to_vec()),
        prop::sample::select(OptimizerKind::ALL.to_vec()),
        1u64..500,
        1usize..1024,
        0u64..i64::MAX as u64,
        prop::option::of(8usize..512),
        prop::option::of(1usize..100_000),
    )
        .prop_map(
            |(dataset, optimizer, epochs, batch_size, seed, resolution, train_limit)| TrainConfig {
                dataset,
                optimizer,
                epochs,
                batch_size,
                seed,
                resolution,
                train_limit,
                ..TrainConfig::default()
            },
        )
}

const KEYS: [&str; 10] = [
    "epochs",
    "lr",
    "batch_size",
    "seed",
    "resolution",
    "label_smoothing",
    "dataset",
    "arch",
    "clip_grad",
    "no_such_key",
];

/// Values parsers and numeric fields are most likely to mishandle.
fn edge_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "-1",
            "0",
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775807",
            "-9223372036854775808",
            "1e308",
            "1e400",
            "nan",
            "inf",
            "-inf",
            "\"\"",
            "\"fashion-mnist\"",
            "true",
            "[]",
            "{}",
            "[1, 2, 3, 4, 5]",
            "{ preset = \"B1\", num_blocks = [1, 1, 1] }",
        ])
        .prop_map(String::from),
        (1usize..2000).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth))),
        "\\PC{0,40}".prop_map(|s| format!("\"{s}\"")),
    ]
}

fn config_file(dir: &Path, json: bool, text: &[u8]) -> std::path::PathBuf {
    let path = dir.join(if json { "run.json" } else { "run.toml" });
    std::fs::write(&path, text).unwrap();
    path
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn idx_files_read_back_or_are_errors_naming_the_file(
        file in idx_file(),
        damage in damage(3),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data-idx-ubyte");
        let bytes = apply(file.bytes(), &damage);
        std::fs::write(&path, &bytes).unwrap();
        if file.images {
            match bounded(bytes.len(), || read_idx_images(&path))? {
                Ok(imgs) => {
                    prop_assert_eq!(imgs.pixels.len(), imgs.count * imgs.rows * imgs.cols);
                    if damage.is_empty() {
                        prop_assert_eq!(&imgs.pixels, &file.payload);
                    }
                }
                Err(e) => {
                    prop_assert!(!damage.is_empty() || !file.consistent(), "{e}");
                    err_names(e, &path)?;
                }
            }
        } else {
            match bounded(bytes.len(), || read_idx_labels(&path))? {
                Ok(labels) => {
                    if damage.is_empty() {
                        prop_assert_eq!(&labels, &file.payload);
                    }
                }
                Err(e) => {
                    prop_assert!(!damage.is_empty() || !file.consistent(), "{e}");
                    err_names(e, &path)?;
                }
            }
        }
    }

}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn cifar_files_read_back_or_are_errors_naming_the_file(
        file in cifar_file(),
        damage in damage(3),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let name = if file.hundred { "test.bin" } else { "test_batch.bin" };
        let path = dir.path().join(name);
        let bytes = apply(file.bytes(), &damage);
        std::fs::write(&path, &bytes).unwrap();
        let loaded = bounded(bytes.len(), || {
            if file.hundred {
                load_cifar100(dir.path(), Split::Test)
            } else {
                load_cifar10(dir.path(), Split::Test)
            }
        })?;
        match loaded {
            Ok(ds) => {
                let record = if file.hundred { 3074 } else { 3073 };
                prop_assert_eq!(ds.len(), bytes.len() / record);
                prop_assert_eq!(ds.images.len(), ds.len() * 3072);
                prop_assert!(ds.labels.iter().all(|&l| (l as usize) < file.classes()));
                if damage.is_empty() {
                    let pixels: Vec<u8> =
                        file.seeds.iter().flat_map(|&s| CifarFile::pixels(s)).collect();
                    prop_assert_eq!(ds.images, pixels);
                }
            }
            Err(e) => {
                prop_assert!(!damage.is_empty() || !file.consistent(), "{e}");
                err_names(e, &path)?;
            }
        }
    }

    #[test]
    fn config_files_load_as_written_or_are_errors_naming_the_file(
        cfg in train_config(),
        json in any::<bool>(),
        damage in damage(3),
    ) {
        let text = if json {
            serde_json::to_string_pretty(&cfg).unwrap()
        } else {
            toml::to_string(&cfg).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let bytes = apply(text.into_bytes(), &damage);
        let path = config_file(dir.path(), json, &bytes);
        match bounded(bytes.len(), || TrainConfig::from_file(&path))? {
            Ok(read) => {
                if damage.is_empty() {
                    prop_assert_eq!(read, cfg);
                }
            }
            Err(e) => {
                prop_assert!(!damage.is_empty(), "an intact file was refused: {e}");
                err_names(e, &path)?;
            }
        }
    }

    #[test]
    fn config_files_with_edge_values_are_read_or_refused_cleanly(
        lines in prop::collection::vec((prop::sample::select(KEYS.to_vec()), edge_value()), 0..6),
        json in any::<bool>(),
    ) {
        let text = if json {
            let fields: Vec<String> =
                lines.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
            format!("{{{}}}", fields.join(", "))
        } else {
            lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = config_file(dir.path(), json, text.as_bytes());
        if let Err(e) = bounded(text.len(), || TrainConfig::from_file(&path))? {
            err_names(e, &path)?;
        }
    }

    #[test]
    fn arbitrary_text_as_a_config_file_is_read_or_refused_cleanly(
        text in any::<String>(),
        json in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = config_file(dir.path(), json, text.as_bytes());
        if let Err(e) = bounded(text.len(), || TrainConfig::from_file(&path))? {
            err_names(e, &path)?;
        }
    }
}
