//! The subset of the REAPI v2 data model (`build.bazel.remote.execution.v2`)
//! that Strata stores, with the upstream field numbers.
//!
//! These messages are the canonical encoding of trees, actions and action
//! results: prost writes fields in field-number order and Strata sorts every
//! repeated field the protocol asks to be sorted, so equal values encode to
//! equal bytes. Because the numbers match upstream, a REAPI cache can store
//! these bytes unchanged.

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Duration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `google.protobuf.UInt32Value`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct UInt32Value {
    #[prost(uint32, tag = "1")]
    pub value: u32,
}

#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Digest {
    #[prost(string, tag = "1")]
    pub hash: String,
    #[prost(int64, tag = "2")]
    pub size_bytes: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct NodeProperty {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct NodeProperties {
    #[prost(message, repeated, tag = "1")]
    pub properties: Vec<NodeProperty>,
    #[prost(message, optional, tag = "2")]
    pub mtime: Option<Timestamp>,
    #[prost(message, optional, tag = "3")]
    pub unix_mode: Option<UInt32Value>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct FileNode {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub digest: Option<Digest>,
    #[prost(bool, tag = "4")]
    pub is_executable: bool,
    #[prost(message, optional, tag = "6")]
    pub node_properties: Option<NodeProperties>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DirectoryNode {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub digest: Option<Digest>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SymlinkNode {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub target: String,
    #[prost(message, optional, tag = "4")]
    pub node_properties: Option<NodeProperties>,
}

/// One level of a Merkle tree; children are referenced by digest.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Directory {
    #[prost(message, repeated, tag = "1")]
    pub files: Vec<FileNode>,
    #[prost(message, repeated, tag = "2")]
    pub directories: Vec<DirectoryNode>,
    #[prost(message, repeated, tag = "3")]
    pub symlinks: Vec<SymlinkNode>,
    #[prost(message, optional, tag = "5")]
    pub node_properties: Option<NodeProperties>,
}

/// A whole tree in one message: the root and every distinct child directory.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Tree {
    #[prost(message, optional, tag = "1")]
    pub root: Option<Directory>,
    #[prost(message, repeated, tag = "2")]
    pub children: Vec<Directory>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Property {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Platform {
    #[prost(message, repeated, tag = "1")]
    pub properties: Vec<Property>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct EnvironmentVariable {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Command {
    #[prost(string, repeated, tag = "1")]
    pub arguments: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    pub environment_variables: Vec<EnvironmentVariable>,
    #[prost(message, optional, tag = "5")]
    pub platform: Option<Platform>,
    #[prost(string, tag = "6")]
    pub working_directory: String,
    #[prost(string, repeated, tag = "7")]
    pub output_paths: Vec<String>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Action {
    #[prost(message, optional, tag = "1")]
    pub command_digest: Option<Digest>,
    #[prost(message, optional, tag = "2")]
    pub input_root_digest: Option<Digest>,
    #[prost(message, optional, tag = "6")]
    pub timeout: Option<Duration>,
    #[prost(bool, tag = "7")]
    pub do_not_cache: bool,
    #[prost(bytes = "vec", tag = "9")]
    pub salt: Vec<u8>,
    #[prost(message, optional, tag = "10")]
    pub platform: Option<Platform>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct OutputDirectory {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(message, optional, tag = "3")]
    pub tree_digest: Option<Digest>,
    #[prost(bool, tag = "4")]
    pub is_topologically_sorted: bool,
    #[prost(message, optional, tag = "5")]
    pub root_directory_digest: Option<Digest>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ExecutedActionMetadata {
    #[prost(string, tag = "1")]
    pub worker: String,
    #[prost(message, optional, tag = "3")]
    pub worker_start_timestamp: Option<Timestamp>,
    #[prost(message, optional, tag = "4")]
    pub worker_completed_timestamp: Option<Timestamp>,
    #[prost(message, optional, tag = "7")]
    pub execution_start_timestamp: Option<Timestamp>,
    #[prost(message, optional, tag = "8")]
    pub execution_completed_timestamp: Option<Timestamp>,
    #[prost(message, repeated, tag = "11")]
    pub auxiliary_metadata: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ActionResult {
    #[prost(message, repeated, tag = "3")]
    pub output_directories: Vec<OutputDirectory>,
    #[prost(int32, tag = "4")]
    pub exit_code: i32,
    #[prost(message, optional, tag = "6")]
    pub stdout_digest: Option<Digest>,
    #[prost(message, optional, tag = "8")]
    pub stderr_digest: Option<Digest>,
    #[prost(message, optional, tag = "9")]
    pub execution_metadata: Option<ExecutedActionMetadata>,
}
