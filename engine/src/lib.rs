//! Strata's engine: everything between a BUILD.yaml and an `out/` folder.
//!
//! The phases, in the order data flows through them, each in its own module:
//! load (`load`) -> graph (`graph`) -> key (`inputs`, `key`) -> execute
//! (`exec`, `sandbox`, `scheduler`) -> store (`strata_store`) -> materialize
//! (`materialize`), with `records` keeping what each build did. `docker`
//! runs steps in containers of a Docker Engine.

pub mod build;
pub mod docker;
pub mod exec;
pub mod globs;
pub mod graph;
pub mod inputs;
pub mod key;
pub mod load;
pub mod materialize;
pub mod records;
pub mod sandbox;
pub mod scheduler;
pub mod statcache;

pub use strata_store::VerifyReport;

/// Opens the store at `dir` with the digest function builds use.
pub fn open_store(dir: &std::path::Path) -> strata_store::Result<strata_store::Store> {
    strata_store::Store::open(dir, strata_store::DigestFunction::Blake3)
}
