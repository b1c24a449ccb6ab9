//! Package URLs (purl, github.com/package-url/purl-spec): how SPDX and
//! CycloneDX name a Debian package or an image across tools.

use crate::facts::{DebPackage, PulledImage};

/// Percent-encodes everything but purl's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `pkg:deb/debian/NAME@VERSION?arch=ARCH`
pub fn deb(d: &DebPackage) -> String {
    format!(
        "pkg:deb/debian/{}@{}?arch={}",
        encode(&d.package),
        encode(&d.version),
        encode(&d.architecture)
    )
}

/// The last path component of an image reference's repository, without tag
/// or digest: `registry:5000/library/debian@sha256:..` -> `debian`.
pub fn image_name(reference: &str) -> &str {
    let repo = reference.split('@').next().unwrap_or(reference);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    // A tag follows the last `:` of the last component (a port is in the host).
    last.split(':').next().unwrap_or(last)
}

/// The repository without its last component and without tag or digest:
/// `registry:5000/library/debian@sha256:..` -> `registry:5000/library/debian`.
fn repository(reference: &str) -> &str {
    let repo = reference.split('@').next().unwrap_or(reference);
    match repo.rsplit_once('/') {
        Some((head, last)) => {
            let tagless = last.split(':').next().unwrap_or(last);
            &repo[..head.len() + 1 + tagless.len()]
        }
        None => repo.split(':').next().unwrap_or(repo),
    }
}

/// `pkg:oci/NAME@sha256%3A<hex>?arch=ARCH&repository_url=REPO` (purl's
/// `oci` type); the name is the target's label when the reference is not
/// known.
pub fn oci(image: &PulledImage, label: &str) -> String {
    let name = image.reference.as_deref().map(image_name).unwrap_or(label);
    let mut s = format!(
        "pkg:oci/{}@{}",
        encode(&name.to_ascii_lowercase()),
        encode(&image.digest)
    );
    let arch = image.platform.split('/').nth(1).unwrap_or("");
    let mut qualifiers = Vec::new();
    if !arch.is_empty() {
        qualifiers.push(format!("arch={}", encode(arch)));
    }
    if let Some(r) = &image.reference {
        qualifiers.push(format!("repository_url={}", encode(repository(r))));
    }
    if !qualifiers.is_empty() {
        s.push('?');
        s.push_str(&qualifiers.join("&"));
    }
    s
}

/// `pkg:generic/NAME@VERSION`: what Strata made, named by its target.
pub fn generic(name: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("pkg:generic/{}@{}", encode(name), encode(v)),
        None => format!("pkg:generic/{}", encode(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_versions_are_percent_encoded() {
        let d = DebPackage {
            package: "libc6".into(),
            version: "2.36-9+deb12u4".into(),
            architecture: "amd64".into(),
            source: "glibc".into(),
            source_version: None,
            sha256: String::new(),
            url: None,
        };
        assert_eq!(deb(&d), "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64");
        let epoch = DebPackage {
            version: "1:2.5.1-4".into(),
            ..d
        };
        assert!(deb(&epoch).contains("@1%3A2.5.1-4?"));
    }

    #[test]
    fn image_references_split_into_name_and_repository() {
        let img = PulledImage {
            reference: Some("localhost:5000/library/debian:12@sha256:ab".into()),
            digest: "sha256:ab".into(),
            platform: "linux/arm64".into(),
        };
        assert_eq!(
            oci(&img, "base"),
            "pkg:oci/debian@sha256%3Aab?arch=arm64&repository_url=localhost%3A5000%2Flibrary%2Fdebian"
        );
        assert_eq!(image_name("busybox@sha256:ab"), "busybox");
    }
}
