//! The PyTorch checkpoint reader against the RepOptimizers authors' published scale files
//! (real data nobody on this project wrote) and against damaged or hand-built checkpoints.
//!
//! Tests on the official files need the shared data folder; see [`shared_data`].

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use repopt_models::HostTensor;
use repopt_models::pth::{PthError, read_pth, read_pth_bytes};

mod pth_support;
use pth_support::expect_err;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

// ---------------------------------------------------------------------------------------
// Locating the shared data
// ---------------------------------------------------------------------------------------

/// `<shared data>/<subdir>`, where the shared data folder is `$REPOPT_SHARED_DATA` or, by
/// default, `shared/data` beside the workspace.
///
/// The data is not in the repository, so a missing folder skips the test (printing
/// `SKIPPED: ...` to stderr) unless `REPOPT_REQUIRE_SHARED_DATA=1`, which turns the skip into
/// a failure so CI cannot pass vacuously.
fn shared_data(subdir: &str) -> Option<PathBuf> {
    let root = std::env::var_os("REPOPT_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
        });
    let dir = root.join(subdir);
    if dir.is_dir() {
        return Some(dir);
    }
    let reason = format!(
        "shared test data folder {} not found (set REPOPT_SHARED_DATA to the folder that \
         holds {subdir}/)",
        dir.display()
    );
    if std::env::var("REPOPT_REQUIRE_SHARED_DATA").as_deref() == Ok("1") {
        panic!("{reason}; REPOPT_REQUIRE_SHARED_DATA=1 requires it");
    }
    eprintln!("SKIPPED: {reason}");
    None
}

const OFFICIAL: [(&str, usize); 5] = [
    ("RepOpt-VGG-B1-scales.pth", 79),
    ("RepOpt-VGG-B2-scales.pth", 79),
    ("RepOpt-VGG-L1-scales.pth", 139),
    ("RepOpt-VGG-L2-scales.pth", 139),
    ("RepOptGhostNet_0_5x_scales.pth", 64),
];

fn official(file: &str) -> Option<PathBuf> {
    shared_data("official-scales").map(|dir| dir.join(file))
}

fn by_name<'a>(tensors: &'a [HostTensor], name: &str) -> Option<&'a HostTensor> {
    tensors.iter().find(|t| t.name == name)
}

/// Raw bytes of one zip entry, through the zip crate only.
fn zip_entry(bytes: &[u8], name: &str) -> Vec<u8> {
    let mut archive = ZipArchive::new(Cursor::new(bytes)).expect("official file is a zip");
    let mut entry = archive.by_name(name).expect("entry exists");
    let mut out = Vec::new();
    entry.read_to_end(&mut out).expect("entry readable");
    out
}

/// Tensor names in data.pkl in order of appearance, found by scanning for BINUNICODE
/// strings ending in `.weight`: no pickle interpretation, so it checks the reader's order.
fn names_by_scan(pickle: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut i = 0;
    while i + 5 <= pickle.len() {
        if pickle[i] == b'X' {
            let len = u32::from_le_bytes(pickle[i + 1..i + 5].try_into().unwrap()) as usize;
            if let Some(s) = pickle.get(i + 5..i + 5 + len)
                && let Ok(s) = std::str::from_utf8(s)
                && s.ends_with(".weight")
            {
                names.push(s.to_string());
                i += 5 + len;
                continue;
            }
        }
        i += 1;
    }
    names
}

// ---------------------------------------------------------------------------------------
// The official files
// ---------------------------------------------------------------------------------------

#[test]
fn official_files_have_expected_tensors_in_file_order() {
    for (file, count) in OFFICIAL {
        let Some(path) = official(file) else { return };
        let tensors = read_pth(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tensors.len(), count, "{file}");

        let bytes = std::fs::read(&path).unwrap();
        let scanned = names_by_scan(&zip_entry(&bytes, "archive/data.pkl"));
        let read: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(read, scanned, "{file}: key order differs from data.pkl");

        for t in &tensors {
            assert_eq!(t.shape.len(), 1, "{file}: {} is not 1-D", t.name);
            assert_eq!(t.data.len(), t.shape[0], "{file}: {}", t.name);
            assert!(!t.data.is_empty(), "{file}: {} is empty", t.name);
            assert!(
                t.data.iter().all(|v| v.is_finite()),
                "{file}: {} has non-finite values",
                t.name
            );
        }
    }
}

