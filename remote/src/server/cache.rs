//! The cache both protocols serve: the folder, the tokens and the size
//! bound, and the one way an upload is published. HTTP (`http`) and gRPC
//! (`grpc`) only translate requests and answers, so they accept and refuse
//! exactly the same things: a blob only when it hashes to its name and fits
//! the bound, an action result only when it decodes and every blob it names
//! is stored.

use std::io;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::auth::{Access, Denied, Tokens};
use super::disk::{CommitError, Storage};
use super::refs::{self, Refusal};
use crate::layout::{ACTION_RESULT_LIMIT, Hash, Kind};
use strata_store::{Digest, DigestFunction, Hasher};

/// Why an upload was not published.
#[derive(Debug)]
pub enum Rejected {
    /// The content hashes to `actual`, not to the name it was sent under.
    Mismatch { actual: Digest },
    /// The content is not as long as its digest says (gRPC names blobs with
    /// their size, HTTP does not).
    WrongSize { expected: u64, actual: u64 },
    /// Larger than the largest upload accepted.
    TooLarge { limit: u64 },
    /// An action result that does not decode, or that names a blob by a
    /// malformed digest.
    Invalid(String),
    /// An action result naming a blob the cache does not hold (yet).
    Missing(Digest),
    /// Does not fit within `--max-size`, even after evicting what may go.
    NoRoom { max_size: u64 },
    /// The server could not write it; `what` was being done.
    Io {
        what: &'static str,
        error: io::Error,
    },
}

impl Rejected {
    fn io(what: &'static str) -> impl FnOnce(io::Error) -> Rejected {
        move |error| Rejected::Io { what, error }
    }
}

/// The cache: thread-safe, shared by every connection.
pub struct Cache {
    storage: Storage,
    tokens: Tokens,
    /// Largest blob accepted.
    max_blob: u64,
}

impl Cache {
    pub fn new(storage: Storage, tokens: Tokens, max_blob: u64) -> Cache {
        Cache {
            storage,
            tokens,
            max_blob,
        }
    }

    /// Decides a request from its `Authorization` header (HTTP) or
    /// `authorization` metadata (gRPC), the same way for both.
    pub fn check(&self, authorization: Option<&[u8]>, access: Access) -> Result<(), Denied> {
        self.tokens.check(authorization, access)
    }

    pub fn function(&self) -> DigestFunction {
        self.storage.function()
    }

    /// The hash of the empty blob, which the cache always holds.
    pub fn empty(&self) -> &Hash {
        self.storage.empty()
    }

