//! Bazel's HTTP cache layout, one definition for the client
//! (`client::http`) and the server (`server::http`, `server::disk`):
//!
//! ```text
//! <base>/ac/<hex>    a serialized REAPI ActionResult, keyed by action digest
//! <base>/cas/<hex>   a blob, named by the hash of its content
//! ```
//!
//! `<hex>` is the hash in lower-case hex (64 digits for SHA-256 and
//! BLAKE3); the size is not part of the name. `<base>` is the URL's path
//! prefix, which the server ignores, as bazel-remote does.

use strata_store::Digest;

/// A 32-byte hash (SHA-256 or BLAKE3), as an object is named.
pub type Hash = [u8; 32];

/// Largest action result either side accepts; real ones are a few KiB
/// (REAPI's default message limit is 4 MiB).
pub const ACTION_RESULT_LIMIT: u64 = 16 * 1024 * 1024;

/// Which half of the cache an object is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Ordered first so that the server's eviction removes entries before
    /// the blobs they name: a crash in between never leaves an entry
    /// without a blob.
    Ac,
    Cas,
}

impl Kind {
    /// The path segment (and the server's folder) of this kind.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Ac => "ac",
            Kind::Cas => "cas",
        }
    }
}

/// The URL of an object under `base` (no trailing slash).
pub fn url(base: &str, kind: Kind, digest: &Digest) -> String {
    format!("{base}/{}/{}", kind.dir(), digest.hex())
}

/// `(kind, hash)` of a request path; `None` for paths that are not
/// objects, `Err` for an object path whose hash is malformed.
pub fn route(path: &str) -> Result<Option<(Kind, Hash)>, String> {
    let mut parts = path.rsplitn(3, '/');
    let (Some(hex), Some(kind)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    let kind = match kind {
        "ac" => Kind::Ac,
        "cas" => Kind::Cas,
        _ => return Ok(None),
    };
    let hash = parse_hex(hex).ok_or_else(|| {
        let shown: String = hex.chars().take(80).collect();
        format!("`{shown}` is not a hash: expected 64 lower-case hex digits")
    })?;
    Ok(Some((kind, hash)))
}

/// A hash in lower-case hex, as in URLs and the server's file names.
/// Stricter than [`Digest::from_hex`], which also takes upper case: one
/// object must have one name, or the server would hold it twice.
pub fn parse_hex(text: &str) -> Option<Hash> {
    if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    Digest::from_hex(text, 0).map(|d| d.hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let h = "ab".repeat(32);
        assert_eq!(
            route(&format!("/cas/{h}")),
            Ok(Some((Kind::Cas, [0xab; 32])))
        );
        assert_eq!(
            route(&format!("/team/ac/{h}")),
            Ok(Some((Kind::Ac, [0xab; 32])))
        );
        assert_eq!(route("/"), Ok(None));
        assert_eq!(route("/status"), Ok(None));
        assert_eq!(route(&format!("/x/{h}")), Ok(None));
        assert!(route("/cas/abc").is_err());
        assert!(route(&format!("/cas/{}", "AB".repeat(32))).is_err());
        assert_eq!(route(&format!("/cas/{h}/")), Ok(None));
    }

    #[test]
    fn the_client_builds_the_paths_the_server_routes() {
        let d = Digest::new([0x1f; 32], 3);
        for kind in [Kind::Ac, Kind::Cas] {
            let url = url("http://cache:8080/team", kind, &d);
            let path = url.strip_prefix("http://cache:8080").unwrap();
            assert_eq!(route(path), Ok(Some((kind, d.hash))));
        }
    }
}
