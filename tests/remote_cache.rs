//! The remote cache against real servers: nginx with WebDAV (Bazel's HTTP
//! cache protocol), BuildGrid (REAPI gRPC, SHA-256 only) and Strata's own
//! `strata cache serve`. Fresh local stores play CI runners that share one
//! cache.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::Ws;
use common::remote::{Buildgrid, Nginx, buildgrid_available, nginx_available};

const BUILD: &str = r#"targets:
  words:
    rule: run
    srcs: [words.txt]
    cmd: sort words.txt > $OUT/words.txt
    outs: [words.txt]
  count:
    rule: run
    deps: [words]
    cmd: wc -l < $DEPS/words/words.txt > $OUT/count.txt
    outs: [count.txt]
  bundle:
    rule: archive
    from: count
"#;

/// A runner: the same workspace, its own empty store.
fn runner(config: &str) -> Ws {
    let ws = Ws::new();
    ws.write("BUILD.yaml", BUILD);
    ws.write("words.txt", "pear\napple\nfig\n");
    if !config.is_empty() {
        ws.write("strata.yaml", config);
    }
    ws
}

fn build(ws: &Ws, url: &str, extra: &[&str]) -> common::Run {
    let mut args = vec!["build", "--json", "--remote-cache", url];
    args.extend_from_slice(extra);
    let r = ws.run(&args);
    assert_eq!(r.code, 0, "build failed:\n{}\n{}", r.stdout, r.stderr);
    r
}

fn outputs(r: &common::Run) -> Vec<(String, String)> {
    let doc = r.json();
    let mut v: Vec<(String, String)> = doc["targets"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, t)| (k.clone(), t["output"].as_str().unwrap().to_string()))
        .collect();
    v.sort();
    v
}

/// Two runners share the cache: the second executes nothing and gets the
/// same outputs; a read-only runner writes nothing.
fn shared_between_runners(url: &str, written: impl Fn() -> usize) {
    let before = written();
    let ro = runner("");
    let r = build(&ro, url, &["--remote-upload=false"]);
    assert_eq!(r.executed().len(), 3);
    assert_eq!(
        written(),
        before,
        "--remote-upload=false wrote to the cache"
    );

    let a = runner("");
    let first = build(&a, url, &[]);
    assert_eq!(first.executed().len(), 3, "{}", first.stderr);
    assert!(written() > before, "the first runner uploaded nothing");
    assert_eq!(first.json()["remote"]["uploads"], 3, "{}", first.stdout);

    let b = runner("");
    let second = build(&b, url, &[]);
    assert!(second.executed().is_empty(), "{}", second.stderr);
    assert_eq!(outputs(&first), outputs(&second));
    assert_eq!(second.json()["remote"]["hits"], 3);
    assert_eq!(b.read("out/count/count.txt"), "3\n");
}

