//! ContentAddressableStorage: FindMissingBlobs, the batch calls and
//! GetTree over the cache's blobs. Chunking (SplitBlob and its kin) is not
//! served, as the capabilities say.

use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;
use futures_util::{Stream, StreamExt};
use pb::content_addressable_storage_server::ContentAddressableStorage;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::{Context, MAX_BATCH, ok_status, rejected_status, rpc_status};
use crate::layout::Kind;
use strata_store::Digest;

pub struct Service(pub(super) Arc<Context>);

type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Blobs of one batch stored at once: each is a temporary file and an
/// fsync, which overlap well.
const BATCH_WRITERS: usize = 8;

/// Directories per GetTree answer when the client sets no page size.
const TREE_PAGE: usize = 1000;
/// Bytes of directories per GetTree answer, under a client's 4 MiB.
const TREE_PAGE_BYTES: usize = 2 * 1024 * 1024;

#[tonic::async_trait]
impl ContentAddressableStorage for Service {
    async fn find_missing_blobs(
        &self,
        request: Request<pb::FindMissingBlobsRequest>,
    ) -> Result<Response<pb::FindMissingBlobsResponse>, Status> {
        let cx = &self.0;
        let request = request.into_inner();
        cx.check_addressed(&request.instance_name, request.digest_function)?;
        let mut missing = Vec::new();
        for (i, d) in request.blob_digests.iter().enumerate() {
            let blob = cx.digest(Some(d), &format!("blob_digests[{i}]"))?;
            if !cx.cache.has_blob(&blob) {
                missing.push(d.clone());
            }
        }
        Ok(Response::new(pb::FindMissingBlobsResponse {
            missing_blob_digests: missing,
        }))
    }

    async fn batch_update_blobs(
        &self,
        request: Request<pb::BatchUpdateBlobsRequest>,
    ) -> Result<Response<pb::BatchUpdateBlobsResponse>, Status> {
        let cx = self.0.clone();
        let request = request.into_inner();
        cx.check_addressed(&request.instance_name, request.digest_function)?;
        let total: u64 = request.requests.iter().map(|r| r.data.len() as u64).sum();
        if total > MAX_BATCH {
            return Err(too_much("BatchUpdateBlobs", total));
        }
        let responses = futures_util::stream::iter(request.requests)
            .map(|blob| {
                let cx = cx.clone();
                async move {
                    let status = match store_one(&cx, &blob).await {
                        Ok(()) => ok_status(),
                        Err(status) => Some(rpc_status(&status)),
                    };
                    pb::batch_update_blobs_response::Response {
                        digest: blob.digest,
                        status,
                    }
                }
            })
            .buffered(BATCH_WRITERS)
            .collect()
            .await;
        Ok(Response::new(pb::BatchUpdateBlobsResponse { responses }))
    }

    async fn batch_read_blobs(
        &self,
        request: Request<pb::BatchReadBlobsRequest>,
    ) -> Result<Response<pb::BatchReadBlobsResponse>, Status> {
        let cx = &self.0;
        let request = request.into_inner();
        cx.check_addressed(&request.instance_name, request.digest_function)?;
        let total: u64 = request
            .digests
            .iter()
            .map(|d| d.size_bytes.max(0) as u64)
            .sum();
        if total > MAX_BATCH {
            return Err(too_much("BatchReadBlobs", total));
        }
        let mut responses = Vec::with_capacity(request.digests.len());
        for d in request.digests {
            let (data, status) = match read_one(cx, &d).await {
                Ok(data) => (data, ok_status()),
                Err(status) => (Vec::new(), Some(rpc_status(&status))),
            };
            responses.push(pb::batch_read_blobs_response::Response {
                digest: Some(d),
                data,
                compressor: pb::compressor::Value::Identity as i32,
                status,
            });
        }
        Ok(Response::new(pb::BatchReadBlobsResponse { responses }))
    }

    type GetTreeStream = Answers<pb::GetTreeResponse>;

    async fn get_tree(
        &self,
        request: Request<pb::GetTreeRequest>,
    ) -> Result<Response<Self::GetTreeStream>, Status> {
        let cx = self.0.clone();
        let request = request.into_inner();
        cx.check_addressed(&request.instance_name, request.digest_function)?;
        let root = cx.digest(request.root_digest.as_ref(), "root_digest")?;
        // The token is how many directories earlier answers held: the
        // walk's order depends only on the tree, so it is the same again.
        let skip = match request.page_token.as_str() {
            "" => 0,
            token => token
                .parse::<usize>()
                .map_err(|_| Status::invalid_argument(format!("bad page_token {token:?}")))?,
        };
        let page = match request.page_size {
            n if n < 0 => {
                return Err(Status::invalid_argument(format!(
                    "page_size {n} is negative"
                )));
            }
            0 => TREE_PAGE,
            n => n as usize,
        };
        let walked = walk_tree(&cx, root).await?;
        let pages = paginate(walked, skip, page);
        Ok(Response::new(Box::pin(futures_util::stream::iter(
            pages.into_iter().map(Ok),
        ))))
    }

    async fn split_blob(
        &self,
        _: Request<pb::SplitBlobRequest>,
    ) -> Result<Response<pb::SplitBlobResponse>, Status> {
        Err(no_chunking())
    }

