//! Streaming a stored tree to the engine as a tar, in bounded memory.
//!
//! A blocking thread writes the tar ([`tarball::write_tree`]) in chunks into
//! a bounded channel; the request body reads from it. If the tree cannot be
//! read (a blob missing), the body ends with an error instead of a short
//! tar, so the engine never takes a truncated archive for a whole one.

use std::io::{self, Write};

use bytes::Bytes;
use futures_util::Stream;
use strata_formats::FormatError;
use strata_formats::tarball::{self, TarOptions};
use strata_store::{Cas, Digest};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::DockerError;

/// Bytes per chunk sent to the engine.
const CHUNK: usize = 256 << 10;

/// Chunks in flight: at most `CHUNK * (DEPTH + 1)` bytes are held.
const DEPTH: usize = 4;

/// Why the writer stopped early.
pub(crate) enum WriteFailure {
    /// The tree could not be read or written as a tar.
    Tree(FormatError),
    /// The request stopped reading (the engine refused the upload, or the
    /// upload was cancelled): its own error says why.
    Closed,
}

type Chunk = Result<Bytes, io::Error>;

/// A tar of `root` as a request body, and the thread producing it.
pub(crate) fn tree_tar(
    cas: &Cas,
    root: Digest,
    opts: TarOptions,
) -> (
    impl Stream<Item = Chunk> + Send + 'static,
    JoinHandle<Result<(), WriteFailure>>,
) {
    let (tx, rx) = mpsc::channel::<Chunk>(DEPTH);
    let cas = cas.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = tarball::write_tree(&cas, &root, out, &opts).and_then(|mut w| {
            w.send()?;
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(FormatError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                Err(WriteFailure::Closed)
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
                Err(WriteFailure::Tree(e))
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    (body, writer)
}

/// Combines the outcome of an upload request with its writer's: a tree that
/// could not be read is the cause of whatever the engine said; otherwise
/// the engine's answer is.
pub(crate) async fn finish(
    request: Result<(), DockerError>,
    writer: JoinHandle<Result<(), WriteFailure>>,
    what: &str,
) -> Result<(), DockerError> {
    let written = writer
        .await
        .map_err(|e| DockerError::refused(what, format!("the tar writer failed: {e}")))?;
    match (written, request) {
        (Err(WriteFailure::Tree(e)), _) => Err(DockerError::Archive {
            what: format!("{what}: cannot write the tree as a tar"),
            source: e,
        }),
        (_, Err(e)) => Err(e),
        (Err(WriteFailure::Closed), Ok(())) => Err(DockerError::refused(
            what,
            "the engine answered before reading the whole archive",
        )),
        (Ok(()), Ok(())) => Ok(()),
    }
}

struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped reading"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use strata_store::tree::{Node, TreeBuilder};

    fn store() -> (tempfile::TempDir, strata_store::Store) {
        let d = tempfile::tempdir().unwrap();
        let s = strata_store::Store::open(d.path(), strata_store::DigestFunction::Blake3).unwrap();
        (d, s)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_stream_carries_the_same_bytes_as_write_tree() {
        let (_d, s) = store();
        let big: Vec<u8> = (0..3 * CHUNK as u32).map(|i| (i % 251) as u8).collect();
        let mut b = TreeBuilder::new();
        b.insert("a/big", Node::file(s.cas().put_bytes(&big).unwrap(), false))
            .unwrap();
        b.insert("b", Node::file(s.cas().put_bytes(b"x").unwrap(), true))
            .unwrap();
        let root = b.store(s.cas()).unwrap();
        let expected =
            tarball::write_tree(s.cas(), &root, Vec::new(), &TarOptions::default()).unwrap();
        let (body, writer) = tree_tar(s.cas(), root, TarOptions::default());
        let chunks: Vec<Chunk> = body.collect().await;
        assert!(chunks.len() > 1, "a large tree is sent in several chunks");
        let streamed: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        assert_eq!(streamed, expected);
        assert!(finish(Ok(()), writer, "test").await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_blob_ends_the_body_with_an_error_not_a_short_tar() {
        let (_d, s) = store();
        let absent = s.function().of_bytes(b"never stored");
        let mut b = TreeBuilder::new();
        b.insert("f", Node::file(absent, false)).unwrap();
        let root = b.store(s.cas()).unwrap();
        let (body, writer) = tree_tar(s.cas(), root, TarOptions::default());
        let chunks: Vec<Chunk> = body.collect().await;
        assert!(chunks.last().is_some_and(|c| c.is_err()));
        let err = finish(Ok(()), writer, "importing").await.unwrap_err();
        assert!(matches!(err, DockerError::Archive { .. }), "{err}");
    }
}
