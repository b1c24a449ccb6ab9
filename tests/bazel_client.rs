//! Bazel 4.2.3 (Debian's bazel-bootstrap), a client that knows nothing of
//! Strata, against `strata cache serve` over REAPI gRPC
//! (`--remote_cache=grpc://`): tokens as metadata, uploads of what it
//! built, and remote cache hits from a clean output tree. One Bazel server
//! serves the whole test.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sha2::Digest as _;

use common::bazel::{Bazel, bazel_available};

const BUILD: &str = r#"genrule(
    name = "sorted",
    srcs = ["words.txt"],
    outs = ["sorted.txt"],
    cmd = "sort $(location words.txt) > $@",
)

# Larger than one ByteStream message either way.
genrule(
    name = "big",
    outs = ["big.txt"],
    cmd = "seq 1 400000 > $@",
)
"#;

/// `strata cache serve` with a read and a write token; stopped on drop.
struct Served {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Served {
    fn start() -> Served {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("read-token"), "r-secret\n").unwrap();
        fs::write(dir.path().join("write-token"), "w-secret\n").unwrap();
        let mut child = Command::new(common::strata_bin())
            .args([
                "cache",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--max-size",
                "1G",
            ])
            .arg("--dir")
            .arg(dir.path().join("cache"))
            .arg("--read-token-file")
            .arg(dir.path().join("read-token"))
            .arg("--write-token-file")
            .arg(dir.path().join("write-token"))
            .stdout(Stdio::piped())
            .stderr(fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Served { child, addr, dir }
    }

    fn entries(&self, kind: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for shard in fs::read_dir(self.dir.path().join("cache").join(kind)).unwrap() {
            for f in fs::read_dir(shard.unwrap().path()).unwrap() {
                found.push(f.unwrap().path());
            }
        }
        found.sort();
        found
    }

    fn blob(&self, content: &[u8]) -> PathBuf {
        let hex = hex::encode(sha2::Sha256::digest(content));
        self.dir.path().join("cache/cas").join(&hex[..2]).join(hex)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `seq 1 400000` prints: 2.7 MB.
fn big() -> Vec<u8> {
    (1..=400_000)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}

fn assert_ok(what: &str, r: &common::Run, server: &Served) {
    assert_eq!(
        r.code,
        0,
        "{what} failed:\n{}\nserver log:\n{}",
        r.stderr,
        server.log()
    );
}

/// The genrule spawns of an execution log: `(runner, remote cache hit)`.
fn genrules(log: &Path) -> Vec<(String, bool)> {
    Bazel::spawns(log)
        .iter()
        .filter(|s| s["mnemonic"] == "Genrule")
        .map(|s| {
            (
                s["runner"].as_str().unwrap_or_default().to_string(),
                s["remoteCacheHit"] == true,
            )
        })
        .collect()
}

#[test]
fn bazel_shares_results_through_cache_serve_over_grpc() {
    if !bazel_available() {
        return;
    }
    let server = Served::start();
    let bazel = Bazel::new();
    bazel.write("BUILD", BUILD);
    bazel.write("words.txt", "pear\napple\nfig\n");
    let cache = format!("--remote_cache=grpc://{}", server.addr);
    let token = |t: &str| format!("--remote_header=Authorization=Bearer {t}");

    // Without a token Bazel stops at GetCapabilities and says why.
    let r = bazel.build(&[&cache, "//:all"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("UNAUTHENTICATED: a valid bearer token is required"),
        "{}",
        r.stderr
    );
    // The read token may not update the action cache, and the capabilities
    // say so before Bazel tries.
    let r = bazel.build(&[&cache, &token("r-secret"), "//:all"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("not authorized to write local results to the remote cache"),
        "{}",
        r.stderr
    );
    assert!(server.entries("ac").is_empty());

    // With the write token both actions run and are uploaded: two action
    // results, and the outputs' blobs under their SHA-256.
    let log = bazel.scratch("first.json");
    let r = bazel.build(&[
        &cache,
        &token("w-secret"),
        &format!("--execution_log_json_file={}", log.display()),
        "//:all",
    ]);
    assert_ok("the first build", &r, &server);
    let ran = genrules(&log);
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert!(ran.iter().all(|(_, hit)| !hit), "{ran:?}");
    assert_eq!(bazel.output("sorted.txt"), b"apple\nfig\npear\n");
    assert_eq!(server.entries("ac").len(), 2, "{}", server.log());
    for content in [b"apple\nfig\npear\n".to_vec(), big()] {
        let blob = server.blob(&content);
        assert_eq!(
            fs::read(&blob).unwrap_or_default().len(),
            content.len(),
            "{}",
            blob.display()
        );
    }
    let stored: Vec<PathBuf> = server
        .entries("cas")
        .into_iter()
        .chain(server.entries("ac"))
        .collect();

    // From a clean output tree, a reader that uploads nothing gets both
    // outputs from the cache, byte for byte, and the folder is unchanged.
    let r = bazel.run("clean", &[]);
    assert_ok("bazel clean", &r, &server);
    let log = bazel.scratch("second.json");
    let r = bazel.build(&[
        &cache,
        &token("r-secret"),
        "--remote_upload_local_results=false",
        &format!("--execution_log_json_file={}", log.display()),
        "//:all",
    ]);
    assert_ok("the second build", &r, &server);
    assert_eq!(
        genrules(&log),
        vec![("remote cache hit".to_string(), true); 2],
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("2 remote cache hit"), "{}", r.stderr);
    assert_eq!(bazel.output("sorted.txt"), b"apple\nfig\npear\n");
    assert_eq!(bazel.output("big.txt"), big());
    let after: Vec<PathBuf> = server
        .entries("cas")
        .into_iter()
        .chain(server.entries("ac"))
        .collect();
    assert_eq!(after, stored);
}
