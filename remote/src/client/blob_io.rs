//! Moving blob bytes between the network and the local CAS without trusting
//! either side: what a server sends is stored only once it hashes to the
//! digest asked for, and what is uploaded is checked against its digest
//! before its last byte leaves. Large blobs stream in bounded chunks, so
//! memory stays small whatever their size, and disk work runs on tokio's
//! blocking threads.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::RemoteError;
use strata_store::{Cas, Digest, StoreError};

/// Bytes read or sent at once.
pub(crate) const CHUNK: usize = 128 * 1024;
/// Chunks buffered between the network and the disk.
const QUEUE: usize = 4;

/// Refuses a CAS of another digest function: its blobs would be named by
/// other digests than the ones the remote was asked about.
pub(crate) fn check_function(
    cas: &Cas,
    function: strata_store::DigestFunction,
) -> Result<(), RemoteError> {
    if cas.function() == function {
        Ok(())
    } else {
        Err(RemoteError::config(format!(
            "cannot exchange {function} blobs with a {} store",
            cas.function()
        )))
    }
}

/// Stores `bytes`, received whole, if they are the blob `expected`.
pub(crate) async fn store_verified(
    cas: &Cas,
    expected: Digest,
    bytes: Vec<u8>,
    server: &str,
) -> Result<(), RemoteError> {
    let actual = cas.function().of_bytes(&bytes);
    if actual != expected {
        return Err(RemoteError::DigestMismatch {
            server: server.to_string(),
            expected,
            actual: Some(actual),
        });
    }
    let cas = cas.clone();
    blocking(move || cas.put_bytes(&bytes).map(drop)).await
}

/// Reads a stored blob whole (for small ones), checked against its digest.
pub(crate) async fn read_verified(cas: &Cas, digest: Digest) -> Result<Vec<u8>, RemoteError> {
    let cas = cas.clone();
    blocking(move || cas.read(&digest)).await
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, RemoteError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(RemoteError::Store),
        Err(e) => Err(worker_died(e)),
    }
}

fn worker_died(e: tokio::task::JoinError) -> RemoteError {
    RemoteError::Store(StoreError::Io {
        context: "the blob transfer worker stopped",
        path: "<blob>".into(),
        source: std::io::Error::other(e.to_string()),
    })
}

enum Piece {
    Data(Bytes),
    /// Everything was received: publish if the bytes are right.
    Commit,
}

enum Verdict {
    Stored,
    Mismatch(Digest),
    /// The sender went away without committing.
    Abandoned,
}

/// A blob being received in order, chunk by chunk. Dropped or refused, it
/// leaves nothing in the store.
pub(crate) struct Incoming {
    chunks: Option<mpsc::Sender<Piece>>,
    task: Option<JoinHandle<Result<Verdict, StoreError>>>,
    received: u64,
    expected: Digest,
    server: String,
}

impl Incoming {
    pub(crate) fn start(cas: &Cas, expected: Digest, server: &str) -> Incoming {
        let (chunks, mut rx) = mpsc::channel::<Piece>(QUEUE);
        let cas = cas.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut writer = cas.writer()?;
            let mut hasher = cas.function().hasher();
            while let Some(piece) = rx.blocking_recv() {
                match piece {
                    Piece::Data(bytes) => {
                        hasher.update(&bytes);
                        writer
                            .write_all(&bytes)
                            .map_err(|e| StoreError::io("cannot write", "<blob>", e))?;
                    }
                    Piece::Commit => {
                        let actual = hasher.finish();
                        if actual != expected {
                            return Ok(Verdict::Mismatch(actual));
                        }
                        writer.finish()?;
                        return Ok(Verdict::Stored);
                    }
                }
            }
            Ok(Verdict::Abandoned)
        });
        Incoming {
            chunks: Some(chunks),
            task: Some(task),
            received: 0,
            expected,
            server: server.to_string(),
        }
    }

    /// Takes the next chunk; refuses as soon as the server sends more bytes
    /// than the blob has, so a hostile server cannot fill the disk.
    pub(crate) async fn push(&mut self, chunk: Bytes) -> Result<(), RemoteError> {
        self.received = self.received.saturating_add(chunk.len() as u64);
        if self.received > self.expected.size_bytes {
            return Err(RemoteError::DigestMismatch {
                server: self.server.clone(),
                expected: self.expected,
                actual: None,
            });
        }
        let sent = match &self.chunks {
            Some(tx) => tx.send(Piece::Data(chunk)).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The writer stopped: its own outcome says why.
            Err(self
                .outcome()
                .await
                .err()
                .unwrap_or_else(|| stopped("finished early")))
        }
    }

    /// Publishes the blob if its bytes hash to the digest asked for.
    pub(crate) async fn finish(mut self) -> Result<(), RemoteError> {
        if let Some(tx) = &self.chunks {
            // A failed send means the writer already stopped; its outcome
            // says why.
            let _ = tx.send(Piece::Commit).await;
        }
        self.outcome().await
    }

    async fn outcome(&mut self) -> Result<(), RemoteError> {
        self.chunks = None;
        let Some(task) = self.task.take() else {
            return Err(stopped("already ended"));
        };
        match task.await {
            Ok(Ok(Verdict::Stored)) => Ok(()),
            Ok(Ok(Verdict::Mismatch(actual))) => Err(RemoteError::DigestMismatch {
                server: self.server.clone(),
                expected: self.expected,
                actual: Some(actual),
            }),
            Ok(Ok(Verdict::Abandoned)) => Err(stopped("abandoned")),
            Ok(Err(e)) => Err(RemoteError::Store(e)),
            Err(e) => Err(worker_died(e)),
        }
    }
}

