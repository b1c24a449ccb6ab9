//! File formats as trees of the store: bytes in, trees out, and back.
//!
//! - [`oci`]: OCI image layouts (that are also docker-archives), their JSON
//!   documents and media types, layer changesets, platforms, and the image
//!   reference grammar (`[host/]path[:tag][@digest]`).
//! - [`unpack`]: untrusted tar streams and .deb packages into trees.
//! - [`tarball`]: trees into deterministic tar streams.
//! - [`compress`]: deterministic encoders, and decoders chosen by magic bytes.
//! - [`listing`]: the entries of a tar, ar (.deb) or newc cpio archive, for
//!   comparing archives entry by entry.
//!
//! Everything here is a pure function of its input: the same bytes give
//! the same tree, the same tree the same bytes, on any machine. Nothing
//! runs a process or writes outside the store, and hostile input is an
//! error, never a panic. This crate knows no rule, no BUILD.yaml and no
//! network.

pub mod compress;
mod error;
pub mod listing;
pub mod oci;
pub mod tarball;
#[cfg(test)]
pub(crate) mod testkit;
pub mod unpack;

pub use error::FormatError;
