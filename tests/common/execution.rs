//! Remote execution for the tests: a BuildGrid execution service with its
//! scheduler on PostgreSQL, started by `scripts/buildgrid-serve.sh` (its
//! own cluster, folder and port), and `strata worker`s serving it.
//!
//! A test starts with `if !remote::buildgrid_available() { return; }`;
//! with `STRATA_REQUIRE_REMOTE_SERVERS` set (as in CI) a missing BuildGrid
//! fails it instead.
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::remote::buildgrid_bin;

/// The instance every [`Service`] serves.
pub const INSTANCE: &str = "strata-ci";

/// How long the service may take to answer (PostgreSQL's initdb, the
/// migrations and BuildGrid's start-up).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// A BuildGrid execution service on 127.0.0.1 (see
/// `scripts/buildgrid-serve.sh`); stopped, with its database, on drop.
pub struct Service {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    python: PathBuf,
}

impl Service {
    /// Starts the service; a worker silent for `keepalive` seconds loses its
    /// session and its leases are requeued. Waits until it answers
    /// GetCapabilities for [`INSTANCE`].
    pub fn start(keepalive: u32) -> Service {
        let bgd = buildgrid_bin().expect("BuildGrid is missing (STRATA_BUILDGRID_BIN)");
        let python = Path::new(&bgd).with_file_name("python");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/buildgrid-serve.sh");
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("client.py"), CLIENT_PY).unwrap();
            let port = free_port();
            let out = fs::File::create(dir.path().join("serve.log")).unwrap();
            let child = Command::new(&script)
                .arg("--dir")
                .arg(dir.path().join("service"))
                .args(["--port", &port.to_string(), "--instance", INSTANCE])
                .args(["--keepalive", &keepalive.to_string(), "--cas-size", "1G"])
                .env("STRATA_BUILDGRID_BIN", &bgd)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                // Its own group: PostgreSQL and BuildGrid stop with it.
                .process_group(0)
                .spawn()
                .expect("scripts/buildgrid-serve.sh runs");
            let mut service = Service {
                port,
                dir,
                child: Some(child),
                python: python.clone(),
            };
            match service.wait_ready() {
                Ok(()) => return service,
                Err(why) => {
                    last = format!("{why}\n{}", service.logs());
                    service.stop();
                    if !last.contains("in use") && !last.contains("bind") {
                        break;
                    }
                }
            }
        }
        panic!("the BuildGrid execution service did not start: {last}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("buildgrid-serve.sh exited ({status})"));
            }
            let out = self.client(&["caps"]);
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no answer after {START_TIMEOUT:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `grpc://127.0.0.1:PORT/strata-ci`, what a worker serves.
    pub fn url(&self) -> String {
        format!("grpc://127.0.0.1:{}/{INSTANCE}", self.port)
    }

    /// `grpc://127.0.0.1:PORT`, what Bazel's `--remote_executor` takes
    /// (with `--remote_instance_name`).
    pub fn endpoint(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }

    /// The script's, PostgreSQL's and BuildGrid's logs.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for (name, path) in [
            ("serve", self.dir.path().join("serve.log")),
            ("postgres", self.dir.path().join("service/postgres.log")),
            ("buildgrid", self.dir.path().join("service/buildgrid.log")),
        ] {
            let text = fs::read_to_string(path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            all.push_str(&format!("--- {name} (last lines)\n"));
            for line in tail.into_iter().rev() {
                all.push_str(line);
                all.push('\n');
            }
        }
        all
    }

    /// Sends an action whose input root holds a file and a folder that are
    /// not in the CAS (the action and command are) and waits for the
    /// ExecuteResponse. Returns its status code, and the digests the
    /// status's PreconditionFailure names, then those of the two absent
    /// blobs, each as `blobs/<hash>/<size>`.
    pub fn execute_with_missing_inputs(&self) -> (i32, Vec<String>, Vec<String>) {
        let out = self.client(&["execute-missing"]);
        assert!(
            out.status.success(),
            "execute-missing failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let code = lines.next().unwrap().trim().parse().unwrap();
        let mut named = Vec::new();
        let mut absent = Vec::new();
        for line in lines {
            if let Some(s) = line.strip_prefix("violation MISSING ") {
                named.push(s.to_string());
            } else if let Some(s) = line.strip_prefix("absent ") {
                absent.push(s.to_string());
            }
        }
        (code, named, absent)
    }

    /// Runs `argv` (with an empty input root and `PATH` set) under a
    /// `timeout` in seconds (0: none): the ExecuteResponse's status code,
    /// and the command's exit code and stdout when it has a result.
    pub fn execute(&self, argv: &[&str], timeout: u32) -> (i32, Option<(i32, String)>) {
        let mut args = vec!["execute".to_string(), timeout.to_string()];
        args.extend(argv.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.client(&args);
        assert!(
            out.status.success(),
            "execute failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (code, rest) = text.split_once('\n').unwrap_or((&text, ""));
        let code = code.trim().parse().unwrap();
        let result = rest
            .split_once('\n')
            .map(|(exit, stdout)| (exit.trim().parse().unwrap(), stdout.to_string()));
        (code, result)
    }

    fn client(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.python)
            .arg(self.dir.path().join("client.py"))
            .arg(format!("127.0.0.1:{}", self.port))
            .arg(INSTANCE)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.python.display()))
    }

    /// Stops BuildGrid and its database (as on drop), for a test of a
    /// service that goes away.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = child.id() as i32;
            // SAFETY: kill(2) on a process group this test made.
            unsafe { libc::kill(-group, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            // SAFETY: as above; whatever is left goes.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `strata worker` serving a [`Service`], its stderr kept in a file;
/// killed on drop.
pub struct Worker {
    child: Option<Child>,
    log: PathBuf,
    cache: PathBuf,
    _dir: tempfile::TempDir,
}

impl Worker {
    /// Starts `strata worker -j JOBS --max-size MAX_SIZE` with a cache of
    /// its own and waits until its session is open.
    pub fn start(service: &Service, jobs: usize, max_size: &str) -> Worker {
        Worker::start_with_env(service, jobs, max_size, &[])
    }

    /// As [`Worker::start`], with `env` set for the worker (such as a
    /// `DOCKER_HOST` where no engine answers).
    pub fn start_with_env(
        service: &Service,
        jobs: usize,
        max_size: &str,
        env: &[(&str, &str)],
    ) -> Worker {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
        let cache = dir.path().join("cache");
        let child = Command::new(super::strata_bin())
            .args(["worker", "--server", &service.url()])
            .args(["-j", &jobs.to_string(), "--max-size", max_size])
            .arg("--cache-dir")
            .arg(&cache)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("strata worker starts");
        let mut worker = Worker {
            child: Some(child),
            log,
            cache,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !worker.log().contains("strata worker: serving") {
            if let Some(status) = worker.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "strata worker exited ({status}):\n{}\n{}",
                    worker.log(),
                    service.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "strata worker did not open a session:\n{}\n{}",
                worker.log(),
                service.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        worker
    }

    /// What the worker printed.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The ids of the leases it started, in order.
    pub fn started(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.strip_prefix("strata worker: lease "))
            .filter_map(|l| l.strip_suffix(": started"))
            .map(str::to_string)
            .collect()
    }

    /// The leases it finished, as `(id, what it said)`.
    pub fn finished(&self) -> Vec<(String, String)> {
        self.log()
            .lines()
            .filter_map(|l| l.strip_prefix("strata worker: lease "))
            .filter(|l| !l.ends_with(": started"))
            .filter_map(|l| l.split_once(": "))
            .map(|(id, what)| (id.to_string(), what.to_string()))
            .collect()
    }

    /// The bytes its CAS holds.
    pub fn cache_bytes(&self) -> u64 {
        walkdir(&self.cache.join("cas"))
    }

    /// Processes of this machine whose command line names a scratch folder
    /// of the worker's cache: its sandboxed steps.
    pub fn steps_left(&self) -> usize {
        let needle = self.cache.join("scratch").to_string_lossy().into_owned();
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .filter(|e| {
                fs::read(e.path().join("cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                    .unwrap_or(false)
            })
            .count()
    }

    /// SIGKILL, as a machine that dies: no chance to say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn walkdir(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walkdir(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A REAPI client run with the venv's Python (BuildGrid's generated
/// protos): `client.py ADDR INSTANCE COMMAND`.
const CLIENT_PY: &str = r#"
import hashlib, sys
import grpc
from buildgrid._protos.build.bazel.remote.execution.v2 import (
    remote_execution_pb2 as re,
    remote_execution_pb2_grpc as rg,
)
from buildgrid._protos.google.rpc import error_details_pb2

addr, instance, cmd = sys.argv[1], sys.argv[2], sys.argv[3]
channel = grpc.insecure_channel(addr)
grpc.channel_ready_future(channel).result(timeout=10)


def digest(b):
    return re.Digest(hash=hashlib.sha256(b).hexdigest(), size_bytes=len(b))


def name(d):
    return "blobs/%s/%d" % (d.hash, d.size_bytes)


if cmd == "caps":
    caps = rg.CapabilitiesStub(channel).GetCapabilities(
        re.GetCapabilitiesRequest(instance_name=instance), timeout=10)
    if not caps.execution_capabilities.exec_enabled:
        sys.exit("execution is not enabled")
elif cmd == "execute-missing":
    content = b"this file is never uploaded\n"
    sub = re.Directory(files=[re.FileNode(name="deep.txt", digest=digest(b"nor is its folder\n"))])
    sub_bytes = sub.SerializeToString()
    root = re.Directory(
        files=[re.FileNode(name="input.txt", digest=digest(content))],
        directories=[re.DirectoryNode(name="sub", digest=digest(sub_bytes))],
    )
    root_bytes = root.SerializeToString()
    platform = re.Platform(properties=[
        re.Platform.Property(name="ISA", value="x86-64"),
        re.Platform.Property(name="OSFamily", value="linux"),
    ])
    command = re.Command(arguments=["/bin/cat", "input.txt"], output_files=["out.txt"])
    command_bytes = command.SerializeToString()
    action = re.Action(command_digest=digest(command_bytes),
                       input_root_digest=digest(root_bytes), platform=platform)
    action_bytes = action.SerializeToString()
    blobs = [command_bytes, root_bytes, action_bytes]
    r = rg.ContentAddressableStorageStub(channel).BatchUpdateBlobs(
        re.BatchUpdateBlobsRequest(instance_name=instance, requests=[
            re.BatchUpdateBlobsRequest.Request(digest=digest(b), data=b) for b in blobs]),
        timeout=30)
    for resp in r.responses:
        if resp.status.code != 0:
            sys.exit("BatchUpdateBlobs: %s" % resp.status)
    stream = rg.ExecutionStub(channel).Execute(
        re.ExecuteRequest(instance_name=instance, action_digest=digest(action_bytes),
                          skip_cache_lookup=True),
        timeout=120)
    for op in stream:
        if op.done:
            response = re.ExecuteResponse()
            op.response.Unpack(response)
            print(response.status.code)
            for detail in response.status.details:
                if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
                    failure = error_details_pb2.PreconditionFailure()
                    detail.Unpack(failure)
                    for v in failure.violations:
                        print("violation %s %s" % (v.type, v.subject))
            print("absent %s" % name(digest(content)))
            print("absent %s" % name(digest(sub_bytes)))
            break
elif cmd == "execute":
    timeout, argv = int(sys.argv[4]), sys.argv[5:]
    root_bytes = re.Directory().SerializeToString()
    command = re.Command(arguments=argv, environment_variables=[
        re.Command.EnvironmentVariable(name="PATH", value="/usr/bin:/bin")])
    command_bytes = command.SerializeToString()
    action = re.Action(command_digest=digest(command_bytes), input_root_digest=digest(root_bytes),
                       do_not_cache=True)
    if timeout:
        action.timeout.seconds = timeout
    action_bytes = action.SerializeToString()
    blobs = [command_bytes, root_bytes, action_bytes]
    cas = rg.ContentAddressableStorageStub(channel)
    cas.BatchUpdateBlobs(re.BatchUpdateBlobsRequest(instance_name=instance, requests=[
        re.BatchUpdateBlobsRequest.Request(digest=digest(b), data=b) for b in blobs]), timeout=30)
    stream = rg.ExecutionStub(channel).Execute(
        re.ExecuteRequest(instance_name=instance, action_digest=digest(action_bytes),
                          skip_cache_lookup=True),
        timeout=120)
    for op in stream:
        if op.done:
            response = re.ExecuteResponse()
            op.response.Unpack(response)
            print(response.status.code)
            if response.HasField("result"):
                print(response.result.exit_code)
                r = cas.BatchReadBlobs(re.BatchReadBlobsRequest(
                    instance_name=instance, digests=[response.result.stdout_digest]), timeout=30)
                sys.stdout.write(r.responses[0].data.decode())
            break
else:
    sys.exit("unknown command " + cmd)
"#;
