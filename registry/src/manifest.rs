//! Image manifests and indexes (OCI image spec, Docker v2 schema 2), read
//! defensively: every field a pull relies on is checked, anything else is
//! ignored, and no input makes this panic.

use std::sync::LazyLock;

use serde::Deserialize;
/// `os/architecture[/variant]`: one definition with the image layouts'.
pub use strata_formats::oci::platform::Platform;
use strata_formats::oci::reference::validate_digest;
/// A content descriptor (here with its digest and size checked, and no
/// platform or annotations): one definition with the image layouts'.
pub use strata_formats::oci::spec::Descriptor;
/// The media types a pull reads: one definition with the image layouts'.
pub use strata_formats::oci::spec::media_type::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST as DOCKER_LIST, OCI_INDEX, OCI_MANIFEST,
};

/// Every kind of manifest or index [`parse`] reads.
const READABLE: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// The `Accept` header of a manifest request: every kind we can read, built
/// once from the media types' one definition.
pub static ACCEPT: LazyLock<String> = LazyLock::new(|| READABLE.join(", "));

/// An index entry: a descriptor and the platform it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub descriptor: Descriptor,
    pub platform: Option<Platform>,
}

/// What a manifest request returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Index {
        media_type: String,
        manifests: Vec<Entry>,
    },
    Manifest {
        media_type: String,
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    digest: String,
    size: i64,
    #[serde(default)]
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
}

/// Parses manifest bytes. `content_type` is the response's `Content-Type`,
/// used when the body does not say what it is (the OCI `mediaType` field is
/// optional). Errors are plain reasons; the caller names the blob.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed, String> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    if raw.schema_version != Some(2) {
        return Err(match raw.schema_version {
            Some(v) => format!("schemaVersion {v} is not supported (only 2)"),
            None => "schemaVersion is missing".into(),
        });
    }
    let header_type = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| READABLE.contains(c));
    let media_type = match (raw.media_type.as_deref(), header_type) {
        (Some(body), _) => body.to_string(),
        (None, Some(header)) => header.to_string(),
        // Neither says: the shape does (an index lists manifests).
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) => OCI_MANIFEST.to_string(),
    };
    match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => {
            let manifests = raw
                .manifests
                .ok_or("an image index without a `manifests` list")?
                .into_iter()
                .enumerate()
                .map(|(i, d)| {
                    let platform = d.platform.as_ref().map(|p| Platform {
                        os: p.os.clone(),
                        architecture: p.architecture.clone(),
                        variant: p.variant.clone().filter(|v| !v.is_empty()),
                    });
                    Ok(Entry {
                        descriptor: descriptor(d, &format!("manifests[{i}]"))?,
                        platform,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Parsed::Index {
                media_type,
                manifests,
            })
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = descriptor(raw.config.ok_or("a manifest without `config`")?, "config")?;
            let layers = raw
                .layers
                .ok_or("a manifest without `layers`")?
                .into_iter()
                .enumerate()
                .map(|(i, d)| descriptor(d, &format!("layers[{i}]")))
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Parsed::Manifest {
                media_type,
                config,
                layers,
            })
        }
        other => Err(format!(
            "media type `{other}` is not an image manifest or index this pull supports \
             (OCI or Docker schema 2)"
        )),
    }
}