/// With `trusted_keys`, unsigned or wrongly signed entries are misses and
/// rightly signed ones hits.
fn trusted_keys(url: &str) {
    let keys = tempfile::tempdir().unwrap();
    let key = |name: &str| {
        let path = keys.path().join(name);
        let r = Ws::new().run(&["cache", "keygen", "-o", path.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        (path, r.stdout.trim().to_string())
    };
    let (good, good_pub) = key("good");
    let (bad, _) = key("bad");
    // Each phase has another number of lines, so the archive of the count
    // (cached locally by the checker) differs too.
    let words = |w: &str| match w {
        "unsigned" => "unsigned\nkiwi\n".to_string(),
        "stranger" => "stranger\nkiwi\nlime\n".to_string(),
        _ => "trusted\nkiwi\nlime\nplum\n".to_string(),
    };

    // Unsigned results are not trusted.
    let unsigned = runner("");
    unsigned.write("words.txt", &words("unsigned"));
    build(&unsigned, url, &[]);
    let checker = runner(&format!(
        "remote_cache:\n  trusted_keys: [\"{good_pub}\"]\n"
    ));
    checker.write("words.txt", &words("unsigned"));
    let r = build(&checker, url, &["--remote-upload=false"]);
    assert_eq!(
        r.executed().len(),
        3,
        "unsigned entries must be misses: {}",
        r.stderr
    );
    assert_eq!(r.json()["remote"]["untrusted"], 3);

    // Signed by a key nobody trusts.
    let stranger = runner("");
    stranger.write("words.txt", &words("stranger"));
    build(&stranger, url, &["--sign-key", bad.to_str().unwrap()]);
    checker.write("words.txt", &words("stranger"));
    let r = build(&checker, url, &["--remote-upload=false"]);
    assert_eq!(r.executed().len(), 3, "{}", r.stderr);

    // Signed by the trusted key.
    let signer = runner("");
    signer.write("words.txt", &words("trusted"));
    build(&signer, url, &["--sign-key", good.to_str().unwrap()]);
    checker.write("words.txt", &words("trusted"));
    let r = build(&checker, url, &["--remote-upload=false"]);
    assert!(r.executed().is_empty(), "{}", r.stderr);
}

/// A blob tampered on the server is refused; the build succeeds locally.
fn tampered_blob_is_refused(url: &str, blob_file: impl Fn(&str) -> std::path::PathBuf) {
    let a = runner("");
    a.write("words.txt", "tamper\nme\n");
    let first = build(&a, url, &[]);
    assert_eq!(first.json()["remote"]["digest_function"], "sha256");
    // The blob of count.txt, whose content is "2\n".
    let content_hash = |bytes: &[u8]| -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(bytes))
    };
    let path = blob_file(&content_hash(b"2\n"));
    assert!(path.exists(), "no blob at {}", path.display());
    std::fs::write(&path, b"9\n").unwrap();
    let b = runner("");
    b.write("words.txt", "tamper\nme\n");
    let r = build(&b, url, &["--remote-upload=false"]);
    assert!(r.stderr.contains("refused"), "{}", r.stderr);
    assert_eq!(b.read("out/count/count.txt"), "2\n");
    assert_eq!(r.json()["remote"]["refused_blobs"], 1);
}

/// The key of `target` in a build's JSON report.
fn key_of(r: &common::Run, target: &str) -> String {
    r.json()["targets"][target]["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key for {target}: {}", r.stdout))
        .to_string()
}

/// The `warning:` lines a run printed.
fn warnings(r: &common::Run) -> Vec<&str> {
    r.stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect()
}

