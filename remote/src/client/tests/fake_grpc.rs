//! An in-memory REAPI server built from the same generated types, recording
//! every call so tests can check what the client put on the wire.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;
use bazel_remote_apis::google::bytestream as bs;
use bazel_remote_apis::google::longrunning::Operation;
use futures_util::{Stream, StreamExt};
use pb::action_cache_server::{ActionCache, ActionCacheServer};
use pb::capabilities_server::{Capabilities, CapabilitiesServer};
use pb::content_addressable_storage_server::{
    ContentAddressableStorage, ContentAddressableStorageServer,
};
use pb::execution_server::{Execution, ExecutionServer};
use tonic::{Request, Response, Status, Streaming};

type Answer<T> = Result<Response<T>, Status>;
type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// One call as the server saw it.
#[derive(Clone, Debug)]
pub(super) struct Call {
    pub rpc: &'static str,
    pub instance: Option<String>,
    pub digest_function: Option<i32>,
    pub resource: Option<String>,
    /// Hashes of the blobs the call named.
    pub hashes: Vec<String>,
    pub authorization: Option<String>,
    pub team: Option<String>,
}

#[derive(Default)]
pub(super) struct State {
    pub blobs: HashMap<String, Vec<u8>>,
    pub action_results: HashMap<String, pb::ActionResult>,
    pub calls: Vec<Call>,
    /// Hashes served with their first byte flipped.
    pub tampered: HashSet<String>,
    pub unavailable: bool,
    pub denied: bool,
    /// GetActionResult never answers.
    pub silent: bool,
    pub digest_functions: Vec<i32>,
    pub max_batch: i64,
    /// The execution capabilities: whether it executes, in which digest
    /// functions (`None`: no execution capabilities at all).
    pub execution: Option<(bool, Vec<i32>)>,
    /// What Execute and WaitExecution answer, one per call, in order.
    pub executions: std::collections::VecDeque<Streamed>,
}

/// One scripted answer of Execute or WaitExecution.
pub(super) enum Streamed {
    /// These operations, then the stream ends (or breaks with the status).
    Operations(Vec<Operation>, Option<Status>),
    /// The call itself fails.
    Refused(Status),
}

#[derive(Clone, Default)]
pub(super) struct Fake(Arc<Mutex<State>>);

impl Fake {
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    pub(super) fn calls(&self, rpc: &str) -> Vec<Call> {
        self.state()
            .calls
            .iter()
            .filter(|c| c.rpc == rpc)
            .cloned()
            .collect()
    }

    fn record<T>(
        &self,
        rpc: &'static str,
        request: &Request<T>,
        instance: Option<&str>,
        digest_function: Option<i32>,
        resource: Option<&str>,
        hashes: Vec<String>,
    ) -> Result<(), Status> {
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut state = self.state();
        state.calls.push(Call {
            rpc,
            instance: instance.map(str::to_string),
            digest_function,
            resource: resource.map(str::to_string),
            hashes,
            authorization: header("authorization"),
            team: header("x-team"),
        });
        if state.unavailable {
            return Err(Status::unavailable("down for maintenance"));
        }
        if state.denied {
            return Err(Status::permission_denied("this token may not write"));
        }
        Ok(())
    }

    /// A stored blob as served, tampered with if asked.
    fn served(&self, hash: &str) -> Option<Vec<u8>> {
        let state = self.state();
        let mut bytes = state.blobs.get(hash)?.clone();
        if state.tampered.contains(hash)
            && let Some(first) = bytes.first_mut()
        {
            *first ^= 0xff;
        }
        Some(bytes)
    }

    pub(super) async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = futures_util::stream::unfold(listener, |l| async move {
            Some((l.accept().await.map(|(s, _)| s), l))
        });
        let large = 64 * 1024 * 1024;
        let server = tonic::transport::Server::builder()
            .add_service(CapabilitiesServer::new(self.clone()))
            .add_service(ActionCacheServer::new(self.clone()))
            .add_service(
                ContentAddressableStorageServer::new(self.clone()).max_decoding_message_size(large),
            )
            .add_service(bs::byte_stream_server::ByteStreamServer::new(self.clone()))
            .add_service(ExecutionServer::new(self.clone()))
            .serve_with_incoming(incoming);
        tokio::spawn(server);
        addr
    }
}

impl Fake {
    /// The next scripted answer, as a stream.
    fn streamed(&self) -> Answer<Boxed<Operation>> {
        let next = self.state().executions.pop_front();
        match next {
            Some(Streamed::Operations(ops, end)) => {
                let items = ops
                    .into_iter()
                    .map(Ok)
                    .chain(end.map(Err))
                    .collect::<Vec<_>>();
                Ok(Response::new(Box::pin(futures_util::stream::iter(items))))
            }
            Some(Streamed::Refused(status)) => Err(status),
            None => Err(Status::unimplemented("no answer scripted")),
        }
    }
}