fn descriptor(d: RawDescriptor, field: &str) -> Result<Descriptor, String> {
    validate_digest(&d.digest).map_err(|e| format!("{field}: {e}"))?;
    let size = u64::try_from(d.size).map_err(|_| format!("{field}: negative size {}", d.size))?;
    Ok(Descriptor {
        media_type: d.media_type.unwrap_or_default(),
        digest: d.digest,
        size,
        platform: None,
        annotations: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn docker_manifest() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":10,"digest":"{D1}"}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":20,"digest":"{D2}"}}]}}"#
        );
        let Parsed::Manifest {
            media_type,
            config,
            layers,
        } = parse(body.as_bytes(), None).unwrap()
        else {
            panic!("not a manifest");
        };
        assert_eq!(media_type, DOCKER_MANIFEST);
        assert_eq!((config.digest.as_str(), config.size), (D1, 10));
        assert_eq!(layers.len(), 1);
        assert_eq!((layers[0].digest.as_str(), layers[0].size), (D2, 20));
    }

    #[test]
    fn oci_index_without_media_type_uses_header_or_shape() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[
            {{"mediaType":"{OCI_MANIFEST}","size":5,"digest":"{D1}","platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","size":6,"digest":"{D2}"}}]}}"#
        );
        for ct in [
            Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
            None,
        ] {
            let Parsed::Index {
                media_type,
                manifests,
            } = parse(body.as_bytes(), ct).unwrap()
            else {
                panic!("not an index");
            };
            assert_eq!(media_type, OCI_INDEX);
            assert_eq!(manifests.len(), 2);
            assert_eq!(
                manifests[0].platform.as_ref().unwrap().to_string(),
                "linux/arm64/v8"
            );
            assert_eq!(manifests[1].platform, None);
        }
    }

    #[test]
    fn refuses_what_a_pull_cannot_trust() {
        let cases = [
            (r#"{"schemaVersion":1}"#.to_string(), "schemaVersion 1"),
            ("{}".to_string(), "schemaVersion is missing"),
            ("[1,2]".to_string(), "not valid JSON"),
            ("\u{0}\u{1}".to_string(), "not valid JSON"),
            (
                r#"{"schemaVersion":2,"mediaType":"text/plain","layers":[]}"#.to_string(),
                "text/plain",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"size":1,"digest":"sha512:00"}},"layers":[]}}"#
                ),
                "config: digest algorithm `sha512`",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"size":-1,"digest":"{D1}"}},"layers":[]}}"#
                ),
                "config: negative size",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"size":1,"digest":"{D1}"}},"layers":[{{"size":1,"digest":"sha256:../../etc"}}]}}"#
                ),
                "layers[0]",
            ),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#),
                "without `config`",
            ),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}"}}"#),
                "without a `manifests`",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"size":1e99,"digest":"{D1}"}},"layers":[]}}"#
                ),
                "not valid JSON",
            ),
        ];
        for (body, want) in cases {
            let e = parse(body.as_bytes(), None).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    /// A registry answers with one of the types asked for; each is one
    /// this module reads, and the header spells them as registries expect.
    #[test]
    fn every_type_accepted_is_one_parse_reads() {
        assert_eq!(
            *ACCEPT,
            "application/vnd.oci.image.manifest.v1+json, \
             application/vnd.oci.image.index.v1+json, \
             application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.docker.distribution.manifest.list.v2+json"
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let d = format!(r#"{{"mediaType":"x","digest":"{digest}","size":1}}"#);
        let index = format!(r#"{{"schemaVersion":2,"manifests":[{d}]}}"#);
        let manifest = format!(r#"{{"schemaVersion":2,"config":{d},"layers":[{d}]}}"#);
        for accepted in ACCEPT.split(", ") {
            // The body does not say its type: the response header does.
            let header = format!("{accepted}; charset=utf-8");
            let body = if accepted.contains("index") || accepted.contains("list") {
                &index
            } else {
                &manifest
            };
            let parsed = parse(body.as_bytes(), Some(&header)).unwrap();
            let media_type = match parsed {
                Parsed::Index { media_type, .. } | Parsed::Manifest { media_type, .. } => {
                    media_type
                }
            };
            assert_eq!(media_type, accepted);
        }
    }

    #[test]
    fn platform_matching() {
        let p = |s: &str| Platform::parse(s).unwrap();
        assert!(p("linux/amd64").serves(&p("linux/amd64")));
        assert!(!p("linux/arm64").serves(&p("linux/amd64")));
        assert!(!p("windows/amd64").serves(&p("linux/amd64")));
        assert!(p("linux/arm/v7").serves(&p("linux/arm")));
        assert!(!p("linux/arm/v6").serves(&p("linux/arm/v7")));
        assert!(p("linux/arm64").serves(&p("linux/arm64/v8")));
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "linux/am d64",
        ] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }
}
