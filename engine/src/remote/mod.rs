//! The remote cache as a build uses it: looked up on a local miss, filled
//! after a step runs, trusted by signature, and never fatal.

pub mod cache;
pub mod config;
pub mod sign;
pub mod store_function;

pub use cache::{RemoteCache, RemoteStats};
pub use config::{RemoteCli, RemoteSettings};
