//! What the binary hands the engine: opens the workspace's remote cache
//! (settings from `strata.yaml` and the command line, then the
//! connection and the digest function agreed) once the engine knows the
//! workspace, before it opens the store.

use std::path::Path;
use std::sync::Arc;

use strata_store::DigestFunction;
use strata_store::remote_cache::{BoxFuture, Opened, RemoteOpener, Warn};

use crate::config::{self, RemoteCli};
use crate::{cache, store_function};

/// Opens the remote cache configured for a workspace, if any.
#[derive(Clone, Debug, Default)]
pub struct Opener {
    cli: RemoteCli,
}

impl Opener {
    /// `cli`: `--remote-cache`, `--remote-upload`, `--sign-key`, which
    /// override `strata.yaml`.
    pub fn new(cli: RemoteCli) -> Opener {
        Opener { cli }
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
            let Some(settings) = config::settings(workspace_root, &self.cli)? else {
                return Ok(Opened {
                    cache: None,
                    function: DigestFunction::Blake3,
                });
            };
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
