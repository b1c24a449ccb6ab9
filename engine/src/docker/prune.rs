//! Strata's own images in a Docker Engine: `strata-tree:<tree digest hex>`
//! (with `-<platform>` after it for platforms other than `linux/amd64`),
//! one per root file system and platform a stage step ran on. They only cache the
//! store's trees (a step whose image is gone imports its tree again), so
//! `strata store gc --docker` removes those whose tree the store no longer
//! holds; without that they pile up in the engine's data-root.

use std::collections::HashMap;

use bollard::query_parameters::{ListImagesOptions, RemoveImageOptions};

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
            let tag_part = tag.strip_prefix(TREE_REPOSITORY)?.strip_prefix(':')?;
            // `<hex>` or `<hex>-<platform>`.
            let hex = tag_part.get(..64)?;
            let is_digest = hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && (tag_part.len() == 64 || tag_part[64..].starts_with('-'));
            is_digest.then(|| TreeImage {
                reference: tag.clone(),
                tree_hex: hex.to_string(),
            })
        })
        .collect();
    found.sort_by(|a, b| a.reference.cmp(&b.reference));
    found.dedup();
    Ok(found)
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
