//! Opening input files that must be regular files.
//!
//! Checkpoints, scale files and dataset files are read whole or streamed to their end. A
//! FIFO given in their place would block the opening thread until some other process writes
//! to it, and a device such as `/dev/zero` would be read until memory runs out, so every
//! reader opens its input here and refuses anything but a regular file before reading a
//! byte.
//!
//! ```
//! use repopt_models::regular_file;
//!
//! let err = regular_file::read(&std::env::temp_dir(), u64::MAX).unwrap_err();
//! assert_eq!(err.to_string(), "it is a directory, not a regular file");
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

/// Opens `path` for reading, refusing anything but a regular file (symbolic links are
/// followed).
///
/// On Unix the file is opened non-blocking, so a FIFO is refused at once instead of waiting
/// for a writer; the check is made on the opened file, so the file cannot be swapped for
/// another between the check and the read.
///
/// # Errors
///
/// The operating system's error, or [`io::ErrorKind::InvalidInput`] saying what the path is
/// instead ("a directory", "a FIFO", "a character device", ...).
pub fn open(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {}, not a regular file", describe(&kind)),
        ));
    }
    #[cfg(unix)]
    clear_nonblocking(&file)?;
    Ok(file)
}

/// The whole of regular file `path`, refusing files longer than `limit` bytes.
///
/// # Errors
///
/// As [`open`], plus [`io::ErrorKind::InvalidData`] for a file over `limit` bytes (checked
/// before reading, and again while reading in case the file grows).
pub fn read(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = open(path)?;
    let len = file.metadata()?.len();
    let too_long = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the file is longer than the {limit} bytes this reader accepts"),
        )
    };
    if len > limit {
        return Err(too_long());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_long());
    }
    Ok(bytes)
}

/// Regular files ignore `O_NONBLOCK` on the systems this targets, but dropping it keeps the
/// returned file an ordinary blocking one whatever the platform does.
#[cfg(unix)]
fn clear_nonblocking(file: &File) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is an open descriptor owned by `file` for the duration of both calls,
    // and F_GETFL/F_SETFL only read and set its status flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn describe(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    "a special file"
}
