//! Making a step's image present in the engine: loaded from an image layout
//! in the store, imported from a root file system tree, or pulled by digest.
//!
//! Each check-then-create runs under a per-image lock, so steps of one build
//! sharing an image transfer it once. Builds in other processes may race;
//! the engine makes that harmless (loading the same image twice is a no-op,
//! and the tag of a tree image names the same content whichever import set
//! it last).

use bollard::models::ImageInspect;
use bollard::query_parameters::{CreateImageOptions, RemoveImageOptions};
use futures_util::StreamExt;
use strata_formats::oci::reference::split_tag;
use strata_formats::tarball::TarOptions;
use strata_rules::platform::{DEFAULT_PLATFORM, Platform};
use strata_store::{Cas, Digest};

use super::error::status;
use super::{DockerError, Engine, layered, load, upload};

/// The repository of images made from trees: `strata-tree:<tree digest
/// hex>` for `linux/amd64`, `strata-tree:<hex>-<os>-<arch>[-<variant>]` for
/// any other platform (`<hex>-linux-arm64`): one tree run as two platforms
/// is two images.
pub const TREE_REPOSITORY: &str = "strata-tree";

/// Makes the image `image_id` (its config digest, `sha256:<hex>`) present:
/// if the engine lacks it, the tree `layout_tree` (a docker-archive:
/// `manifest.json` and the files it names) is streamed to `docker load`.
/// Fails if the image is still missing afterwards.
pub async fn ensure_layout(
    engine: &Engine,
    cas: &Cas,
    layout_tree: &Digest,
    image_id: &str,
) -> Result<(), DockerError> {
    let what = format!("loading image {image_id}");
    if !is_sha256_digest(image_id) {
        return Err(DockerError::refused(
            what,
            "not an image ID (`sha256:` and 64 lowercase hex digits)",
        ));
    }
    let lock = engine.state().lock_for(image_id);
    let _held = lock.lock().await;
    if image_id_of(engine, image_id).await?.is_some() {
        return Ok(());
    }
    load::load_archive(engine, cas, layout_tree, &what).await?;
    match image_id_of(engine, image_id).await? {
        Some(_) => Ok(()),
        None => Err(DockerError::refused(
            what,
            "the engine loaded the archive, but it does not hold this image",
        )),
    }
}

/// Makes an image for `platform` whose root file system is exactly the
/// stored tree `rootfs_tree` and returns its image ID. The image is tagged
/// `strata-tree:<tree digest hex>` (with the platform after it unless it is
/// `linux/amd64`) and reused while that tag exists; otherwise the tree is
/// streamed as a tar to `docker import`, and the result labelled for
/// `platform` if the engine labelled it for another (its own).
///
/// The image has no configuration (no entrypoint, environment or user): a
/// container of it runs exactly what its [`ContainerSpec`](super::ContainerSpec) says.
///
/// A tree a stage step made through this `Engine` (see [`Engine::remember_base`]) whose
/// base the engine holds becomes that image plus one layer of the changes,
/// as `docker build` adds a layer per step: the engine then unpacks the
/// changes only, not the whole root file system again.
pub async fn ensure_tree_image(
    engine: &Engine,
    cas: &Cas,
    rootfs_tree: &Digest,
    platform: &Platform,
) -> Result<String, DockerError> {
    let reference = tree_reference(rootfs_tree, platform);
    let tag = split_tag(&reference).1.to_string();
    let what = format!("importing tree {tag} as an image");
    let lock = engine.state().lock_for(&reference);
    let _held = lock.lock().await;
    if let Some(id) = image_id_of(engine, &reference).await? {
        return Ok(id);
    }
    if let Some(base) = engine.state().base_of(rootfs_tree)
        && let Some(layers) = layers_of(engine, &tree_reference(&base, platform)).await?
    {
        match layered::load(
            engine,
            cas,
            &base,
            layers,
            rootfs_tree,
            &reference,
            platform,
        )
        .await
        {
            Ok(()) => {
                if let Some(id) = image_id_of(engine, &reference).await? {
                    return Ok(id);
                }
            }
            // The whole tree still makes a correct image, only slower.
            Err(e) => tracing::debug!("{what}: as a layer on {}: {e}", base.hex()),
        }
    }
    refuse_whiteouts(cas, rootfs_tree, &what).await?;
    let (body, writer) = upload::tree_tar(cas, *rootfs_tree, TarOptions::default());
    let request = async {
        let options = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(TREE_REPOSITORY.into()),
            tag: Some(tag.clone()),
            ..Default::default()
        };
        let body = bollard::body_try_stream(body);
        let mut answers = engine.long().create_image(Some(options), Some(body), None);
        while let Some(answer) = answers.next().await {
            answer.map_err(DockerError::api(what.as_str()))?;
        }
        Ok(())
    }
    .await;
    upload::finish(request, writer, &what).await?;
    let missing = || {
        DockerError::refused(
            what.as_str(),
            format!("the engine has no {reference} after importing it"),
        )
    };
    let imported = engine
        .quick()
        .inspect_image(&reference)
        .await
        .map_err(DockerError::api(format!("inspecting image {reference}")))?;
    if labelled_for(&imported, platform) {
        return imported.id.ok_or_else(missing);
    }
    // `docker import` labels with the engine's platform: the same layers
    // under a config for `platform` take the tag over, and the imported
    // image (now untagged, ours) goes.
    let layers = imported
        .root_fs
        .and_then(|r| r.layers)
        .ok_or_else(missing)?;
    layered::relabel(engine, cas, layers, &reference, platform).await?;
    if let Some(old) = &imported.id {
        let _ = engine
            .quick()
            .remove_image(old, None::<RemoveImageOptions>, None)
            .await;
    }
    image_id_of(engine, &reference).await?.ok_or_else(missing)
}

