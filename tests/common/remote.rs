//! Real remote cache servers for the remote cache tests, each started by a
//! test on its own free 127.0.0.1 port and temporary folder, as a child
//! process stopped on drop:
//!
//! - [`Nginx`]: Debian's nginx as a Bazel HTTP cache (WebDAV `PUT`,
//!   `GET`/`HEAD`, 404 on a miss) storing `ac/<hash>` and `cas/<hash>` files
//!   in [`Nginx::dir`]; `scripts/nginx-up.sh` installs it.
//! - [`Buildgrid`]: BuildGrid (PyPI) as a REAPI v2 gRPC cache (CAS,
//!   ByteStream, ActionCache and Capabilities, in memory, no execution);
//!   `scripts/buildgrid-up.sh` makes its venv and `scripts/test.sh` exports
//!   `STRATA_BUILDGRID_BIN`, the venv's `bgd`.
//!
//! A test starts with `if !remote::nginx_available() { return; }` (or
//! `buildgrid_available`); with `STRATA_REQUIRE_REMOTE_SERVERS` set (as in
//! CI) a missing server fails the test instead of skipping it.
//! Self-contained (std and tempfile only), so crate tests can include it
//! with `#[path]`.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set (as `scripts/test.sh` does) to make a missing server fail a test.
pub const REQUIRE_ENV: &str = "STRATA_REQUIRE_REMOTE_SERVERS";

/// How long a server may take to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Where Debian's libnginx-mod-http-dav-ext puts its module.
const DAV_EXT_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so";

fn available(what: &str, found: Option<String>, hint: &str) -> bool {
    match found {
        Some(_) => true,
        None => {
            assert!(
                std::env::var_os(REQUIRE_ENV).is_none(),
                "{REQUIRE_ENV} is set but {what} is missing ({hint})"
            );
            eprintln!("skipped: {what} is missing ({hint})");
            false
        }
    }
}

// ---------------------------------------------------------------- nginx

