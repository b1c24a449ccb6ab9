//! Pulling images by digest from a registry (Docker Registry HTTP API v2 /
//! OCI distribution spec) into the store, for `image-pull`.
//!
//! An `image-pull` is a fixed-output step: the reference names the content by
//! digest, so the network may be used and every byte is checked against it.
//! The manifest (or index) must hash to the reference digest; the config and
//! layers must hash to the manifest's descriptors. Nothing unchecked is
//! published to the store.
//!
//! ```no_run
//! # async fn f(cas: &strata_store::Cas) -> Result<(), Box<dyn std::error::Error>> {
//! use strata_registry::{Client, ClientOptions, Credentials, Reference, pull};
//! let reference = Reference::parse("127.0.0.1:5000/tools/base@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")?;
//! let options = ClientOptions::default()
//!     .with_credentials(reference.registry(), Credentials::new("user", "from-an-env-var"));
//! let pulled = pull(&Client::new(options)?, &reference, "linux/amd64", cas).await?;
//! println!("config {} with {} layers", pulled.config.sha256, pulled.layers.len());
//! # Ok(()) }
//! ```

mod blob;
pub mod challenge;
mod client;
mod error;
pub mod manifest;

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use strata_store::{Cas, Digest};
use tokio::task::JoinSet;

pub use client::{Client, ClientOptions, Credentials};
pub use error::{Detail, RegistryError, StoreFailure};
pub use strata_formats::oci::reference::{DOCKER_HUB, RefError, Reference};

use client::{Session, content_type, read_limited};
use manifest::{Descriptor, Parsed, Platform};

/// Largest manifest or index accepted; real ones are a few KiB.
pub const MANIFEST_LIMIT: u64 = 4 * 1024 * 1024;

/// One blob now in the store, with the registry's name for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PulledBlob {
    pub media_type: String,
    /// `sha256:<hex>`, checked against the bytes.
    pub sha256: String,
    pub size: u64,
    /// The same bytes' digest in the store.
    pub stored: Digest,
}

/// Everything a pull stored: what an OCI layout of the image needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pulled {
    /// The index (or Docker manifest list) the reference named, if it named
    /// one rather than a single-platform manifest.
    pub index: Option<PulledBlob>,
    pub manifest: PulledBlob,
    pub config: PulledBlob,
    /// In the manifest's order (bottom layer first).
    pub layers: Vec<PulledBlob>,
}

/// Pulls the image `reference` names for `platform` (`os/arch[/variant]`,
/// e.g. `linux/amd64`) into `cas`. If the reference names an index, the
/// platform's manifest is chosen from it; a single manifest is taken as it is.
pub async fn pull(
    client: &Client,
    reference: &Reference,
    platform: &str,
    cas: &Cas,
) -> Result<Pulled, RegistryError> {
    let wanted =
        Platform::parse(platform).map_err(|_| RegistryError::BadPlatform(platform.to_string()))?;
    let session = Arc::new(Session::new(client, reference));

    let first = fetch_manifest(&session, reference.digest(), None, cas).await?;
    let (index, manifest, config, layers) = match first.parsed {
        Parsed::Manifest {
            ref media_type,
            ref config,
            ref layers,
        } => (None, first.blob(media_type), config.clone(), layers.clone()),
        Parsed::Index {
            ref media_type,
            ref manifests,
        } => {
            let index = first.blob(media_type);
            let entry = choose(&session, reference.digest(), manifests, &wanted)?;
            let chosen = fetch_manifest(&session, &entry.digest, Some(entry.size), cas).await?;
            match chosen.parsed {
                Parsed::Manifest {
                    ref media_type,
                    ref config,
                    ref layers,
                } => (
                    Some(index),
                    chosen.blob(media_type),
                    config.clone(),
                    layers.clone(),
                ),
                Parsed::Index { .. } => {
                    return Err(RegistryError::BadManifest {
                        registry: session.registry.clone(),
                        what: format!("manifest {} for {wanted}", entry.digest),
                        reason: "it is another index; nested indexes are not supported".into(),
                    });
                }
            }
        }
    };

    let mut blobs = fetch_blobs(&session, cas, &config, &layers)
        .await?
        .into_iter();
    let config = blobs.next().expect("the config is always fetched");
    check_config_platform(&session, reference, cas, &config, &wanted)?;
    Ok(Pulled {
        index,
        manifest,
        config,
        layers: blobs.collect(),
    })
}

/// Refuses an image whose config names another platform than `wanted`: a
/// single-platform manifest is taken as it is, so this is where an arm64
/// request for an amd64 image stops, both named.
fn check_config_platform(
    session: &Session,
    reference: &Reference,
    cas: &Cas,
    config: &PulledBlob,
    wanted: &Platform,
) -> Result<(), RegistryError> {
    let what = format!("image config {}", config.sha256);
    let bytes = cas.read(&config.stored).map_err(|e| RegistryError::Store {
        what: what.clone(),
        source: e.into(),
    })?;
    let c: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadManifest {
            registry: session.registry.clone(),
            what: what.clone(),
            reason: format!("not JSON: {e}"),
        })?;
    let field = |name: &str| c[name].as_str().unwrap_or("");
    if field("os").is_empty()
        || wanted.matches(field("os"), field("architecture"), c["variant"].as_str())
    {
        return Ok(());
    }
    let mut actual = format!("{}/{}", field("os"), field("architecture"));
    if let Some(v) = c["variant"].as_str() {
        actual.push('/');
        actual.push_str(v);
    }
    Err(RegistryError::WrongPlatform {
        registry: session.registry.clone(),
        repository: reference.repository().to_string(),
        digest: reference.digest().to_string(),
        platform: wanted.to_string(),
        actual,
    })
}

