//! GetActionResult and UpdateActionResult over the cache's `ac/` entries,
//! the ones Bazel's HTTP protocol reads and writes at `/ac/<hex>`.

use std::io::Read;
use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;
use pb::action_cache_server::ActionCache;
use prost::Message;
use tonic::{Request, Response, Status};

use super::{Context, read_error, rejected_status};
use crate::layout::{ACTION_RESULT_LIMIT, Kind};

pub struct Service(pub(super) Arc<Context>);

#[tonic::async_trait]
impl ActionCache for Service {
    async fn get_action_result(
        &self,
        request: Request<pb::GetActionResultRequest>,
    ) -> Result<Response<pb::ActionResult>, Status> {
        let cx = &self.0;
        let request = request.into_inner();
        cx.check_addressed(&request.instance_name, request.digest_function)?;
        let key = cx.digest(request.action_digest.as_ref(), "action_digest")?;
        // Inlining (`inline_stdout`, `inline_output_files`) is something a
        // server MAY do; the blobs are there to fetch.
        let opened = cx.cache.open(Kind::Ac, key.hash).await;
        let (file, _) = match opened {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                return Err(Status::not_found(format!(
                    "no action result for action {key}"
                )));
            }
            Err(e) => return Err(read_error(&cx.cache, Kind::Ac, &key.hash, &e)),
        };
        let read = tokio::task::spawn_blocking(move || {
            let mut bytes = Vec::new();
            file.take(ACTION_RESULT_LIMIT + 1).read_to_end(&mut bytes)?;
            Ok::<_, std::io::Error>(bytes)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        let bytes = read.map_err(|e| read_error(&cx.cache, Kind::Ac, &key.hash, &e))?;
        // Entries were checked when stored; one that does not decode now
        // was changed on disk.
        pb::ActionResult::decode(bytes.as_slice())
            .map(Response::new)
            .map_err(|e| {
                let e = std::io::Error::other(format!("not an ActionResult: {e}"));
                read_error(&cx.cache, Kind::Ac, &key.hash, &e)
            })
    }

    async fn update_action_result(
        &self,
        request: Request<pb::UpdateActionResultRequest>,
    ) -> Result<Response<pb::ActionResult>, Status> {
        let cx = &self.0;
        let request = request.into_inner();
        cx.check_addressed(&request.instance_name, request.digest_function)?;
        let key = cx.digest(request.action_digest.as_ref(), "action_digest")?;
        let result = request
            .action_result
            .ok_or_else(|| Status::invalid_argument("no action_result"))?;
        // Stored as HTTP stores it: the serialized ActionResult, checked
        // (it decodes, every blob it names is stored) before it is.
        cx.cache
            .store_action_result(key.hash, result.encode_to_vec())
            .await
            .map_err(|r| rejected_status(r, cx.function()))?;
        Ok(Response::new(result))
    }
}