/// The nginx binary: `STRATA_NGINX_BIN`, else `nginx` on PATH, else
/// `/usr/sbin/nginx` (not on a non-root user's PATH on Debian); `None` when
/// there is none or the WebDAV extension module is missing.
pub fn nginx_bin() -> Option<String> {
    if !Path::new(DAV_EXT_MODULE).is_file() {
        return None;
    }
    if let Some(bin) = std::env::var_os("STRATA_NGINX_BIN") {
        return Some(bin.to_string_lossy().into_owned());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nginx"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
        .map(|p| p.to_string_lossy().into_owned())
}

/// Whether the nginx tests can run (see the module documentation).
pub fn nginx_available() -> bool {
    available(
        "nginx with libnginx-mod-http-dav-ext",
        nginx_bin(),
        "run scripts/nginx-up.sh",
    )
}

/// One request nginx logged: method, request URI and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// A private nginx serving a Bazel HTTP cache at [`Nginx::url`]: `PUT`
/// stores a file under [`Nginx::dir`] (creating folders), `GET` and `HEAD`
/// read it, a miss is 404. Writes are accepted only at `.../ac/<key>` and
/// `.../cas/<key>` (any prefix before them, as with a `--remote_cache` URL
/// that has a path), anything else is read-only (403 on `PUT`). Runs as one
/// process (`master_process off`: no workers, so no user switch when tests
/// run as root) with its config, pid, logs and temp files in its own folder.
pub struct Nginx {
    port: u16,
    root: tempfile::TempDir,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx on a free port and waits until it listens there.
    /// Panics (with nginx's error log) when it cannot start.
    pub fn start() -> Nginx {
        let bin = nginx_bin().unwrap_or_else(|| {
            panic!("nginx with libnginx-mod-http-dav-ext is missing (run scripts/nginx-up.sh)")
        });
        let root = tempfile::tempdir().expect("nginx temp folder");
        for d in ["data", "tmp"] {
            fs::create_dir_all(root.path().join(d)).unwrap();
        }
        let conf = root.path().join("nginx.conf");
        // The port is free when chosen but may be taken before nginx binds
        // it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            fs::write(&conf, nginx_conf(root.path(), port)).unwrap();
            let _ = fs::remove_file(root.path().join("error.log"));
            let mut child = Command::new(&bin)
                .arg("-p")
                .arg(root.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(root.path().join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(root.path().join("stderr")).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
            match wait_for_port(&mut child, port) {
                Ok(()) => {
                    return Nginx {
                        port,
                        root,
                        child: Some(child),
                    };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = format!("{why}\n{}", nginx_log(root.path()));
                    if !last.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        panic!("nginx did not start: {last}");
    }

    /// `http://127.0.0.1:PORT`: the cache's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The storage folder: a `PUT` to `/ac/<key>` writes `dir()/ac/<key>`.
    /// Tests may change or remove files here to tamper with the cache.
    pub fn dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The stored file of `kind` (`"ac"` or `"cas"`) and `key`.
    pub fn blob_path(&self, kind: &str, key: &str) -> PathBuf {
        self.dir().join(kind).join(key)
    }

    /// Stops nginx now (the cache becomes unreachable; its folder stays
    /// until drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// nginx's error log and anything it printed.
    pub fn log(&self) -> String {
        nginx_log(self.root.path())
    }

    /// The requests served so far, in order (from the access log).
    pub fn requests(&self) -> Vec<Request> {
        let log = fs::read_to_string(self.root.path().join("access.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| {
                let mut w = l.split(' ');
                Some(Request {
                    method: w.next()?.to_string(),
                    path: w.next()?.to_string(),
                    status: w.next()?.parse().ok()?,
                })
            })
            .collect()
    }

    /// `GET path`: the status and body.
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        http(self.port, "GET", path, None)
    }

    /// `HEAD path`: the status.
    pub fn head(&self, path: &str) -> u16 {
        http(self.port, "HEAD", path, None).0
    }

    /// `PUT path` with `body`: the status (201 created, 204 replaced).
    pub fn put(&self, path: &str, body: &[u8]) -> u16 {
        http(self.port, "PUT", path, Some(body)).0
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

fn nginx_log(root: &Path) -> String {
    let read = |f: &str| fs::read_to_string(root.join(f)).unwrap_or_default();
    format!("{}{}", read("stderr"), read("error.log"))
}

fn nginx_conf(root: &Path, port: u16) -> String {
    let r = root.display();
    format!(
        r#"# Written by tests/common/remote.rs: a Bazel HTTP cache for one test.
load_module {DAV_EXT_MODULE};
daemon off;
master_process off;
pid {r}/nginx.pid;
error_log {r}/error.log notice;
events {{
    worker_connections 512;
}}
http {{
    log_format strata '$request_method $request_uri $status';
    access_log {r}/access.log strata;
    default_type application/octet-stream;
    client_body_temp_path {r}/tmp/body;
    proxy_temp_path {r}/tmp/proxy;
    fastcgi_temp_path {r}/tmp/fastcgi;
    uwsgi_temp_path {r}/tmp/uwsgi;
    scgi_temp_path {r}/tmp/scgi;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port};
        root {r}/data;
        location / {{
            limit_except GET {{ deny all; }}
        }}
        location ~ ^(/[^/]+)*/(ac|cas)/[^/]+$ {{
            dav_methods PUT;
            dav_ext_methods PROPFIND OPTIONS;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
            limit_except GET PUT PROPFIND OPTIONS {{ deny all; }}
        }}
    }}
}}
"#
    )
}

/// One HTTP/1.1 request on a new connection (`Connection: close`): the
/// status and body. Enough for a test to talk to nginx without a client
/// crate.
pub fn http(port: u16, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("{method} {path}: cannot connect to 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP header in {raw:?}"));
    let header = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = header
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line: {header}"));
    let mut rest = raw[end + 4..].to_vec();
    if method == "HEAD" {
        rest.clear();
    } else if header.contains("transfer-encoding: chunked") {
        rest = dechunk(&rest);
    } else if let Some(len) = header
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        rest.truncate(len);
    }
    (status, rest)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 || data.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[(eol + 4 + size).min(data.len())..];
    }
}

