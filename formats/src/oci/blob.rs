//! Image blobs: bytes in the store that are also named by their SHA-256, as
//! images name them, whatever digest function the store uses.

use std::fs::File;
use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};
use strata_store::{BlobWriter, Cas, Digest, StoreError};

use crate::FormatError;

/// One content-addressed blob of an image: its OCI descriptor fields and
/// the same bytes in the CAS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    /// `sha256:<hex>`.
    pub sha256: String,
    pub size: u64,
    pub stored: Digest,
}

impl Blob {
    /// Stores `bytes` as a blob of `media_type`.
    pub fn from_bytes(cas: &Cas, media_type: &str, bytes: &[u8]) -> Result<Blob, FormatError> {
        Ok(Blob {
            media_type: media_type.into(),
            sha256: sha256_name(&Sha256::digest(bytes)),
            size: bytes.len() as u64,
            stored: cas.put_bytes(bytes)?,
        })
    }

    /// Describes a blob already in the store (read once to hash it).
    pub fn from_stored(cas: &Cas, media_type: &str, stored: Digest) -> Result<Blob, FormatError> {
        let (sha256, size) = sha256_of_stored(cas, &stored)?;
        Ok(Blob {
            media_type: media_type.into(),
            sha256,
            size,
            stored,
        })
    }

    /// The bare hex of the SHA-256 (the file name under `blobs/sha256/`).
    pub fn hex(&self) -> &str {
        self.sha256.strip_prefix("sha256:").unwrap_or(&self.sha256)
    }

    /// The descriptor of this blob.
    pub fn descriptor(&self) -> super::spec::Descriptor {
        super::spec::Descriptor {
            media_type: self.media_type.clone(),
            digest: self.sha256.clone(),
            size: self.size,
            platform: None,
            annotations: Default::default(),
        }
    }
}

/// A writer whose bytes become a [`Blob`]: streamed into the store while
/// their SHA-256 is computed, so a large layer is never held in memory.
pub struct BlobSink<'a> {
    out: BlobWriter<'a>,
    sha: Sha256,
    size: u64,
}

impl<'a> BlobSink<'a> {
    pub fn new(cas: &'a Cas) -> Result<BlobSink<'a>, FormatError> {
        Ok(BlobSink {
            out: cas.writer()?,
            sha: Sha256::new(),
            size: 0,
        })
    }

    /// Publishes the bytes written as a blob of `media_type`.
    pub fn finish(self, media_type: &str) -> Result<Blob, FormatError> {
        Ok(Blob {
            media_type: media_type.into(),
            sha256: sha256_name(&self.sha.finalize()),
            size: self.size,
            stored: self.out.finish()?,
        })
    }
}

impl Write for BlobSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.sha.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A reader that hashes what passes through it (SHA-256) and counts it.
pub(crate) struct HashingReader<R> {
    inner: R,
    sha: Sha256,
    pub(crate) count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> HashingReader<R> {
        HashingReader {
            inner,
            sha: Sha256::new(),
            count: 0,
        }
    }

    /// `sha256:<hex>` of everything read so far.
    pub(crate) fn sha256(&self) -> String {
        sha256_name(&self.sha.clone().finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Opens a stored blob for reading.
pub(crate) fn open_stored(cas: &Cas, stored: &Digest) -> Result<File, FormatError> {
    File::open(cas.path(stored)).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => StoreError::Missing { digest: *stored }.into(),
        _ => FormatError::Io(e),
    })
}

/// `sha256:<hex>` and size of a stored blob.
pub(crate) fn sha256_of_stored(cas: &Cas, stored: &Digest) -> Result<(String, u64), FormatError> {
    let mut r = HashingReader::new(open_stored(cas, stored)?);
    io::copy(&mut r, &mut io::sink())?;
    Ok((r.sha256(), r.count))
}

fn sha256_name(hash: &[u8]) -> String {
    format!("sha256:{}", hex::encode(hash))
}

/// Whether `digest` is `sha256:` and 64 lower-case hex digits: the only
/// form used as a file name under `blobs/sha256/`.
pub fn is_sha256_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::fixture;

    #[test]
    fn a_streamed_blob_is_named_like_one_stored_whole() {
        let f = fixture();
        let cas = f.store.cas();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let whole = Blob::from_bytes(cas, "m", &data).unwrap();
        let mut sink = BlobSink::new(cas).unwrap();
        for chunk in data.chunks(7777) {
            sink.write_all(chunk).unwrap();
        }
        let streamed = sink.finish("m").unwrap();
        assert_eq!(whole, streamed);
        assert_eq!(Blob::from_stored(cas, "m", whole.stored).unwrap(), whole);
        assert_eq!(cas.read(&whole.stored).unwrap(), data);
        // The SHA-256 of "abc", well known.
        let abc = Blob::from_bytes(cas, "m", b"abc").unwrap();
        assert_eq!(
            abc.sha256,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(abc.hex(), &abc.sha256[7..]);
        assert!(is_sha256_digest(&abc.sha256));
        assert!(!is_sha256_digest(&abc.sha256.to_uppercase()));
        assert!(!is_sha256_digest("sha256:../../etc"));
        assert!(!is_sha256_digest("sha512:00"));
    }
}
