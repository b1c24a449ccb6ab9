//! Image layouts stored as trees.
//!
//! An image is kept in the store as the tree of an [OCI image layout]
//! (`oci-layout`, `index.json`, `blobs/sha256/<hex>`) that also holds a
//! docker-archive `manifest.json` pointing at the same blobs, so the tree,
//! tarred, is accepted by `docker load` (Docker 20.10 reads only
//! `manifest.json`) as well as by OCI tools (skopeo, containerd, podman).
//!
//! [OCI image layout]: https://github.com/opencontainers/image-spec/blob/main/image-layout.md

use std::collections::BTreeMap;
use std::io::Read;

use strata_store::tree::{Entry, Meta, Node, TreeBuilder, list};
use strata_store::{Cas, Digest};

pub use super::blob::{Blob, BlobSink};
use super::blob::{is_sha256_digest, open_stored, sha256_of_stored};
use super::reference::check_tag;
use super::spec::{
    ArchiveEntry, Descriptor, Index, Manifest, OCI_LAYOUT, REF_NAME, media_type, to_json,
};
use crate::FormatError;

/// An image: its manifest, its config (whose digest, `config.sha256`, is
/// Docker's image ID) and its layers, bottom first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

/// Mode of every file of a layout tree.
const FILE_META: Meta = Meta {
    mode: 0o644,
    uid: 0,
    gid: 0,
};

const DIR_META: Meta = Meta {
    mode: 0o755,
    uid: 0,
    gid: 0,
};

/// At most this many bytes in one JSON document (index, manifest, config)
/// read from a layout; registries cap manifests at 4 MiB.
const MAX_DOCUMENT: u64 = 16 << 20;

/// At most this many nested indexes between `index.json` and a manifest.
const MAX_INDEX_DEPTH: usize = 4;

fn format(message: String) -> FormatError {
    FormatError::Format(message)
}

/// Writes an image layout tree: an OCI image layout (`oci-layout`,
/// `index.json`, `blobs/sha256/<hex>`) that, tarred, is also a
/// docker-archive (`manifest.json` with `Config`/`RepoTags`/`Layers`
/// pointing at `blobs/sha256/<hex>`), so `docker load` accepts it.
///
/// The blobs must be in the store; layers may be anything a registry serves
/// (gzip, zstd, plain tar), they are placed as they are. `manifest` must be
/// a manifest naming exactly `config` and `layers`. `ref_name` (`name:tag`,
/// checked) goes into `RepoTags` and into the
/// `org.opencontainers.image.ref.name` annotation of `index.json`. Every
/// file is 0644 root:root; the output is a pure function of the arguments.
pub fn assemble(
    cas: &Cas,
    manifest: &Blob,
    config: &Blob,
    layers: &[Blob],
    ref_name: Option<&str>,
) -> Result<Digest, FormatError> {
    if let Some(r) = ref_name {
        check_tag(r).map_err(format)?;
    }
    for b in std::iter::once(manifest)
        .chain(std::iter::once(config))
        .chain(layers)
    {
        if !is_sha256_digest(&b.sha256) {
            return Err(format(format!(
                "blob `{}`: not a `sha256:<64 hex digits>` digest",
                b.sha256
            )));
        }
        if !cas.contains(&b.stored) {
            return Err(strata_store::StoreError::Missing { digest: b.stored }.into());
        }
    }
    check_manifest_names(cas, manifest, config, layers)?;

    let path = |b: &Blob| format!("blobs/sha256/{}", b.hex());
    let index = Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.into()),
        manifests: vec![Descriptor {
            annotations: ref_name
                .map(|r| (REF_NAME.to_string(), r.to_string()))
                .into_iter()
                .collect(),
            ..manifest.descriptor()
        }],
    };
    let archive = vec![ArchiveEntry {
        config: path(config),
        repo_tags: ref_name.map(str::to_string).into_iter().collect(),
        layers: layers.iter().map(path).collect(),
    }];

    let file = |digest: Digest| Node::File {
        digest,
        executable: false,
        meta: Some(FILE_META),
    };
    let mut sha = TreeBuilder::new();
    sha.set_meta(Some(DIR_META));
    for b in std::iter::once(manifest)
        .chain(std::iter::once(config))
        .chain(layers)
    {
        sha.insert(b.hex(), file(b.stored)).map_err(format)?;
    }
    let mut blobs = TreeBuilder::new();
    blobs.set_meta(Some(DIR_META));
    blobs.insert("sha256", Node::Dir(sha)).map_err(format)?;
    let mut root = TreeBuilder::new();
    root.set_meta(Some(DIR_META));
    root.insert("blobs", Node::Dir(blobs)).map_err(format)?;
    for (name, bytes) in [
        ("oci-layout", OCI_LAYOUT.to_vec()),
        ("index.json", to_json(&index)),
        ("manifest.json", to_json(&archive)),
    ] {
        root.insert(name, file(cas.put_bytes(&bytes)?))
            .map_err(format)?;
    }
    Ok(root.store(cas)?)
}