struct FetchedManifest {
    sha256: String,
    size: u64,
    stored: Digest,
    parsed: Parsed,
}

impl FetchedManifest {
    fn blob(&self, media_type: &str) -> PulledBlob {
        PulledBlob {
            media_type: media_type.to_string(),
            sha256: self.sha256.clone(),
            size: self.size,
            stored: self.stored,
        }
    }
}

/// GETs the manifest or index `digest`, checks its bytes (and size, when a
/// descriptor gave one), parses it and stores it.
async fn fetch_manifest(
    session: &Session,
    digest: &str,
    size: Option<u64>,
    cas: &Cas,
) -> Result<FetchedManifest, RegistryError> {
    let what = &format!("manifest {digest}");
    let (bytes, content_type) = session
        .retry(move || async move {
            let what = what.as_str();
            let response = session
                .get(
                    &format!("manifests/{digest}"),
                    Some(manifest::ACCEPT.as_str()),
                    what,
                )
                .await?;
            let content_type = content_type(&response);
            let bytes = read_limited(response, MANIFEST_LIMIT, |limit| RegistryError::TooLarge {
                registry: session.registry.clone(),
                what: what.to_string(),
                limit,
            })
            .await
            .map_err(|e| session.body_error(e, what))?;
            Ok((bytes, content_type))
        })
        .await?;
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let size_ok = size.is_none_or(|s| s == bytes.len() as u64);
    if actual != digest || !size_ok {
        return Err(RegistryError::DigestMismatch {
            registry: session.registry.clone(),
            what: "manifest".into(),
            expected: match size {
                Some(size) => format!("{digest} ({size} bytes)"),
                None => digest.to_string(),
            },
            actual: format!("{actual} ({} bytes)", bytes.len()),
        });
    }
    let parsed = manifest::parse(&bytes, content_type.as_deref()).map_err(|reason| {
        RegistryError::BadManifest {
            registry: session.registry.clone(),
            what: what.to_string(),
            reason,
        }
    })?;
    let stored = cas.put_bytes(&bytes).map_err(|e| RegistryError::Store {
        what: what.to_string(),
        source: e.into(),
    })?;
    Ok(FetchedManifest {
        sha256: actual,
        size: bytes.len() as u64,
        stored,
        parsed,
    })
}

/// The index entry for `wanted`: the first whose platform serves it and
/// that is an image manifest.
fn choose<'a>(
    session: &Session,
    index_digest: &str,
    manifests: &'a [manifest::Entry],
    wanted: &Platform,
) -> Result<&'a Descriptor, RegistryError> {
    let is_manifest = |d: &Descriptor| {
        matches!(
            d.media_type.as_str(),
            "" | manifest::OCI_MANIFEST | manifest::DOCKER_MANIFEST
        )
    };
    manifests
        .iter()
        .find(|e| {
            is_manifest(&e.descriptor) && e.platform.as_ref().is_some_and(|p| p.serves(wanted))
        })
        .map(|e| &e.descriptor)
        .ok_or_else(|| {
            let mut available: Vec<String> = manifests
                .iter()
                .filter_map(|e| e.platform.as_ref())
                .map(|p| p.to_string())
                .collect();
            let mut seen = std::collections::BTreeSet::new();
            available.retain(|p| seen.insert(p.clone()));
            RegistryError::NoMatchingPlatform {
                registry: session.registry.clone(),
                repository: session.repository.clone(),
                digest: index_digest.to_string(),
                platform: wanted.to_string(),
                available,
            }
        })
}

/// Downloads the config and the layers, a bounded number at a time; a blob
/// listed twice is downloaded once. Returns them config first, then layers in
/// order. The first failure cancels the rest.
async fn fetch_blobs(
    session: &Arc<Session>,
    cas: &Cas,
    config: &Descriptor,
    layers: &[Descriptor],
) -> Result<Vec<PulledBlob>, RegistryError> {
    let total = layers.len();
    let wanted: Vec<(Descriptor, String)> = std::iter::once((config.clone(), "config".to_string()))
        .chain(
            layers
                .iter()
                .enumerate()
                .map(|(i, d)| (d.clone(), format!("layer {} of {total}", i + 1))),
        )
        .collect();
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    let mut unique = Vec::new();
    for (i, (d, _)) in wanted.iter().enumerate() {
        if let std::collections::hash_map::Entry::Vacant(v) = first_of.entry(d.digest.as_str()) {
            v.insert(i);
            unique.push(i);
        }
    }
    let limit = session.options().concurrent_blobs.max(1);
    let mut results: Vec<Option<PulledBlob>> = vec![None; wanted.len()];
    let mut running = JoinSet::new();
    let mut pending = unique.into_iter();
    loop {
        while running.len() < limit {
            let Some(i) = pending.next() else { break };
            let (desc, what) = wanted[i].clone();
            let (session, cas) = (session.clone(), cas.clone());
            running.spawn(async move { (i, blob::fetch(&session, &cas, &desc, &what).await) });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (i, result) = joined.map_err(|e| RegistryError::Store {
            what: "a blob download".into(),
            source: StoreFailure::Io(std::io::Error::other(e.to_string())),
        })?;
        // Returning drops `running`, which aborts the other downloads.
        results[i] = Some(result?);
    }
    Ok(wanted
        .iter()
        .map(|(d, _)| {
            let first = first_of[d.digest.as_str()];
            results[first]
                .clone()
                .map(|b| PulledBlob {
                    media_type: d.media_type.clone(),
                    ..b
                })
                .expect("every unique blob was fetched")
        })
        .collect())
}
