//! GetCapabilities: what a client may expect of this server.

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;
use bazel_remote_apis::build::bazel::semver::SemVer;
use pb::capabilities_server::Capabilities;
use std::sync::Arc;
use tonic::{Request, Response, Status};

use super::super::auth::Access;
use super::{Context, MAX_BATCH};
use crate::layout::Kind;
use strata_store::DigestFunction;

pub struct Service(pub(super) Arc<Context>);

/// REAPI versions served: 2.0 (what Bazel 4 asks for) to 2.3 (the
/// `digest_function` fields of requests, which are read).
const LOW_API: SemVer = SemVer {
    major: 2,
    minor: 0,
    patch: 0,
    prerelease: String::new(),
};
const HIGH_API: SemVer = SemVer {
    major: 2,
    minor: 3,
    patch: 0,
    prerelease: String::new(),
};

#[tonic::async_trait]
impl Capabilities for Service {
    async fn get_capabilities(
        &self,
        request: Request<pb::GetCapabilitiesRequest>,
    ) -> Result<Response<pb::ServerCapabilities>, Status> {
        let cx = &self.0;
        cx.check_instance(&request.get_ref().instance_name)?;
        // Whether this caller may update the action cache: Bazel reads it
        // before uploading its results, and with `false` asks for
        // `--remote_upload_local_results=false` rather than fail each
        // upload. The same rule as the writes themselves.
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let update_enabled = cx.cache.check(authorization, Access::Write).is_ok();
        let function = match cx.function() {
            DigestFunction::Sha256 => pb::digest_function::Value::Sha256,
            DigestFunction::Blake3 => pb::digest_function::Value::Blake3,
        };
        Ok(Response::new(pb::ServerCapabilities {
            cache_capabilities: Some(pb::CacheCapabilities {
                digest_functions: vec![function as i32],
                action_cache_update_capabilities: Some(pb::ActionCacheUpdateCapabilities {
                    update_enabled,
                }),
                cache_priority_capabilities: None,
                max_batch_total_size_bytes: MAX_BATCH as i64,
                // Symlinks are the client's business: the cache stores
                // messages and blobs and never makes a tree of files.
                symlink_absolute_path_strategy: pb::symlink_absolute_path_strategy::Value::Unknown
                    as i32,
                supported_compressors: Vec::new(),
                supported_batch_update_compressors: Vec::new(),
                max_cas_blob_size_bytes: cx.cache.limit(Kind::Cas) as i64,
                split_blob_support: false,
                ..Default::default()
            }),
            execution_capabilities: None,
            deprecated_api_version: None,
            low_api_version: Some(LOW_API),
            high_api_version: Some(HIGH_API),
        }))
    }
}
