//! Strata's engine: everything between a BUILD.yaml and an `out/` folder.
//!
//! The phases, in the order data flows through them, each in its own module:
//! load (`strata_load`) -> graph (`graph`, `plan`) -> key (`inputs`, `key`) -> execute
//! (`exec`, `sandbox`, `scheduler`) -> store (`strata_store`) -> materialize
//! (`materialize`), with `records` keeping what each build did. `docker`
//! runs steps in containers of a Docker Engine, `containers` drives it for
//! container work (`run` with `image:`, stages), `registry` pulls images by
//! digest for `image-pull`, and `data_root` preloads images for
//! `docker-data-root`; `caches` holds cache mounts; `gc` bounds the store.
//! `audit` rebuilds under perturbations and compares with the last build.
//! `descriptors` and `keyring` keep what `strata` inherited from reaching
//! its steps.

pub mod audit;
pub mod binfmt;
pub mod build;
pub mod caches;
pub mod cgroup;
pub mod containers;
pub mod critical_path;
pub mod data_root;
pub mod declared;
pub mod descriptors;
pub mod docker;
pub mod exec;
pub mod explain;
pub mod fstree;
pub mod gc;
pub mod graph;
pub mod inputs;
pub mod key;
pub mod keyinfo;
pub mod keyring;
pub mod logs;
pub mod manifest;
pub mod mask;
pub mod materialize;
pub mod narrow;
pub mod plan;
pub mod platforms;
pub mod records;
pub mod registry;
pub mod render;
pub mod sandbox;
pub mod scheduler;
pub mod statcache;
pub mod toolchain;
pub mod trace;

pub use strata_store::{RepairReport, Store, VerifyReport};

/// Opens the store at `dir` with the digest function builds use.
pub fn open_store(dir: &std::path::Path) -> strata_store::Result<strata_store::Store> {
    strata_store::Store::open(dir, strata_store::DigestFunction::Blake3)
}
