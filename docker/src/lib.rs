//! Steps in containers: the Docker Engine executor.
//!
//! [`DockerExecutor`] implements `strata_exec::Executor` for the work that
//! needs a Docker Engine or a registry: `run` steps with `image:`, `stage`
//! steps (a `copy` in-process, a command in a container), `image-pull`
//! (through `strata_registry`) and `docker-data-root` (an ephemeral dockerd,
//! [`data_root`]). It connects lazily, once per build, so builds without
//! container work never need Docker, and its `shutdown` awaits the removal
//! of every container still running (after Ctrl-C).
//!
//! Everything here talks to a Docker Engine through its API (bollard), with
//! the API version negotiated, so an engine as old as 20.10 (API 1.41) works.
//! The executor uses it in this order:
//!
//! 1. [`connect`] once per build (the [`Engine`] is cheap to clone and share,
//!    and holds what its users learn about the engine's images),
//!    then [`reap_stale`] to remove containers that killed builds left behind.
//! 2. Make the step's image present: [`ensure_layout`] (an image layout tree
//!    from the store, loaded as a docker-archive), [`ensure_tree_image`] (a
//!    root file system tree, for `stage` steps) or [`ensure_pinned`] (pulled
//!    by the engine, by digest).
//! 3. [`run`] a [`ContainerSpec`]; its output goes to a [`LogSink`]. The
//!    [`Finished`] result holds the exit code and a [`ContainerHandle`], from
//!    which a `stage` step exports its file system
//!    ([`ContainerHandle::export_tree`], then [`restore_injected`]).
//! 4. The container is removed when the handle is removed or dropped, and
//!    when `run` fails or its future is dropped. A Ctrl-C handler awaits
//!    [`remove_all`] before the process exits, since a dropped future only
//!    schedules the removal. The containers still to remove belong to the
//!    [`Engine`] connection they were made through (so to the executor that
//!    connected), never to the process.
//!
//! A `strata worker` runs the actions that name a `container-image` through
//! [`WorkerContainers`] (`strata_exec::remote_step::ContainerHost`).
//!
//! `strata store gc --docker` lists the engine's tree images
//! ([`tree_images`]) and removes those whose tree the store no longer holds
//! ([`remove_tree_image`]).
//!
//! Containers carry the labels `strata=1` and `strata.pid` (with the start
//! time, boot and PID namespace of this process, so a reused PID or another
//! machine's build is never mistaken for a dead one).

mod cleanup;
mod connect;
mod container;
pub mod data_root;
mod error;
mod executor;
mod export;
mod image;
mod layered;
mod load;
mod logs;
mod prune;
mod steps;
mod upload;
mod upper;
mod worker_containers;

pub use cleanup::{reap_stale, remove_all};
pub use connect::{Engine, connect, connect_to};
pub use container::{ContainerHandle, ContainerSpec, Finished, Mount, run, run_within};
pub use error::DockerError;
pub use executor::DockerExecutor;
pub use export::{INJECTED, restore_injected};
pub use image::{TREE_REPOSITORY, ensure_layout, ensure_pinned, ensure_tree_image, tag};
pub use logs::{LogSink, LogStream};
pub use prune::{
    PruneReport, Removal, TreeImage, prune_tree_images, remove_tree_image, tree_images,
};
pub use strata_formats::oci::reference::split_tag;
pub use worker_containers::WorkerContainers;
