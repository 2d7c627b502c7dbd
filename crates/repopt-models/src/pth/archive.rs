//! The zip side of a checkpoint: finding the archive's directory and byte order, and
//! extracting entries without trusting the sizes their headers declare.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use zip::ZipArchive;

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
        let entry_err = |detail: String| PthError::Entry {
            origin: self.origin.to_string(),
            entry: name.to_string(),
            detail,
        };
        let index = self
            .zip
            .index_for_name(name)
            .ok_or_else(|| entry_err("not found".to_string()))?;
        let file = self
            .zip
            .by_index(index)
            .map_err(|e| entry_err(e.to_string()))?;
        let declared = file.size();
        if declared > limit {
            return Err(entry_err(format!(
                "declares {declared} bytes, more than the {limit} this reader accepts"
            )));
        }
        let mut buf = Vec::with_capacity(capacity_hint(declared, self.input_len));
        file.take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| entry_err(e.to_string()))?;
        if buf.len() as u64 > limit {
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
            let file = self.zip.by_index(index).map_err(|e| PthError::Entry {
                origin: self.origin.to_string(),
                entry: entry.to_string(),
                detail: e.to_string(),
            })?;
            let truncated = |found: u64| PthError::TruncatedStorage {
                origin: self.origin.to_string(),
                entry: entry.to_string(),
                expected,
                found,
            };
            // Checking the declared size first keeps a lying pickle from driving allocation.
            let declared = file.size();
            if declared < expected {
                return Err(truncated(declared));
            }
            let mut buf = Vec::with_capacity(capacity_hint(expected, self.input_len));
            file.take(expected)
                .read_to_end(&mut buf)
                .map_err(|e| PthError::Entry {
                    origin: self.origin.to_string(),
                    entry: entry.to_string(),
                    detail: e.to_string(),
                })?;
            if (buf.len() as u64) < expected {
                return Err(truncated(buf.len() as u64));
            }
            self.cache.insert(entry.to_string(), buf);
        }
        Ok(self.cache.get(entry).map(Vec::as_slice).unwrap_or_default())
    }
}

/// Initial buffer size: what the header promises, but never more than the input could hold
/// uncompressed, so a forged header cannot reserve memory the data does not back.
fn capacity_hint(declared: u64, input_len: u64) -> usize {
    usize::try_from(declared.min(input_len)).unwrap_or(0)
}
