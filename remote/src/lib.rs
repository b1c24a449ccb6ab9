//! Strata's remote caches and remote execution worker: the only crate that
//! speaks cache and remote execution protocols.
//!
//! - [`client`]: REAPI v2 over gRPC and Bazel's HTTP cache protocol behind
//!   one async API (TLS, endpoints, streamed and verified blob transfers).
//! - [`layout`]: Bazel's HTTP cache layout (`/ac/<hex>`, `/cas/<hex>`), one
//!   definition for the client and the server.
//! - [`config`], [`sign`], [`cache`], [`store_function`]: the remote cache
//!   as a build uses it (settings from `strata.yaml` and flags, signed
//!   entries, lookup and background upload that never fail a build), behind
//!   [`strata_store::remote_cache::RemoteCache`]; [`Opener`] is what the
//!   binary hands the engine.
//! - [`server`]: `strata cache serve`, a Bazel HTTP cache and a REAPI gRPC
//!   cache over one folder, on one port.
//! - [`worker`]: `strata worker`, a bot of BuildGrid's Remote Workers API
//!   running leased REAPI actions in Strata's sandbox (through
//!   `strata_exec::remote_step`).
//!
//! Invariants: a remote cache never fails a build (every failure is a
//! warning and a miss), no blob enters the local store unless it hashes to
//! its digest, and credentials are never logged (`Debug` redacts them).

pub mod cache;
pub mod client;
pub mod config;
pub mod execution;
pub mod layout;
mod opener;
pub mod server;
pub mod sign;
pub mod store_function;
pub mod worker;

pub use cache::RemoteCache;
pub use config::{ExecutorCli, RemoteCli, RemoteSettings};
pub use execution::{ExecutionStats, RemoteExecutor};
pub use opener::Opener;
pub use strata_store::remote_cache::RemoteStats;