#[test]
fn official_b1_structure() {
    let Some(path) = official("RepOpt-VGG-B1-scales.pth") else {
        return;
    };
    let t = read_pth(&path).unwrap();
    let len = |name: &str| by_name(&t, name).map(|x| x.data.len());
    assert_eq!(len("stage0.scale_conv.weight"), Some(64));
    assert_eq!(len("stage0.scale_1x1.weight"), Some(64));
    assert_eq!(len("stage1.0.scale_conv.weight"), Some(128));
    assert_eq!(len("stage4.0.scale_conv.weight"), Some(2048));
    // A stride-2 first block changes shape, so it has no identity branch.
    assert_eq!(len("stage1.0.scale_identity.weight"), None);
    assert_eq!(len("stage1.1.scale_identity.weight"), Some(128));
    assert_eq!(
        t.iter()
            .filter(|x| x.name.contains("scale_identity"))
            .count(),
        23
    );

    let first: Vec<&str> = t.iter().take(4).map(|x| x.name.as_str()).collect();
    assert_eq!(
        first,
        [
            "stage0.scale_1x1.weight",
            "stage0.scale_conv.weight",
            "stage1.0.scale_1x1.weight",
            "stage1.0.scale_conv.weight",
        ]
    );
    assert_eq!(t.last().unwrap().name, "stage4.0.scale_conv.weight");
}

#[test]
fn official_values_match_an_independent_decode() {
    // (file, tensor, storage entry, first values and last value as decoded by Python's
    // `struct` from the raw entry)
    let cases: [(&str, &str, &str, [f32; 3], f32); 4] = [
        (
            "RepOpt-VGG-B1-scales.pth",
            "stage0.scale_1x1.weight",
            "archive/data/94443822298576",
            [1.173_311_8, 0.319_075_37, 1.296_756],
            0.870_878_5,
        ),
        (
            "RepOpt-VGG-B1-scales.pth",
            "stage4.0.scale_conv.weight",
            "archive/data/94443860158848",
            [1.016_283_2, 1.004_582_4, 1.035_210_7],
            1.019_248_6,
        ),
        (
            "RepOpt-VGG-L2-scales.pth",
            "stage4.0.scale_1x1.weight",
            "archive/data/138",
            [1.003_563_3, 1.005_266_2, 1.004_665_1],
            0.999_894_74,
        ),
        (
            "RepOptGhostNet_0_5x_scales.pth",
            "blocks.0.0.ghost1.fusion_scale.weight",
            "archive/data/0",
            [10.438_72, 5.473_388, 7.121_132_4],
            6.567_648_4,
        ),
    ];
    for (file, name, entry, head, last) in cases {
        let Some(path) = official(file) else { return };
        let tensors = read_pth(&path).unwrap();
        let t = by_name(&tensors, name).unwrap_or_else(|| panic!("{file}: no {name}"));
        assert_eq!(&t.data[..3], &head, "{file}: {name}");
        assert_eq!(t.data.last(), Some(&last), "{file}: {name}");

        let raw = zip_entry(&std::fs::read(&path).unwrap(), entry);
        let direct: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(t.data, direct, "{file}: {name} vs raw {entry}");
    }
}

// ---------------------------------------------------------------------------------------
// Damaged files built from real bytes
// ---------------------------------------------------------------------------------------

/// Rewrites a zip entry by entry; `edit` may change an entry's bytes or drop it (None).
fn rewrite_zip(bytes: &[u8], mut edit: impl FnMut(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
    let mut archive = ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let name = entry.name().unwrap().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if let Some(data) = edit(&name, data) {
            writer.start_file(name, opts).unwrap();
            writer.write_all(&data).unwrap();
        }
    }
    writer.finish().unwrap().into_inner()
}

fn official_bytes(file: &str) -> Option<Vec<u8>> {
    official(file).map(|p| std::fs::read(p).unwrap())
}

#[test]
fn rewritten_official_file_still_reads() {
    // Guards the corruption tests below: only the edit should make them fail.
    let Some(bytes) = official_bytes("RepOpt-VGG-B2-scales.pth") else {
        return;
    };
    let copy = rewrite_zip(&bytes, |_, d| Some(d));
    assert_eq!(
        read_pth_bytes(&copy, "copy").unwrap(),
        read_pth_bytes(&bytes, "orig").unwrap()
    );
}