/// Refuses a manifest that does not name exactly `config` and `layers`, so
/// `index.json` and `manifest.json` cannot describe different images.
fn check_manifest_names(
    cas: &Cas,
    manifest: &Blob,
    config: &Blob,
    layers: &[Blob],
) -> Result<(), FormatError> {
    let m: Manifest = parse(
        &read_document(cas, &manifest.stored, &manifest.sha256)?,
        &manifest.sha256,
        "manifest",
    )?;
    let named: Vec<&str> = m.layers.iter().map(|d| d.digest.as_str()).collect();
    let given: Vec<&str> = layers.iter().map(|b| b.sha256.as_str()).collect();
    if m.config.digest != config.sha256 || named != given {
        return Err(format(format!(
            "manifest {} names config {} and layers {named:?}, not config {} and layers {given:?}",
            manifest.sha256, m.config.digest, config.sha256
        )));
    }
    Ok(())
}

/// Whether `tree` is an image layout: it has an `oci-layout` file at the top.
pub fn is_layout(cas: &Cas, tree: &Digest) -> Result<bool, FormatError> {
    Ok(list(cas, tree)?
        .into_iter()
        .any(|(name, e)| name == "oci-layout" && matches!(e, Entry::File { .. })))
}

pub use super::platform::Platform;

/// Reads a layout tree: `index.json` (following a nested index or Docker
/// manifest list to `platform`, such as `linux/amd64`) -> manifest ->
/// config and layers. Every blob's SHA-256 and size are checked against its
/// descriptor, and the config's `os`/`architecture`, if it names them,
/// against `platform`. OCI and Docker schema 2 media types are accepted.
pub fn read(cas: &Cas, layout: &Digest, platform: &str) -> Result<Image, FormatError> {
    let want = Platform::parse(platform).map_err(format)?;
    let top: BTreeMap<String, Entry> = list(cas, layout)?.into_iter().collect();
    let file = |name: &str| match top.get(name) {
        Some(Entry::File { digest, .. }) => Ok(*digest),
        _ => Err(format(format!(
            "not an image layout: it has no `{name}` file at the top"
        ))),
    };
    let marker: serde_json::Value = parse(
        &read_document(cas, &file("oci-layout")?, "oci-layout")?,
        "oci-layout",
        "layout marker",
    )?;
    if !marker["imageLayoutVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("1."))
    {
        return Err(format(format!(
            "oci-layout: unsupported imageLayoutVersion {}",
            marker["imageLayoutVersion"]
        )));
    }
    let blobs = Blobs::open(cas, &top)?;
    let index: Index = parse(
        &read_document(cas, &file("index.json")?, "index.json")?,
        "index.json",
        "index",
    )?;
    let chosen = select(cas, &blobs, &index.manifests, &want, "index.json", 0)?;

    let manifest = blobs.get(cas, &chosen)?;
    let m: Manifest = parse(
        &read_document(cas, &manifest.stored, &manifest.sha256)?,
        &manifest.sha256,
        "manifest",
    )?;
    if let Some(declared) = m.media_type.as_deref().filter(|d| *d != chosen.media_type) {
        return Err(format(format!(
            "manifest {}: its mediaType is {declared}, its descriptor says {}",
            manifest.sha256, chosen.media_type
        )));
    }
    if !media_type::is_config(&m.config.media_type) {
        return Err(format(format!(
            "manifest {}: config {} has media type {}, not an image config (is this an artifact rather than an image?)",
            manifest.sha256, m.config.digest, m.config.media_type
        )));
    }
    let config = blobs.get(cas, &m.config)?;
    // Only the platform is read here; the rest of a config is the
    // business of whoever runs the image.
    let c: serde_json::Value = parse(
        &read_document(cas, &config.stored, &config.sha256)?,
        &config.sha256,
        "image config",
    )?;
    let field = |name: &str| c[name].as_str().unwrap_or("");
    if !field("os").is_empty()
        && !want.matches(field("os"), field("architecture"), c["variant"].as_str())
    {
        return Err(format(format!(
            "image config {} is for {}/{}, not {want}",
            config.sha256,
            field("os"),
            field("architecture")
        )));
    }
    let layers = m
        .layers
        .iter()
        .map(|d| {
            if !media_type::is_layer(&d.media_type) {
                return Err(format(format!(
                    "manifest {}: layer {} has media type {}, which Strata cannot unpack",
                    manifest.sha256, d.digest, d.media_type
                )));
            }
            blobs.get(cas, d)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Image {
        manifest,
        config,
        layers,
    })
}

/// Chooses the one manifest of `descs` for `want`, descending into indexes.
fn select(
    cas: &Cas,
    blobs: &Blobs,
    descs: &[Descriptor],
    want: &Platform,
    within: &str,
    depth: usize,
) -> Result<Descriptor, FormatError> {
    if depth > MAX_INDEX_DEPTH {
        return Err(format(format!(
            "{within}: indexes are nested more than {MAX_INDEX_DEPTH} deep"
        )));
    }
    let mut candidates: Vec<&Descriptor> = descs
        .iter()
        .filter(|d| media_type::is_index(&d.media_type) || media_type::is_manifest(&d.media_type))
        .filter(|d| {
            d.platform
                .as_ref()
                .is_none_or(|p| want.matches(&p.os, &p.architecture, p.variant.as_deref()))
        })
        .collect();
    candidates.sort_by(|a, b| a.digest.cmp(&b.digest));
    candidates.dedup_by(|a, b| a.digest == b.digest);
    let chosen = match candidates.as_slice() {
        [one] => (*one).clone(),
        [] => {
            let offered: Vec<String> = descs
                .iter()
                .map(|d| match &d.platform {
                    Some(p) => format!("{}/{} ({})", p.os, p.architecture, d.media_type),
                    None => d.media_type.clone(),
                })
                .collect();
            return Err(format(format!(
                "{within}: no image for {want} (it lists: {})",
                if offered.is_empty() {
                    "nothing".to_string()
                } else {
                    offered.join(", ")
                }
            )));
        }
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|d| match d.annotations.get(REF_NAME) {
                    Some(r) => format!("{} ({r})", d.digest),
                    None => d.digest.clone(),
                })
                .collect();
            return Err(format(format!(
                "{within}: {} images match {want}, cannot choose: {}",
                many.len(),
                names.join(", ")
            )));
        }
    };
    if media_type::is_manifest(&chosen.media_type) {
        return Ok(chosen);
    }
    let nested = blobs.get(cas, &chosen)?;
    let index: Index = parse(
        &read_document(cas, &nested.stored, &nested.sha256)?,
        &nested.sha256,
        "index",
    )?;
    select(
        cas,
        blobs,
        &index.manifests,
        want,
        &nested.sha256,
        depth + 1,
    )
}

