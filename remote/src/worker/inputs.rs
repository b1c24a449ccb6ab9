//! What a lease needs before it runs: its `Action`, `Command` and input
//! root, fetched from the service's CAS into the worker's own (only what
//! that lacks), every blob checked against its digest. Blobs the service
//! does not hold are all named at once, as REAPI's `FAILED_PRECONDITION`
//! asks, so the client can upload them and try again.

use std::collections::HashSet;

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;
use prost::Message;
use strata_store::{Digest, DigestFunction, tree};

use super::cache::LocalCas;
use super::lease::LeaseError;
use crate::client::{Remote, RemoteError};

/// An action's command and input root, all of it in the worker's CAS.
pub(crate) struct Inputs {
    pub command: pb::Command,
    pub input_root: Digest,
}

/// Where blobs come from: the service's CAS.
pub(crate) struct Source<'a> {
    pub remote: &'a Remote,
    pub local: &'a LocalCas,
    pub function: DigestFunction,
}

pub(crate) async fn fetch(source: &Source<'_>, action: &pb::Action) -> Result<Inputs, LeaseError> {
    let command_digest = named(action.command_digest.as_ref(), "command")?;
    let input_root = named(action.input_root_digest.as_ref(), "input root")?;
    let mut missing = Vec::new();
    let command = match source.ensure(&[command_digest]).await {
        Ok(()) => Some(source.decode::<pb::Command>(&command_digest, "command")?),
        Err(LeaseError::Missing(m)) => {
            missing.extend(m);
            None
        }
        Err(e) => return Err(e),
    };
    // The tree, one level of folders at a time; then every file at once.
    let mut files = Vec::new();
    let mut seen = HashSet::from([input_root]);
    let mut level = vec![input_root];
    while !level.is_empty() {
        match source.ensure(&level).await {
            Ok(()) => {}
            Err(LeaseError::Missing(m)) => {
                level.retain(|d| !m.contains(d));
                missing.extend(m);
            }
            Err(e) => return Err(e),
        }
        let mut next = Vec::new();
        for digest in &level {
            let dir = tree::read_directory(source.local.store().cas(), digest).map_err(|e| {
                LeaseError::Invalid(format!("the input root's folder {digest}: {e}"))
            })?;
            for f in &dir.files {
                files.extend(f.digest.as_ref().and_then(Digest::from_proto));
            }
            for d in &dir.directories {
                if let Some(child) = d.digest.as_ref().and_then(Digest::from_proto)
                    && seen.insert(child)
                {
                    next.push(child);
                }
            }
        }
        level = next;
    }
    files.sort();
    files.dedup();
    match source.ensure(&files).await {
        Ok(()) => {}
        Err(LeaseError::Missing(m)) => missing.extend(m),
        Err(e) => return Err(e),
    }
    match command {
        Some(command) if missing.is_empty() => Ok(Inputs {
            command,
            input_root,
        }),
        _ => Err(LeaseError::Missing(missing)),
    }
}

fn named(digest: Option<&pb::Digest>, what: &str) -> Result<Digest, LeaseError> {
    digest
        .and_then(|d| Digest::from_hex(&d.hash, u64::try_from(d.size_bytes).ok()?))
        .ok_or_else(|| LeaseError::Invalid(format!("the action names no valid {what} digest")))
}

impl Source<'_> {
    /// Makes `digests` present in the worker's CAS; those the service does
    /// not hold either are [`LeaseError::Missing`].
    pub(crate) async fn ensure(&self, digests: &[Digest]) -> Result<(), LeaseError> {
        let cas = self.local.store().cas();
        let mut absent = Vec::new();
        for d in digests {
            if cas.contains(d) {
                self.local.used(d);
            } else {
                absent.push(*d);
            }
        }
        if absent.is_empty() {
            return Ok(());
        }
        match self.remote.download_many(self.function, &absent, cas).await {
            Ok(()) => {
                self.local.added(absent.iter().map(|d| d.size_bytes).sum());
                Ok(())
            }
            Err(e) => {
                // Fetching stops at the first failure: ask which are missing.
                let missing = self
                    .remote
                    .find_missing(self.function, &absent)
                    .await
                    .map_err(|e| fetch_error(&e))?;
                if missing.is_empty() {
                    Err(fetch_error(&e))
                } else {
                    Err(LeaseError::Missing(missing))
                }
            }
        }
    }

    pub(crate) fn decode<M: Message + Default>(
        &self,
        digest: &Digest,
        what: &str,
    ) -> Result<M, LeaseError> {
        let bytes =
            self.local.store().cas().read(digest).map_err(|e| {
                LeaseError::Internal(format!("cannot read the {what} {digest}: {e}"))
            })?;
        M::decode(bytes.as_slice())
            .map_err(|e| LeaseError::Invalid(format!("the {what} {digest} does not decode: {e}")))
    }
}

fn fetch_error(e: &RemoteError) -> LeaseError {
    let message = super::service_error(e);
    if e.is_transient() {
        LeaseError::Unavailable(message)
    } else {
        LeaseError::Internal(message)
    }
}
