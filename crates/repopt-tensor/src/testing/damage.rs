//! Damage to a file's bytes (flips, edge values over size fields, insertions, removals,
//! truncation), for tests that check readers report damaged input instead of panicking or
//! trusting it. Positions are taken modulo the length at the time, so any generated value
//! lands inside the bytes.
//!
//! ```
//! use repopt_tensor::testing::damage::{Damage, apply};
//!
//! let damage = [Damage::Flip { at: 5, mask: 0xff }, Damage::Truncate { at: 3 }];
//! let out = apply(vec![1, 2, 3, 4], &damage);
//! assert_eq!(out, [1, 0xfd, 3]);
//! ```

/// Values that size and count fields are most likely to mishandle.
pub const EDGE_WORDS: [u32; 8] = [
    0,
    1,
    0x7f,
    0xff,
    0x0100_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
];

/// One change to a byte string.
#[derive(Clone, Debug)]
pub enum Damage {
    /// XOR the byte at `at` with `mask`.
    Flip {
        /// Position, modulo the length.
        at: u64,
        /// Bits to flip.
        mask: u8,
    },
    /// Overwrite up to four bytes from `at` with `word`, little-endian.
    Word {
        /// Position, modulo the length.
        at: u64,
        /// The value written, typically one of [`EDGE_WORDS`].
        word: u32,
    },
    /// Insert `bytes` before position `at`.
    Insert {
        /// Position, modulo the length plus one.
        at: u64,
        /// What is inserted.
        bytes: Vec<u8>,
    },
    /// Remove up to `len` bytes from `at`.
    Remove {
        /// Position, modulo the length.
        at: u64,
        /// How many bytes.
        len: usize,
    },
    /// Keep only the bytes before `at`.
    Truncate {
        /// Position, modulo the length.
        at: u64,
    },
}

/// `bytes` with each of `damage` applied in turn; changes to an empty string other than
/// insertions do nothing.
pub fn apply(mut bytes: Vec<u8>, damage: &[Damage]) -> Vec<u8> {
    let pos = |at: u64, n: usize| (at % n as u64) as usize;
    for d in damage {
        let len = bytes.len();
        if let Damage::Insert { at, bytes: new } = d {
            let at = pos(*at, len + 1);
            bytes.splice(at..at, new.iter().copied());
            continue;
        }
        if len == 0 {
            continue;
        }
        match d {
            Damage::Flip { at, mask } => bytes[pos(*at, len)] ^= mask,
            Damage::Word { at, word } => {
                for (dst, src) in bytes[pos(*at, len)..].iter_mut().zip(word.to_le_bytes()) {
                    *dst = src;
                }
            }
            Damage::Remove { at, len: n } => {
                let at = pos(*at, len);
                bytes.drain(at..at.saturating_add(*n).min(len));
            }
            Damage::Truncate { at } => bytes.truncate(pos(*at, len)),
            Damage::Insert { .. } => {}
        }
    }
    bytes
}
