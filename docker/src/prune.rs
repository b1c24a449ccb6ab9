//! Strata's own images in a Docker Engine: `strata-tree:<tree digest hex>`
//! (with `-<platform>` after it for platforms other than `linux/amd64`),
//! one per root file system and platform a stage step ran on. They only cache the
//! store's trees (a step whose image is gone imports its tree again), so
//! `strata store gc --docker` removes those whose tree the store no longer
//! holds; without that they pile up in the engine's data-root.

use std::collections::HashMap;

use bollard::query_parameters::{ListImagesOptions, RemoveImageOptions};
use strata_store::Digest;

use super::error::status;
use super::image::TREE_REPOSITORY;
use super::{DockerError, Engine};

/// A `strata-tree:<hex>` reference the engine holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeImage {
    pub reference: String,
    /// The tree's digest, 64 lowercase hex digits.
    pub tree_hex: String,
}

/// Every `strata-tree:<hex>` reference in the engine, sorted. Other tags of
/// the same images are not listed: they are someone else's.
pub async fn tree_images(engine: &Engine) -> Result<Vec<TreeImage>, DockerError> {
    let filters = HashMap::from([("reference".to_string(), vec![TREE_REPOSITORY.to_string()])]);
    let options = ListImagesOptions {
        filters: Some(filters),
        ..Default::default()
    };
    let images = engine
        .quick()
        .list_images(Some(options))
        .await
        .map_err(DockerError::api("listing Strata's tree images"))?;
    let mut found: Vec<TreeImage> = images
        .iter()
        .flat_map(|i| &i.repo_tags)
        .filter_map(|tag| {
            tree_hex(tag).map(|hex| TreeImage {
                reference: tag.clone(),
                tree_hex: hex.to_string(),
            })
        })
        .collect();
    found.sort_by(|a, b| a.reference.cmp(&b.reference));
    found.dedup();
    Ok(found)
}

/// The tree digest a `strata-tree:<hex>` or `strata-tree:<hex>-<platform>`
/// reference names; `None` for any other.
fn tree_hex(reference: &str) -> Option<&str> {
    let tag = reference.strip_prefix(TREE_REPOSITORY)?.strip_prefix(':')?;
    let hex = tag.get(..64)?;
    let is_digest = hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let rest = &tag[64..];
    (is_digest && (rest.is_empty() || rest.starts_with('-'))).then_some(hex)
}

/// What [`remove_tree_image`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// The reference is gone (the image too, unless another tag holds it).
    Removed,
    /// A container (running or stopped) uses the image: it stays.
    InUse,
}

/// Removes the reference `reference`, never forcing: an image a container
/// uses stays.
pub async fn remove_tree_image(engine: &Engine, reference: &str) -> Result<Removal, DockerError> {
    let options = RemoveImageOptions {
        force: false,
        noprune: false,
        ..Default::default()
    };
    match engine
        .long()
        .remove_image(reference, Some(options), None)
        .await
    {
        Ok(_) => Ok(Removal::Removed),
        Err(e) if status(&e) == Some(404) => Ok(Removal::Removed),
        Err(e) if status(&e) == Some(409) => Ok(Removal::InUse),
        Err(e) => Err(DockerError::api(format!("removing image {reference}"))(e)),
    }
}

/// What [`prune_tree_images`] did with the engine's tree images.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// The engine's address.
    pub host: String,
    /// Their tree is gone: removed (with `dry_run`, would be, unless a
    /// container uses them).
    pub removed: u64,
    /// Their tree is kept.
    pub kept: u64,
    /// Their tree is gone, but a container (running or stopped) uses them.
    pub in_use: u64,
}

/// Removes the engine's tree images whose tree `keep` refuses (with
/// `dry_run`, only counts them), connecting as a build would (`DOCKER_HOST`).
/// An image a container uses stays. Images of trees another store still
/// holds go too; that store imports them again when it needs them. Blocks:
/// it runs its own small runtime.
pub fn prune_tree_images(
    keep: &dyn Fn(&Digest) -> bool,
    dry_run: bool,
) -> Result<PruneReport, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the Docker client: {e}"))?;
    runtime.block_on(async {
        let engine = super::connect().await.map_err(|e| e.to_string())?;
        let mut images = PruneReport {
            host: engine.host().to_string(),
            ..PruneReport::default()
        };
        for image in tree_images(&engine).await.map_err(|e| e.to_string())? {
            let Some(tree) = Digest::from_hex(&image.tree_hex, 0) else {
                continue;
            };
            if keep(&tree) {
                images.kept += 1;
            } else if dry_run {
                images.removed += 1;
            } else {
                match remove_tree_image(&engine, &image.reference).await {
                    Ok(Removal::Removed) => images.removed += 1,
                    Ok(Removal::InUse) => images.in_use += 1,
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        Ok(images)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_references_of_every_platform_name_their_tree() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(tree_hex(&format!("strata-tree:{hex}")), Some(hex.as_str()));
        assert_eq!(
            tree_hex(&format!("strata-tree:{hex}-linux-arm64")),
            Some(hex.as_str())
        );
        assert_eq!(tree_hex(&format!("strata-tree:{hex}x")), None);
        assert_eq!(tree_hex(&format!("strata-tree:{}", &hex[1..])), None);
        assert_eq!(tree_hex(&format!("other:{hex}")), None);
        assert_eq!(tree_hex("strata-tree:latest"), None);
    }
}