/// Replaces a (possibly read-only) file on a server's or a store's disk.
fn overwrite(path: &Path, bytes: &[u8]) {
    assert!(path.exists(), "nothing at {}", path.display());
    std::fs::remove_file(path).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Another target's result planted at a target's key (well formed, but
/// not what the target declares) is rejected: the target runs locally, the
/// build succeeds, and the wrong result never becomes a local entry.
fn wrong_entry_is_rejected(url: &str, ac_file: impl Fn(&str) -> PathBuf) {
    let words = "wrong\nentry\nplanted\nhere\nnow\n";
    let a = runner("");
    a.write("words.txt", words);
    let first = build(&a, url, &[]);
    let count_entry = std::fs::read(ac_file(&key_of(&first, "count"))).unwrap();
    overwrite(&ac_file(&key_of(&first, "words")), &count_entry);

    let b = runner("");
    b.write("words.txt", words);
    let r = build(&b, url, &["--remote-upload=false"]);
    assert_eq!(r.executed(), ["words"], "{}", r.stderr);
    assert_eq!(r.json()["remote"]["rejected_entries"], 1, "{}", r.stdout);
    assert_eq!(r.json()["remote"]["hits"], 2, "{}", r.stdout);
    let w = warnings(&r);
    assert_eq!(w.len(), 1, "{}", r.stderr);
    assert!(w[0].contains("rejected"), "{}", r.stderr);
    assert_eq!(
        b.read("out/words/words.txt"),
        "entry\nhere\nnow\nplanted\nwrong\n"
    );
    // The local store holds the right result: a second build is all local.
    let again = build(&b, url, &["--remote-upload=false"]);
    assert!(again.executed().is_empty(), "{}", again.stderr);
    assert_eq!(again.json()["remote"]["hits"], 0, "{}", again.stdout);
}

/// Bytes that are no action result at a target's key are rejected too:
/// counted, one warning, and the target runs locally.
fn garbage_entry_is_rejected(url: &str, ac_file: impl Fn(&str) -> PathBuf) {
    let words = "garbage\nat\nthe\nkey\n";
    let a = runner("");
    a.write("words.txt", words);
    let first = build(&a, url, &[]);
    overwrite(
        &ac_file(&key_of(&first, "words")),
        b"\xff\xff\xff\xff not an action result",
    );

    let b = runner("");
    b.write("words.txt", words);
    let r = build(&b, url, &["--remote-upload=false"]);
    assert_eq!(r.executed(), ["words"], "{}", r.stderr);
    let remote = &r.json()["remote"];
    assert_eq!(remote["rejected_entries"], 1, "{}", r.stdout);
    assert_eq!(remote["misses"], 0, "a rejected entry is no plain miss");
    let w = warnings(&r);
    assert_eq!(w.len(), 1, "{}", r.stderr);
    assert!(w[0].contains("rejected"), "{}", r.stderr);
    assert!(r.stderr.contains("1 entry rejected"), "{}", r.stderr);
}

/// A blob corrupted on the server without a change of size (so the server
/// says it has it) is uploaded again once a step has produced the right
/// bytes; the next runner gets a full hit.
fn corrupt_blob_is_repaired(url: &str, blob_file: impl Fn(&str) -> PathBuf) {
    let words = "repair\nthe\nblob\nof\nsix\nlines\n";
    let a = runner("");
    a.write("words.txt", words);
    build(&a, url, &[]);
    let path = blob_file(&sha256_hex(b"6\n"));
    overwrite(&path, b"7\n");

    let b = runner("");
    b.write("words.txt", words);
    let r = build(&b, url, &[]);
    assert_eq!(r.executed(), ["count"], "{}", r.stderr);
    assert_eq!(r.json()["remote"]["refused_blobs"], 1, "{}", r.stdout);
    assert_eq!(std::fs::read(&path).unwrap(), b"6\n", "{url}: not repaired");

    let c = runner("");
    c.write("words.txt", words);
    let r = build(&c, url, &[]);
    assert!(r.executed().is_empty(), "{}", r.stderr);
    assert_eq!(r.json()["remote"]["hits"], 3, "{}", r.stdout);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A local action-cache entry that does not match the target's declared
/// outputs (left by an earlier version that trusted a wrong remote entry)
/// is a miss, and the step's result replaces it.
#[test]
fn a_wrong_local_entry_is_dropped() {
    let ws = runner("");
    let first = ws.build_ok(&[]);
    let entry = |target: &str| {
        let key = key_of(&first, target);
        ws.store.join("ac/blake3").join(&key[..2]).join(&key)
    };
    let count_entry = std::fs::read(entry("count")).unwrap();
    overwrite(&entry("words"), &count_entry);

    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["words"], "{}", r.stderr);
    assert_eq!(ws.read("out/words/words.txt"), "apple\nfig\npear\n");
    assert_ne!(std::fs::read(entry("words")).unwrap(), count_entry);
    let again = ws.build_ok(&[]);
    assert!(again.executed().is_empty(), "{}", again.stderr);
}

/// A server that is down costs one warning; the build succeeds locally.
#[test]
fn a_stopped_server_costs_one_warning() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for url in [
        format!("http://127.0.0.1:{port}"),
        format!("grpc://127.0.0.1:{port}"),
    ] {
        let ws = runner("");
        let r = build(&ws, &url, &[]);
        assert_eq!(r.executed().len(), 3);
        let warnings = r
            .stderr
            .lines()
            .filter(|l| l.starts_with("warning:"))
            .count();
        assert_eq!(warnings, 1, "{url}:\n{}", r.stderr);
    }
}

/// `strata cache serve` on a free port, stopped on drop.
struct Served {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Served {
    fn start() -> Served {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(common::strata_bin())
            .args([
                "cache",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--max-size",
                "1G",
                "--dir",
            ])
            .arg(dir.path().join("cache"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Served { child, url, dir }
    }

    /// The stored blob with this SHA-256.
    fn blob(&self, hex: &str) -> PathBuf {
        self.dir.path().join("cache/cas").join(&hex[..2]).join(hex)
    }

    /// The stored action result of the key with this hex.
    fn entry(&self, hex: &str) -> PathBuf {
        self.dir.path().join("cache/ac").join(&hex[..2]).join(hex)
    }

    fn files(&self) -> usize {
        count_files(&self.dir.path().join("cache/cas"))
            + count_files(&self.dir.path().join("cache/ac"))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count_files(dir: &Path) -> usize {
    walk(dir).len()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(walk(&p));
        } else {
            found.push(p);
        }
    }
    found
}

#[test]
fn the_embedded_server_is_shared_by_runners() {
    let server = Served::start();
    shared_between_runners(&server.url, || server.files());
    trusted_keys(&server.url);
    tampered_blob_is_refused(&server.url, |hex| server.blob(hex));
}

/// A store filled through an HTTP cache holds SHA-256 objects, which
/// `strata store verify` (opening the store as BLAKE3, as every command
/// that has no remote does) must check as well.
#[test]
fn verify_finds_a_flipped_byte_in_a_sha256_store() {
    let server = Served::start();
    let ws = runner("");
    build(&ws, &server.url, &[]);
    let verify = || ws.run(&["store", "verify"]);
    let clean = verify();
    assert_eq!(clean.code, 0, "{}{}", clean.stdout, clean.stderr);
    assert!(!clean.stdout.starts_with("0 objects"), "{}", clean.stdout);

    let blob = walk(&ws.store.join("cas/sha256"))
        .into_iter()
        .find(|p| fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .expect("a non-empty SHA-256 blob");
    let mut bytes = fs::read(&blob).unwrap();
    bytes[0] ^= 1;
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&blob, bytes).unwrap();
    let r = verify();
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("CORRUPTION FOUND"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&blob.display().to_string()),
        "names the blob {}:\n{}",
        blob.display(),
        r.stdout
    );
}

#[test]
fn nginx_webdav_is_shared_by_runners() {
    if !nginx_available() {
        return;
    }
    let nginx = Nginx::start();
    let url = nginx.url();
    shared_between_runners(&url, || walk(&nginx.dir()).len());
    trusted_keys(&url);
    tampered_blob_is_refused(&url, |hex| nginx.blob_path("cas", hex));
}

#[test]
fn a_wrong_remote_entry_is_rejected() {
    let server = Served::start();
    wrong_entry_is_rejected(&server.url, |hex| server.entry(hex));
    if nginx_available() {
        let nginx = Nginx::start();
        wrong_entry_is_rejected(&nginx.url(), |hex| nginx.blob_path("ac", hex));
    }
}

#[test]
fn a_garbage_remote_entry_is_counted_and_warned_about() {
    let server = Served::start();
    garbage_entry_is_rejected(&server.url, |hex| server.entry(hex));
    if nginx_available() {
        let nginx = Nginx::start();
        garbage_entry_is_rejected(&nginx.url(), |hex| nginx.blob_path("ac", hex));
    }
}

#[test]
fn a_blob_corrupted_on_the_server_is_uploaded_again() {
    if nginx_available() {
        let nginx = Nginx::start();
        corrupt_blob_is_repaired(&nginx.url(), |hex| nginx.blob_path("cas", hex));
    }
    let server = Served::start();
    corrupt_blob_is_repaired(&server.url, |hex| server.blob(hex));
}

/// When the gRPC remote cannot be reached, the build goes on in the digest
/// function the store holds its results in (SHA-256 after BuildGrid), so
/// the local results are used: nothing runs again. A store whose function
/// was never remembered (an older version) is read from its entries.
#[test]
fn an_unreachable_grpc_remote_keeps_the_stores_digest_function() {
    if !buildgrid_available() {
        return;
    }
    let mut bg = Buildgrid::start();
    let url = format!("{}/{}", bg.url(), bg.instance());
    let ws = runner("");
    assert_eq!(build(&ws, &url, &[]).executed().len(), 3);
    bg.stop();
    for attempt in ["remembered", "read from the entries"] {
        let r = build(&ws, &url, &[]);
        assert!(r.executed().is_empty(), "{attempt}: {}", r.stderr);
        let output = &r.json()["targets"]["count"]["output"];
        assert!(
            output.as_str().unwrap().starts_with("sha256:"),
            "{attempt}: {output}"
        );
        assert_eq!(warnings(&r).len(), 1, "{attempt}: {}", r.stderr);
        let _ = std::fs::remove_file(ws.store.join("meta/digest-function"));
    }
}

/// The same server over REAPI gRPC: runners share it as they do over HTTP,
/// and what gRPC runners stored is a hit for an HTTP one (one folder, both
/// protocols, the same SHA-256 keys).
#[test]
fn the_embedded_server_is_shared_by_runners_over_grpc() {
    let server = Served::start();
    let grpc = server.url.replacen("http://", "grpc://", 1);
    shared_between_runners(&grpc, || server.files());
    tampered_blob_is_refused(&grpc, |hex| server.blob(hex));
    let over_http = build(&runner(""), &server.url, &[]);
    assert!(over_http.executed().is_empty(), "{}", over_http.stderr);
    assert_eq!(over_http.json()["remote"]["hits"], 3);
}

/// A server that only speaks HTTP/1 closes a gRPC connection without a
/// word; the client says what that likely means: one warning, and the
/// build goes on locally.
#[test]
fn a_grpc_client_of_an_http1_cache_is_told_to_use_http() {
    if !nginx_available() {
        return;
    }
    let nginx = Nginx::start();
    let r = build(
        &runner(""),
        &nginx.url().replacen("http://", "grpc://", 1),
        &[],
    );
    assert_eq!(r.executed().len(), 3, "{}", r.stderr);
    let w = warnings(&r);
    assert_eq!(w.len(), 1, "{}", r.stderr);
    assert!(
        w[0].contains(&format!("if it is an HTTP cache, use {}", nginx.url())),
        "{}",
        w[0]
    );
}

#[test]
fn buildgrid_negotiates_sha256_and_is_shared_by_runners() {
    if !buildgrid_available() {
        return;
    }
    let bg = Buildgrid::start();
    let url = format!("{}/{}", bg.url(), bg.instance());
    let a = runner("");
    let first = build(&a, &url, &[]);
    assert_eq!(
        first.json()["remote"]["digest_function"],
        "sha256",
        "{}",
        first.stdout
    );
    assert!(
        first.json()["targets"]["count"]["output"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "the whole build uses the remote's function"
    );
    let b = runner("");
    let second = build(&b, &url, &[]);
    assert!(second.executed().is_empty(), "{}", second.stderr);
    assert_eq!(outputs(&first), outputs(&second));
    // Explaining reads the SHA-256 keys of that build.
    let e = b.run(&["explain", "count", "--json"]);
    assert_eq!(e.code, 0, "{}", e.stderr);
    assert_eq!(e.json()["state"], "cached", "{}", e.stdout);

    // Read-only: a new workspace's results are not uploaded.
    let ro = runner("");
    ro.write("words.txt", "read\nonly\n");
    build(&ro, &url, &["--remote-upload=false"]);
    let again = runner("");
    again.write("words.txt", "read\nonly\n");
    let r = build(&again, &url, &["--remote-upload=false"]);
    assert_eq!(r.executed().len(), 3, "nothing was uploaded: {}", r.stderr);

    trusted_keys(&url);
}
