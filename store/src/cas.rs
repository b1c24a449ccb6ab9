//! The content-addressable storage: immutable blobs named by their digest.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::atomic;
use crate::durability::Durability;
use crate::error::{Result, StoreError};
use crate::{Digest, DigestFunction};

/// Mode of every blob on disk: read-only, so a hard link handed to a user or a
/// step cannot be written through by accident.
pub const BLOB_MODE: u32 = 0o444;

/// Blobs live at `<root>/<function>/<first two hex digits>/<hex>-<size>`.
///
/// Guarantees: a blob is published whole (written, its digest checked,
/// then renamed into place), so a blob file is either absent or whole while
/// the machine runs. It is not synced on its own: the action-cache entry
/// that names it waits for a `syncfs` first, and a power cut before that is
/// recovered from when the store is next opened (see `durability`).
/// Any number of processes may write the same blob at once. Thread-safe.
#[derive(Clone, Debug)]
pub struct Cas {
    root: PathBuf,
    tmp: PathBuf,
    function: DigestFunction,
    durability: Arc<Durability>,
}

impl Cas {
    pub(crate) fn new(
        root: PathBuf,
        tmp: PathBuf,
        function: DigestFunction,
        durability: Arc<Durability>,
    ) -> Self {
        Cas {
            root: root.join(function.name()),
            tmp,
            function,
            durability,
        }
    }

    pub fn function(&self) -> DigestFunction {
        self.function
    }

