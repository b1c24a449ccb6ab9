//! The Remote Workers API (`google.devtools.remoteworkers.v1test2`), the
//! part a bot uses: `CreateBotSession` and `UpdateBotSession` of the `Bots`
//! service, which BuildGrid serves beside REAPI Execution.
//!
//! The messages are declared by hand with the upstream field numbers
//! (bots.proto and worker.proto, Apache-2.0, as BuildGrid 0.4.4 ships them
//! compiled), as `strata_store::reapi` declares REAPI's: the API is two
//! calls and nine messages, far less than generated code and its build
//! step would be. The crate `bazel-remote-apis` has REAPI, not this API.

use bazel_remote_apis::google::protobuf::{Any, Timestamp};
use bazel_remote_apis::google::rpc::Status;
use tonic::codegen::http::uri::PathAndQuery;

use crate::client::Transport;

/// `BotStatus.OK`: the bot can take leases.
pub const BOT_STATUS_OK: i32 = 1;
/// `BotStatus.BOT_TERMINATING`: the bot is going away; BuildGrid assigns
/// nothing more to it.
pub const BOT_STATUS_TERMINATING: i32 = 4;

/// `LeaseState`.
pub mod lease_state {
    pub const PENDING: i32 = 1;
    pub const ACTIVE: i32 = 2;
    pub const COMPLETED: i32 = 4;
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BotSession {
    /// Set by the server: `<instance>/<id>`.
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub bot_id: String,
    #[prost(int32, tag = "3")]
    pub status: i32,
    #[prost(message, optional, tag = "4")]
    pub worker: Option<Worker>,
    #[prost(message, repeated, tag = "5")]
    pub leases: Vec<Lease>,
    #[prost(message, optional, tag = "6")]
    pub expire_time: Option<Timestamp>,
    /// The server's version of the leases it assigned (BuildGrid compares
    /// it to decide whether anything changed).
    #[prost(string, tag = "7")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Lease {
    #[prost(string, tag = "7")]
    pub id: String,
    /// What to do: for REAPI, an `Action` or the `Digest` of one.
    #[prost(message, optional, tag = "8")]
    pub payload: Option<Any>,
    /// Set by the bot when completing: an `ActionResult`.
    #[prost(message, optional, tag = "9")]
    pub result: Option<Any>,
    #[prost(int32, tag = "2")]
    pub state: i32,
    #[prost(message, optional, tag = "3")]
    pub status: Option<Status>,
    #[prost(message, optional, tag = "4")]
    pub requirements: Option<Worker>,
    #[prost(message, optional, tag = "5")]
    pub expire_time: Option<Timestamp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Worker {
    /// The first is the primary device, whose properties BuildGrid matches
    /// against an action's platform.
    #[prost(message, repeated, tag = "1")]
    pub devices: Vec<Device>,
    #[prost(message, repeated, tag = "2")]
    pub properties: Vec<Property>,
    /// BuildGrid reads `capacity`: how many leases the bot takes at once.
    #[prost(message, repeated, tag = "3")]
    pub configs: Vec<Property>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Device {
    #[prost(string, tag = "1")]
    pub handle: String,
    #[prost(message, repeated, tag = "2")]
    pub properties: Vec<Property>,
}

/// `Worker.Property`, `Worker.Config` and `Device.Property`: one shape.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Property {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateBotSessionRequest {
    /// The instance name.
    #[prost(string, tag = "1")]
    pub parent: String,
    #[prost(message, optional, tag = "2")]
    pub bot_session: Option<BotSession>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateBotSessionRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub bot_session: Option<BotSession>,
}

/// `google.rpc.PreconditionFailure`: how REAPI names missing blobs in a
/// `FAILED_PRECONDITION` status (type `MISSING`, subject
/// `blobs/<hash>/<size>`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PreconditionFailure {
    #[prost(message, repeated, tag = "1")]
    pub violations: Vec<Violation>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Violation {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub subject: String,
    #[prost(string, tag = "3")]
    pub description: String,
}

pub const PRECONDITION_FAILURE_TYPE: &str = "type.googleapis.com/google.rpc.PreconditionFailure";

/// A client of the `Bots` service over a channel of the REAPI client.
#[derive(Clone)]
pub struct BotsClient {
    grpc: tonic::client::Grpc<Transport>,
}

impl BotsClient {
    pub fn new(transport: Transport) -> BotsClient {
        BotsClient {
            grpc: tonic::client::Grpc::new(transport),
        }
    }

    pub async fn create_bot_session(
        &mut self,
        request: tonic::Request<CreateBotSessionRequest>,
    ) -> Result<BotSession, tonic::Status> {
        self.unary(request, "CreateBotSession").await
    }

    pub async fn update_bot_session(
        &mut self,
        request: tonic::Request<UpdateBotSessionRequest>,
    ) -> Result<BotSession, tonic::Status> {
        self.unary(request, "UpdateBotSession").await
    }

    async fn unary<Req: prost::Message + 'static>(
        &mut self,
        request: tonic::Request<Req>,
        method: &'static str,
    ) -> Result<BotSession, tonic::Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("the connection is not ready: {e}")))?;
        let path = PathAndQuery::try_from(format!(
            "/google.devtools.remoteworkers.v1test2.Bots/{method}"
        ))
        .expect("a valid path");
        let codec = tonic_prost::ProstCodec::<Req, BotSession>::default();
        self.grpc
            .unary(request, path, codec)
            .await
            .map(tonic::Response::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Field numbers as BuildGrid's compiled bots.proto has them (its
    /// descriptor printed with protoc's names): a lease's id is field 7,
    /// its payload 8, its result 9.
    #[test]
    fn worker_lease_fields_have_the_upstream_numbers() {
        let lease = Lease {
            id: "op".into(),
            state: lease_state::ACTIVE,
            ..Default::default()
        };
        // Field 7, wire type 2 (0x3a), then field 2, varint (0x10).
        assert_eq!(lease.encode_to_vec(), vec![0x10, 2, 0x3a, 2, b'o', b'p']);
        let session = BotSession {
            bot_id: "b".into(),
            version: "3".into(),
            ..Default::default()
        };
        assert_eq!(session.encode_to_vec(), vec![0x12, 1, b'b', 0x3a, 1, b'3']);
    }
}
