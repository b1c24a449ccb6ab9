//! Blob transfers: small blobs travel together in BatchReadBlobs and
//! BatchUpdateBlobs, large ones alone through ByteStream Read and Write,
//! streamed so their size never meets memory.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;
use bazel_remote_apis::google::bytestream::byte_stream_client::ByteStreamClient;
use bazel_remote_apis::google::bytestream::{ReadRequest, WriteRequest};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use tonic::Code;

use super::{GrpcRemote, MAX_MESSAGE, names, status_error};
use crate::client::RemoteError;
use crate::client::blob_io::{self, Incoming, Outgoing};
use crate::client::error::server_text;
use crate::client::stall::{self, Progress};
use strata_store::{Cas, Digest, DigestFunction};

/// Blobs above this size go through ByteStream.
pub(crate) const SMALL_BLOB: u64 = 1024 * 1024;
/// Batch size used when the server states no smaller one: under the 4 MiB
/// message limit most gRPC servers keep by default.
const DEFAULT_BATCH: u64 = 4 * 1024 * 1024 - 64 * 1024;
/// What one blob adds to a batch message besides its bytes (digest, status,
/// framing), counted generously.
const PER_BLOB: u64 = 256;
/// Batches or streams in flight at once.
const CONCURRENCY: usize = 4;

enum Job {
    Batch(Vec<Digest>),
    Stream(Digest),
}

impl GrpcRemote {
    fn batch_budget(&self) -> u64 {
        match self.inner.max_batch.load(Ordering::Relaxed) {
            0 => DEFAULT_BATCH,
            server => server.min(DEFAULT_BATCH),
        }
    }

    fn batchable(&self, digest: &Digest) -> bool {
        digest.size_bytes <= SMALL_BLOB
            && digest.size_bytes.saturating_add(PER_BLOB) <= self.batch_budget()
    }

    /// Small blobs packed into batches within the budget, large ones alone.
    fn jobs(&self, digests: Vec<Digest>) -> Vec<Job> {
        let budget = self.batch_budget();
        let mut jobs = Vec::new();
        let mut batch = Vec::new();
        let mut used = 0u64;
        for digest in digests {
            if !self.batchable(&digest) {
                jobs.push(Job::Stream(digest));
                continue;
            }
            let cost = digest.size_bytes + PER_BLOB;
            if used + cost > budget && !batch.is_empty() {
                jobs.push(Job::Batch(std::mem::take(&mut batch)));
                used = 0;
            }
            batch.push(digest);
            used += cost;
        }
        if !batch.is_empty() {
            jobs.push(Job::Batch(batch));
        }
        jobs
    }

    pub(crate) async fn download(
        &self,
        function: DigestFunction,
        digest: &Digest,
        cas: &Cas,
    ) -> Result<(), RemoteError> {
        self.download_many(function, std::slice::from_ref(digest), cas)
            .await
    }