/// The engine's image `reference`, if it has one.
pub(crate) async fn inspect(
    engine: &Engine,
    reference: &str,
) -> Result<Option<ImageInspect>, DockerError> {
    match engine.quick().inspect_image(reference).await {
        Ok(image) => Ok(Some(image)),
        Err(e) if status(&e) == Some(404) => Ok(None),
        Err(e) => Err(DockerError::api(format!("inspecting image {reference}"))(e)),
    }
}

/// Whether the engine's image `image` is labelled for `platform`.
pub(crate) fn labelled_for(image: &ImageInspect, platform: &Platform) -> bool {
    platform.matches(
        image.os.as_deref().unwrap_or(""),
        image.architecture.as_deref().unwrap_or(""),
        image.variant.as_deref(),
    )
}

/// The engine applies an imported tar as a layer, where `.wh.<name>` marks
/// `<name>` deleted: such a file would silently not be in the image.
async fn refuse_whiteouts(cas: &Cas, tree: &Digest, what: &str) -> Result<(), DockerError> {
    let (cas, tree) = (cas.clone(), *tree);
    let found = tokio::task::spawn_blocking(move || {
        strata_store::tree::walk(&cas, &tree).map(|entries| {
            entries.into_iter().map(|(path, _)| path).find(|path| {
                path.rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with(".wh."))
            })
        })
    })
    .await
    .map_err(|e| DockerError::refused(what, e.to_string()))?
    .map_err(DockerError::store(what))?;
    match found {
        Some(path) => Err(DockerError::refused(
            what,
            format!(
                "`{path}`: a file named `.wh.*` cannot be in a container image (the engine reads it as a deletion)"
            ),
        )),
        None => Ok(()),
    }
}