    /// Where the blob with `digest` is (or would be) stored.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        use std::fmt::Write;
        // One allocation for the name and one for the path: a no-op build
        // names a few blobs per target.
        let mut name = digest.hex();
        let _ = write!(name, "-{}", digest.size_bytes);
        let mut path = PathBuf::with_capacity(self.root.as_os_str().len() + name.len() + 4);
        path.push(&self.root);
        path.push(&name[..2]);
        path.push(&name);
        path
    }

    /// Whether the blob is stored whole. A file of another size than its
    /// name says (written to behind the store's back) counts as absent, so
    /// the step or remote that made it makes it again, and the next write
    /// of the blob replaces the file. A stat, no reading.
    pub fn contains(&self, digest: &Digest) -> bool {
        fs::metadata(self.path(digest)).is_ok_and(|m| m.is_file() && m.len() == digest.size_bytes)
    }

    /// Stores `bytes`; idempotent.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = self.function.of_bytes(bytes);
        if !self.contains(&digest) {
            let tmp = atomic::write_temporary(&self.tmp, bytes)?;
            self.durability.note_unsynced()?;
            atomic::publish(tmp, &self.path(&digest), BLOB_MODE)?;
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
        if self.contains(&digest) {
            return Ok(digest);
        }
        self.durability.note_unsynced()?;
        atomic::publish(tmp, &self.path(&digest), BLOB_MODE)?;
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

    /// A new empty file in the store's temporary folder, read, written and
    /// sought at will (a file-system image is laid out out of order), that
    /// becomes one blob when [`ScratchFile::finish`] is called. Dropped
    /// without `finish`, it leaves nothing behind.
    pub fn scratch_file(&self) -> Result<ScratchFile<'_>> {
        let file = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.tmp)
            .map_err(|e| StoreError::io("cannot create a temporary file", &self.tmp, e))?;
        Ok(ScratchFile { cas: self, file })
    }

    /// Stores the content of `src` by moving it into the store. `src` must be
    /// on the store's file system and must not be written by anyone else.
    pub fn put_file_move(&self, src: &Path) -> Result<Digest> {
        let file = File::open(src).map_err(|e| StoreError::io("cannot open", src, e))?;
        let digest = self
            .function
            .of_reader(&file)
            .map_err(|e| StoreError::io("cannot read", src, e))?;
        if self.contains(&digest) {
            return Ok(digest);
        }
        let dest = self.path(&digest);
        self.durability.note_unsynced()?;
        fs::set_permissions(src, fs::Permissions::from_mode(BLOB_MODE))
            .map_err(|e| StoreError::io("cannot set permissions", src, e))?;
        let moved = match fs::rename(src, &dest) {
            // The first object of its folder: make the folder, then again.
            Err(e) if e.kind() == io::ErrorKind::NotFound && src.exists() => {
                atomic::create_parent(&dest)?;
                fs::rename(src, &dest)
            }
            moved => moved,
        };
        match moved {
            Ok(()) => Ok(digest),
            // A different file system: fall back to a copy.
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => self.put_file_copy(src),
            Err(e) => Err(StoreError::io("cannot move into the store", src, e)),
        }
    }

    /// Reads a whole blob and checks it against its digest. A blob that
    /// fails the check is dropped (see [`Cas::drop_corrupt`]).
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.path(digest);
        // The digest says how long the blob is: reading one byte more than
        // that shows a longer file, without asking the file its size (an
        // `fstat` and an `lseek` per read, thousands per no-op build).
        let size = digest.size_bytes;
        let read = File::open(&path).and_then(|mut f| {
            let mut bytes = Vec::with_capacity(size.min(1 << 26) as usize + 1);
            (&mut f)
                .take(size.saturating_add(1))
                .read_to_end(&mut bytes)
                .map(|_| (f, bytes))
        });
        let (file, bytes) = match read {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { digest: *digest });
            }
            Err(e) => return Err(StoreError::io("cannot read", path, e)),
        };
        let actual = self.function.of_bytes(&bytes);
        if actual != *digest {
            self.drop_corrupt(digest, &file);
            return Err(StoreError::Corrupt {
                digest: *digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// Removes the blob `digest`, found not to hash to its name through the
    /// open `file`, so the step or remote that made it makes it again
    /// instead of every reader failing on it. Only if the path still names
    /// that file: a writer may have just replaced it with good bytes.
    pub fn drop_corrupt(&self, digest: &Digest, file: &File) {
        use std::os::unix::fs::MetadataExt;
        let path = self.path(digest);
        let same = |a: &fs::Metadata, b: &fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
        if let (Ok(opened), Ok(named)) = (file.metadata(), fs::metadata(&path))
            && same(&opened, &named)
        {
            let _ = fs::remove_file(&path);
        }
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
        list_blobs(&self.root)
    }
}

/// The blobs in `root`, one digest function's folder.
pub(crate) fn list_blobs(root: &Path) -> impl Iterator<Item = (Digest, PathBuf)> {
    walkdir::WalkDir::new(root)
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
    /// Publishes the blob (rename) and returns its digest.
    pub fn finish(self) -> Result<Digest> {
        let digest = self.hasher.finish();
        let tmp = self
            .out
            .into_inner()
            .map_err(|e| StoreError::io("cannot write", "<blob>", e.into_error()))?;
        if self.cas.contains(&digest) {
            return Ok(digest);
        }
        self.cas.durability.note_unsynced()?;
        atomic::publish(tmp, &self.cas.path(&digest), BLOB_MODE)?;
        Ok(digest)
    }
}

/// A seekable temporary file in the store; see [`Cas::scratch_file`].
pub struct ScratchFile<'a> {
    cas: &'a Cas,
    file: tempfile::NamedTempFile,
}

impl ScratchFile<'_> {
    /// The open file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_file_mut()
    }

    /// Stores the file's content as a blob (moved, not copied) and returns
    /// its digest.
    pub fn finish(self) -> Result<Digest> {
        let path = self.file.into_temp_path();
        let digest = self.cas.put_file_move(&path)?;
        // Moved into the store, or equal to a blob already there: either
        // way the temporary name is gone or may go.
        drop(path);
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::Store;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), DigestFunction::Blake3).unwrap();
        (d, s)
    }

    /// Changes a blob behind the store's back, as a write through a hard
    /// link did.
    fn tamper(path: &Path, append: &[u8], flip: bool) {
        let mut bytes = fs::read(path).unwrap();
        if flip {
            bytes[0] ^= 1;
        }
        bytes.extend_from_slice(append);
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_scratch_file_written_out_of_order_becomes_one_blob() {
        use std::io::{Seek, SeekFrom};
        let (_d, s) = store();
        let cas = s.cas();
        let mut f = cas.scratch_file().unwrap();
        f.file().write_all(b"xxxxx.world").unwrap();
        f.file().seek(SeekFrom::Start(0)).unwrap();
        f.file().write_all(b"hello").unwrap();
        let d = f.finish().unwrap();
        assert_eq!(d, DigestFunction::Blake3.of_bytes(b"hello.world"));
        assert_eq!(cas.read(&d).unwrap(), b"hello.world");
        // The same bytes again: the blob stays, nothing is left behind;
        // a scratch file dropped unfinished leaves nothing either.
        let mut again = cas.scratch_file().unwrap();
        again.file().write_all(b"hello.world").unwrap();
        assert_eq!(again.finish().unwrap(), d);
        let mut dropped = cas.scratch_file().unwrap();
        dropped.file().write_all(b"partial").unwrap();
        drop(dropped);
        assert_eq!(std::fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn a_blob_of_the_wrong_size_is_absent_and_every_writer_replaces_it() {
        let (d, s) = store();
        let cas = s.cas();
        let bytes = b"Welcome to the Strata appliance\n";
        let digest = cas.put_bytes(bytes).unwrap();
        let writers: [&dyn Fn() -> Digest; 4] = [
            &|| cas.put_bytes(bytes).unwrap(),
            &|| {
                let src = d.path().join("copy");
                fs::write(&src, bytes).unwrap();
                cas.put_file_copy(&src).unwrap()
            },
            &|| {
                let src = s.tmp_dir().join("move");
                fs::write(&src, bytes).unwrap();
                cas.put_file_move(&src).unwrap()
            },
            &|| {
                let mut w = cas.writer().unwrap();
                w.write_all(bytes).unwrap();
                w.finish().unwrap()
            },
        ];
        for write in writers {
            tamper(&cas.path(&digest), b"x\n", false);
            assert!(!cas.contains(&digest));
            assert_eq!(write(), digest);
            assert!(cas.contains(&digest));
            assert_eq!(cas.read(&digest).unwrap(), bytes);
        }
    }

    #[test]
    fn reading_a_blob_that_fails_its_digest_drops_it() {
        let (_d, s) = store();
        let digest = s.cas().put_bytes(b"some bytes").unwrap();
        tamper(&s.cas().path(&digest), b"", true);
        assert!(s.cas().contains(&digest), "the size is right");
        assert!(matches!(
            s.cas().read(&digest),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(!s.cas().path(&digest).exists(), "dropped, to be made again");
        s.cas().put_bytes(b"some bytes").unwrap();
        assert_eq!(s.cas().read(&digest).unwrap(), b"some bytes");
    }
}
