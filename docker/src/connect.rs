//! Connecting to the Docker Engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;

use strata_store::Digest;

use super::DockerError;
use super::cleanup::LiveContainers;

/// Where the engine is when DOCKER_HOST is not set.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// How long a request that should answer at once may take.
const QUICK: Duration = Duration::from_secs(120);

/// Requests that last as long as a step or a transfer (waiting for a
/// container, streaming an image or an export) are bounded only by the
/// build: cancelling a step drops them.
const LONG: Duration = Duration::from_secs(30 * 24 * 3600);

/// A connection to one Docker Engine. Cheap to clone; clones share the
/// connection, what it knows of the engine's images, and the set of
/// containers made through it that [`crate::remove_all`] removes. Each
/// [`connect`] starts a fresh set, so whoever connects owns it.
#[derive(Clone, Debug)]
pub struct Engine {
    quick: Docker,
    long: Docker,
    host: String,
    /// What this connection's users share about the engine's images.
    state: Arc<ImageState>,
    /// The containers made through this connection and not yet removed.
    live: Arc<LiveContainers>,
}

/// Per-connection knowledge of the engine's images, owned by whoever holds
/// the `Engine` (an executor, a test), never process-global.
#[derive(Debug, Default)]
pub(crate) struct ImageState {
    /// Trees made by a stage step from a parent tree: output -> parent.
    /// Only a hint for `ensure_tree_image`; losing it costs time.
    bases: Mutex<HashMap<Digest, Digest>>,
    /// One lock per image, so steps sharing an image transfer it once.
    /// Entries are never removed: there is one per image a build uses.
    locks: Mutex<HashMap<String, ImageLock>>,
}

pub(crate) type ImageLock = Arc<tokio::sync::Mutex<()>>;

impl ImageState {
    pub(crate) fn remember_base(&self, tree: Digest, base: Digest) {
        if tree != base {
            self.bases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(tree, base);
        }
    }

    pub(crate) fn base_of(&self, tree: &Digest) -> Option<Digest> {
        self.bases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tree)
            .copied()
    }

    pub(crate) fn lock_for(&self, key: &str) -> ImageLock {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.to_string()).or_default().clone()
    }
}

impl Engine {
    /// The engine's address (`unix:///var/run/docker.sock`, `tcp://...`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The API version in use: the lower of the engine's and bollard's.
    pub fn api_version(&self) -> String {
        let v = self.quick.client_version();
        format!("{}.{}", v.major_version, v.minor_version)
    }

    /// The client for requests that answer promptly.
    pub(crate) fn quick(&self) -> &Docker {
        &self.quick
    }

    /// The client for requests that last as long as a step or a transfer.
    pub(crate) fn long(&self) -> &Docker {
        &self.long
    }

    pub(crate) fn state(&self) -> &ImageState {
        &self.state
    }

    /// The containers made through this connection (or a clone of it) and
    /// not yet removed.
    pub(crate) fn live(&self) -> &LiveContainers {
        &self.live
    }

    /// This connection, sharing `state` (its owner's knowledge of the
    /// engine's images) instead of its own.
    pub(crate) fn sharing(self, state: Arc<ImageState>) -> Engine {
        Engine { state, ..self }
    }

    /// Records that `tree` is `base` plus a stage step's changes, so its
    /// image can be made as `base`'s image plus one layer.
    pub fn remember_base(&self, tree: Digest, base: Digest) {
        self.state.remember_base(tree, base);
    }
}

/// Connects to the engine named by DOCKER_HOST (the local socket when
/// unset) and negotiates the API version with it.
pub async fn connect() -> Result<Engine, DockerError> {
    let host = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_HOST.to_string());
    connect_to(&host).await
}

pub async fn connect_to(host: &str) -> Result<Engine, DockerError> {
    let unreachable = |reason: String| DockerError::Unreachable {
        host: host.to_string(),
        reason,
    };
    let docker = Docker::connect_with_host(host).map_err(|e| match e {
        bollard::errors::Error::SocketNotFoundError(path) => {
            unreachable(format!("no socket at {path}"))
        }
        e => unreachable(e.to_string()),
    })?;
    // Negotiating is the first request: it tells whether anything answers.
    let quick = docker
        .with_timeout(QUICK)
        .negotiate_version()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    // Clones share the negotiated version and the connection pool.
    let long = quick.clone().with_timeout(LONG);
    Ok(Engine {
        quick,
        long,
        host: host.to_string(),
        state: Arc::default(),
        live: Arc::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_names_it_and_how_to_start_an_engine() {
        let dir = tempfile::tempdir().unwrap();
        let host = format!("unix://{}/docker.sock", dir.path().display());
        let err = connect_to(&host).await.unwrap_err();
        let shown = err.to_string();
        assert!(matches!(err, DockerError::Unreachable { .. }), "{shown}");
        assert!(shown.contains(&host), "{shown}");
        assert!(shown.contains("scripts/docker-up.sh"), "{shown}");
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        // Bound but never accepted from, then closed: connecting fails.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let host = format!("unix://{}", path.display());
        let err = connect_to(&host).await.unwrap_err();
        assert!(matches!(err, DockerError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains(&host), "{err}");
    }
}
