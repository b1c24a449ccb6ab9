//! Image references in Docker's grammar (distribution/reference):
//! `[host[:port]/]path[:tag][@sha256:<hex>]`. One grammar for every user, so
//! a name that works with `docker pull` or `docker load` means the same
//! image here:
//!
//! - [`Reference`]: a reference pinned by digest, as `image-pull` and the
//!   registry client take it (a tag can move, a digest cannot);
//! - [`check_tag`]: an image name with a tag, as `docker load` accepts it
//!   in a docker-archive's `RepoTags` (the `image` rule's `tags`);
//! - [`split_tag`]: a reference's name and tag.

use std::fmt;

/// Where Docker sends references without a registry host.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// Longest repository name Docker accepts (host excluded).
const MAX_NAME_LEN: usize = 255;

/// A parsed, normalized image reference pinned by a sha256 digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    digest: String,
}

/// Why a string is not a usable image reference; the message names the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference `{input}`: {reason}")]
pub struct RefError {
    pub input: String,
    pub reason: String,
}

impl Reference {
    /// Parses `host[:port]/repo/name@sha256:<64 hex>`; a tag before the digest
    /// (`name:tag@sha256:...`) is accepted and ignored. Without a host the
    /// registry is Docker Hub and a single name gets `library/`, as `docker
    /// pull` does.
    pub fn parse(input: &str) -> Result<Reference, RefError> {
        let err = |reason: String| RefError {
            input: input.to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(err("it is empty".into()));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("it contains whitespace or control characters".into()));
        }
        let Some((name_tag, digest)) = input.split_once('@') else {
            return Err(err(format!(
                "it has no digest, and a tag can change under a build; pin it by digest, \
                 e.g. `{}@sha256:<64 hex digits>` (after `docker pull {input}`, \
                 `docker image inspect --format '{{{{index .RepoDigests 0}}}}' {input}` shows it)",
                split_name_tag(input).0
            )));
        };
        validate_digest(digest).map_err(err)?;
        let (name, tag) = split_name_tag(name_tag);
        if let Some(tag) = tag {
            validate_tag(tag).map_err(err)?;
        }
        let (registry, repository) = split_registry(name);
        if let Some(host) = registry {
            validate_host(host).map_err(err)?;
        }
        validate_repository(repository).map_err(err)?;
        let (registry, repository) = match registry {
            None | Some("docker.io" | "index.docker.io") => {
                let repository = if repository.contains('/') {
                    repository.to_string()
                } else {
                    format!("library/{repository}")
                };
                (DOCKER_HUB.to_string(), repository)
            }
            Some(host) => (host.to_string(), repository.to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            digest: digest.to_string(),
        })
    }

    /// The registry's `host[:port]`, e.g. `127.0.0.1:5000` or [`DOCKER_HUB`].
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry, e.g. `library/alpine`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// `sha256:<64 lowercase hex>`.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The registry host without a port, brackets kept for IPv6 (`[::1]`).
    pub fn hostname(&self) -> &str {
        host_without_port(&self.registry)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.registry, self.repository, self.digest)
    }
}

impl std::str::FromStr for Reference {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        Reference::parse(s)
    }
}

/// `host[:port]` -> `host`; `[::1]:5000` -> `[::1]`.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    host.split_once(':').map_or(host, |(h, _)| h)
}

/// `name:tag` as (`name`, `tag`); the tag is `latest` when absent (a `:`
/// before the last `/` belongs to a registry's port).
pub fn split_tag(reference: &str) -> (&str, &str) {
    let (name, tag) = split_name_tag(reference);
    (name, tag.unwrap_or("latest"))
}

/// Splits `name[:tag]` into the name and the tag, if it has one: a `:tag`
/// follows the last `/` (a `:` before it is a port).
fn split_name_tag(name_tag: &str) -> (&str, Option<&str>) {
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    }
}

/// Docker's rule: the first component is a host when it has a `.` or `:`, is
/// `localhost`, or has upper-case letters (which repositories cannot have).
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// Only sha256 is accepted: it is what registries and Docker use for content,
/// and a single algorithm keeps "same digest, same image" simple.
pub fn validate_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!(
            "digest `{digest}` is not of the form `sha256:<64 hex digits>`"
        ));
    };
    if algorithm != "sha256" {
        return Err(format!(
            "digest algorithm `{algorithm}` is not supported (only sha256)"
        ));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "digest `{digest}` must be `sha256:` followed by 64 lowercase hex digits"
        ));
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag `{tag}` is not valid (letters, digits, `_`, `.`, `-`; at most 128; not starting with `.` or `-`)"
        ))
    }
}

fn validate_host(host: &str) -> Result<(), String> {
    let bad = || Err(format!("registry host `{host}` is not a valid host[:port]"));
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return bad();
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return bad();
        }
        match after {
            "" => return Ok(()),
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad(),
            },
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (Some(name), Some(port)),
            None => (Some(host), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty()
            || port.len() > 5
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err())
    {
        return bad();
    }
    if let Some(name) = name {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || !name.split('.').all(label_ok) {
            return bad();
        }
    }
    Ok(())
}

