//! Strata's engine: everything between a BUILD.yaml and an `out/` folder.
//!
//! The phases, in the order data flows through them, each in its own module:
//! load (`strata_load`) -> graph (`graph`, `plan`) -> key (`inputs`, `key`) -> execute
//! (`scheduler`, which decides what runs next, and `execute`, the cache
//! layers each step goes through to an executor of `strata_exec` and back)
//! -> store (`strata_store`) -> materialize (`materialize`),
//! with `records` keeping what each build did. The engine sees executors
//! only through `strata_exec::Executor`; the binary builds them (the local
//! one, and strata-docker's for container work) and passes them in. `gc`
//! bounds the store. `audit` rebuilds under perturbations and compares with
//! the last build.

pub mod audit;
pub mod binfmt;
pub mod build;
pub mod critical_path;
pub mod declared;
mod discard;
pub mod error;
pub mod execute;
pub mod explain;
pub mod folder_cache;
pub mod gc;
pub mod graph;
pub mod inputs;
pub mod job;
pub mod key;
pub mod keyinfo;
pub mod logs;
pub mod manifest;
pub mod materialize;
pub mod narrow;
pub mod plan;
pub mod platforms;
pub mod records;
pub mod render;
pub mod scheduler;
pub mod statcache;
pub mod supply;
pub mod targets;
pub mod toolchain;
pub mod trace;

pub use strata_store::{RepairReport, Store, VerifyReport};

/// Opens the store at `dir` with the digest function builds use.
pub fn open_store(dir: &std::path::Path) -> strata_store::Result<strata_store::Store> {
    strata_store::Store::open(dir, strata_store::DigestFunction::Blake3)
}
