//! Connecting to the Docker Engine.

use std::time::Duration;

use bollard::Docker;

use super::DockerError;

/// Where the engine is when DOCKER_HOST is not set.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// How long a request that should answer at once may take.
const QUICK: Duration = Duration::from_secs(120);

/// Requests that last as long as a step or a transfer (waiting for a
/// container, streaming an image or an export) are bounded only by the
/// build: cancelling a step drops them.
const LONG: Duration = Duration::from_secs(30 * 24 * 3600);

/// A connection to one Docker Engine. Cheap to clone; clones share the
/// connection.
#[derive(Clone, Debug)]
pub struct Engine {
    quick: Docker,
    long: Docker,
    host: String,
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