#[tonic::async_trait]
impl Execution for Fake {
    type ExecuteStream = Boxed<Operation>;
    type WaitExecutionStream = Boxed<Operation>;

    async fn execute(&self, request: Request<pb::ExecuteRequest>) -> Answer<Self::ExecuteStream> {
        let r = request.get_ref();
        let hashes = r.action_digest.iter().map(|d| d.hash.clone()).collect();
        let (instance, function) = (r.instance_name.clone(), r.digest_function);
        self.record(
            "Execute",
            &request,
            Some(&instance),
            Some(function),
            None,
            hashes,
        )?;
        self.streamed()
    }

    async fn wait_execution(
        &self,
        request: Request<pb::WaitExecutionRequest>,
    ) -> Answer<Self::WaitExecutionStream> {
        let name = request.get_ref().name.clone();
        self.record(
            "WaitExecution",
            &request,
            None,
            None,
            Some(&name),
            Vec::new(),
        )?;
        self.streamed()
    }
}

fn hashes(digests: &[pb::Digest]) -> Vec<String> {
    digests.iter().map(|d| d.hash.clone()).collect()
}

/// The hash in `.../blobs/[function/]<hash>/<size>`.
fn resource_hash(resource: &str) -> Option<String> {
    let parts: Vec<&str> = resource.split('/').collect();
    (parts.len() >= 2).then(|| parts[parts.len() - 2].to_string())
}