/// The files under `blobs/sha256/` of a layout, by hex name.
struct Blobs {
    files: BTreeMap<String, Digest>,
}

impl Blobs {
    fn open(cas: &Cas, top: &BTreeMap<String, Entry>) -> Result<Blobs, FormatError> {
        let mut files = BTreeMap::new();
        if let Some(Entry::Dir { digest, .. }) = top.get("blobs") {
            let algs: BTreeMap<String, Entry> = list(cas, digest)?.into_iter().collect();
            if let Some(Entry::Dir { digest, .. }) = algs.get("sha256") {
                for (name, e) in list(cas, digest)? {
                    if let Entry::File { digest, .. } = e {
                        files.insert(name, digest);
                    }
                }
            }
        }
        Ok(Blobs { files })
    }

    /// The blob `d` describes, checked against its digest and size.
    fn get(&self, cas: &Cas, d: &Descriptor) -> Result<Blob, FormatError> {
        if !is_sha256_digest(&d.digest) {
            return Err(format(format!(
                "descriptor digest `{}` is not `sha256:<64 hex digits>`",
                d.digest
            )));
        }
        let hex = &d.digest["sha256:".len()..];
        let stored = *self.files.get(hex).ok_or_else(|| {
            format(format!(
                "blob {} ({}) is not in the layout (blobs/sha256/{hex})",
                d.digest, d.media_type
            ))
        })?;
        if stored.size_bytes != d.size {
            return Err(format(format!(
                "blob {}: the file holds {} bytes, its descriptor says {}",
                d.digest, stored.size_bytes, d.size
            )));
        }
        let (actual, _) = sha256_of_stored(cas, &stored)?;
        if actual != d.digest {
            return Err(format(format!(
                "blob {}: its content hashes to {actual}",
                d.digest
            )));
        }
        Ok(Blob {
            media_type: d.media_type.clone(),
            sha256: d.digest.clone(),
            size: d.size,
            stored,
        })
    }
}

/// A stored JSON document, refused if larger than [`MAX_DOCUMENT`].
pub(crate) fn read_document(
    cas: &Cas,
    stored: &Digest,
    what: &str,
) -> Result<Vec<u8>, FormatError> {
    if stored.size_bytes > MAX_DOCUMENT {
        return Err(format(format!(
            "{what}: {} bytes is too large for an image document (at most {MAX_DOCUMENT})",
            stored.size_bytes
        )));
    }
    let mut bytes = Vec::new();
    open_stored(cas, stored)?
        .take(MAX_DOCUMENT)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    name: &str,
    what: &str,
) -> Result<T, FormatError> {
    serde_json::from_slice(bytes).map_err(|e| format(format!("{name}: not a valid {what}: {e}")))
}

#[cfg(test)]
mod tests;
