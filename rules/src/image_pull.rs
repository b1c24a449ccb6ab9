//! The `image-pull` rule: an image fetched from a registry by digest into an
//! OCI image layout in the store.
//!
//! It is a fixed-output step, as in Nix: the network is allowed because the
//! result is named in advance. The key is the manifest digest and platform
//! only: which registry serves the bytes does not change what they are.

use crate::table::{Field, Parse, Rule};
use strata_store::{Digest, reapi};

/// `image-pull`: an image from a registry, pinned by digest.
pub const RULE: Rule = Rule {
    name: "image-pull",
    doc: "pulls an image from a registry, pinned by digest",
    fields: &[
        Field::typed("image", "the reference, `name@sha256:<hex>`"),
        Field::typed(
            "platform",
            "the platform pulled from an index (default linux/amd64)",
        ),
        Field::typed(
            "auth",
            "names of the environment variables holding credentials",
        ),
    ],
    parse: Parse::ImagePull,
    image_output: false,
    contains_inputs: false,
};

const PULL_SALT: &[u8] = b"strata/image-pull/v1";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullParams {
    /// `host/name@sha256:<hex>` as written.
    pub reference: String,
    /// `sha256:<hex>`: the manifest (or index) digest.
    pub digest: String,
    /// `os/arch`, used when the digest names a multi-platform index.
    pub platform: String,
    /// Names of the environment variables with the registry credentials.
    pub auth_env: Option<(String, String)>,
}

impl PullParams {
    pub fn keyed_command(&self) -> reapi::Command {
        reapi::Command {
            arguments: vec![
                "strata-image-pull".into(),
                self.digest.clone(),
                self.platform.clone(),
            ],
            ..Default::default()
        }
    }

    pub fn action(&self, command_digest: Digest) -> reapi::Action {
        reapi::Action {
            command_digest: Some(command_digest.to_proto()),
            salt: PULL_SALT.to_vec(),
            platform: Some(reapi::Platform {
                properties: vec![reapi::Property {
                    name: "strata.rule".into(),
                    value: "image-pull".into(),
                }],
            }),
            ..Default::default()
        }
    }
}
