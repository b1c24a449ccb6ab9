//! Strata's executor seam and the local executor.
//!
//! `Executor` is what the scheduler hands a keyed step that missed the
//! cache; `Executors` picks the one that runs it. `LocalExecutor` runs
//! `run` steps as processes of this machine (`step`: stage inputs, spawn,
//! check and capture outputs) in the namespace sandbox (`sandbox`, the
//! `strata __sandbox` helper) where it works, and built-in rules
//! in-process. Sandboxed steps reuse scratch folders (`pool`) and mount
//! input trees made once per store (`trees`). Around a step: its memory cgroup (`cgroup`), a fresh
//! session keyring (`keyring`), descriptors kept from it (`descriptors`),
//! secrets masked in its logs (`mask`), cache mounts (`caches`), folders of
//! any depth handled through handles (`fstree`), and what `strata audit`
//! perturbs (`perturb`, `reorder`). `remote_step` runs what a remote
//! execution service hands `strata worker`: a REAPI command over its input
//! root, in the same sandbox. `held` keeps the outputs a remote executor
//! returned without their files, and fetches them when something needs
//! their bytes.
//!
//! The only code that spawns step processes. It never writes the action
//! cache: an executor returns the output and action result, and the
//! caller decides what is cached.

pub mod caches;
pub mod cgroup;
pub mod descriptors;
mod executor;
mod executors;
pub mod fstree;
pub mod held;
pub mod keyring;
pub mod launch;
mod local;
pub mod mask;
pub mod perturb;
pub mod pool;
pub mod remote_step;
pub mod reorder;
pub mod sandbox;
pub mod source;
pub mod step;
pub mod trees;

pub use executor::{BoxFuture, Executor, Request, StepEvents};
pub use executors::Executors;
pub use held::{BlobSource, Held};
pub use local::LocalExecutor;
pub use source::SourceFile;
pub use step::{Failure, Isolation, StepFailure, StepSuccess};
