//! The remote clients against in-test servers: a tonic REAPI server built
//! from the generated types, and a minimal HTTP/1.1 cache.

mod execution;
mod fake_grpc;
mod fake_http;
mod grpc;
mod http;
mod tls;

use std::os::unix::fs::PermissionsExt;

use strata_store::{Cas, Digest, DigestFunction, Store};

fn store_in(function: DigestFunction) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), function).unwrap();
    (dir, store)
}

/// Bytes that differ from chunk to chunk, so a misplaced chunk shows.
fn large_bytes(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect()
}

/// Flips the last byte of a stored blob, keeping its size.
fn corrupt(cas: &Cas, digest: &Digest) {
    let path = cas.path(digest);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn remote_urls_are_shown_without_user_info() {
    use super::without_credentials as shown;
    assert_eq!(
        shown("https://builder:hunter2@cache.example:8443/team"),
        "https://cache.example:8443/team"
    );
    assert_eq!(
        shown("http://builder@cache.example/"),
        "http://cache.example/"
    );
    // Without user info the text is kept as given.
    assert_eq!(shown("https://cache.example"), "https://cache.example");
    assert_eq!(
        shown("grpcs://cache.example/main"),
        "grpcs://cache.example/main"
    );
    assert_eq!(shown("ftp://u:hunter2@host/x"), "ftp://host/x");
    assert_eq!(shown("not a url:hunter2@"), "<an invalid URL>");
}
