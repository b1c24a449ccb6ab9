//! Image names with a tag (`name:tag`), as `docker load` accepts them in a
//! docker-archive's `RepoTags`.

/// Checks `reference` is `[registry/]path:tag` in Docker's grammar: a
/// lower-case path of components separated by `/` (each alphanumeric runs
/// joined by `.`, `_`, `__` or dashes), optionally after a registry host
/// (`localhost`, or a name with a `.` or a `:port`), then `:` and a tag of
/// up to 128 characters (`[A-Za-z0-9_][A-Za-z0-9_.-]*`). A tag is required:
/// `docker load` refuses a name without one. Digests (`@sha256:`) are not
/// tags.
pub fn check_tag(reference: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "`{reference}` is not an image name with a tag: {why}"
        ))
    };
    if reference.contains('@') {
        return bad("a digest (`@...`) cannot be a tag");
    }
    let Some((name, tag)) = reference
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
    else {
        return bad("it has no `:tag`");
    };
    if !is_tag(tag) {
        return bad("the tag must be 1 to 128 of `A-Za-z0-9_.-`, not starting with `.` or `-`");
    }
    if name.len() > 255 {
        return bad("the name is longer than 255 characters");
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && is_registry(parts[0]) {
        if !is_host(parts[0]) {
            return bad("the registry must be a host name, optionally with `:port`");
        }
        parts.remove(0);
    }
    if !parts.iter().all(|p| is_path_component(p)) {
        return bad(
            "the name must be lower-case letters and digits, separated by `/`, `.`, `_`, `__` or dashes",
        );
    }
    Ok(())
}

fn is_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    tag.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Whether the first component names a registry rather than a path.
fn is_registry(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost"
}

fn is_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.split('.').all(label)
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()))
}

fn is_path_component(p: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = p.as_bytes();
    if !bytes.first().is_some_and(|b| alnum(*b as char))
        || !bytes.last().is_some_and(|b| alnum(*b as char))
    {
        return false;
    }
    // Between alphanumeric runs: `.`, `_`, `__`, or any number of `-`.
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if alnum(c) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i] as char) {
            i += 1;
        }
        let sep = &p[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-')) {
            return false;
        }
    }
    true
}

/// `name:tag` as (`name`, `tag`); the tag is `latest` when absent (a `:`
/// before the last `/` belongs to a registry's port).
pub fn split_tag(reference: &str) -> (&str, &str) {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    match last.rsplit_once(':') {
        Some((_, tag)) => (&reference[..reference.len() - tag.len() - 1], tag),
        None => (reference, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
