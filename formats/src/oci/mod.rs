//! OCI and Docker images as trees of the store.
//!
//! - [`layout`]: an image kept as an OCI image layout tree that is also a
//!   docker-archive (`assemble`, `read`, `is_layout`).
//! - [`layer`]: layer changesets on trees (`diff`, `apply`, with whiteouts)
//!   and an image's root file system (`flatten`).
//! - [`spec`]: the JSON documents (index, manifest, config) and media types.
//! - [`platform`]: `os/architecture[/variant]`, and which image serves one.
//! - [`reference`]: the image reference grammar (`[host/]path[:tag][@digest]`).
//!
//! Nothing here runs a process or writes outside the store, and everything
//! written is a pure function of its inputs.

mod blob;
pub mod layer;
pub mod layout;
pub mod platform;
pub mod reference;
pub mod spec;

pub use blob::{Blob, BlobSink, is_sha256_digest};
pub use layout::Image;