    type GetChunkMappingStream = Answers<pb::GetChunkMappingResponse>;

    async fn get_chunk_mapping(
        &self,
        _: Request<pb::GetChunkMappingRequest>,
    ) -> Result<Response<Self::GetChunkMappingStream>, Status> {
        Err(no_chunking())
    }

    async fn splice_blob(
        &self,
        _: Request<pb::SpliceBlobRequest>,
    ) -> Result<Response<pb::SpliceBlobResponse>, Status> {
        Err(no_chunking())
    }

    async fn register_chunk_mapping(
        &self,
        _: Request<Streaming<pb::RegisterChunkMappingRequest>>,
    ) -> Result<Response<pb::RegisterChunkMappingResponse>, Status> {
        Err(no_chunking())
    }
}

fn no_chunking() -> Status {
    Status::unimplemented("blobs are not split or spliced here (split_blob_support is false)")
}

fn too_much(call: &str, total: u64) -> Status {
    Status::invalid_argument(format!(
        "{call} of {total} bytes: at most {MAX_BATCH} per call \
         (max_batch_total_size_bytes); send larger blobs through ByteStream"
    ))
}

async fn store_one(
    cx: &Context,
    blob: &pb::batch_update_blobs_request::Request,
) -> Result<(), Status> {
    let digest = cx.digest(blob.digest.as_ref(), "digest")?;
    if blob.compressor != pb::compressor::Value::Identity as i32 {
        return Err(Status::invalid_argument(
            "compressed blobs are not accepted: this server announces no compressors",
        ));
    }
    cx.cache
        .store_blob(digest, &blob.data)
        .await
        .map_err(|r| rejected_status(r, cx.function()))
}

async fn read_one(cx: &Context, d: &pb::Digest) -> Result<Vec<u8>, Status> {
    let digest = cx.digest(Some(d), "digest")?;
    read_blob(cx, digest)
        .await?
        .ok_or_else(|| Status::not_found(format!("blob {digest} is not in the cache")))
}

/// A stored blob's bytes; `None` when it is absent or not of its size.
async fn read_blob(cx: &Context, digest: Digest) -> Result<Option<Vec<u8>>, Status> {
    if digest.size_bytes == 0 && digest.hash == *cx.cache.empty() {
        return Ok(Some(Vec::new()));
    }
    let opened = cx
        .cache
        .open(Kind::Cas, digest.hash)
        .await
        .map_err(|e| super::read_error(&cx.cache, Kind::Cas, &digest.hash, &e))?;
    let Some((file, size)) = opened else {
        return Ok(None);
    };
    if size != digest.size_bytes {
        return Ok(None);
    }
    let read = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(size).read_to_end(&mut bytes).map(|_| bytes)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    let bytes = read.map_err(|e| super::read_error(&cx.cache, Kind::Cas, &digest.hash, &e))?;
    Ok((bytes.len() as u64 == size).then_some(bytes))
}

/// Every directory of the tree under `root`, breadth first, each once; a
/// subdirectory that is not stored is left out (with what is below it),
/// as REAPI asks.
async fn walk_tree(cx: &Context, root: Digest) -> Result<Vec<pb::Directory>, Status> {
    let Some(bytes) = read_blob(cx, root).await? else {
        return Err(Status::not_found(format!(
            "the tree's root {root} is not in the cache"
        )));
    };
    let decode = |d: &Digest, bytes: &[u8]| {
        pb::Directory::decode(bytes)
            .map_err(|e| Status::invalid_argument(format!("{d} is not a Directory: {e}")))
    };
    let mut seen = HashSet::from([root]);
    let mut out = vec![decode(&root, &bytes)?];
    let mut pending = VecDeque::from([0usize]);
    while let Some(at) = pending.pop_front() {
        let children: Vec<Digest> = out[at]
            .directories
            .iter()
            .filter_map(|node| {
                let d = node.digest.as_ref()?;
                super::parse_digest(&d.hash, d.size_bytes, cx.function()).ok()
            })
            .collect();
        for child in children {
            if !seen.insert(child) {
                continue;
            }
            if let Some(bytes) = read_blob(cx, child).await? {
                // A child that is not a Directory is a broken tree below
                // this point: it is left out, as a missing one is.
                if let Ok(dir) = decode(&child, &bytes) {
                    out.push(dir);
                    pending.push_back(out.len() - 1);
                }
            }
        }
    }
    Ok(out)
}

/// The answers of a GetTree from the `skip`th directory on: at most `page`
/// directories and [`TREE_PAGE_BYTES`] each, every one but the last with
/// the token of the next. One empty answer when nothing is left.
fn paginate(dirs: Vec<pb::Directory>, skip: usize, page: usize) -> Vec<pb::GetTreeResponse> {
    let mut answers = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for (i, dir) in dirs.into_iter().enumerate().skip(skip) {
        let size = dir.encoded_len();
        if !current.is_empty() && (current.len() == page || bytes + size > TREE_PAGE_BYTES) {
            answers.push(pb::GetTreeResponse {
                directories: std::mem::take(&mut current),
                next_page_token: i.to_string(),
            });
            bytes = 0;
        }
        bytes += size;
        current.push(dir);
    }
    answers.push(pb::GetTreeResponse {
        directories: current,
        next_page_token: String::new(),
    });
    answers
}
