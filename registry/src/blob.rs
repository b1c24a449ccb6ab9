//! Streaming one blob from the registry into the store, checked against its
//! descriptor. Memory stays bounded: chunks go through a small channel to a
//! blocking thread that hashes and writes them; the blob is published only
//! once its sha256 and size are right.

use std::io::Write;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use strata_store::{Cas, Digest};
use tokio::sync::mpsc;

use super::PulledBlob;
use super::client::Session;
use super::error::{RegistryError, StoreFailure};
use super::manifest::Descriptor;

/// Chunks in flight between the network and the disk, per blob.
const CHANNEL_DEPTH: usize = 8;

enum Msg {
    Data(Bytes),
    /// Every byte was sent; check and publish.
    End,
}

enum Written {
    Stored(Digest),
    /// The bytes hash to this sha256 hex instead; nothing was stored.
    Mismatch(String),
}

/// Downloads the blob `desc` (named `what` in errors) into `cas`, retrying
/// transient failures from the start.
pub(crate) async fn fetch(
    session: &Session,
    cas: &Cas,
    desc: &Descriptor,
    what: &str,
) -> Result<PulledBlob, RegistryError> {
    session.retry(|| fetch_once(session, cas, desc, what)).await
}

async fn fetch_once(
    session: &Session,
    cas: &Cas,
    desc: &Descriptor,
    what: &str,
) -> Result<PulledBlob, RegistryError> {
    let label = format!("{what} {}", desc.digest);
    let mismatch = |actual: String| RegistryError::DigestMismatch {
        registry: session.registry.clone(),
        what: format!("{what} ({})", media_type_or_unknown(&desc.media_type)),
        expected: format!("{} ({} bytes)", desc.digest, desc.size),
        actual,
    };
    let mut response = session
        .get(&format!("blobs/{}", desc.digest), None, &label)
        .await?;
    if let Some(length) = response.content_length()
        && length != desc.size
    {
        return Err(mismatch(format!("{length} bytes announced")));
    }
    let expected_hex = desc.digest.trim_start_matches("sha256:").to_string();
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let writer_cas = cas.clone();
    let writer = tokio::task::spawn_blocking(move || write(&writer_cas, rx, &expected_hex));
    let mut received: u64 = 0;
    let mut writer_gone = false;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            // Dropping `tx` makes the writer discard what it has.
            Err(e) => return Err(session.unreachable(&e, &label)),
        };
        received += chunk.len() as u64;
        if received > desc.size {
            return Err(mismatch(format!("more than {} bytes", desc.size)));
        }
        if tx.send(Msg::Data(chunk)).await.is_err() {
            writer_gone = true;
            break;
        }
    }
    if !writer_gone {
        if received != desc.size {
            return Err(mismatch(format!("{received} bytes")));
        }
        // A send error means the writer failed; its result says why.
        let _ = tx.send(Msg::End).await;
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| RegistryError::Store {
            what: label.clone(),
            source: StoreFailure::Io(std::io::Error::other(e.to_string())),
        })?
        .map_err(|source| RegistryError::Store {
            what: label.clone(),
            source,
        })?;
    match written {
        Written::Stored(stored) => Ok(PulledBlob {
            media_type: desc.media_type.clone(),
            sha256: desc.digest.clone(),
            size: desc.size,
            stored,
        }),
        Written::Mismatch(actual) => Err(mismatch(format!("sha256:{actual} ({received} bytes)"))),
    }
}

fn media_type_or_unknown(media_type: &str) -> &str {
    if media_type.is_empty() {
        "no media type"
    } else {
        media_type
    }
}

/// The blocking half: hashes and writes until `End`, then publishes if the
/// sha256 matches. Returning without publishing drops the temporary file.
fn write(
    cas: &Cas,
    mut rx: mpsc::Receiver<Msg>,
    expected_hex: &str,
) -> Result<Written, StoreFailure> {
    let mut out = cas.writer()?;
    let mut sha = Sha256::new();
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(bytes) => {
                sha.update(&bytes);
                out.write_all(&bytes)?;
            }
            Msg::End => {
                let actual = hex::encode(sha.finalize());
                if actual != expected_hex {
                    return Ok(Written::Mismatch(actual));
                }
                return Ok(Written::Stored(out.finish()?));
            }
        }
    }
    Err(StoreFailure::Io(std::io::Error::other(
        "the download stopped before the blob was complete",
    )))
}