fn stopped(why: &str) -> RemoteError {
    RemoteError::Store(StoreError::io(
        "the blob writer stopped",
        "<blob>",
        std::io::Error::other(why.to_string()),
    ))
}

/// One piece of a blob being uploaded; `last` is set on the final one, which
/// is handed out only after the whole blob was checked against its digest.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub(crate) data: Bytes,
    pub(crate) last: bool,
}

/// A stored blob being read for upload, chunk by chunk. A local blob found
/// corrupt ends the chunks before the last one, so a server never receives
/// it whole, and is reported by [`Outgoing::failure`].
pub(crate) struct Outgoing {
    file: tokio::fs::File,
    path: PathBuf,
    digest: Digest,
    hasher: Option<strata_store::Hasher>,
    read: u64,
    held: Option<Bytes>,
    failure: Failure,
}

/// Where an [`Outgoing`] leaves the reason it stopped early; kept by the
/// uploader while the chunks go to the transport.
#[derive(Clone, Default)]
pub(crate) struct Failure(Arc<Mutex<Option<StoreError>>>);

impl Failure {
    fn set(&self, e: StoreError) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(e);
        }
    }

    pub(crate) fn take(&self) -> Option<StoreError> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

impl Outgoing {
    pub(crate) async fn open(cas: &Cas, digest: Digest) -> Result<Outgoing, RemoteError> {
        let path = cas.path(&digest);
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RemoteError::Store(StoreError::Missing { digest }));
            }
            Err(e) => return Err(RemoteError::Store(StoreError::io("cannot open", path, e))),
        };
        Ok(Outgoing {
            file,
            path,
            digest,
            hasher: Some(cas.function().hasher()),
            read: 0,
            held: None,
            failure: Failure::default(),
        })
    }

    pub(crate) fn failure(&self) -> Failure {
        self.failure.clone()
    }

    /// The next chunk, or `None` once the last was handed out or the blob
    /// turned out unreadable or corrupt (see [`Outgoing::failure`]).
    pub(crate) async fn next(&mut self) -> Option<Chunk> {
        loop {
            let hasher = self.hasher.as_mut()?;
            let mut buf = vec![0u8; CHUNK];
            let n = match self.file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.hasher = None;
                    self.failure
                        .set(StoreError::io("cannot read", self.path.clone(), e));
                    return None;
                }
            };
            if n == 0 {
                let actual = self.hasher.take()?.finish();
                if actual != self.digest {
                    self.failure.set(StoreError::Corrupt {
                        digest: self.digest,
                        actual,
                    });
                    return None;
                }
                return Some(Chunk {
                    data: self.held.take().unwrap_or_default(),
                    last: true,
                });
            }
            buf.truncate(n);
            hasher.update(&buf);
            self.read += n as u64;
            if self.read > self.digest.size_bytes {
                // Longer than the blob: keep hashing to name what it is, but
                // send nothing more.
                self.held = None;
                continue;
            }
            if let Some(previous) = self.held.replace(Bytes::from(buf)) {
                return Some(Chunk {
                    data: previous,
                    last: false,
                });
            }
        }
    }
}