    pub(crate) async fn download_many(
        &self,
        function: DigestFunction,
        digests: &[Digest],
        cas: &Cas,
    ) -> Result<(), RemoteError> {
        blob_io::check_function(cas, function)?;
        let wanted: Vec<Digest> = crate::client::dedup(digests)
            .into_iter()
            .filter(|d| !cas.contains(d))
            .collect();
        futures_util::stream::iter(self.jobs(wanted))
            .map(|job| async move {
                match job {
                    Job::Batch(batch) => self.batch_read(function, &batch, cas).await,
                    Job::Stream(digest) => self.stream_read(function, &digest, cas).await,
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    pub(crate) async fn upload(
        &self,
        function: DigestFunction,
        digest: &Digest,
        cas: &Cas,
    ) -> Result<(), RemoteError> {
        self.upload_many(function, std::slice::from_ref(digest), cas)
            .await
    }

    pub(crate) async fn upload_many(
        &self,
        function: DigestFunction,
        digests: &[Digest],
        cas: &Cas,
    ) -> Result<(), RemoteError> {
        blob_io::check_function(cas, function)?;
        futures_util::stream::iter(self.jobs(crate::client::dedup(digests)))
            .map(|job| async move {
                match job {
                    Job::Batch(batch) => self.batch_update(function, &batch, cas).await,
                    Job::Stream(digest) => self.stream_write(function, &digest, cas).await,
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    async fn batch_read(
        &self,
        function: DigestFunction,
        digests: &[Digest],
        cas: &Cas,
    ) -> Result<(), RemoteError> {
        let what = batch_what("BatchReadBlobs", digests);
        let request = self.request(pb::BatchReadBlobsRequest {
            instance_name: self.instance(),
            digests: digests.iter().map(names::digest).collect(),
            acceptable_compressors: Vec::new(),
            digest_function: names::function_value(function),
        });
        let response = self
            .unary(&what, self.cas_client().batch_read_blobs(request))
            .await
            .map_err(|s| self.status_error(&what, s))?;
        let mut answers = HashMap::new();
        for answer in response.responses {
            // Answers about blobs not asked for are ignored below.
            if let Some(digest) = answer.digest.as_ref().and_then(names::parse_digest) {
                answers.insert(digest, answer);
            }
        }
        for digest in digests {
            let Some(answer) = answers.remove(digest) else {
                return Err(self.protocol(&what, format!("no answer for blob {digest}")));
            };
            self.check_blob_status(digest, answer.status.as_ref())?;
            if answer.compressor != pb::compressor::Value::Identity as i32 {
                return Err(self.protocol(
                    &what,
                    format!("blob {digest} came compressed, which was not asked for"),
                ));
            }
            blob_io::store_verified(cas, *digest, answer.data, self.server()).await?;
        }
        Ok(())
    }

    async fn batch_update(
        &self,
        function: DigestFunction,
        digests: &[Digest],
        cas: &Cas,
    ) -> Result<(), RemoteError> {
        let what = batch_what("BatchUpdateBlobs", digests);
        let mut requests = Vec::with_capacity(digests.len());
        for digest in digests {
            requests.push(pb::batch_update_blobs_request::Request {
                digest: Some(names::digest(digest)),
                data: blob_io::read_verified(cas, *digest).await?,
                compressor: pb::compressor::Value::Identity as i32,
            });
        }
        let request = self.request(pb::BatchUpdateBlobsRequest {
            instance_name: self.instance(),
            requests,
            digest_function: names::function_value(function),
        });
        let response = self
            .unary(&what, self.cas_client().batch_update_blobs(request))
            .await
            .map_err(|s| self.status_error(&what, s))?;
        let mut answers = HashMap::new();
        for answer in response.responses {
            if let Some(digest) = answer.digest.as_ref().and_then(names::parse_digest) {
                answers.insert(digest, answer.status);
            }
        }
        for digest in digests {
            let Some(status) = answers.remove(digest) else {
                return Err(self.protocol(&what, format!("no answer for blob {digest}")));
            };
            self.check_blob_status(digest, status.as_ref())?;
        }
        Ok(())
    }

    /// The per-blob status inside a batch answer; absent means OK.
    fn check_blob_status(
        &self,
        digest: &Digest,
        status: Option<&bazel_remote_apis::google::rpc::Status>,
    ) -> Result<(), RemoteError> {
        let Some(status) = status else { return Ok(()) };
        let code = Code::from_i32(status.code);
        if code == Code::Ok {
            return Ok(());
        }
        let message = server_text(&status.message);
        let reason = if message.is_empty() {
            format!("{code:?}")
        } else {
            format!("{code:?}: {message}")
        };
        Err(status_error(
            self.server(),
            &format!("blob {digest}"),
            code,
            &reason,
        ))
    }

    async fn stream_read(
        &self,
        function: DigestFunction,
        digest: &Digest,
        cas: &Cas,
    ) -> Result<(), RemoteError> {
        let what = format!("ByteStream Read of blob {digest}");
        let mut client =
            ByteStreamClient::new(self.transport()).max_decoding_message_size(MAX_MESSAGE);
        // No deadline on the request: it would bound the whole transfer.
        // Each message must come within the time limit instead.
        let request = tonic::Request::new(ReadRequest {
            resource_name: names::read_resource(&self.inner.instance, function, digest),
            read_offset: 0,
            read_limit: 0,
        });
        let mut messages = self
            .unary(&what, client.read(request))
            .await
            .map_err(|s| self.status_error(&what, s))?;
        let mut incoming = Incoming::start(cas, *digest, self.server());
        loop {
            match tokio::time::timeout(self.inner.timeout, messages.message()).await {
                Ok(Ok(Some(message))) => incoming.push(Bytes::from(message.data)).await?,
                Ok(Ok(None)) => break,
                Ok(Err(status)) => return Err(self.status_error(&what, status)),
                Err(_) => return Err(self.stalled(&what)),
            }
        }
        incoming.finish().await
    }

    async fn stream_write(
        &self,
        function: DigestFunction,
        digest: &Digest,
        cas: &Cas,
    ) -> Result<(), RemoteError> {
        let what = format!("ByteStream Write of blob {digest}");
        let outgoing = Outgoing::open(cas, *digest).await?;
        let failure = outgoing.failure();
        let resource = names::write_resource(
            &self.inner.instance,
            &uuid::Uuid::new_v4(),
            function,
            digest,
        );
        let progress = Progress::new();
        let ticks = progress.clone();
        // The resource name goes in the first message only, as the protocol
        // allows; a corrupt local blob ends the stream without finish_write,
        // so the server never commits it.
        let requests = futures_util::stream::unfold(
            (Some(outgoing), 0i64, resource),
            move |(state, offset, resource)| {
                let ticks = ticks.clone();
                async move {
                    let mut outgoing = state?;
                    ticks.tick();
                    let chunk = outgoing.next().await?;
                    let length = chunk.data.len() as i64;
                    let request = WriteRequest {
                        resource_name: resource,
                        write_offset: offset,
                        finish_write: chunk.last,
                        data: chunk.data.into(),
                    };
                    let rest = (!request.finish_write).then_some(outgoing);
                    Some((request, (rest, offset + length, String::new())))
                }
            },
        );
        let mut client =
            ByteStreamClient::new(self.transport()).max_decoding_message_size(MAX_MESSAGE);
        let sent = stall::watch(self.inner.timeout, &progress, client.write(requests)).await;
        if let Some(e) = failure.take() {
            return Err(RemoteError::Store(e));
        }
        let response = match sent {
            None => return Err(self.stalled(&what)),
            Some(Err(status)) => return Err(self.status_error(&what, status)),
            Some(Ok(response)) => response.into_inner(),
        };
        if response.committed_size != digest.size_bytes as i64 {
            return Err(self.protocol(
                &what,
                format!(
                    "the server committed {} of {} bytes",
                    response.committed_size, digest.size_bytes
                ),
            ));
        }
        Ok(())
    }

    fn stalled(&self, what: &str) -> RemoteError {
        RemoteError::Unavailable {
            server: self.server().to_string(),
            what: what.to_string(),
            reason: format!("no progress for {:?}", self.inner.timeout),
        }
    }
}

fn batch_what(rpc: &str, digests: &[Digest]) -> String {
    match digests {
        [one] => format!("{rpc} of blob {one}"),
        many => format!("{rpc} of {} blobs", many.len()),
    }
}
