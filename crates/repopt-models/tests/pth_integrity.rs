//! The readers check what they read: every zip entry of a `.pth` file that contributes to
//! the result must match the CRC-32 the archive records for it, and only regular files are
//! read, so a FIFO, a device or a directory given as a checkpoint is a prompt error instead
//! of a hang or an endless read.

mod common;

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use repopt_models::checkpoint::load_tensors;
use repopt_models::pth::{read_pth, read_pth_bytes};
use repopt_models::scales::read_named;
use zip::ZipArchive;

const B1: &str = "RepOpt-VGG-B1-scales.pth";
/// The storage of `stage0.scale_1x1.weight` in the B1 file: 64 f32 values, stored.
const B1_STAGE0_1X1: &str = "archive/data/94443822298576";

fn official_bytes(file: &str) -> Option<Vec<u8>> {
    let dir = common::shared_data("the official scale files")?;
    Some(std::fs::read(dir.join("official-scales").join(file)).unwrap())
}

fn entry_bytes(archive: &[u8], name: &str) -> Vec<u8> {
    let mut zip = ZipArchive::new(Cursor::new(archive)).unwrap();
    let mut entry = zip.by_name(name).unwrap();
    let mut out = Vec::new();
    entry.read_to_end(&mut out).unwrap();
    out
}

/// Where a stored entry's bytes start in the archive, found by content: the entries of the
/// official files are stored uncompressed and these are unique.
fn stored_offset(archive: &[u8], name: &str) -> usize {
    let raw = entry_bytes(archive, name);
    let at = archive
        .windows(raw.len())
        .position(|w| w == raw.as_slice())
        .unwrap_or_else(|| panic!("{name} is not stored verbatim"));
    assert!(
        archive[at + 1..]
            .windows(raw.len())
            .all(|w| w != raw.as_slice()),
        "{name} occurs twice"
    );
    at
}

/// A fresh directory under the system temporary folder, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("repopt-pth-integrity-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn flipped_storage_byte_is_an_error_naming_file_and_entry() {
    let Some(mut bytes) = official_bytes(B1) else {
        return;
    };
    // The exponent byte of the first value: 1.17 would come back as a huge number.
    let at = stored_offset(&bytes, B1_STAGE0_1X1) + 3;
    bytes[at] ^= 0x20;

    let scratch = Scratch::new("flip-storage");
    let path = scratch.path("damaged-B1.pth");
    std::fs::write(&path, &bytes).unwrap();
    let err = match read_pth(&path) {
        Ok(tensors) => panic!(
            "a damaged storage was read as {:?}",
            tensors.first().map(|t| &t.data[..2])
        ),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains(B1_STAGE0_1X1), "{err}");
    assert!(err.contains("CRC-32"), "{err}");

    // The scale loader reads through the same path.
    let err = read_named(&path).unwrap_err().to_string();
    assert!(
        err.contains(B1_STAGE0_1X1) && err.contains("CRC-32"),
        "{err}"
    );
}

#[test]
fn flipped_byte_in_any_storage_is_caught() {
    let Some(bytes) = official_bytes("RepOptGhostNet_0_5x_scales.pth") else {
        return;
    };
    let names: Vec<String> = ZipArchive::new(Cursor::new(bytes.as_slice()))
        .unwrap()
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .filter(|n| n.contains("/data/"))
        .collect();
    assert!(names.len() > 10, "{names:?}");
    for name in names {
        let mut damaged = bytes.clone();
        let len = entry_bytes(&bytes, &name).len();
        // The last byte: a reader that stops at the size it needs never sees it change.
        damaged[stored_offset(&bytes, &name) + len - 1] ^= 0x01;
        match read_pth_bytes(&damaged, "ghost.pth") {
            Ok(_) => panic!("flipping the last byte of {name} went unnoticed"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("ghost.pth: "), "{msg}");
                assert!(msg.contains(&format!("'{name}'")), "{msg}");
                assert!(msg.contains("CRC-32"), "{msg}");
            }
        }
    }
}

