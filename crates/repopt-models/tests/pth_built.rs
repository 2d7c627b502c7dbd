//! The PyTorch checkpoint reader on hand-built checkpoints: what the official files do not
//! exercise (other storage types, offsets and strides, parameters, refused constructs, sizes
//! that do not fit).

use std::io::{Cursor, Write};

use repopt_models::pth::{PthError, read_pth_bytes};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

mod pth_support;
use pth_support::expect_err;

/// `(name, storage key, storage numel, storage offset, shape, stride)` of an f32 tensor.
type TensorSpec<'a> = (&'a str, &'a str, i32, i32, &'a [i32], &'a [i32]);

/// Writes protocol-2 pickles shaped like torch.save's.
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Self {
        Pickle(vec![0x80, 2])
    }
    fn op(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.op(s.as_bytes())
    }
    fn int(&mut self, v: i32) -> &mut Self {
        self.0.push(b'J');
        self.op(&v.to_le_bytes())
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    fn ints(&mut self, v: &[i32]) -> &mut Self {
        self.op(b"(");
        for &x in v {
            self.int(x);
        }
        self.op(b"t")
    }
    fn tensor(
        &mut self,
        storage_type: &str,
        key: &str,
        numel: i32,
        offset: i32,
        shape: &[i32],
        stride: &[i32],
    ) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").op(b"((");
        self.str("storage")
            .global("torch", storage_type)
            .str(key)
            .str("cpu")
            .int(numel);
        self.op(b"tQ")
            .int(offset)
            .ints(shape)
            .ints(stride)
            .op(b"\x89");
        self.global("collections", "OrderedDict")
            .op(b")Rt")
            .op(b"R")
    }
    /// `{name: tensor}` for f32 tensors over storage key `key`.
    fn state_dict(entries: &[TensorSpec<'_>]) -> Vec<u8> {
        let mut p = Pickle::new();
        p.global("collections", "OrderedDict").op(b")R(");
        for &(name, key, numel, offset, shape, stride) in entries {
            p.str(name)
                .tensor("FloatStorage", key, numel, offset, shape, stride);
        }
        p.op(b"u.");
        p.0
    }
}

/// A checkpoint with prefix `model/` (torch names it after the file) and given storages.
fn checkpoint(pickle: &[u8], storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    writer.start_file("model/data.pkl", opts).unwrap();
    writer.write_all(pickle).unwrap();
    for (key, data) in storages {
        writer
            .start_file(format!("model/data/{key}"), opts)
            .unwrap();
        writer.write_all(data).unwrap();
    }
    writer.start_file("model/version", opts).unwrap();
    writer.write_all(b"3\n").unwrap();
    writer.finish().unwrap().into_inner()
}

fn f32_bytes(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(f32::to_le_bytes).collect()
}

fn iota(n: usize) -> Vec<u8> {
    f32_bytes((0..n).map(|i| i as f32))
}

#[test]
fn converts_half_bfloat_and_double_storages() {
    let mut p = Pickle::new();
    p.op(b"}(");
    p.str("h").tensor("HalfStorage", "0", 3, 0, &[3], &[1]);
    p.str("b").tensor("BFloat16Storage", "1", 2, 0, &[2], &[1]);
    p.str("d").tensor("DoubleStorage", "2", 2, 0, &[2], &[1]);
    p.op(b"u.");
    let half: Vec<u8> = [1.5f32, -2.0, 0.25]
        .into_iter()
        .flat_map(|v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let bf: Vec<u8> = [3.0f32, -0.5]
        .into_iter()
        .flat_map(|v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    let dbl: Vec<u8> = [1e-3f64, -7.25]
        .into_iter()
        .flat_map(f64::to_le_bytes)
        .collect();
    let t = read_pth_bytes(
        &checkpoint(&p.0, &[("0", half), ("1", bf), ("2", dbl)]),
        "dtypes",
    )
    .unwrap();
    assert_eq!(t[0].data, [1.5, -2.0, 0.25]);
    assert_eq!(t[1].data, [3.0, -0.5]);
    assert_eq!(t[2].data, [1e-3f64 as f32, -7.25]);
}

#[test]
fn honours_offset_strides_and_scalars() {
    let pickle = Pickle::state_dict(&[
        ("strided", "s", 12, 1, &[2, 3], &[1, 2]),
        ("transposed", "s", 12, 0, &[4, 3], &[1, 4]),
        ("scalar", "s", 12, 5, &[], &[]),
        ("empty", "s", 12, 0, &[0, 3], &[3, 1]),
        ("expanded", "s", 12, 7, &[2, 3], &[0, 1]),
    ]);
    let t = read_pth_bytes(&checkpoint(&pickle, &[("s", iota(12))]), "views").unwrap();
    let names: Vec<&str> = t.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(
        names,
        ["strided", "transposed", "scalar", "empty", "expanded"]
    );
    assert_eq!(
        (t[0].shape.as_slice(), t[0].data.as_slice()),
        (&[2, 3][..], &[1., 3., 5., 2., 4., 6.][..])
    );
    assert_eq!(
        t[1].data,
        [0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]
    );
    assert_eq!(
        (t[2].shape.as_slice(), t[2].data.as_slice()),
        (&[][..], &[5.][..])
    );
    assert_eq!((t[3].shape.as_slice(), t[3].data.len()), (&[0, 3][..], 0));
    assert_eq!(t[4].data, [7., 8., 9., 7., 8., 9.]);
}

#[test]
fn parameters_metadata_and_non_tensor_entries() {
    let mut p = Pickle::new();
    p.global("collections", "OrderedDict").op(b")R(");
    p.str("epoch").int(3);
    p.str("w")
        .global("torch._utils", "_rebuild_parameter")
        .op(b"(");
    p.tensor("FloatStorage", "0", 2, 0, &[2], &[1]);
    p.op(b"\x88")
        .global("collections", "OrderedDict")
        .op(b")Rt")
        .op(b"R");
    p.str("note").str("searched on CIFAR-100");
    p.op(b"u");
    // torch's state_dict() attaches `_metadata` through BUILD.
    p.op(b"}(")
        .str("")
        .op(b"}(")
        .str("version")
        .int(1)
        .op(b"uu")
        .op(b"b.");
    let t = read_pth_bytes(&checkpoint(&p.0, &[("0", f32_bytes([0.5, 2.0]))]), "mixed").unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].name.as_str(), t[0].data.as_slice()),
        ("w", &[0.5, 2.0][..])
    );
}

#[test]
fn rejects_what_it_cannot_represent() {
    let storage = [("0", iota(4))];

    // Integer tensors alone: nothing to read, and the error says so.
    let mut p = Pickle::new();
    p.op(b"}(")
        .str("bn.num_batches_tracked")
        .tensor("LongStorage", "0", 1, 0, &[], &[]);
    p.op(b"u.");
    let e = expect_err(&checkpoint(&p.0, &storage), "long.pth");
    assert!(matches!(e, PthError::NoTensors { .. }), "{e}");
    assert!(e.to_string().contains("bn.num_batches_tracked"), "{e}");

    // Beside float tensors they are skipped, as a BatchNorm state dict needs.
    let mut p = Pickle::new();
    p.op(b"}(")
        .str("bn.num_batches_tracked")
        .tensor("LongStorage", "0", 1, 0, &[], &[])
        .str("bn.weight")
        .tensor("FloatStorage", "1", 2, 0, &[2], &[1]);
    p.op(b"u.");
    let two = [("0", iota(8)), ("1", iota(8))];
    let t = read_pth_bytes(&checkpoint(&p.0, &two), "bn.pth").unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].name, "bn.weight");

    // A storage class that is neither float nor integer is refused, naming it.
    let mut p = Pickle::new();
    p.op(b"}(")
        .str("q")
        .tensor("ComplexFloatStorage", "0", 1, 0, &[], &[]);
    p.op(b"u.");
    let e = expect_err(&checkpoint(&p.0, &storage), "complex.pth");
    assert!(
        e.to_string()
            .contains("unsupported storage type 'torch.ComplexFloatStorage'"),
        "{e}"
    );

    let e = expect_err(&checkpoint(b"\x80\x02]K\x01a.", &storage), "list.pth");
    assert!(matches!(e, PthError::NotADict { .. }), "{e}");

    let mut p = Pickle::new();
    p.op(b"}(")
        .str("model")
        .op(b"}")
        .str("epoch")
        .int(9)
        .op(b"u.");
    let e = expect_err(&checkpoint(&p.0, &storage), "wrapper.pth");
    assert!(matches!(e, PthError::NoTensors { count: 2, .. }), "{e}");

    let mut p = Pickle::new();
    p.op(b"}(")
        .str("q")
        .global("torch._utils", "_rebuild_qtensor")
        .op(b")R")
        .op(b"u.");
    let e = expect_err(&checkpoint(&p.0, &storage), "quantized.pth");
    assert!(
        e.to_string().contains("torch._utils._rebuild_qtensor"),
        "{e}"
    );
}