// ------------------------------------------------------------- BuildGrid

/// The venv's `bgd` (`STRATA_BUILDGRID_BIN`, set by `scripts/test.sh` from
/// `scripts/buildgrid-up.sh`), when it exists.
pub fn buildgrid_bin() -> Option<String> {
    std::env::var_os("STRATA_BUILDGRID_BIN")
        .map(|b| b.to_string_lossy().into_owned())
        .filter(|b| Path::new(b).is_file())
}

/// Whether the BuildGrid tests can run (see the module documentation).
pub fn buildgrid_available() -> bool {
    available(
        "BuildGrid (STRATA_BUILDGRID_BIN)",
        buildgrid_bin(),
        "run `export STRATA_BUILDGRID_BIN=$(scripts/buildgrid-up.sh)`",
    )
}

/// A REAPI digest, `hash/size` in text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Digest {
    pub hash: String,
    pub size: i64,
}

impl Digest {
    fn arg(&self) -> String {
        format!("{}/{}", self.hash, self.size)
    }

    fn parse(s: &str) -> Digest {
        let (hash, size) = s
            .trim()
            .split_once('/')
            .unwrap_or_else(|| panic!("not a digest: {s:?}"));
        Digest {
            hash: hash.to_string(),
            size: size.parse().unwrap(),
        }
    }
}

/// The instance name every [`Buildgrid`] serves.
pub const BUILDGRID_INSTANCE: &str = "strata-ci";

/// A BuildGrid server at [`Buildgrid::url`] (instance
/// [`Buildgrid::instance`]): an in-memory CAS (`!lru-storage`, 512 MiB) and
/// action cache (`!lru-action-cache`), with the CAS, ByteStream,
/// ActionCache and Capabilities services, no execution, no authentication.
///
/// It is SHA-256 only. GetCapabilities answers (buildgrid 0.4.4):
///
/// ```text
/// cache_capabilities {
///   digest_functions: SHA256
///   action_cache_update_capabilities { update_enabled: true }
///   max_batch_total_size_bytes: 4193280
///   symlink_absolute_path_strategy: DISALLOWED
/// }
/// execution_capabilities { digest_function: SHA256  digest_functions: SHA256 }
/// low_api_version { major: 2 }
/// high_api_version { major: 2 minor: 2 }
/// ```
///
/// (`execution_capabilities` is there though execution is not served;
/// `exec_enabled` is false). The helper methods talk to it through the
/// venv's Python, with the `grpc` and BuildGrid's generated protos, so a
/// test can check what Strata stored independently of Strata's client.
pub struct Buildgrid {
    port: u16,
    dir: tempfile::TempDir,
    bin: String,
    child: Option<Child>,
}

