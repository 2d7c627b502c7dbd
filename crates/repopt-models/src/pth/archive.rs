//! The zip side of a checkpoint: finding the archive's directory and byte order, and
//! extracting entries without trusting the sizes their headers declare and without
//! returning a byte that fails its entry's CRC-32.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use zip::ZipArchive;
use zip::read::ZipReadOptions;

use super::error::PthError;

/// The archive plus what has been extracted from it so far.
pub(super) struct Archive<'a> {
    origin: &'a str,
    input_len: u64,
    zip: ZipArchive<Cursor<&'a [u8]>>,
    /// Several tensors may view one storage; each is extracted once.
    cache: HashMap<String, Vec<u8>>,
}

impl<'a> Archive<'a> {
    /// Opens `bytes` as a zip archive; `origin` names the source in errors.
    pub(super) fn open(bytes: &'a [u8], origin: &'a str) -> Result<Self, PthError> {
        let zip = ZipArchive::new(Cursor::new(bytes)).map_err(|e| PthError::NotZip {
            origin: origin.to_string(),
            detail: e.to_string(),
        })?;
        Ok(Archive {
            origin,
            input_len: bytes.len() as u64,
            zip,
            cache: HashMap::new(),
        })
    }

    /// The name of the source, for errors.
    pub(super) fn origin(&self) -> &'a str {
        self.origin
    }

    /// The archive's top-level directory, which torch names after the file (or `archive`).
    pub(super) fn find_prefix(&self) -> Result<String, PthError> {
        let names: Vec<String> = self
            .zip
            .file_names()
            .filter_map(|n| n.ok().map(|n| n.into_owned()))
            .collect();
        let candidates: Vec<&str> = names
            .iter()
            .filter_map(|n| n.strip_suffix("/data.pkl"))
            .filter(|p| !p.is_empty() && !p.contains('/'))
            .collect();
        match candidates.as_slice() {
            [one] => return Ok((*one).to_string()),
            [] => {}
            several => {
                // torch's own reader takes the archive name from the first entry.
                let first_dir = names.first().and_then(|n| n.split('/').next());
                if let Some(p) = several.iter().find(|p| Some(**p) == first_dir) {
                    return Ok((*p).to_string());
                }
            }
        }
        let detail = if names.is_empty() {
            "the archive is empty".to_string()
        } else if candidates.len() > 1 {
            format!(
                "found {} candidates: {}",
                candidates.len(),
                candidates
                    .iter()
                    .take(5)
                    .map(|p| format!("'{p}/data.pkl'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            let shown: Vec<String> = names.iter().take(5).map(|n| format!("'{n}'")).collect();
            format!(
                "the archive's {} entries start with {}",
                names.len(),
                shown.join(", ")
            )
        };
        Err(PthError::NoDataPkl {
            origin: self.origin.to_string(),
            detail,
        })
    }

    /// PyTorch >= 2.1 records the writer's byte order; older files are little-endian.
    pub(super) fn byte_order(&mut self, prefix: &str) -> Result<bool, PthError> {
        let name = format!("{prefix}/byteorder");
        if self.zip.index_for_name(&name).is_none() {
            return Ok(false);
        }
        let raw = self.read_entry(&name, 16)?;
        match raw.trim_ascii() {
            b"little" => Ok(false),
            b"big" => Ok(true),
            other => Err(PthError::Entry {
                origin: self.origin.to_string(),
                entry: name,
                detail: format!(
                    "byte order '{}', expected 'little' or 'big'",
                    String::from_utf8_lossy(other)
                ),
            }),
        }
    }

    /// A whole entry, refusing ones that claim or produce more than `limit` bytes.
    pub(super) fn read_entry(&mut self, name: &str, limit: u64) -> Result<Vec<u8>, PthError> {
        let origin = self.origin;
        let entry_err = |detail: String| PthError::Entry {
            origin: origin.to_string(),
            entry: name.to_string(),
            detail,
        };
        let index = self
            .zip
            .index_for_name(name)
            .ok_or_else(|| entry_err("not found".to_string()))?;
        let (buf, total) = self.read_checked(name, index, limit, |declared| {
            if declared > limit {
                return Err(entry_err(format!(
                    "declares {declared} bytes, more than the {limit} this reader accepts"
                )));
            }
            Ok(())
        })?;
        if total > limit {
            return Err(entry_err(format!(
                "holds more than the {limit} bytes this reader accepts"
            )));
        }
        Ok(buf)
    }

    /// The first `expected` bytes of storage entry `entry`, extracted once per entry.
    pub(super) fn storage_bytes(
        &mut self,
        tensor: &str,
        entry: &str,
        expected: u64,
    ) -> Result<&[u8], PthError> {
        let have = self.cache.get(entry).map(|b| b.len() as u64);
        if have.is_none_or(|len| len < expected) {
            let index = self
                .zip
                .index_for_name(entry)
                .ok_or_else(|| PthError::MissingStorage {
                    origin: self.origin.to_string(),
                    tensor: tensor.to_string(),
                    entry: entry.to_string(),
                })?;
            let origin = self.origin;
            let truncated = |found: u64| PthError::TruncatedStorage {
                origin: origin.to_string(),
                entry: entry.to_string(),
                expected,
                found,
            };
            // Checking the declared size first keeps a lying pickle from driving allocation.
            let (buf, total) = self.read_checked(entry, index, expected, |declared| {
                if declared < expected {
                    return Err(truncated(declared));
                }
                Ok(())
            })?;
            if total < expected {
                return Err(truncated(total));
            }
            self.cache.insert(entry.to_string(), buf);
        }
        Ok(self.cache.get(entry).map(Vec::as_slice).unwrap_or_default())
    }

    /// Reads entry `index` (named `name`) to its end, keeping its first `keep` bytes, and
    /// checks the CRC-32 of everything it holds against the archive's record. Returns the
    /// kept bytes and the entry's full length.
    ///
    /// The whole entry is read even when fewer bytes are needed: a checksum only covers
    /// complete entries, and a damaged byte past what is kept still means a damaged file.
    /// `check_declared` sees the declared size before any byte is read and may refuse it.
    fn read_checked(
        &mut self,
        name: &str,
        index: usize,
        keep: u64,
        check_declared: impl FnOnce(u64) -> Result<(), PthError>,
    ) -> Result<(Vec<u8>, u64), PthError> {
        let origin = self.origin;
        let entry_err = |detail: String| PthError::Entry {
            origin: origin.to_string(),
            entry: name.to_string(),
            detail,
        };
        // The check is made here rather than by the zip reader so that a mismatch is
        // reported as such, with both values, whatever path reads the entry.
        let options = ZipReadOptions::new().ignore_crc32(true);
        let mut file = self
            .zip
            .by_index_with_options(index, options)
            .map_err(|e| entry_err(e.to_string()))?;
        let declared = file.size();
        check_declared(declared)?;
        let recorded = file.crc32();
        let mut kept = Vec::with_capacity(capacity_hint(declared.min(keep), self.input_len));
        let mut hasher = crc32fast::Hasher::new();
        let mut total = 0u64;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            // The zip reader fails once an entry outgrows its declared size, so this loop
            // ends even on a forged archive.
            let n = match file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(entry_err(e.to_string())),
            };
            let data = chunk.get(..n).unwrap_or_default();
            hasher.update(data);
            let room = usize::try_from(keep.saturating_sub(total)).unwrap_or(usize::MAX);
            kept.extend_from_slice(data.get(..room.min(n)).unwrap_or(data));
            total = total.saturating_add(n as u64);
        }
        let found = hasher.finalize();
        if found != recorded {
            return Err(PthError::Checksum {
                origin: origin.to_string(),
                entry: name.to_string(),
                recorded,
                found,
            });
        }
        Ok((kept, total))
    }
}

/// Initial buffer size: what the header promises, but never more than the input could hold
/// uncompressed, so a forged header cannot reserve memory the data does not back.
fn capacity_hint(declared: u64, input_len: u64) -> usize {
    usize::try_from(declared.min(input_len)).unwrap_or(0)
}
