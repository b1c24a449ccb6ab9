//! The real remote cache servers of `tests/common/remote.rs` work on their
//! own: nginx as a Bazel HTTP cache and BuildGrid as a REAPI cache. The
//! remote cache end-to-end tests rely on them.

mod common;

use common::remote::{self, Buildgrid, Digest, Nginx};
use std::fs;
use std::process::Command;

/// The SHA-256 of `data` in hex (coreutils' sha256sum, independent of the
/// servers and of Strata).
fn sha256(data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("blob");
    fs::write(&f, data).unwrap();
    let out = Command::new("sha256sum").arg(&f).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

fn digest(data: &[u8]) -> Digest {
    Digest {
        hash: sha256(data),
        size: data.len() as i64,
    }
}

#[test]
fn nginx_is_a_bazel_http_cache() {
    if !remote::nginx_available() {
        return;
    }
    let mut nginx = Nginx::start();
    assert!(
        nginx.url().starts_with("http://127.0.0.1:"),
        "{}",
        nginx.url()
    );
    let blob = b"a blob for the remote cache\n".as_slice();
    let key = sha256(blob);
    let cas = format!("/cas/{key}");

    // A miss is 404, for GET and HEAD.
    assert_eq!(nginx.head(&cas), 404);
    assert_eq!(nginx.get(&cas).0, 404);

    // PUT creates the file under dir(); GET and HEAD then find it.
    assert_eq!(nginx.put(&cas, blob), 201);
    assert_eq!(nginx.get(&cas), (200, blob.to_vec()));
    assert_eq!(nginx.head(&cas), 200);
    let stored = nginx.dir().join("cas").join(&key);
    assert_eq!(stored, nginx.blob_path("cas", &key));
    assert_eq!(fs::read(&stored).unwrap(), blob);

    // Replacing an entry is 204; the action cache works the same way.
    assert_eq!(nginx.put(&cas, blob), 204);
    assert_eq!(nginx.put(&format!("/ac/{key}"), b"result"), 201);
    assert_eq!(fs::read(nginx.blob_path("ac", &key)).unwrap(), b"result");

    // A cache URL with a path prefix works too; other paths are read-only.
    assert_eq!(nginx.put(&format!("/ci/main/cas/{key}"), blob), 201);
    assert!(nginx.dir().join("ci/main/cas").join(&key).is_file());
    assert_eq!(nginx.put("/elsewhere", blob), 403);
    assert_eq!(nginx.put(&format!("/cas/{key}/x"), blob), 403);

    // A tampered file is served as it is: the client must check digests.
    fs::write(&stored, b"tampered").unwrap();
    assert_eq!(nginx.get(&cas), (200, b"tampered".to_vec()));

    // Bodies above nginx's default 1 MiB limit are accepted.
    let big: Vec<u8> = (0..5u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let big_key = sha256(&big);
    assert_eq!(nginx.put(&format!("/cas/{big_key}"), &big), 201);
    let (status, body) = nginx.get(&format!("/cas/{big_key}"));
    assert_eq!(status, 200);
    assert!(body == big, "the 5 MiB blob came back different");

    // The access log names every request.
    let requests = nginx.requests();
    assert_eq!(requests.len(), 13, "{requests:?}");
    assert_eq!(
        (
            requests[0].method.as_str(),
            requests[0].path.as_str(),
            requests[0].status
        ),
        ("HEAD", cas.as_str(), 404)
    );
    assert!(
        requests
            .iter()
            .any(|r| r.method == "PUT" && r.status == 403)
    );

    // Stopped, it no longer answers.
    let port = nginx.port();
    nginx.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn buildgrid_is_a_sha256_reapi_cache() {
    if !remote::buildgrid_available() {
        return;
    }
    let mut bg = Buildgrid::start();
    assert!(bg.url().starts_with("grpc://127.0.0.1:"), "{}", bg.url());
    assert_eq!(bg.instance(), "strata-ci");

    // GetCapabilities: SHA-256 is the only digest function, and the action
    // cache accepts updates.
    let caps = bg.capabilities();
    let functions: Vec<&str> = caps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("digest_functions: "))
        .collect();
    assert_eq!(functions, ["SHA256", "SHA256"], "{caps}");
    assert!(caps.contains("update_enabled: true"), "{caps}");

    // FindMissingBlobs, BatchUpdateBlobs, BatchReadBlobs.
    let (a, b) = (b"first blob".as_slice(), b"second blob, longer".as_slice());
    let (da, db) = (digest(a), digest(b));
    let mut both = vec![da.clone(), db.clone()];
    both.sort();
    let mut missing = bg.find_missing(&both);
    missing.sort();
    assert_eq!(missing, both);
    assert_eq!(bg.upload(&[a, b]), [da.clone(), db.clone()]);
    assert_eq!(bg.find_missing(&both), []);
    assert_eq!(bg.read(&da).as_deref(), Some(a));
    assert_eq!(bg.read(&db).as_deref(), Some(b));
    assert_eq!(bg.read(&digest(b"never stored")), None);

    // GetActionResult and UpdateActionResult.
    let action = digest(b"an action");
    assert_eq!(bg.action_result(&action), None);
    bg.put_action_result(
        &action,
        &format!(
            "exit_code: 0 output_files {{ path: \"out/a\" digest {{ hash: \"{}\" size_bytes: {} }} }}",
            da.hash, da.size
        ),
    );
    let result = bg
        .action_result(&action)
        .expect("the action result was stored");
    assert!(result.contains(&da.hash), "{result}");
    assert!(result.contains("out/a"), "{result}");

    let port = bg.port();
    bg.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
