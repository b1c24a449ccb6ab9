//! The content-addressable storage: immutable blobs named by their digest.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::atomic;
use crate::error::{Result, StoreError};
use crate::{Digest, DigestFunction};

/// Mode of every blob on disk: read-only, so a hard link handed to a user or a
/// step cannot be written through by accident.
pub const BLOB_MODE: u32 = 0o444;

/// Blobs live at `<root>/<function>/<first two hex digits>/<hex>-<size>`.
///
/// Guarantees: a blob is published only after its bytes are fsynced and its
/// digest checked, by rename, so a blob file is either absent or whole.
/// Any number of processes may write the same blob at once. Thread-safe.
#[derive(Clone, Debug)]
pub struct Cas {
    root: PathBuf,
    tmp: PathBuf,
    function: DigestFunction,
}

impl Cas {
    pub(crate) fn new(root: PathBuf, tmp: PathBuf, function: DigestFunction) -> Self {
        Cas {
            root: root.join(function.name()),
            tmp,
            function,
        }
    }

    pub fn function(&self) -> DigestFunction {
        self.function
    }

    /// Where the blob with `digest` is (or would be) stored.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join(&hex[..2])
            .join(format!("{hex}-{}", digest.size_bytes))
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Stores `bytes`; idempotent.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = self.function.of_bytes(bytes);
        let dest = self.path(&digest);
        if !dest.exists() {
            atomic::write_atomic(&self.tmp, &dest, bytes, BLOB_MODE)?;
        }
        Ok(digest)
    }

    /// Stores the content of `src` by copying it; `src` is left untouched.
    pub fn put_file_copy(&self, src: &Path) -> Result<Digest> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.tmp)
            .map_err(|e| StoreError::io("cannot create a temporary file", &self.tmp, e))?;
        let mut input = File::open(src).map_err(|e| StoreError::io("cannot open", src, e))?;
        let mut hasher = self.function.hasher();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::io("cannot read", src, e)),
            };
            hasher.update(&buf[..n]);
            io::Write::write_all(&mut tmp, &buf[..n])
                .map_err(|e| StoreError::io("cannot write", tmp.path(), e))?;
        }
        let digest = hasher.finish();
        let dest = self.path(&digest);
        if dest.exists() {
            return Ok(digest);
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| StoreError::io("cannot write", tmp.path(), e))?;
        atomic::publish(tmp, &dest, BLOB_MODE)?;
        Ok(digest)
    }

    /// A writer whose bytes become one blob when [`BlobWriter::finish`] is
    /// called; for outputs too large to hold in memory.
    pub fn writer(&self) -> Result<BlobWriter<'_>> {
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.tmp)
            .map_err(|e| StoreError::io("cannot create a temporary file", &self.tmp, e))?;
        Ok(BlobWriter {
            cas: self,
            out: io::BufWriter::new(tmp),
            hasher: self.function.hasher(),
        })
    }

    /// Stores the content of `src` by moving it into the store. `src` must be
    /// on the store's file system and must not be written by anyone else.
    pub fn put_file_move(&self, src: &Path) -> Result<Digest> {
        let file = File::open(src).map_err(|e| StoreError::io("cannot open", src, e))?;
        let digest = self
            .function
            .of_reader(&file)
            .map_err(|e| StoreError::io("cannot read", src, e))?;
        let dest = self.path(&digest);
        if dest.exists() {
            return Ok(digest);
        }
        file.sync_all()
            .map_err(|e| StoreError::io("cannot write", src, e))?;
        fs::set_permissions(src, fs::Permissions::from_mode(BLOB_MODE))
            .map_err(|e| StoreError::io("cannot set permissions", src, e))?;
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| StoreError::io("cannot create folder", parent, e))?;
        }
        match fs::rename(src, &dest) {
            Ok(()) => Ok(digest),
            // A different file system: fall back to a copy.
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => self.put_file_copy(src),
            Err(e) => Err(StoreError::io("cannot move into the store", src, e)),
        }
    }

    /// Reads a whole blob and checks it against its digest.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.path(digest);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { digest: *digest });
            }
            Err(e) => return Err(StoreError::io("cannot read", path, e)),
        };
        let actual = self.function.of_bytes(&bytes);
        if actual != *digest {
            return Err(StoreError::Corrupt {
                digest: *digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// Stores a protobuf message in its canonical encoding.
    pub fn put_message<M: prost::Message>(&self, msg: &M) -> Result<Digest> {
        self.put_bytes(&msg.encode_to_vec())
    }

    /// Reads and decodes a protobuf message.
    pub fn get_message<M: prost::Message + Default>(
        &self,
        digest: &Digest,
        what: &'static str,
    ) -> Result<M> {
        let bytes = self.read(digest)?;
        M::decode(bytes.as_slice()).map_err(|e| StoreError::Decode {
            digest: *digest,
            what,
            reason: e.to_string(),
        })
    }

    /// Files under the object folders that are not named like objects
    /// (`<2 hex>/<64 hex>-<size>`), which a healthy store never has.
    pub fn stray_files(&self) -> Vec<PathBuf> {
        walkdir::WalkDir::new(&self.root)
            .min_depth(1)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| {
                let ok = match e.depth() {
                    1 => e.file_type().is_dir() && e.file_name().len() == 2,
                    2 => {
                        e.file_type().is_file()
                            && e.file_name()
                                .to_str()
                                .and_then(|n| n.split_once('-'))
                                .is_some_and(|(h, sz)| {
                                    Digest::from_hex(h, 0).is_some()
                                        && sz.parse::<u64>().is_ok()
                                        && e.path()
                                            .parent()
                                            .and_then(|p| p.file_name())
                                            .and_then(|p| p.to_str())
                                            == Some(&h[..2])
                                })
                    }
                    _ => false,
                };
                !ok
            })
            .map(|e| e.into_path())
            .collect()
    }

    /// Every blob on disk, for verification and statistics.
    pub fn list(&self) -> impl Iterator<Item = (Digest, PathBuf)> + '_ {
        walkdir::WalkDir::new(&self.root)
            .min_depth(2)
            .max_depth(2)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?;
                let (hex, size) = name.split_once('-')?;
                let digest = Digest::from_hex(hex, size.parse().ok()?)?;
                Some((digest, e.into_path()))
            })
    }
}

/// Streams bytes into a new blob; see [`Cas::writer`]. Dropped without
/// `finish`, it leaves nothing in the store.
pub struct BlobWriter<'a> {
    cas: &'a Cas,
    out: io::BufWriter<tempfile::NamedTempFile>,
    hasher: crate::Hasher,
}

impl io::Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl BlobWriter<'_> {
    /// Publishes the blob (fsync, rename) and returns its digest.
    pub fn finish(self) -> Result<Digest> {
        let digest = self.hasher.finish();
        let tmp = self
            .out
            .into_inner()
            .map_err(|e| StoreError::io("cannot write", "<blob>", e.into_error()))?;
        let dest = self.cas.path(&digest);
        if dest.exists() {
            return Ok(digest);
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| StoreError::io("cannot write", tmp.path(), e))?;
        atomic::publish(tmp, &dest, BLOB_MODE)?;
        Ok(digest)
    }
}