/// Makes the image `reference` (`name@sha256:<hex>`) for `platform` present,
/// pulled by the engine from its registry if missing, and returns its image
/// ID. Only references pinned by digest are accepted, so what runs cannot
/// change under the same name. The engine pulls anonymously (registries it
/// treats as insecure include loopback ones), natively whatever `platform`
/// is. A digest of a multi-platform index names one image per platform,
/// while the engine keeps one per reference: the ID returned is checked to
/// be for `platform`, and the pull repeated for it otherwise.
pub async fn ensure_pinned(
    engine: &Engine,
    reference: &str,
    platform: &Platform,
) -> Result<String, DockerError> {
    let what = format!("pulling {reference}");
    let pinned = reference
        .rsplit_once('@')
        .is_some_and(|(name, digest)| !name.is_empty() && is_sha256_digest(digest));
    if !pinned {
        return Err(DockerError::refused(
            what,
            "not pinned by digest (expected `name@sha256:<64 hex digits>`)",
        ));
    }
    let lock = engine.state().lock_for(reference);
    let _held = lock.lock().await;
    if let Some(image) = inspect(engine, reference).await?
        && labelled_for(&image, platform)
        && let Some(id) = image.id
    {
        return Ok(id);
    }
    let options = CreateImageOptions {
        from_image: Some(reference.to_string()),
        platform: platform.to_string(),
        ..Default::default()
    };
    let mut answers = engine.long().create_image(Some(options), None, None);
    while let Some(answer) = answers.next().await {
        answer.map_err(DockerError::api(what.as_str()))?;
    }
    match inspect(engine, reference).await? {
        Some(image) if labelled_for(&image, platform) => image
            .id
            .ok_or_else(|| DockerError::refused(what.as_str(), "the engine's image has no ID")),
        Some(image) => Err(DockerError::refused(
            what,
            format!(
                "the image is for {}/{}, not {platform}",
                image.os.unwrap_or_default(),
                image.architecture.unwrap_or_default()
            ),
        )),
        None => Err(DockerError::refused(
            what,
            "the pull finished, but the engine does not hold the image",
        )),
    }
}

/// Tags the image `image_id` as `reference` (`name:tag`; `name` alone is
/// `name:latest`).
pub async fn tag(engine: &Engine, image_id: &str, reference: &str) -> Result<(), DockerError> {
    let what = format!("tagging {image_id} as {reference}");
    let (repo, tag) = split_tag(reference);
    let options = bollard::query_parameters::TagImageOptions {
        repo: Some(repo.to_string()),
        tag: Some(tag.to_string()),
    };
    engine
        .quick()
        .tag_image(image_id, Some(options))
        .await
        .map_err(DockerError::api(what.as_str()))
}

/// The ID of the image `reference` names, or `None` if the engine has none.
pub(crate) async fn image_id_of(
    engine: &Engine,
    reference: &str,
) -> Result<Option<String>, DockerError> {
    match engine.quick().inspect_image(reference).await {
        Ok(image) => Ok(Some(image.id.unwrap_or_else(|| reference.to_string()))),
        Err(e) if status(&e) == Some(404) => Ok(None),
        Err(e) => Err(DockerError::api(format!("inspecting image {reference}"))(e)),
    }
}

/// `strata-tree:<hex>` for `linux/amd64`, `strata-tree:<hex>-<platform>`
/// for others.
pub fn tree_reference(tree: &Digest, platform: &Platform) -> String {
    if platform.to_string() == DEFAULT_PLATFORM {
        format!("{TREE_REPOSITORY}:{}", tree.hex())
    } else {
        format!("{TREE_REPOSITORY}:{}-{}", tree.hex(), platform.tag_suffix())
    }
}

/// The layer diff IDs of an image the engine holds, or `None` if it has
/// none by that name.
async fn layers_of(engine: &Engine, reference: &str) -> Result<Option<Vec<String>>, DockerError> {
    match engine.quick().inspect_image(reference).await {
        Ok(image) => Ok(image.root_fs.and_then(|r| r.layers)),
        Err(e) if status(&e) == Some(404) => Ok(None),
        Err(e) => Err(DockerError::api(format!("inspecting image {reference}"))(e)),
    }
}

/// `sha256:` and 64 lowercase hex digits.
fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids_are_sha256_digests_only() {
        let hex = "a".repeat(64);
        assert!(is_sha256_digest(&format!("sha256:{hex}")));
        assert!(!is_sha256_digest(&format!("sha256:{}", "A".repeat(64))));
        assert!(!is_sha256_digest(&format!("sha256:{}", &hex[1..])));
        assert!(!is_sha256_digest(&hex));
        assert!(!is_sha256_digest("ubuntu:latest"));
    }
}
