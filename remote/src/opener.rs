//! What the binary hands the engine: opens the workspace's remote cache
//! (settings from `strata.yaml` and the command line, then the
//! connection and the digest function agreed) once the engine knows the
//! workspace, before it opens the store.

use std::path::Path;
use std::sync::Arc;

use strata_store::DigestFunction;
use strata_store::remote_cache::{BoxFuture, Opened, RemoteOpener, Warn};

use crate::config::{self, RemoteCli};
use crate::execution::RemoteExecutor;
use crate::{cache, store_function};

/// Opens the remote cache configured for a workspace, if any, and asks
/// the remote execution service, if the build has one.
#[derive(Clone, Default)]
pub struct Opener {
    cli: RemoteCli,
    executor: Option<Arc<RemoteExecutor>>,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("cli", &self.cli)
            .field("executor", &self.executor.is_some())
            .finish()
    }
}

impl Opener {
    /// `cli`: `--remote-cache`, `--remote-upload`, `--sign-key`, which
    /// override `strata.yaml`.
    pub fn new(cli: RemoteCli) -> Opener {
        Opener {
            cli,
            executor: None,
        }
    }

    /// Opens `executor` too, first: the service's digest function is the
    /// store's, and the remote cache's.
    pub fn with_executor(mut self, executor: Arc<RemoteExecutor>) -> Opener {
        self.executor = Some(executor);
        self
    }
}

impl RemoteOpener for Opener {
    fn open<'a>(
        &'a self,
        workspace_root: &'a Path,
        store_dir: &'a Path,
        warn: Warn,
    ) -> BoxFuture<'a, Result<Opened, String>> {
        Box::pin(async move {
            // A remote cache decides the digest function (BLAKE3 when it
            // speaks it, SHA-256 otherwise); one that cannot be asked
            // leaves the store's own.
            let executes_in = match &self.executor {
                Some(executor) => executor.open(workspace_root, warn.as_ref()).await?,
                None => None,
            };
            let Some(mut settings) = config::settings(workspace_root, &self.cli)? else {
                // An executor that cannot be reached leaves the store's
                // own function, so its results are found locally.
                let fallback = match &self.executor {
                    Some(_) => store_function::held(store_dir),
                    None => None,
                };
                return Ok(Opened {
                    cache: None,
                    function: executes_in.or(fallback).unwrap_or(DigestFunction::Blake3),
                });
            };
            if let Some(function) = executes_in {
                if settings.digest_function.is_some_and(|f| f != function) {
                    return Err(format!(
                        "the remote cache is set to {}, but the remote executor hashes with {}: one store cannot use both",
                        settings
                            .digest_function
                            .map(|f| f.name())
                            .unwrap_or_default(),
                        function.name()
                    ));
                }
                settings.digest_function = Some(function);
            }
            let held = store_function::held(store_dir);
            let (cache, function) = cache::open(settings, held, warn).await;
            Ok(Opened {
                cache: cache
                    .map(|c| Arc::new(c) as Arc<dyn strata_store::remote_cache::RemoteCache>),
                function,
            })
        })
    }
}
