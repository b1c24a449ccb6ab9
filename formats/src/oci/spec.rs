//! The JSON documents of an image, as the OCI image spec and Docker's
//! registry format (schema 2) write them.
//!
//! Reading is lenient about fields we do not use (registries add
//! annotations, `subject`, `artifactType`, ...); writing is deterministic:
//! fields in declaration order, maps sorted, no whitespace.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Media types Strata writes or reads.
pub mod media_type {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const OCI_NONDISTRIBUTABLE_LAYER: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar";
    pub const OCI_NONDISTRIBUTABLE_LAYER_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    pub const OCI_NONDISTRIBUTABLE_LAYER_ZSTD: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

    /// An index of manifests (possibly one per platform).
    pub fn is_index(m: &str) -> bool {
        m == OCI_INDEX || m == DOCKER_MANIFEST_LIST
    }

    /// The manifest of one image.
    pub fn is_manifest(m: &str) -> bool {
        m == OCI_MANIFEST || m == DOCKER_MANIFEST
    }

    pub fn is_config(m: &str) -> bool {
        m == OCI_CONFIG || m == DOCKER_CONFIG
    }

    /// A layer Strata can unpack: a tar, plain or compressed with gzip or
    /// zstd (the compression itself is recognised by content).
    pub fn is_layer(m: &str) -> bool {
        [
            OCI_LAYER,
            OCI_LAYER_GZIP,
            OCI_LAYER_ZSTD,
            OCI_NONDISTRIBUTABLE_LAYER,
            OCI_NONDISTRIBUTABLE_LAYER_GZIP,
            OCI_NONDISTRIBUTABLE_LAYER_ZSTD,
            DOCKER_LAYER,
            DOCKER_LAYER_GZIP,
            DOCKER_FOREIGN_LAYER_GZIP,
        ]
        .contains(&m)
    }
}

/// The annotation naming an image in an image layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The content of an image layout's `oci-layout` file.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// A reference to a blob: its media type, digest (`sha256:<hex>`) and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The platform a manifest of an index is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image index (`index.json`, an OCI index blob, a Docker manifest list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// An image manifest: one config and its layers, bottom first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// One entry of a docker-archive `manifest.json` (what `docker load` reads).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags")]
    pub repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// An image configuration (the blob whose digest is Docker's image ID).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
}

/// How a container of the image runs, with Docker's field names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `NAME=value`.
    #[serde(
        rename = "Env",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(
        rename = "Labels",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    /// `sha256:<hex>` of each layer's uncompressed tar, bottom first.
    #[serde(default, deserialize_with = "null_as_default")]
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> RootFs {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// Reads `null` (which Docker writes for empty lists and maps) as empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Serializes a document deterministically.
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("image documents serialize")
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (RFC 3339, UTC), as
/// image configs record `created`.
pub fn rfc3339(epoch: u64) -> String {
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        // Leap days, century rules.
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn documents_serialize_in_a_fixed_form() {
        let d = Descriptor {
            media_type: media_type::OCI_MANIFEST.into(),
            digest: "sha256:00".into(),
            size: 7,
            platform: None,
            annotations: [("b".to_string(), "2".to_string()), ("a".into(), "1".into())]
                .into_iter()
                .collect(),
        };
        assert_eq!(
            String::from_utf8(to_json(&d)).unwrap(),
            r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:00","size":7,"annotations":{"a":"1","b":"2"}}"#
        );
        // Unknown fields of registries' documents are ignored.
        let m: Manifest = serde_json::from_str(
            r#"{"schemaVersion":2,"artifactType":"x","config":{"mediaType":"m","digest":"d","size":1,"urls":[]},"layers":[]}"#,
        )
        .unwrap();
        assert_eq!(m.config.size, 1);
        assert!(
            serde_json::from_str::<Descriptor>(r#"{"mediaType":"m","digest":"d","size":-1}"#)
                .is_err()
        );
        // Docker writes `null` for empty lists and maps.
        let c: ImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"Env":null,"Cmd":null,"Labels":null,"ExposedPorts":{}},"rootfs":{"type":"layers","diff_ids":["sha256:00"]},"history":null}"#,
        )
        .unwrap();
        assert_eq!(c.rootfs.diff_ids, ["sha256:00"]);
        assert_eq!(c.config.unwrap().cmd, None);
    }
}
