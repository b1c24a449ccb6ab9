//! Digests and digest functions.
//!
//! The store is parameterised by one digest function for its whole lifetime
//! (BLAKE3 by default, SHA-256 for remotes that only speak it). Objects of
//! different functions live in different folders and are never mixed.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

/// The hash function behind every digest of one store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestFunction {
    Blake3,
    Sha256,
}

impl DigestFunction {
    /// Every function a store may hold objects of, each in its own folder.
    pub const ALL: [DigestFunction; 2] = [DigestFunction::Blake3, DigestFunction::Sha256];

    /// Lower-case name as used in REAPI resource names and in `<fn>:<hex>` strings.
    pub fn name(self) -> &'static str {
        match self {
            DigestFunction::Blake3 => "blake3",
            DigestFunction::Sha256 => "sha256",
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            DigestFunction::Blake3 => Hasher::new(HasherInner::Blake3(Box::default())),
            DigestFunction::Sha256 => {
                Hasher::new(HasherInner::Sha256(<sha2::Sha256 as sha2::Digest>::new()))
            }
        }
    }

    /// `<function>:<hex>`, the form users see and `output_digest` accepts.
    pub fn qualified(self, digest: &Digest) -> String {
        format!("{self}:{}", digest.hex())
    }

    /// Digest of an in-memory byte string.
    pub fn of_bytes(self, bytes: &[u8]) -> Digest {
        let mut h = self.hasher();
        h.update(bytes);
        h.finish()
    }

    /// Digest of everything `reader` yields, read in 64 KiB chunks.
    pub fn of_reader(self, mut reader: impl Read) -> io::Result<Digest> {
        let mut h = self.hasher();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            h.update(&buf[..n]);
        }
        Ok(h.finish())
    }
}

impl fmt::Display for DigestFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DigestFunction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "blake3" => Ok(DigestFunction::Blake3),
            "sha256" | "sha-256" => Ok(DigestFunction::Sha256),
            other => Err(format!(
                "unknown digest function `{other}` (expected blake3 or sha256)"
            )),
        }
    }
}

/// A streaming hasher for one digest function; it counts the bytes it sees
/// so the resulting [`Digest`] carries the REAPI size.
pub struct Hasher {
    inner: HasherInner,
    size: u64,
}

enum HasherInner {
    Blake3(Box<blake3::Hasher>),
    Sha256(sha2::Sha256),
}

impl Hasher {
    fn new(inner: HasherInner) -> Self {
        Hasher { inner, size: 0 }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        match &mut self.inner {
            HasherInner::Blake3(h) => {
                h.update(bytes);
            }
            HasherInner::Sha256(h) => sha2::Digest::update(h, bytes),
        }
    }

    pub fn finish(self) -> Digest {
        let hash: [u8; 32] = match self.inner {
            HasherInner::Blake3(h) => *h.finalize().as_bytes(),
            HasherInner::Sha256(h) => sha2::Digest::finalize(h).into(),
        };
        Digest::new(hash, self.size)
    }
}

/// The REAPI identity of a blob: hash and size.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    pub hash: [u8; 32],
    pub size_bytes: u64,
}

impl Digest {
    pub fn new(hash: [u8; 32], size_bytes: u64) -> Self {
        Digest { hash, size_bytes }
    }

    pub fn hex(&self) -> String {
        hex_of(&self.hash)
    }

    /// Parses the lower-case hex form of a hash; the size is supplied separately.
    pub fn from_hex(hex_hash: &str, size_bytes: u64) -> Option<Digest> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(hex_hash, &mut hash).ok()?;
        Some(Digest { hash, size_bytes })
    }

    pub fn to_proto(&self) -> crate::reapi::Digest {
        crate::reapi::Digest {
            hash: self.hex(),
            size_bytes: self.size_bytes as i64,
        }
    }

    pub fn from_proto(d: &crate::reapi::Digest) -> Option<Digest> {
        if d.size_bytes < 0 {
            return None;
        }
        Digest::from_hex(&d.hash, d.size_bytes as u64)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.hex(), self.size_bytes)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// The lower-case hex form of `hash`, by table: a no-op build names some
/// fifteen blobs and entries per target by it, and the `hex` crate's
/// `encode` collects a `String` one `char` at a time.
pub fn hex_of(hash: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, b) in out.chunks_exact_mut(2).zip(hash) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    String::from_utf8(out.to_vec()).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_of_is_the_lower_case_hex_form() {
        let hash: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        assert_eq!(super::hex_of(&hash), hex::encode(hash));
    }
}