#[test]
fn sizes_from_the_pickle_are_checked_before_use() {
    let storage = || vec![("0", iota(4))];
    // View past the end of its storage.
    let e = expect_err(
        &checkpoint(
            &Pickle::state_dict(&[("w", "0", 4, 2, &[3], &[1])]),
            &storage(),
        ),
        "past-end.pth",
    );
    assert!(matches!(e, PthError::BadTensor { .. }), "{e}");
    // Storage claims far more elements than the entry holds.
    let e = expect_err(
        &checkpoint(
            &Pickle::state_dict(&[("w", "0", i32::MAX, 0, &[4], &[1])]),
            &storage(),
        ),
        "huge-numel.pth",
    );
    assert!(
        matches!(e, PthError::TruncatedStorage { found: 16, .. }),
        "{e}"
    );
    // A broadcast view that would expand to an enormous tensor.
    let e = expect_err(
        &checkpoint(
            &Pickle::state_dict(&[("w", "0", 4, 0, &[i32::MAX, i32::MAX], &[0, 0])]),
            &storage(),
        ),
        "broadcast.pth",
    );
    assert!(matches!(e, PthError::BadTensor { .. }), "{e}");
    // A storage key that tries to leave the data folder.
    let e = expect_err(
        &checkpoint(
            &Pickle::state_dict(&[("w", "../data.pkl", 4, 0, &[4], &[1])]),
            &storage(),
        ),
        "escape.pth",
    );
    assert!(matches!(e, PthError::Pickle { .. }), "{e}");
}

#[test]
fn big_endian_byte_order_record_is_honoured() {
    let pickle = Pickle::state_dict(&[("w", "0", 2, 0, &[2], &[1])]);
    let be: Vec<u8> = [1.25f32, -3.0]
        .into_iter()
        .flat_map(f32::to_be_bytes)
        .collect();
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default();
    for (name, data) in [
        ("ckpt/data.pkl", pickle.as_slice()),
        ("ckpt/byteorder", b"big".as_slice()),
        ("ckpt/data/0", be.as_slice()),
    ] {
        writer.start_file(name, opts).unwrap();
        writer.write_all(data).unwrap();
    }
    let bytes = writer.finish().unwrap().into_inner();
    assert_eq!(read_pth_bytes(&bytes, "be").unwrap()[0].data, [1.25, -3.0]);
}
