//! `docker load` of a docker-archive stored as a tree, shared by the
//! images made from layouts (`image`) and those made as layers on a base
//! (`layered`).

use bollard::query_parameters::ImportImageOptions;
use futures_util::StreamExt;
use strata_formats::tarball::TarOptions;
use strata_store::{Cas, Digest};

use super::{DockerError, Engine, upload};

/// Streams the stored tree `archive` (a docker-archive: `manifest.json` and
/// the files it names) to `docker load`.
pub(crate) async fn load_archive(
    engine: &Engine,
    cas: &Cas,
    archive: &Digest,
    what: &str,
) -> Result<(), DockerError> {
    let (body, writer) = upload::tree_tar(cas, *archive, TarOptions::default());
    let request = async {
        let options = ImportImageOptions {
            quiet: true,
            ..Default::default()
        };
        let mut answers = engine.long().import_image_stream(options, body, None);
        while let Some(answer) = answers.next().await {
            answer.map_err(DockerError::api(what))?;
        }
        Ok(())
    }
    .await;
    upload::finish(request, writer, what).await
}