#[test]
fn empty_and_non_zip_inputs_are_rejected() {
    let e = expect_err(&[], "empty.pth");
    assert!(matches!(e, PthError::NotZip { .. }), "{e}");
    let e = expect_err(b"# just some markdown\n", "README.md");
    assert!(matches!(e, PthError::NotZip { .. }), "{e}");
    assert!(e.to_string().contains("not a zip archive"), "{e}");
    let missing = Path::new("/nonexistent/dir/scales.pth");
    let e = read_pth(missing).unwrap_err();
    assert!(matches!(e, PthError::Io { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/dir/scales.pth"), "{e}");
}

#[test]
fn truncated_files_are_errors_at_every_length() {
    let Some(bytes) = official_bytes("RepOptGhostNet_0_5x_scales.pth") else {
        return;
    };
    let e = expect_err(&bytes[..bytes.len() / 2], "half.pth");
    assert!(matches!(e, PthError::NotZip { .. }), "{e}");
    for cut in (0..bytes.len()).step_by(37).chain([bytes.len() - 1]) {
        expect_err(&bytes[..cut], &format!("cut-at-{cut}.pth"));
    }
}

#[test]
fn storage_cut_short_is_reported_with_sizes() {
    let Some(bytes) = official_bytes("RepOpt-VGG-B2-scales.pth") else {
        return;
    };
    let damaged = rewrite_zip(&bytes, |name, mut d| {
        if name == "archive/data/0" {
            d.truncate(100);
        }
        Some(d)
    });
    let e = expect_err(&damaged, "short-storage.pth");
    assert!(
        matches!(
            &e,
            PthError::TruncatedStorage {
                expected: 256,
                found: 100,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("truncated storage 'archive/data/0' (expected 256 bytes, found 100)"),
        "{e}"
    );
}

#[test]
fn missing_pieces_are_named() {
    let Some(bytes) = official_bytes("RepOpt-VGG-B2-scales.pth") else {
        return;
    };
    let no_pkl = rewrite_zip(&bytes, |n, d| (n != "archive/data.pkl").then_some(d));
    let e = expect_err(&no_pkl, "no-pkl.pth");
    assert!(matches!(e, PthError::NoDataPkl { .. }), "{e}");

    let no_storage = rewrite_zip(&bytes, |n, d| (n != "archive/data/5").then_some(d));
    let e = expect_err(&no_storage, "no-storage.pth");
    assert!(matches!(&e, PthError::MissingStorage { entry, .. } if entry == "archive/data/5"));
}

#[test]
fn garbage_or_cut_pickle_is_a_pickle_error() {
    let Some(bytes) = official_bytes("RepOpt-VGG-B2-scales.pth") else {
        return;
    };
    let garbage = rewrite_zip(&bytes, |n, d| {
        Some(if n == "archive/data.pkl" {
            b"\xffGARBAGE".to_vec()
        } else {
            d
        })
    });
    let e = expect_err(&garbage, "garbage.pth");
    assert!(matches!(e, PthError::Pickle { offset: 0, .. }), "{e}");
    assert!(
        e.to_string()
            .contains("unsupported pickle opcode 0xff at offset 0"),
        "{e}"
    );

    let cut = rewrite_zip(&bytes, |n, mut d| {
        if n == "archive/data.pkl" {
            d.truncate(d.len() / 2);
        }
        Some(d)
    });
    let e = expect_err(&cut, "cut-pickle.pth");
    assert!(matches!(e, PthError::Pickle { .. }), "{e}");
}

#[test]
fn damaged_pickle_bytes_never_panic() {
    let Some(bytes) = official_bytes("RepOptGhostNet_0_5x_scales.pth") else {
        return;
    };
    let pickle = zip_entry(&bytes, "archive/data.pkl");
    for (i, replacement) in (0..pickle.len())
        .step_by(13)
        .zip([0x00u8, 0xff, 0x7f, b'(', b'K'].iter().cycle())
    {
        let damaged = rewrite_zip(&bytes, |n, mut d| {
            if n == "archive/data.pkl" {
                d[i] = *replacement;
            }
            Some(d)
        });
        // Ok is possible (e.g. a changed letter in a key); a panic is not.
        let _ = read_pth_bytes(&damaged, "flipped.pth");
    }
}