/// Path components: `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn validate_repository(repo: &str) -> Result<(), String> {
    if repo.is_empty() {
        return Err("the repository name is empty".into());
    }
    if repo.len() > MAX_NAME_LEN {
        return Err(format!(
            "the repository name is longer than {MAX_NAME_LEN} characters"
        ));
    }
    for component in repo.split('/') {
        if !path_component_ok(component) {
            return Err(format!(
                "repository path component `{component}` is not valid: lowercase letters and digits, \
                 separated by `.`, `_`, `__` or `-`"
            ));
        }
    }
    Ok(())
}

fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Checks `reference` is `[registry/]path:tag`: a lower-case path of
/// components separated by `/` (alphanumeric runs joined by `.`, `_`, `__`
/// or dashes), optionally after a registry host (`localhost`, or a name
/// with a `.` or a `:port`), then `:` and a tag of up to 128 characters
/// (`[A-Za-z0-9_][A-Za-z0-9_.-]*`). A tag is required: `docker load`
/// refuses a name without one. Digests (`@sha256:`) are not tags.
pub fn check_tag(reference: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "`{reference}` is not an image name with a tag: {why}"
        ))
    };
    if reference.contains('@') {
        return bad("a digest (`@...`) cannot be a tag");
    }
    let (name, Some(tag)) = split_name_tag(reference) else {
        return bad("it has no `:tag`");
    };
    if validate_tag(tag).is_err() {
        return bad("the tag must be 1 to 128 of `A-Za-z0-9_.-`, not starting with `.` or `-`");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("the name is longer than 255 characters");
    }
    let (registry, path) = split_registry(name);
    if registry.is_some_and(|host| validate_host(host).is_err()) {
        return bad("the registry must be a host name, optionally with `:port`");
    }
    if validate_repository(path).is_err() {
        return bad(
            "the name must be lower-case letters and digits, separated by `/`, `.`, `_`, `__` or dashes",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parse(s: &str) -> Result<Reference, RefError> {
        Reference::parse(s)
    }

    #[test]
    fn host_port_repo_and_digest() {
        let r = parse(&format!("127.0.0.1:5000/foo/bar@sha256:{HEX}")).unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "foo/bar");
        assert_eq!(r.digest(), format!("sha256:{HEX}"));
        assert_eq!(r.hostname(), "127.0.0.1");
        assert_eq!(
            r.to_string(),
            format!("127.0.0.1:5000/foo/bar@sha256:{HEX}")
        );
    }

    #[test]
    fn tag_before_digest_is_ignored() {
        let with_tag = parse(&format!("localhost:5000/foo:1.2-rc_3@sha256:{HEX}")).unwrap();
        let without = parse(&format!("localhost:5000/foo@sha256:{HEX}")).unwrap();
        assert_eq!(with_tag, without);
        assert_eq!(with_tag.registry(), "localhost:5000");
    }

    #[test]
    fn docker_hub_normalization() {
        let r = parse(&format!("alpine@sha256:{HEX}")).unwrap();
        assert_eq!(r.registry(), DOCKER_HUB);
        assert_eq!(r.repository(), "library/alpine");
        let r = parse(&format!("bitnami/redis:7@sha256:{HEX}")).unwrap();
        assert_eq!(r.registry(), DOCKER_HUB);
        assert_eq!(r.repository(), "bitnami/redis");
        let r = parse(&format!("docker.io/alpine@sha256:{HEX}")).unwrap();
        assert_eq!(
            (r.registry(), r.repository()),
            (DOCKER_HUB, "library/alpine")
        );
        let r = parse(&format!("localhost/alpine@sha256:{HEX}")).unwrap();
        assert_eq!((r.registry(), r.repository()), ("localhost", "alpine"));
    }

    #[test]
    fn ipv6_host() {
        let r = parse(&format!("[::1]:5000/foo@sha256:{HEX}")).unwrap();
        assert_eq!(r.registry(), "[::1]:5000");
        assert_eq!(r.hostname(), "[::1]");
    }

    #[test]
    fn tag_only_or_bare_name_asks_for_a_digest() {
        for input in ["alpine:3.19", "alpine", "127.0.0.1:5000/foo:latest"] {
            let e = parse(input).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("pin it by digest"), "{msg}");
            assert!(msg.contains("@sha256:"), "{msg}");
            assert!(msg.contains(input), "{msg}");
        }
        let msg = parse("alpine:3.19").unwrap_err().to_string();
        assert!(msg.contains("`alpine@sha256:<64 hex digits>`"), "{msg}");
        let msg = parse("127.0.0.1:5000/foo:latest").unwrap_err().to_string();
        assert!(
            msg.contains("`127.0.0.1:5000/foo@sha256:<64 hex digits>`"),
            "{msg}"
        );
    }

    #[test]
    fn bad_digests_are_refused() {
        let upper = HEX.to_uppercase();
        for digest in [
            format!("sha512:{HEX}"),
            format!("sha256:{upper}"),
            format!("sha256:{}", &HEX[1..]),
            format!("sha256:{HEX}0"),
            "sha256:".to_string(),
            HEX.to_string(),
            format!("sha256:{}g", &HEX[1..]),
        ] {
            assert!(parse(&format!("foo@{digest}")).is_err(), "{digest}");
        }
        let msg = parse(&format!("foo@sha512:{HEX}")).unwrap_err().to_string();
        assert!(msg.contains("only sha256"), "{msg}");
    }

    #[test]
    fn bad_names_are_refused() {
        for name in [
            "Foo",
            "foo//bar",
            "foo/",
            "/foo",
            "-foo",
            "foo-",
            "foo..bar",
            "foo___bar",
            "foo.-bar",
            "exa mple/foo",
            "host:99999/foo",
            "host:/foo",
            "-host.com/foo",
            "[::1/foo",
            "[zz]:5000/foo",
            "foo:bad tag",
            "foo:.tag",
        ] {
            assert!(parse(&format!("{name}@sha256:{HEX}")).is_err(), "{name}");
        }
        let long = "a".repeat(256);
        assert!(parse(&format!("{long}@sha256:{HEX}")).is_err());
        for ok in ["a", "a.b", "a_b", "a__b", "a---b", "a/b/c", "x9/y-0"] {
            assert!(parse(&format!("{ok}@sha256:{HEX}")).is_ok(), "{ok}");
        }
    }

    #[test]
    fn uppercase_first_component_is_a_host() {
        let r = parse(&format!("Registry/foo@sha256:{HEX}")).unwrap();
        assert_eq!((r.registry(), r.repository()), ("Registry", "foo"));
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "@",
            ":",
            "@@",
            "a@",
            "@sha256:",
            ":@",
            "/@",
            "[",
            "[]",
            "[]/x@sha256:",
            "é@sha256:",
            "a:b:c@d:e",
            "\u{0}",
            " ",
        ] {
            let _ = parse(s);
        }
    }

    #[test]
    fn names_docker_accepts_are_accepted() {
        for ok in [
            "app:1",
            "app:latest",
            "my-org/my_app:v1.2.3-rc_1",
            "a__b/c--d/e.f:_x",
            "localhost/app:1",
            "localhost:5000/app:1",
            "127.0.0.1:5000/team/app:2024.01",
            "registry.example.com/app:1",
            "ghcr.io/owner/repo:sha-abc",
        ] {
            check_tag(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn other_names_are_refused_with_a_reason() {
        for (bad, why) in [
            ("app", "no `:tag`"),
            ("localhost:5000/app", "no `:tag`"),
            ("App:1", "lower-case"),
            ("app:", "the tag"),
            ("app:-x", "the tag"),
            ("app:.x", "the tag"),
            (":1", "lower-case"),
            ("a//b:1", "lower-case"),
            ("a/:1", "lower-case"),
            ("a..b:1", "lower-case"),
            ("a___b:1", "lower-case"),
            ("-a:1", "lower-case"),
            ("app:a b", "the tag"),
            ("app@sha256:0000:1", "digest"),
            ("bad_host.com:x/app:1", "registry"),
            ("host.com:123456/app:1", "registry"),
            ("host.com:+80/app:1", "registry"),
        ] {
            let e = check_tag(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains(bad), "{bad}: {e}");
        }
        let long_tag = format!("app:{}", "t".repeat(129));
        assert!(check_tag(&long_tag).is_err());
        check_tag(&format!("app:{}", "t".repeat(128))).unwrap();
        let long_name = format!("{}:1", "a".repeat(256));
        assert!(check_tag(&long_name).unwrap_err().contains("255"));
    }

    /// A tagged name and a pinned reference read hosts alike: what one
    /// accepts the other does.
    #[test]
    fn tags_and_pinned_references_share_one_grammar() {
        for name in [
            "[::1]:5000/app",
            "Registry/app",
            "localhost:5000/team/app",
            "host.com:99999/app",
            "bad_host.com/app",
            "a..b",
        ] {
            assert_eq!(
                check_tag(&format!("{name}:1")).is_ok(),
                parse(&format!("{name}:1@sha256:{HEX}")).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn tags_split_after_the_registry_port() {
        assert_eq!(split_tag("app/web:1.0"), ("app/web", "1.0"));
        assert_eq!(
            split_tag("127.0.0.1:5000/web"),
            ("127.0.0.1:5000/web", "latest")
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/web:2"),
            ("127.0.0.1:5000/web", "2")
        );
        assert_eq!(split_tag("web"), ("web", "latest"));
    }
}