#[tonic::async_trait]
impl Capabilities for Fake {
    async fn get_capabilities(
        &self,
        request: Request<pb::GetCapabilitiesRequest>,
    ) -> Answer<pb::ServerCapabilities> {
        let instance = request.get_ref().instance_name.clone();
        self.record(
            "GetCapabilities",
            &request,
            Some(&instance),
            None,
            None,
            vec![],
        )?;
        let state = self.state();
        Ok(Response::new(pb::ServerCapabilities {
            cache_capabilities: Some(pb::CacheCapabilities {
                digest_functions: state.digest_functions.clone(),
                max_batch_total_size_bytes: state.max_batch,
                ..Default::default()
            }),
            execution_capabilities: state.execution.as_ref().map(|(enabled, functions)| {
                pb::ExecutionCapabilities {
                    exec_enabled: *enabled,
                    digest_functions: functions.clone(),
                    ..Default::default()
                }
            }),
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl ActionCache for Fake {
    async fn get_action_result(
        &self,
        request: Request<pb::GetActionResultRequest>,
    ) -> Answer<pb::ActionResult> {
        let r = request.get_ref().clone();
        let hash = r.action_digest.map(|d| d.hash).unwrap_or_default();
        self.record(
            "GetActionResult",
            &request,
            Some(&r.instance_name),
            Some(r.digest_function),
            None,
            vec![hash.clone()],
        )?;
        if self.state().silent {
            std::future::pending::<()>().await;
        }
        match self.state().action_results.get(&hash) {
            Some(result) => Ok(Response::new(result.clone())),
            None => Err(Status::not_found("no such action")),
        }
    }

    async fn update_action_result(
        &self,
        request: Request<pb::UpdateActionResultRequest>,
    ) -> Answer<pb::ActionResult> {
        let r = request.get_ref().clone();
        let hash = r.action_digest.map(|d| d.hash).unwrap_or_default();
        self.record(
            "UpdateActionResult",
            &request,
            Some(&r.instance_name),
            Some(r.digest_function),
            None,
            vec![hash.clone()],
        )?;
        let result = r.action_result.unwrap_or_default();
        self.state().action_results.insert(hash, result.clone());
        Ok(Response::new(result))
    }
}

#[tonic::async_trait]
impl ContentAddressableStorage for Fake {
    async fn find_missing_blobs(
        &self,
        request: Request<pb::FindMissingBlobsRequest>,
    ) -> Answer<pb::FindMissingBlobsResponse> {
        let r = request.get_ref().clone();
        self.record(
            "FindMissingBlobs",
            &request,
            Some(&r.instance_name),
            Some(r.digest_function),
            None,
            hashes(&r.blob_digests),
        )?;
        let state = self.state();
        let missing = r
            .blob_digests
            .into_iter()
            .filter(|d| !state.blobs.contains_key(&d.hash))
            .collect();
        Ok(Response::new(pb::FindMissingBlobsResponse {
            missing_blob_digests: missing,
        }))
    }

    async fn batch_update_blobs(
        &self,
        request: Request<pb::BatchUpdateBlobsRequest>,
    ) -> Answer<pb::BatchUpdateBlobsResponse> {
        let r = request.get_ref().clone();
        let named: Vec<pb::Digest> = r.requests.iter().filter_map(|b| b.digest.clone()).collect();
        self.record(
            "BatchUpdateBlobs",
            &request,
            Some(&r.instance_name),
            Some(r.digest_function),
            None,
            hashes(&named),
        )?;
        let mut responses = Vec::new();
        for blob in r.requests {
            let digest = blob.digest.unwrap_or_default();
            self.state().blobs.insert(digest.hash.clone(), blob.data);
            responses.push(pb::batch_update_blobs_response::Response {
                digest: Some(digest),
                status: None,
            });
        }
        Ok(Response::new(pb::BatchUpdateBlobsResponse { responses }))
    }

    async fn batch_read_blobs(
        &self,
        request: Request<pb::BatchReadBlobsRequest>,
    ) -> Answer<pb::BatchReadBlobsResponse> {
        let r = request.get_ref().clone();
        self.record(
            "BatchReadBlobs",
            &request,
            Some(&r.instance_name),
            Some(r.digest_function),
            None,
            hashes(&r.digests),
        )?;
        let responses = r
            .digests
            .into_iter()
            .map(|digest| {
                let (data, status) = match self.served(&digest.hash) {
                    Some(data) => (data, None),
                    None => (
                        Vec::new(),
                        Some(bazel_remote_apis::google::rpc::Status {
                            code: tonic::Code::NotFound as i32,
                            message: "no such blob".to_string(),
                            details: vec![],
                        }),
                    ),
                };
                pb::batch_read_blobs_response::Response {
                    digest: Some(digest),
                    data,
                    compressor: 0,
                    status,
                }
            })
            .collect();
        Ok(Response::new(pb::BatchReadBlobsResponse { responses }))
    }

    type GetTreeStream = Boxed<pb::GetTreeResponse>;
    async fn get_tree(&self, _: Request<pb::GetTreeRequest>) -> Answer<Self::GetTreeStream> {
        Err(Status::unimplemented("GetTree"))
    }

    async fn split_blob(&self, _: Request<pb::SplitBlobRequest>) -> Answer<pb::SplitBlobResponse> {
        Err(Status::unimplemented("SplitBlob"))
    }

    type GetChunkMappingStream = Boxed<pb::GetChunkMappingResponse>;
    async fn get_chunk_mapping(
        &self,
        _: Request<pb::GetChunkMappingRequest>,
    ) -> Answer<Self::GetChunkMappingStream> {
        Err(Status::unimplemented("GetChunkMapping"))
    }

    async fn splice_blob(
        &self,
        _: Request<pb::SpliceBlobRequest>,
    ) -> Answer<pb::SpliceBlobResponse> {
        Err(Status::unimplemented("SpliceBlob"))
    }

    async fn register_chunk_mapping(
        &self,
        _: Request<Streaming<pb::RegisterChunkMappingRequest>>,
    ) -> Answer<pb::RegisterChunkMappingResponse> {
        Err(Status::unimplemented("RegisterChunkMapping"))
    }
}

#[tonic::async_trait]
impl bs::byte_stream_server::ByteStream for Fake {
    type ReadStream = Boxed<bs::ReadResponse>;

    async fn read(&self, request: Request<bs::ReadRequest>) -> Answer<Self::ReadStream> {
        let resource = request.get_ref().resource_name.clone();
        let hash = resource_hash(&resource).unwrap_or_default();
        self.record(
            "Read",
            &request,
            None,
            None,
            Some(&resource),
            vec![hash.clone()],
        )?;
        let Some(bytes) = self.served(&hash) else {
            return Err(Status::not_found("no such blob"));
        };
        let chunks: Vec<Result<bs::ReadResponse, Status>> = bytes
            .chunks(64 * 1024)
            .map(|c| Ok(bs::ReadResponse { data: c.to_vec() }))
            .collect();
        Ok(Response::new(futures_util::stream::iter(chunks).boxed()))
    }

    async fn write(
        &self,
        request: Request<Streaming<bs::WriteRequest>>,
    ) -> Answer<bs::WriteResponse> {
        let metadata = Request::from_parts(request.metadata().clone(), Default::default(), ());
        let mut messages = request.into_inner();
        let mut resource = None;
        let mut data = Vec::new();
        let mut finished = false;
        while let Some(message) = messages.next().await {
            let message = message?;
            if resource.is_none() {
                resource = Some(message.resource_name.clone());
            }
            if message.write_offset != data.len() as i64 {
                return Err(Status::invalid_argument("write_offset out of order"));
            }
            data.extend_from_slice(&message.data);
            finished = message.finish_write;
        }
        let resource = resource.unwrap_or_default();
        let hash = resource_hash(&resource).unwrap_or_default();
        self.record(
            "Write",
            &metadata,
            None,
            None,
            Some(&resource),
            vec![hash.clone()],
        )?;
        if !finished {
            return Err(Status::invalid_argument(
                "the stream ended without finish_write",
            ));
        }
        let committed_size = data.len() as i64;
        self.state().blobs.insert(hash, data);
        Ok(Response::new(bs::WriteResponse { committed_size }))
    }

    async fn query_write_status(
        &self,
        _: Request<bs::QueryWriteStatusRequest>,
    ) -> Answer<bs::QueryWriteStatusResponse> {
        Err(Status::unimplemented("QueryWriteStatus"))
    }
}