    /// The largest upload of `kind` accepted.
    pub fn limit(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Cas => self.max_blob,
            Kind::Ac => self.max_blob.min(ACTION_RESULT_LIMIT),
        }
    }

    pub fn max_size(&self) -> u64 {
        self.storage.max_size()
    }

    /// Where an entry is stored (for log lines).
    pub fn path(&self, kind: Kind, hash: &Hash) -> std::path::PathBuf {
        self.storage.path(kind, hash)
    }

    /// Opens a stored entry for reading and marks it used; `None` if it is
    /// not stored. The empty blob is never stored, so callers answer it
    /// themselves.
    pub async fn open(
        self: &Arc<Self>,
        kind: Kind,
        hash: Hash,
    ) -> io::Result<Option<(std::fs::File, u64)>> {
        let cache = self.clone();
        tokio::task::spawn_blocking(move || cache.storage.open_read(kind, &hash))
            .await
            .map_err(io::Error::other)?
    }

    /// Whether `blob` is stored with its size (the empty blob always is);
    /// marks it used, as REAPI asks of FindMissingBlobs.
    pub fn has_blob(&self, blob: &Digest) -> bool {
        (blob.size_bytes == 0 && blob.hash == *self.empty()) || self.storage.touch_blob(blob)
    }

    /// Starts receiving a blob into a temporary file.
    pub async fn begin_blob(self: &Arc<Self>) -> Result<BlobUpload, Rejected> {
        let cache = self.clone();
        let temp = blocking("cannot write an upload", move || cache.storage.temp_file()).await?;
        let file = temp
            .as_file()
            .try_clone()
            .map(tokio::fs::File::from_std)
            .map_err(Rejected::io("cannot write an upload"))?;
        Ok(BlobUpload {
            hasher: self.function().hasher(),
            cache: self.clone(),
            temp,
            file,
            received: 0,
        })
    }

    /// Publishes a blob held in memory (a gRPC batch) under `digest`.
    pub async fn store_blob(self: &Arc<Self>, digest: Digest, data: &[u8]) -> Result<(), Rejected> {
        let mut upload = self.begin_blob().await?;
        upload.write(data).await?;
        upload.finish(digest.hash, Some(digest.size_bytes)).await
    }

    /// Checks that `bytes` decode as an action result whose blobs are all
    /// stored, then publishes them under action key `hash`.
    pub async fn store_action_result(
        self: &Arc<Self>,
        hash: Hash,
        bytes: Vec<u8>,
    ) -> Result<(), Rejected> {
        let limit = self.limit(Kind::Ac);
        if bytes.len() as u64 > limit {
            return Err(Rejected::TooLarge { limit });
        }
        let cache = self.clone();
        let checked = blocking("cannot write an upload", move || {
            let refs = match refs::references(&bytes, cache.storage.empty(), &cache.storage) {
                Ok(refs) => refs,
                Err(refusal) => return Ok(Err(refusal)),
            };
            let mut upload = cache.storage.temp_file()?;
            io::Write::write_all(&mut upload, &bytes)?;
            upload.as_file().sync_all()?;
            Ok(Ok((upload, refs)))
        })
        .await?;
        match checked {
            Ok((upload, refs)) => self.commit(Kind::Ac, hash, upload, refs).await,
            Err(Refusal::Invalid(msg)) => Err(Rejected::Invalid(msg)),
            Err(Refusal::Missing(blob)) => Err(Rejected::Missing(blob)),
        }
    }

    async fn commit(
        self: &Arc<Self>,
        kind: Kind,
        hash: Hash,
        upload: tempfile::NamedTempFile,
        refs: Vec<Digest>,
    ) -> Result<(), Rejected> {
        let cache = self.clone();
        let done =
            tokio::task::spawn_blocking(move || cache.storage.commit(kind, &hash, upload, &refs))
                .await
                .map_err(|e| Rejected::Io {
                    what: "cannot store an upload",
                    error: io::Error::other(e),
                })?;
        done.map_err(|e| match e {
            CommitError::TooLarge => Rejected::NoRoom {
                max_size: self.max_size(),
            },
            CommitError::Missing(blob) => Rejected::Missing(blob),
            CommitError::Io(error) => Rejected::Io {
                what: "cannot store an upload",
                error,
            },
        })
    }
}

/// A blob being received: streamed to a temporary file while hashed, so
/// memory stays bounded whatever its size, and published only if it
/// hashes to its name. Dropped unfinished, it leaves nothing behind.
pub struct BlobUpload {
    cache: Arc<Cache>,
    temp: tempfile::NamedTempFile,
    file: tokio::fs::File,
    hasher: Hasher,
    received: u64,
}

impl BlobUpload {
    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Appends `data`; refused once the upload grows past the size bound.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), Rejected> {
        let limit = self.cache.limit(Kind::Cas);
        self.received += data.len() as u64;
        if self.received > limit {
            return Err(Rejected::TooLarge { limit });
        }
        self.hasher.update(data);
        self.file
            .write_all(data)
            .await
            .map_err(Rejected::io("cannot write an upload"))
    }

    /// Checks the content against `hash` (and `size`, when the protocol
    /// names blobs with it) and publishes it.
    pub async fn finish(mut self, hash: Hash, size: Option<u64>) -> Result<(), Rejected> {
        if let Some(expected) = size.filter(|s| *s != self.received) {
            return Err(Rejected::WrongSize {
                expected,
                actual: self.received,
            });
        }
        let synced = async {
            self.file.flush().await?;
            self.file.sync_all().await
        };
        synced
            .await
            .map_err(Rejected::io("cannot write an upload"))?;
        drop(self.file);
        let digest = self.hasher.finish();
        if digest.hash != hash {
            // Removing the temporary file is blocking work.
            let _ = tokio::task::spawn_blocking(move || drop(self.temp)).await;
            return Err(Rejected::Mismatch { actual: digest });
        }
        if digest.size_bytes == 0 {
            // Every cache holds the empty blob without storing it.
            return Ok(());
        }
        self.cache
            .commit(Kind::Cas, hash, self.temp, Vec::new())
            .await
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, Rejected> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Rejected::io(what)),
        Err(e) => Err(Rejected::Io {
            what,
            error: io::Error::other(e),
        }),
    }
}
