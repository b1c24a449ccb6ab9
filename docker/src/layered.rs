//! A tree image as its base's image plus one layer: a docker-archive whose
//! manifest names the base's layers (which the engine holds, so their files
//! are left out: `docker load` skips layers it has) and one new layer with
//! the changes, whiteouts included. The same archive without a new layer
//! relabels an image the engine holds for another platform (`docker
//! import` labels everything with the engine's own).

use strata_formats::oci::BlobSink;
use strata_formats::oci::layer::diff;
use strata_formats::oci::spec::media_type;
use strata_formats::tarball::{TarOptions, write_tree};
use strata_rules::platform::Platform;
use strata_store::tree::{Node, TreeBuilder};
use strata_store::{Cas, Digest};

use super::{DockerError, Engine};

/// Loads `tree` as the image `reference` for `platform`: the layers
/// `base_layers` (diff IDs of the engine's image of `base`) and the changes
/// from `base`.
pub(super) async fn load(
    engine: &Engine,
    cas: &Cas,
    base: &Digest,
    base_layers: Vec<String>,
    tree: &Digest,
    reference: &str,
    platform: &Platform,
) -> Result<(), DockerError> {
    let what = format!("loading tree {} as a layer on {}", tree.hex(), base.hex());
    let (c, b, t, r, p) = (
        cas.clone(),
        *base,
        *tree,
        reference.to_string(),
        platform.clone(),
    );
    let archive = tokio::task::spawn_blocking(move || {
        let changes = diff(&c, &b, &t).map_err(|e| e.to_string())?;
        archive(&c, base_layers, Some(&changes), &r, &p)
    })
    .await
    .map_err(|e| DockerError::refused(what.as_str(), e.to_string()))?
    .map_err(|e| DockerError::refused(what.as_str(), e))?;
    super::load::load_archive(engine, cas, &archive, &what).await
}

/// Makes `reference` name an image of the layers `layers` (which the
/// engine holds) labelled for `platform`.
pub(super) async fn relabel(
    engine: &Engine,
    cas: &Cas,
    layers: Vec<String>,
    reference: &str,
    platform: &Platform,
) -> Result<(), DockerError> {
    let what = format!("labelling {reference} for {platform}");
    let archive = archive(cas, layers, None, reference, platform)
        .map_err(|e| DockerError::refused(what.as_str(), e))?;
    super::load::load_archive(engine, cas, &archive, &what).await
}

/// The docker-archive as a stored tree: `manifest.json`, the config and,
/// with `changes`, the new layer's tar.
fn archive(
    cas: &Cas,
    base_layers: Vec<String>,
    changes: Option<&Digest>,
    reference: &str,
    platform: &Platform,
) -> Result<Digest, String> {
    let mut diff_ids = base_layers;
    let mut out = TreeBuilder::new();
    let file_of = |diff_id: &str| format!("{}/layer.tar", diff_id.trim_start_matches("sha256:"));
    if let Some(changes) = changes {
        let sink = BlobSink::new(cas).map_err(|e| e.to_string())?;
        let layer = write_tree(cas, changes, sink, &TarOptions::default())
            .and_then(|w| w.finish(media_type::OCI_LAYER))
            .map_err(|e| e.to_string())?;
        out.insert(&file_of(&layer.sha256), Node::file(layer.stored, false))
            .map_err(|e| e.to_string())?;
        diff_ids.push(layer.sha256.clone());
    }
    let mut config = serde_json::json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    if let Some(v) = &platform.variant {
        config["variant"] = serde_json::Value::String(v.clone());
    }
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [reference],
        "Layers": diff_ids.iter().map(|d| file_of(d)).collect::<Vec<_>>(),
    }]);
    let put = |v: &serde_json::Value| {
        cas.put_bytes(v.to_string().as_bytes())
            .map(|d| Node::file(d, false))
            .map_err(|e| e.to_string())
    };
    for (path, node) in [
        ("config.json".to_string(), put(&config)?),
        ("manifest.json".to_string(), put(&manifest)?),
    ] {
        out.insert(&path, node).map_err(|e| e.to_string())?;
    }
    out.store(cas).map_err(|e| e.to_string())
}
