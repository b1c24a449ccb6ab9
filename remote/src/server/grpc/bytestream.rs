//! ByteStream Read and Write of the cache's blobs, streamed: a blob of any
//! size passes through in pieces and is published, like an HTTP upload,
//! only once it hashes to its name.
//!
//! The server keeps no partial upload: QueryWriteStatus answers the full
//! size for a stored blob and 0 otherwise, so a client that lost its stream
//! starts over (Bazel does just that).

use std::io::SeekFrom;
use std::pin::Pin;
use std::sync::Arc;

use bazel_remote_apis::google::bytestream::byte_stream_server::ByteStream;
use bazel_remote_apis::google::bytestream::{
    QueryWriteStatusRequest, QueryWriteStatusResponse, ReadRequest, ReadResponse, WriteRequest,
    WriteResponse,
};
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tonic::{Request, Response, Status, Streaming};

use super::super::cache::Rejected;
use super::resource::{self, BlobName};
use super::{CHUNK, Context, MESSAGE_IDLE, read_error, rejected_status};
use crate::layout::Kind;

pub struct Service(pub(super) Arc<Context>);

type ReadStream = Pin<Box<dyn Stream<Item = Result<ReadResponse, Status>> + Send + 'static>>;

impl Service {
    fn blob(&self, name: Result<BlobName, Status>) -> Result<BlobName, Status> {
        let name = name?;
        self.0.check_instance(&name.instance)?;
        Ok(name)
    }
}

#[tonic::async_trait]
impl ByteStream for Service {
    type ReadStream = ReadStream;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let cx = &self.0;
        let request = request.into_inner();
        let digest = self
            .blob(resource::read_name(&request.resource_name, cx.function()))?
            .digest;
        let size = digest.size_bytes;
        let offset = u64::try_from(request.read_offset)
            .ok()
            .filter(|o| *o <= size)
            .ok_or_else(|| {
                Status::out_of_range(format!(
                    "read_offset {} is outside the blob's {size} bytes",
                    request.read_offset
                ))
            })?;
        let limit = u64::try_from(request.read_limit).map_err(|_| {
            Status::out_of_range(format!("read_limit {} is negative", request.read_limit))
        })?;
        let wanted = match limit {
            0 => size - offset,
            n => n.min(size - offset),
        };
        if digest.size_bytes == 0 && digest.hash == *cx.cache.empty() {
            return Ok(Response::new(Box::pin(futures_util::stream::empty())));
        }
        let not_found = || Status::not_found(format!("blob {digest} is not in the cache"));
        let (file, stored) = match cx.cache.open(Kind::Cas, digest.hash).await {
            Ok(Some(entry)) => entry,
            Ok(None) => return Err(not_found()),
            Err(e) => return Err(read_error(&cx.cache, Kind::Cas, &digest.hash, &e)),
        };
        if stored != size {
            return Err(not_found());
        }
        let mut file = tokio::fs::File::from_std(file);
        file.seek(SeekFrom::Start(offset))
            .await
            .map_err(|e| read_error(&cx.cache, Kind::Cas, &digest.hash, &e))?;
        let cache = cx.cache.clone();
        let pieces = futures_util::stream::try_unfold((file, wanted), move |(mut file, left)| {
            let cache = cache.clone();
            async move {
                if left == 0 {
                    return Ok(None);
                }
                let mut buf = vec![0; CHUNK.min(left as usize)];
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(|e| read_error(&cache, Kind::Cas, &digest.hash, &e))?;
                if n == 0 {
                    // Shorter on disk than in the index: changed behind
                    // the server's back.
                    return Err(Status::data_loss(format!("blob {digest} was cut short")));
                }
                let n = (n as u64).min(left);
                buf.truncate(n as usize);
                let piece = ReadResponse { data: buf };
                Ok(Some((piece, (file, left - n))))
            }
        });
        Ok(Response::new(Box::pin(pieces)))
    }

    async fn write(
        &self,
        request: Request<Streaming<WriteRequest>>,
    ) -> Result<Response<WriteResponse>, Status> {
        let cx = &self.0;
        let mut messages = request.into_inner();
        let Some(mut message) = next(&mut messages).await? else {
            return Err(Status::invalid_argument("a Write with no message"));
        };
        let name = message.resource_name.clone();
        let digest = self
            .blob(resource::write_name(&name, cx.function()))?
            .digest;
        let limit = cx.cache.limit(Kind::Cas);
        if digest.size_bytes > limit {
            return Err(rejected_status(Rejected::TooLarge { limit }, cx.function()));
        }
        let committed = || {
            Response::new(WriteResponse {
                committed_size: digest.size_bytes as i64,
            })
        };
        if message.write_offset != 0 {
            // Only a finished upload has anything to resume from.
            if cx.cache.has_blob(&digest) {
                return Ok(committed());
            }
            return Err(Status::invalid_argument(format!(
                "write_offset {} in the first message: this server keeps no partial upload, \
                 start at 0 (QueryWriteStatus says so)",
                message.write_offset
            )));
        }
        let mut upload = cx
            .cache
            .begin_blob()
            .await
            .map_err(|r| rejected_status(r, cx.function()))?;
        loop {
            if !message.resource_name.is_empty() && message.resource_name != name {
                return Err(Status::invalid_argument(format!(
                    "resource_name changed within a Write, from {name:?} to {:?}",
                    message.resource_name
                )));
            }
            if message.write_offset != upload.received() as i64 {
                return Err(Status::invalid_argument(format!(
                    "write_offset {} where {} bytes were sent",
                    message.write_offset,
                    upload.received()
                )));
            }
            if upload.received() + message.data.len() as u64 > digest.size_bytes {
                return Err(Status::invalid_argument(format!(
                    "more than the {} bytes its digest gives: nothing stored",
                    digest.size_bytes
                )));
            }
            upload
                .write(&message.data)
                .await
                .map_err(|r| rejected_status(r, cx.function()))?;
            if message.finish_write {
                break;
            }
            message = next(&mut messages).await?.ok_or_else(|| {
                Status::invalid_argument(format!(
                    "the Write ended after {} of {} bytes without finish_write: nothing stored",
                    upload.received(),
                    digest.size_bytes
                ))
            })?;
        }
        upload
            .finish(digest.hash, Some(digest.size_bytes))
            .await
            .map_err(|r| rejected_status(r, cx.function()))?;
        Ok(committed())
    }

    async fn query_write_status(
        &self,
        request: Request<QueryWriteStatusRequest>,
    ) -> Result<Response<QueryWriteStatusResponse>, Status> {
        let cx = &self.0;
        let name = request.into_inner().resource_name;
        let digest = self
            .blob(resource::write_name(&name, cx.function()))?
            .digest;
        let complete = cx.cache.has_blob(&digest);
        Ok(Response::new(QueryWriteStatusResponse {
            committed_size: if complete {
                digest.size_bytes as i64
            } else {
                0
            },
            complete,
        }))
    }
}

/// The next message of an upload, within [`MESSAGE_IDLE`].
async fn next(messages: &mut Streaming<WriteRequest>) -> Result<Option<WriteRequest>, Status> {
    match tokio::time::timeout(MESSAGE_IDLE, messages.message()).await {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the upload stalled: no message for {} s, nothing stored",
            MESSAGE_IDLE.as_secs()
        ))),
    }
}
