//! `strata cache serve`: the real binary on a free port, spoken to over raw
//! HTTP/1.1 so malformed and abandoned requests can be sent as well.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use sha2::Digest as _;
use strata_store::reapi;

use common::strata_bin;

/// A running `strata cache serve`; killed when dropped.
struct Server {
    child: Child,
    addr: String,
    stderr: PathBuf,
    _logs: tempfile::TempDir,
}

impl Server {
    fn start(dir: &Path, args: &[&str]) -> Server {
        Server::start_with_env(dir, args, &[])
    }

    fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let logs = tempfile::tempdir().unwrap();
        let stderr = logs.path().join("stderr");
        let mut cmd = serve_cmd(dir, args);
        cmd.stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("strata runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(addr) = line.trim().strip_prefix("listening on http://") else {
            let status = child.wait().unwrap();
            panic!(
                "no address printed ({status}): {line:?}\nstderr:\n{}",
                fs::read_to_string(&stderr).unwrap()
            );
        };
        Server {
            addr: addr.to_string(),
            child,
            stderr,
            _logs: logs,
        }
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap()
    }

    fn request(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Reply {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: cache\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body);
        self.raw(&raw)
    }

    fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None, b"")
    }

    fn put(&self, path: &str, body: &[u8]) -> Reply {
        self.request("PUT", path, None, body)
    }

    /// Sends `bytes` as they are and reads the answer to the end.
    fn raw(&self, bytes: &[u8]) -> Reply {
        let mut s = self.connect();
        // The server may answer (and close) before reading everything.
        let _ = s.write_all(bytes);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        Reply::parse(&answer)
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).expect("the server accepts connections");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Sends `sig` and returns the exit code.
    fn stop(mut self, sig: libc::c_int) -> i32 {
        self.signal(sig);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(strata_bin());
    cmd.args(["cache", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .args(args)
        .env_remove("STRATA_CACHE_READ_TOKEN")
        .env_remove("STRATA_CACHE_WRITE_TOKEN");
    cmd
}

/// Runs `strata cache serve` expected to exit at once; its code and stderr.
fn serve_fails(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = serve_cmd(dir, args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    fn parse(raw: &[u8]) -> Reply {
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            // The connection was closed without an answer.
            return Reply {
                status: 0,
                headers: String::new(),
                body: raw.to_vec(),
            };
        };
        let headers = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let status = headers
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Reply {
            status,
            headers,
            body: raw[end + 4..].to_vec(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn digest(bytes: &[u8]) -> reapi::Digest {
    reapi::Digest {
        hash: sha256(bytes),
        size_bytes: bytes.len() as i64,
    }
}

fn cas(bytes: &[u8]) -> String {
    format!("/cas/{}", sha256(bytes))
}

/// Bytes that compress badly, so sizes on disk are what they seem.
fn noise(seed: u8, len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn file(name: &str, bytes: &[u8]) -> reapi::FileNode {
    reapi::FileNode {
        name: name.into(),
        digest: Some(digest(bytes)),
        ..Default::default()
    }
}

/// An action result with stdout `log` and nothing else.
fn result_with_log(log: &[u8]) -> Vec<u8> {
    reapi::ActionResult {
        stdout_digest: Some(digest(log)),
        ..Default::default()
    }
    .encode_to_vec()
}

fn ac(key: &str) -> String {
    format!("/ac/{}", sha256(key.as_bytes()))
}

/// Files under `dir/sub`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

fn bytes_under(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

/// REAPI's `OutputFile` and the `ActionResult` fields Bazel fills, which
/// Strata's own results do not use.
#[derive(Clone, PartialEq, prost::Message)]
struct BazelOutputFile {
    #[prost(string, tag = "1")]
    path: String,
    #[prost(message, optional, tag = "2")]
    digest: Option<reapi::Digest>,
    #[prost(bool, tag = "4")]
    is_executable: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct BazelActionResult {
    #[prost(message, repeated, tag = "2")]
    output_files: Vec<BazelOutputFile>,
    #[prost(message, repeated, tag = "3")]
    output_directories: Vec<reapi::OutputDirectory>,
    #[prost(int32, tag = "4")]
    exit_code: i32,
}

#[test]
fn blobs_and_action_results_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("cache"), &["--max-size", "64M"]);

    assert_eq!(s.put(&cas(b"hello"), b"hello").status, 200);
    let r = s.get(&cas(b"hello"));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    let r = s.request("HEAD", &cas(b"hello"), None, b"");
    assert_eq!(r.status, 200);
    assert!(r.headers.contains("content-length: 5"), "{}", r.headers);
    assert!(r.body.is_empty());
    // Bazel's `--remote_cache=http://host/prefix` puts a prefix first.
    assert_eq!(s.get(&format!("/team{}", cas(b"hello"))).body, b"hello");

    // A large blob sent in chunks, streamed to disk.
    let big = noise(1, 3 << 20);
    let mut raw = format!(
        "PUT {} HTTP/1.1\r\nHost: cache\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        cas(&big)
    )
    .into_bytes();
    for chunk in big.chunks(100_000) {
        raw.extend(format!("{:x}\r\n", chunk.len()).bytes());
        raw.extend_from_slice(chunk);
        raw.extend(b"\r\n");
    }
    raw.extend(b"0\r\n\r\n");
    assert_eq!(s.raw(&raw).status, 200);
    let r = s.get(&cas(&big));
    assert_eq!(r.status, 200);
    assert!(r.body == big, "the large blob comes back whole");

    // An output tree as Strata stores it: Directory records as blobs.
    let sub = reapi::Directory {
        files: vec![file("big", &big)],
        ..Default::default()
    }
    .encode_to_vec();
    let root = reapi::Directory {
        files: vec![file("a", b"hello")],
        directories: vec![reapi::DirectoryNode {
            name: "sub".into(),
            digest: Some(digest(&sub)),
        }],
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(s.put(&cas(&sub), &sub).status, 200);
    assert_eq!(s.put(&cas(&root), &root).status, 200);
    assert_eq!(s.put(&cas(b"log"), b"log").status, 200);
    let result = reapi::ActionResult {
        output_directories: vec![reapi::OutputDirectory {
            path: "strata/out".into(),
            root_directory_digest: Some(digest(&root)),
            ..Default::default()
        }],
        stdout_digest: Some(digest(b"log")),
        // The empty blob is never uploaded; every cache has it.
        stderr_digest: Some(digest(b"")),
        ..Default::default()
    }
    .encode_to_vec();
    let r = s.put(&ac("action"), &result);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.get(&ac("action"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, result, "the action result comes back byte for byte");
    assert_eq!(
        reapi::ActionResult::decode(r.body.as_slice())
            .unwrap()
            .stdout_digest,
        Some(digest(b"log"))
    );
    let r = s.get(&cas(b""));
    assert_eq!((r.status, r.body.len()), (200, 0));

    // Misses.
    assert_eq!(s.get(&cas(b"absent")).status, 404);
    assert_eq!(s.get(&ac("absent")).status, 404);
    assert_eq!(s.request("HEAD", &ac("absent"), None, b"").status, 404);
    assert_eq!(s.get("/").status, 404);
}

#[test]
fn a_blob_that_does_not_hash_to_its_name_is_refused_and_not_stored() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("cache");
    let s = Server::start(&dir, &["--max-size", "1M"]);
    let r = s.put(&cas(b"other"), b"hello");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains(&sha256(b"hello")), "{}", r.text());
    assert_eq!(s.get(&cas(b"other")).status, 404);
    assert_eq!(s.get(&cas(b"hello")).status, 404);
    assert_eq!(files_under(&dir.join("cas")), Vec::<PathBuf>::new());
    assert_eq!(files_under(&dir.join("tmp")), Vec::<PathBuf>::new());
    // Malformed names.
    assert_eq!(s.put("/cas/abc", b"hello").status, 400);
    let upper = format!("/cas/{}", sha256(b"hello").to_uppercase());
    assert_eq!(s.put(&upper, b"hello").status, 400);
    drop(s);

    // A BLAKE3 server names blobs by BLAKE3 only.
    let b3 = Server::start(
        &d.path().join("b3"),
        &["--max-size", "1M", "--digest-function", "blake3"],
    );
    assert_eq!(b3.put(&cas(b"hello"), b"hello").status, 400);
    let name = format!("/cas/{}", blake3::hash(b"hello").to_hex());
    assert_eq!(b3.put(&name, b"hello").status, 200);
    assert_eq!(b3.get(&name).body, b"hello");
}

#[test]
fn an_action_result_naming_a_missing_blob_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("cache"), &["--max-size", "1M"]);

    let r = s.put(&ac("a"), &result_with_log(b"log"));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains(&sha256(b"log")), "{}", r.text());
    assert_eq!(s.get(&ac("a")).status, 404);
    assert_eq!(s.put(&cas(b"log"), b"log").status, 200);
    assert_eq!(s.put(&ac("a"), &result_with_log(b"log")).status, 200);

    // A file deep in an output tree.
    let sub = reapi::Directory {
        files: vec![file("deep", b"deep")],
        ..Default::default()
    }
    .encode_to_vec();
    let root = reapi::Directory {
        directories: vec![reapi::DirectoryNode {
            name: "sub".into(),
            digest: Some(digest(&sub)),
        }],
        ..Default::default()
    }
    .encode_to_vec();
    let tree_result = reapi::ActionResult {
        output_directories: vec![reapi::OutputDirectory {
            path: "out".into(),
            root_directory_digest: Some(digest(&root)),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(s.put(&cas(&root), &root).status, 200);
    // The subdirectory record itself is missing.
    let r = s.put(&ac("tree"), &tree_result);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains(&sha256(&sub)), "{}", r.text());
    assert_eq!(s.put(&cas(&sub), &sub).status, 200);
    // Then the file in it.
    let r = s.put(&ac("tree"), &tree_result);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains(&sha256(b"deep")), "{}", r.text());
    assert_eq!(s.get(&ac("tree")).status, 404);
    assert_eq!(s.put(&cas(b"deep"), b"deep").status, 200);
    assert_eq!(s.put(&ac("tree"), &tree_result).status, 200);

    // Bazel's output files and `Tree` messages.
    let bazel = BazelActionResult {
        output_files: vec![BazelOutputFile {
            path: "bazel-out/x".into(),
            digest: Some(digest(b"output file")),
            is_executable: false,
        }],
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(s.put(&ac("bazel"), &bazel).status, 409);
    let tree = reapi::Tree {
        root: Some(reapi::Directory {
            files: vec![file("in-tree", b"in tree")],
            ..Default::default()
        }),
        children: vec![],
    }
    .encode_to_vec();
    assert_eq!(s.put(&cas(&tree), &tree).status, 200);
    let with_tree = BazelActionResult {
        output_directories: vec![reapi::OutputDirectory {
            path: "bazel-out/d".into(),
            tree_digest: Some(digest(&tree)),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec();
    let r = s.put(&ac("bazel-tree"), &with_tree);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains(&sha256(b"in tree")), "{}", r.text());
    assert_eq!(s.put(&cas(b"in tree"), b"in tree").status, 200);
    assert_eq!(s.put(&ac("bazel-tree"), &with_tree).status, 200);

    // A size that does not match the stored blob names another blob.
    let wrong_size = reapi::ActionResult {
        stdout_digest: Some(reapi::Digest {
            hash: sha256(b"log"),
            size_bytes: 4,
        }),
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(s.put(&ac("wrong-size"), &wrong_size).status, 409);

    // Not an action result at all.
    let r = s.put(&ac("garbage"), b"\xff\xff\xff\xff");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(s.get(&ac("garbage")).status, 404);
}

#[test]
fn read_and_write_tokens() {
    let d = tempfile::tempdir().unwrap();
    let write_file = d.path().join("write-token");
    fs::write(&write_file, "w-secret-42\n").unwrap();
    let s = Server::start_with_env(
        &d.path().join("cache"),
        &[
            "--max-size",
            "1M",
            "--write-token-file",
            write_file.to_str().unwrap(),
        ],
        &[("STRATA_CACHE_READ_TOKEN", "r-secret-17")],
    );
    let (read, write) = (Some("r-secret-17"), Some("w-secret-42"));
    let put = |token| s.request("PUT", &cas(b"x"), token, b"x").status;
    let get = |token| s.request("GET", &cas(b"x"), token, b"").status;

    let r = s.request("GET", &cas(b"x"), None, b"");
    assert_eq!(r.status, 401);
    assert!(
        r.headers.contains("www-authenticate: bearer"),
        "{}",
        r.headers
    );
    assert_eq!(get(Some("guessed-token")), 401);
    assert_eq!(get(read), 404, "the read token reads (a miss)");
    assert_eq!(put(None), 401);
    assert_eq!(put(Some("guessed-token")), 401);
    assert_eq!(put(read), 403, "the read token cannot write");
    assert_eq!(get(write), 404);
    assert_eq!(put(write), 200);
    assert_eq!(get(read), 200);
    assert_eq!(get(write), 200);
    assert_eq!(get(None), 401);
    let log = s.stderr();
    for secret in ["r-secret-17", "w-secret-42", "guessed-token"] {
        assert!(!log.contains(secret), "a token in the log:\n{log}");
    }
    drop(s);

    // A write token alone leaves reads open.
    let s = Server::start_with_env(
        &d.path().join("cache2"),
        &["--max-size", "1M"],
        &[("STRATA_CACHE_WRITE_TOKEN", "w-secret-42")],
    );
    assert_eq!(s.put(&cas(b"x"), b"x").status, 401);
    assert_eq!(s.request("PUT", &cas(b"x"), write, b"x").status, 200);
    assert_eq!(s.get(&cas(b"x")).status, 200);
    drop(s);

    // Tokens never come from the command line; unreadable or empty token
    // files are usage errors.
    let dir = d.path().join("cache3");
    let (code, _) = serve_fails(&dir, &["--max-size", "1M", "--read-token", "x"], &[]);
    assert_eq!(code, 2);
    let absent = d.path().join("absent").to_str().unwrap().to_string();
    let (code, err) = serve_fails(
        &dir,
        &["--max-size", "1M", "--read-token-file", &absent],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    fs::write(d.path().join("empty"), "\n").unwrap();
    let empty = d.path().join("empty").to_str().unwrap().to_string();
    let (code, err) = serve_fails(
        &dir,
        &["--max-size", "1M", "--write-token-file", &empty],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    let (code, err) = serve_fails(
        &dir,
        &["--max-size", "1M"],
        &[("STRATA_CACHE_READ_TOKEN", "has space")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains("has space"), "{err}");
}

#[test]
fn least_recently_used_entries_are_evicted_first() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("cache");
    let s = Server::start(&dir, &["--max-size", "10K"]);
    let [a, b, c, e] = [1, 2, 3, 4].map(|i| noise(i, 3000));
    for blob in [&a, &b, &c] {
        assert_eq!(s.put(&cas(blob), blob).status, 200);
    }
    assert_eq!(s.put(&ac("x"), &result_with_log(&c)).status, 200);
    // Use everything but `c`, the entry naming it last of all.
    for path in [cas(&a), cas(&b), ac("x")] {
        assert_eq!(s.get(&path).status, 200);
    }
    assert_eq!(s.put(&cas(&e), &e).status, 200);
    assert_eq!(s.get(&cas(&c)).status, 404, "least recently used");
    assert_eq!(
        s.get(&ac("x")).status,
        404,
        "an action result goes with the blobs it names"
    );
    for blob in [&a, &b, &e] {
        assert_eq!(s.get(&cas(blob)).status, 200);
    }
    assert!(bytes_under(&dir.join("cas")) + bytes_under(&dir.join("ac")) <= 10 * 1024);

    // A blob larger than the whole cache is refused, and evicts nothing.
    let huge = noise(5, 11 * 1024);
    assert_eq!(s.put(&cas(&huge), &huge).status, 413);
    for blob in [&a, &b, &e] {
        assert_eq!(s.get(&cas(blob)).status, 200);
    }
}

#[test]
fn a_restart_keeps_entries_and_their_use_order() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("cache");
    let args = ["--max-size", "10000"];
    let s = Server::start(&dir, &args);
    let [a, b, c, e] = [1, 2, 3, 4].map(|i| noise(i, 3000));
    assert_eq!(s.put(&cas(&a), &a).status, 200);
    assert_eq!(s.put(&cas(&b), &b).status, 200);
    assert_eq!(s.put(&ac("x"), &result_with_log(&a)).status, 200);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(s.get(&cas(&a)).status, 200);

    // A second server cannot take the same folder.
    let (code, err) = serve_fails(&dir, &args, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another"), "{err}");
    assert_eq!(s.stop(libc::SIGTERM), 0);

    let (code, err) = serve_fails(
        &dir,
        &["--max-size", "1M", "--digest-function", "blake3"],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--digest-function sha256"), "{err}");

    let s = Server::start(&dir, &args);
    assert!(
        s.stderr().contains("2 blobs, 1 action result,"),
        "{}",
        s.stderr()
    );
    // Filling up evicts `b`: `a` was used after it, before the restart.
    assert_eq!(s.put(&cas(&c), &c).status, 200);
    assert_eq!(s.put(&cas(&e), &e).status, 200);
    assert_eq!(s.get(&cas(&b)).status, 404);
    assert_eq!(s.get(&cas(&a)).body, a);
    assert_eq!(s.get(&ac("x")).body, result_with_log(&a));
    assert_eq!(s.stop(libc::SIGINT), 0);
}

#[test]
fn the_server_survives_malformed_and_abandoned_requests() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("cache");
    let mut s = Server::start(&dir, &["--max-size", "16M", "--max-blob-size", "4M"]);
    let big = noise(1, 3 << 20);
    assert_eq!(s.put(&cas(&big), &big).status, 200);

    assert!(matches!(s.raw(b"\x00\x01garbage\r\n\r\n").status, 0 | 400));
    assert!(matches!(
        s.raw(b"GET /cas/x HTTP/1.1\r\nHost: c\r\nX: y\xff\xfe\r\nConnection: close\r\n\r\n")
            .status,
        0 | 400
    ));
    let long_header = format!(
        "GET {} HTTP/1.1\r\nHost: c\r\nX-Long: {}\r\n\r\n",
        cas(&big),
        "a".repeat(2 << 20)
    );
    assert!(matches!(
        s.raw(long_header.as_bytes()).status,
        0 | 400 | 431
    ));
    assert_eq!(s.request("DELETE", &cas(&big), None, b"").status, 405);
    let over = format!(
        "PUT {} HTTP/1.1\r\nHost: c\r\nContent-Length: {}\r\n\r\n",
        cas(b"x"),
        5 << 20
    );
    assert_eq!(s.raw(over.as_bytes()).status, 413);
    // A chunked upload that outgrows --max-blob-size; it stops just past
    // the limit so the server has read everything sent when it answers.
    let limit = 4 << 20;
    let mut raw = format!(
        "PUT {} HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        cas(b"x"),
        limit + 1
    )
    .into_bytes();
    raw.extend(noise(2, limit + 1));
    assert_eq!(s.raw(&raw).status, 413);

    // An upload cut short by the client.
    let mut conn = s.connect();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: c\r\nContent-Length: 1000\r\n\r\n",
        cas(&[7; 1000])
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(&[7; 10]).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    assert_ne!(Reply::parse(&answer).status, 200);
    // A download abandoned after its first bytes.
    for _ in 0..3 {
        let mut conn = s.connect();
        let get = format!("GET {} HTTP/1.1\r\nHost: c\r\n\r\n", cas(&big));
        conn.write_all(get.as_bytes()).unwrap();
        let mut first = [0u8; 100];
        conn.read_exact(&mut first).unwrap();
        drop(conn);
    }
    // Connections opened and left silent.
    let idle: Vec<TcpStream> = (0..20).map(|_| s.connect()).collect();

    assert!(s.is_running());
    assert_eq!(s.get(&cas(&big)).body, big);
    assert_eq!(s.put(&cas(b"after"), b"after").status, 200);
    assert_eq!(s.get(&cas(b"after")).body, b"after");
    drop(idle);
    // Refused and abandoned uploads leave no temporary file behind.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !files_under(&dir.join("tmp")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            files_under(&dir.join("tmp"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(s.get(&cas(&[7; 1000])).status == 404);
    assert_eq!(s.stop(libc::SIGTERM), 0);
}

#[test]
fn concurrent_uploads_of_the_same_blob_are_harmless() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("cache");
    let s = Server::start(&dir, &["--max-size", "64M"]);
    let shared = noise(9, 1 << 20);
    std::thread::scope(|scope| {
        for i in 0..8u8 {
            let (s, shared) = (&s, &shared);
            scope.spawn(move || {
                for round in 0..3u8 {
                    let r = s.put(&cas(shared), shared);
                    assert_eq!(r.status, 200, "{}", r.text());
                    let own = noise(100 + i * 3 + round, 10_000);
                    assert_eq!(s.put(&cas(&own), &own).status, 200);
                    let result = result_with_log(&own);
                    assert_eq!(s.put(&ac(&format!("{i}")), &result).status, 200);
                    assert!(s.get(&cas(shared)).body == *shared);
                }
            });
        }
    });
    assert!(s.get(&cas(&shared)).body == shared);
    assert_eq!(files_under(&dir.join("cas")).len(), 1 + 8 * 3);
    assert_eq!(files_under(&dir.join("ac")).len(), 8);
    assert_eq!(files_under(&dir.join("tmp")), Vec::<PathBuf>::new());
}

#[test]
fn usage_errors_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("cache");
    for args in [
        &["--max-size", "ten"][..],
        &[][..],
        &["--max-size", "1M", "--digest-function", "md5"][..],
        &["--max-size", "1M", "--max-blob-size", "0"][..],
        &["--max-size", "0"][..],
    ] {
        let (code, err) = serve_fails(&dir, args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    // An instance name that gRPC resource names could not carry.
    for (name, says) in [("team/blobs", "reserves"), ("team/", "empty segment")] {
        let (code, err) = serve_fails(&dir, &["--max-size", "1M", "--instance-name", name], &[]);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains(says), "{name}: {err}");
    }
    // A folder with other files in it is not taken over.
    let other = d.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("precious"), "x").unwrap();
    let (code, err) = serve_fails(&other, &["--max-size", "1M"], &[]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(fs::read_dir(&other).unwrap().count(), 1);
}
