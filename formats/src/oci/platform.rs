//! Platforms (`linux/arm64`): which of an image's manifests and configs
//! serve a build, and what a user may write in BUILD.yaml.

/// The platform of an image that declares none, and of a container step
/// whose image says nothing (`image:` pinned by digest, a stage from a
/// tree): the same on every machine, so keys do not depend on the host.
pub const DEFAULT_PLATFORM: &str = "linux/amd64";

/// The operating systems Strata runs containers of.
pub const KNOWN_OS: &[&str] = &["linux"];

/// Architectures as OCI and Go name them (`GOARCH`).
pub const KNOWN_ARCHITECTURES: &[&str] = &[
    "386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle", "ppc64",
    "ppc64le", "riscv64", "s390x",
];

/// A platform as `os/architecture[/variant]`, such as `linux/amd64`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Reads `os/arch[/variant]` of any words (as an image's documents may
    /// name them); see [`Platform::parse_known`] for what a user may write.
    pub fn parse(s: &str) -> Result<Platform, String> {
        let word = |w: &str| {
            !w.is_empty()
                && w.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')
                })
        };
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if word(os) && word(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if word(os) && word(arch) && word(variant) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(format!(
                "`{s}` is not a platform such as `linux/amd64` or `linux/arm/v7`"
            )),
        }
    }

    /// Reads a platform written in BUILD.yaml: a known operating system and
    /// architecture, and a variant that architecture has. The result is
    /// canonical (`linux/arm64/v8` is `linux/arm64`, `linux/amd64/v1` is
    /// `linux/amd64`), so one platform has one key.
    pub fn parse_known(s: &str) -> Result<Platform, String> {
        let mut p = Platform::parse(s)?;
        if !KNOWN_OS.contains(&p.os.as_str()) {
            return Err(format!(
                "`{s}`: Strata runs {} containers, not `{}`",
                KNOWN_OS.join(", "),
                p.os
            ));
        }
        if !KNOWN_ARCHITECTURES.contains(&p.architecture.as_str()) {
            return Err(format!(
                "`{s}`: `{}` is not an architecture Strata knows ({})",
                p.architecture,
                KNOWN_ARCHITECTURES.join(", ")
            ));
        }
        if let Some(v) = p.variant.as_deref() {
            let variants: &[&str] = match p.architecture.as_str() {
                "arm" => &["v5", "v6", "v7", "v8"],
                "arm64" => &["v8", "v8.1", "v8.2", "v8.3", "v8.4", "v8.5", "v9"],
                "amd64" => &["v1", "v2", "v3", "v4"],
                _ => &[],
            };
            if !variants.contains(&v) {
                return Err(if variants.is_empty() {
                    format!("`{s}`: `{}` has no variants", p.architecture)
                } else {
                    format!(
                        "`{s}`: `{v}` is not a variant of `{}` ({})",
                        p.architecture,
                        variants.join(", ")
                    )
                });
            }
        }
        // The variants each architecture implies when it names none.
        if matches!(
            (p.architecture.as_str(), p.variant.as_deref()),
            ("arm64", Some("v8")) | ("amd64", Some("v1"))
        ) {
            p.variant = None;
        }
        Ok(p)
    }

    /// The default platform, [`DEFAULT_PLATFORM`].
    pub fn default_platform() -> Platform {
        Platform::parse(DEFAULT_PLATFORM).expect("the default platform parses")
    }

    /// Whether an image for `self` (an index entry or a config) serves a
    /// request for `wanted`. A request without a variant takes any; `arm64`
    /// means `arm64/v8`, as in containerd's platform matching.
    pub fn serves(&self, wanted: &Platform) -> bool {
        if self.os != wanted.os || self.architecture != wanted.architecture {
            return false;
        }
        let Some(want) = wanted.variant.as_deref() else {
            return true;
        };
        let have = self
            .variant
            .as_deref()
            .or(match self.architecture.as_str() {
                "arm64" => Some("v8"),
                _ => None,
            });
        have == Some(want)
    }

    /// Whether an image whose documents name `os`, `arch` and `variant`
    /// serves a request for `self`.
    pub fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: variant.map(str::to_string),
        }
        .serves(self)
    }

    /// The platform in a form a Docker tag may hold: `linux-arm64`,
    /// `linux-arm-v7`.
    pub fn tag_suffix(&self) -> String {
        self.to_string().replace('/', "-")
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_platforms_are_canonical() {
        let p = |s: &str| Platform::parse_known(s).map(|p| p.to_string());
        assert_eq!(p("linux/arm64").unwrap(), "linux/arm64");
        assert_eq!(p("linux/arm64/v8").unwrap(), "linux/arm64");
        assert_eq!(p("linux/amd64/v1").unwrap(), "linux/amd64");
        assert_eq!(p("linux/amd64/v3").unwrap(), "linux/amd64/v3");
        assert_eq!(p("linux/arm/v7").unwrap(), "linux/arm/v7");
        assert_eq!(p("linux/riscv64").unwrap(), "linux/riscv64");
    }

    #[test]
    fn unknown_platforms_are_refused_saying_why() {
        let e = |s: &str| Platform::parse_known(s).unwrap_err();
        assert!(e("linux/aarch64").contains("`aarch64` is not an architecture"));
        assert!(e("linux/x86_64").contains("not an architecture"));
        assert!(e("windows/amd64").contains("not `windows`"));
        assert!(e("linux/arm/v9").contains("not a variant of `arm`"));
        assert!(e("linux/riscv64/v1").contains("has no variants"));
        assert!(e("arm64").contains("is not a platform"));
        assert!(e("linux/ARM64").contains("is not a platform"));
    }

    #[test]
    fn tags_name_the_platform() {
        let p = Platform::parse_known("linux/arm/v7").unwrap();
        assert_eq!(p.tag_suffix(), "linux-arm-v7");
    }
}