impl Buildgrid {
    /// Starts `bgd server start` on a free port and waits until a
    /// GetCapabilities call succeeds. Panics (with the server's log) when it
    /// cannot start.
    pub fn start() -> Buildgrid {
        let bin = buildgrid_bin().unwrap_or_else(|| {
            panic!(
                "BuildGrid is missing: STRATA_BUILDGRID_BIN is unset or not a file \
                 (run `export STRATA_BUILDGRID_BIN=$(scripts/buildgrid-up.sh)`)"
            )
        });
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("BuildGrid temp folder");
            let port = free_port();
            let config = dir.path().join("config.yml");
            fs::write(&config, buildgrid_config(port)).unwrap();
            fs::write(dir.path().join("client.py"), CLIENT_PY).unwrap();
            let log = fs::File::create(dir.path().join("log")).unwrap();
            let child = Command::new(&bin)
                .args(["server", "start"])
                .arg(&config)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
            let mut bg = Buildgrid {
                port,
                dir,
                bin: bin.clone(),
                child: Some(child),
            };
            let ready = wait_for_port(bg.child.as_mut().unwrap(), port)
                .and_then(|()| bg.try_client(&["caps"], None).map(|_| ()));
            match ready {
                Ok(()) => return bg,
                Err(why) => {
                    bg.stop();
                    last = format!("{why}\nserver log:\n{}", bg.log());
                    if !last.to_ascii_lowercase().contains("address already in use")
                        && !last.contains("Failed to bind")
                    {
                        break;
                    }
                }
            }
        }
        panic!("BuildGrid did not start: {last}");
    }

    /// `grpc://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The REAPI instance name to send.
    pub fn instance(&self) -> &str {
        BUILDGRID_INSTANCE
    }

    /// The venv's Python (beside `bgd`), with `grpc` and `buildgrid._protos`.
    pub fn python(&self) -> PathBuf {
        Path::new(&self.bin).with_file_name("python")
    }

    /// Stops the server now (it becomes unreachable; its contents are lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the server printed.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// GetCapabilities, in protobuf text format.
    pub fn capabilities(&self) -> String {
        self.client(&["caps"], None)
    }

    /// FindMissingBlobs: those of `digests` the CAS lacks.
    pub fn find_missing(&self, digests: &[Digest]) -> Vec<Digest> {
        let args: Vec<String> = digests.iter().map(Digest::arg).collect();
        let mut all = vec!["find-missing"];
        all.extend(args.iter().map(String::as_str));
        self.client(&all, None).lines().map(Digest::parse).collect()
    }

    /// BatchUpdateBlobs with `blobs` (SHA-256 digests computed by Python):
    /// their digests, in order.
    pub fn upload(&self, blobs: &[&[u8]]) -> Vec<Digest> {
        let input: String = blobs.iter().map(|b| hex(b) + "\n").collect();
        self.client(&["update"], Some(&input))
            .lines()
            .map(Digest::parse)
            .collect()
    }

    /// BatchReadBlobs of one blob: `None` when the CAS answers NOT_FOUND.
    pub fn read(&self, digest: &Digest) -> Option<Vec<u8>> {
        let out = self.raw_client(&["read", &digest.arg()], None);
        match out.status.code() {
            Some(0) => Some(unhex(String::from_utf8_lossy(&out.stdout).trim())),
            Some(3) => None,
            _ => panic!(
                "BatchReadBlobs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// GetActionResult, in protobuf text format; `None` on NOT_FOUND.
    pub fn action_result(&self, action: &Digest) -> Option<String> {
        let out = self.raw_client(&["get-ac", &action.arg()], None);
        match out.status.code() {
            Some(0) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
            Some(3) => None,
            _ => panic!(
                "GetActionResult failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// UpdateActionResult for `action` with `result` in protobuf text format
    /// (e.g. `exit_code: 0 output_files { path: "a" digest { hash: "..."
    /// size_bytes: 3 } }`), to plant an entry a test wants Strata to find.
    pub fn put_action_result(&self, action: &Digest, result: &str) {
        self.client(&["update-ac", &action.arg()], Some(result));
    }

    /// Runs the client script (see `CLIENT_PY`) with `args`, panicking on
    /// failure; returns stdout.
    fn client(&self, args: &[&str], stdin: Option<&str>) -> String {
        self.try_client(args, stdin)
            .unwrap_or_else(|e| panic!("BuildGrid client {args:?}: {e}"))
    }

    fn try_client(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let out = self.raw_client(args, stdin);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn raw_client(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut child = Command::new(self.python())
            .arg(self.dir.path().join("client.py"))
            .arg(format!("127.0.0.1:{}", self.port))
            .arg(self.instance())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.python().display()));
        let mut input = child.stdin.take().unwrap();
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }
}

impl Drop for Buildgrid {
    fn drop(&mut self) {
        self.stop();
    }
}

fn buildgrid_config(port: u16) -> String {
    format!(
        r#"# Written by tests/common/remote.rs: a REAPI cache for one test.
description: Strata test cache
server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
authorization:
  method: none
monitoring:
  enabled: false
storages:
  - !lru-storage &cas
    size: 512M
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: true
instances:
  - name: "{BUILDGRID_INSTANCE}"
    services:
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
      - !action-cache
        cache: *ac
thread-pool-size: 16
# No SO_REUSEPORT: a second server must not share a port with this one.
grpc-server-options:
  grpc.so_reuseport: 0
"#
    )
}

/// A small REAPI client run with the venv's Python:
/// `client.py ADDR INSTANCE COMMAND ARGS...`; exit 3 means NOT_FOUND.
const CLIENT_PY: &str = r#"
import hashlib, sys
import grpc
from google.protobuf import text_format
from buildgrid._protos.build.bazel.remote.execution.v2 import (
    remote_execution_pb2 as re,
    remote_execution_pb2_grpc as rg,
)

addr, instance, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
channel = grpc.insecure_channel(addr)
grpc.channel_ready_future(channel).result(timeout=30)
NOT_FOUND = 5


def digest(s):
    h, n = s.split("/")
    return re.Digest(hash=h, size_bytes=int(n))


def show(d):
    return "%s/%d" % (d.hash, d.size_bytes)


if cmd == "caps":
    caps = rg.CapabilitiesStub(channel).GetCapabilities(
        re.GetCapabilitiesRequest(instance_name=instance), timeout=30)
    print(text_format.MessageToString(caps), end="")
elif cmd == "find-missing":
    r = rg.ContentAddressableStorageStub(channel).FindMissingBlobs(
        re.FindMissingBlobsRequest(instance_name=instance,
                                   blob_digests=[digest(a) for a in args]),
        timeout=30)
    for d in r.missing_blob_digests:
        print(show(d))
elif cmd == "update":
    blobs = [bytes.fromhex(l) for l in sys.stdin.read().split("\n") if l]
    reqs = [re.BatchUpdateBlobsRequest.Request(
        digest=re.Digest(hash=hashlib.sha256(b).hexdigest(), size_bytes=len(b)),
        data=b) for b in blobs]
    r = rg.ContentAddressableStorageStub(channel).BatchUpdateBlobs(
        re.BatchUpdateBlobsRequest(instance_name=instance, requests=reqs),
        timeout=30)
    for resp in r.responses:
        if resp.status.code != 0:
            sys.exit("BatchUpdateBlobs %s: %s" % (show(resp.digest), resp.status))
    for q in reqs:
        print(show(q.digest))
elif cmd == "read":
    r = rg.ContentAddressableStorageStub(channel).BatchReadBlobs(
        re.BatchReadBlobsRequest(instance_name=instance, digests=[digest(args[0])]),
        timeout=30)
    resp = r.responses[0]
    if resp.status.code == NOT_FOUND:
        sys.exit(3)
    if resp.status.code != 0:
        sys.exit("BatchReadBlobs %s: %s" % (args[0], resp.status))
    print(resp.data.hex())
elif cmd == "get-ac":
    try:
        r = rg.ActionCacheStub(channel).GetActionResult(
            re.GetActionResultRequest(instance_name=instance,
                                      action_digest=digest(args[0])),
            timeout=30)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            sys.exit(3)
        raise
    print(text_format.MessageToString(r), end="")
elif cmd == "update-ac":
    result = text_format.Parse(sys.stdin.read(), re.ActionResult())
    rg.ActionCacheStub(channel).UpdateActionResult(
        re.UpdateActionResultRequest(instance_name=instance,
                                     action_digest=digest(args[0]),
                                     action_result=result),
        timeout=30)
else:
    sys.exit("unknown command " + cmd)
"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// ---------------------------------------------------------------- shared

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `child` itself listens on `port` (a connection alone could
/// reach another process that took the port first); `Err` when the child
/// exits first or it takes longer than [`START_TIMEOUT`].
fn wait_for_port(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("the server exited ({status})"));
        }
        if listens(child.id(), port) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the server does not listen on 127.0.0.1:{port} after {START_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` holds a TCP socket listening on `port` (Linux
/// `/proc`).
fn listens(pid: u32, port: u16) -> bool {
    let want = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is f[1], st is f[3] (0A: LISTEN), inode is f[9].
            if f.len() > 9 && f[1].ends_with(&want) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|l| inodes.iter().any(|i| Path::new(i) == l.as_path()))
    })
}