#[test]
fn flipped_pickle_byte_is_a_checksum_error() {
    let Some(mut bytes) = official_bytes(B1) else {
        return;
    };
    let pickle = entry_bytes(&bytes, "archive/data.pkl");
    let key = b"stage0.scale_conv.weight";
    let in_pickle = pickle
        .windows(key.len())
        .position(|w| w == key)
        .expect("the B1 pickle names stage0.scale_conv.weight");
    // Renaming a key keeps the pickle valid: only the checksum can tell.
    let at = stored_offset(&bytes, "archive/data.pkl") + in_pickle + key.len() - 1;
    bytes[at] = b'X';
    let err = read_pth_bytes(&bytes, "renamed.pth")
        .unwrap_err()
        .to_string();
    assert!(err.contains("'archive/data.pkl'"), "{err}");
    assert!(err.contains("CRC-32"), "{err}");
}

#[test]
fn expanded_views_are_capped_per_file_not_per_tensor() {
    // Five stride-0 views of one 4-element storage, each expanding to 2^24 elements: each
    // is within what one tensor may expand to, together they are not.
    let mut p = b"\x80\x02}(".to_vec();
    for i in 0..5 {
        p.extend_from_slice(format!("X\x02\x00\x00\x00w{i}").as_bytes());
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage");
        p.extend_from_slice(b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ");
        p.extend_from_slice(b"K\x00(J\x00\x00\x00\x01t(K\x00t\x89ccollections\nOrderedDict\n)RtR");
    }
    p.extend_from_slice(b"u.");
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    for (name, data) in [("m/data.pkl", p), ("m/data/0", vec![0u8; 16])] {
        writer.start_file(name, opts).unwrap();
        std::io::Write::write_all(&mut writer, &data).unwrap();
    }
    let bytes = writer.finish().unwrap().into_inner();
    let err = match read_pth_bytes(&bytes, "expanded.pth") {
        Ok(t) => panic!(
            "materialised {} elements",
            t.iter().map(|t| t.data.len()).sum::<usize>()
        ),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with("expanded.pth: tensor 'w4'"), "{err}");
    assert!(err.contains("per file"), "{err}");
}

/// Runs `read` on another thread and fails if it has not returned within a few seconds; a
/// reader that blocks on a FIFO is released by opening its write end.
#[cfg(unix)]
fn returns_promptly<T: Send + 'static>(
    fifo: &Path,
    read: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(read());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(v) => v,
        Err(_) => {
            let _ = std::fs::OpenOptions::new().write(true).open(fifo);
            panic!("reading FIFO {} blocked", fifo.display());
        }
    }
}

#[cfg(unix)]
fn make_fifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

#[cfg(unix)]
#[test]
fn fifo_given_as_a_checkpoint_is_refused_without_blocking() {
    let scratch = Scratch::new("fifo");
    let fifo = scratch.path("scales.pth");
    make_fifo(&fifo);
    let shown = fifo.display().to_string();

    let p = fifo.clone();
    let err = returns_promptly(&fifo, move || read_pth(&p).map(|_| ()))
        .expect_err("a FIFO is not a checkpoint")
        .to_string();
    assert!(
        err.contains(&shown) && err.contains("not a regular file"),
        "{err}"
    );

    let p = fifo.clone();
    let err = returns_promptly(&fifo, move || load_tensors(&p).map(|_| ()))
        .expect_err("a FIFO is not a checkpoint")
        .to_string();
    assert!(
        err.contains(&shown) && err.contains("not a regular file"),
        "{err}"
    );

    let p = fifo.clone();
    let err = returns_promptly(&fifo, move || read_named(&p).map(|_| ()))
        .expect_err("a FIFO is not a scale file")
        .to_string();
    assert!(
        err.contains(&shown) && err.contains("not a regular file"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn devices_and_directories_given_as_checkpoints_are_refused() {
    let scratch = Scratch::new("special");
    for path in [Path::new("/dev/null"), scratch.0.as_path()] {
        let shown = path.display().to_string();
        for err in [
            read_pth(path).map(|_| ()).unwrap_err().to_string(),
            load_tensors(path).map(|_| ()).unwrap_err().to_string(),
            read_named(path).map(|_| ()).unwrap_err().to_string(),
        ] {
            assert!(err.contains(&shown), "{err}");
            assert!(err.contains("not a regular file"), "{err}");
        }
    }
}
