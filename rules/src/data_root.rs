//! The `docker-data-root` rule: images preloaded into a Docker data-root
//! tree that a root file system can ship as `/var/lib/docker`.
//!
//! An ephemeral `dockerd` writes it, and Docker's data-root holds random IDs
//! and times, so the result is declared non-reproducible: it is cached by
//! key like any output, and audits report it apart instead of failing on it.

use strata_store::{Digest, reapi};

use crate::platform::Platform;
use crate::table::{Field, Parse, Rule};

/// `docker-data-root`: a Docker data-root preloaded with images.
pub const RULE: Rule = Rule {
    name: "docker-data-root",
    doc: "makes a Docker data-root preloaded with images",
    fields: &[Field::typed("images", "the image targets to preload")],
    parse: Parse::DataRoot,
    image_output: false,
    contains_inputs: true,
};

const DATA_ROOT_SALT: &[u8] = b"strata/docker-data-root/v1";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataRootParams {
    /// Targets whose outputs are image layouts, in load order.
    pub images: Vec<String>,
    /// The platform of each of `images` (same order): which manifest and
    /// config of its layout are loaded. The data-root's own `dockerd` is
    /// this machine's: loading runs none of the images' programs, so an
    /// arm64 image is loaded natively.
    pub platforms: Vec<Platform>,
    /// References the data-root must resolve, each naming one of `images`:
    /// a tag (`name:tag`, applied with `docker tag`) or a digest reference
    /// (`name@sha256:<hex>`, recorded in Docker's reference store as
    /// `docker pull` would), so `docker run` and compose find the image by
    /// that name without pulling.
    pub references: Vec<DataRootRef>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataRootRef {
    /// One of [`DataRootParams::images`].
    pub image: String,
    /// `name:tag` or `name@sha256:<hex>`, as written.
    pub reference: String,
}

impl DataRootRef {
    /// Whether this is a digest reference (`name@sha256:...`), which Docker
    /// cannot tag and which is written into its reference store instead.
    pub fn is_digest(&self) -> bool {
        self.reference.contains('@')
    }
}

impl DataRootParams {
    pub fn keyed_command(&self) -> reapi::Command {
        let mut arguments = vec!["strata-docker-data-root".to_string()];
        arguments.extend(self.images.iter().cloned());
        // Appended only when present, so the keys of data-roots without
        // references stay what they were.
        for r in &self.references {
            arguments.push(format!("--reference={}={}", r.image, r.reference));
        }
        for (image, platform) in self.images.iter().zip(&self.platforms) {
            arguments.push(format!("--platform={image}={platform}"));
        }
        reapi::Command {
            arguments,
            ..Default::default()
        }
    }

    pub fn action(&self, command_digest: Digest, input_root: Digest) -> reapi::Action {
        reapi::Action {
            command_digest: Some(command_digest.to_proto()),
            input_root_digest: Some(input_root.to_proto()),
            salt: DATA_ROOT_SALT.to_vec(),
            platform: Some(reapi::Platform {
                properties: vec![
                    reapi::Property {
                        name: "strata.reproducible".into(),
                        value: "false".into(),
                    },
                    reapi::Property {
                        name: "strata.rule".into(),
                        value: "docker-data-root".into(),
                    },
                ],
            }),
            ..Default::default()
        }
    }
}
