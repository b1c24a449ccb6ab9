//! Real Docker components for the container tests: the engine started by
//! `scripts/docker-up.sh`, a tiny base image made from host binaries, and
//! registries each test starts on its own loopback port and folder.
//! Self-contained, so crate tests can include it with `#[path]`.
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether the container tests can run; a test starts with
/// `if !docker_available() { return; }`. With `STRATA_REQUIRE_DOCKER` set (as
/// in CI) an unreachable engine fails the test instead of skipping it.
pub fn docker_available() -> bool {
    runs(
        "docker",
        &["info", "--format", "{{.ServerVersion}}"],
        "no Docker Engine answers (run scripts/docker-up.sh)",
    )
}

/// Whether `program args` succeeds; if not, the test skips (saying
/// `missing`), or fails when `STRATA_REQUIRE_DOCKER` is set, as in CI.
pub fn runs(program: &str, args: &[&str], missing: &str) -> bool {
    let ok = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("STRATA_REQUIRE_DOCKER").is_none(),
            "STRATA_REQUIRE_DOCKER is set but {missing}"
        );
        eprintln!("skipped: {missing}");
    }
    ok
}

/// Copies `/bin/sh` (dash), a few coreutils and their libraries into `root`,
/// so a test has a runnable root file system without pulling anything.
pub fn mini_rootfs(root: &Path) {
    let tools = [
        "sh", "cat", "ls", "echo", "mkdir", "rm", "cp", "date", "sleep", "touch", "id", "head",
        "od", "tr", "env", "test", "true", "false",
    ];
    fs::create_dir_all(root.join("bin")).unwrap();
    let mut libs = std::collections::BTreeSet::new();
    for t in tools {
        let src = PathBuf::from("/bin").join(t);
        let src = fs::canonicalize(&src).unwrap_or(src);
        fs::copy(&src, root.join("bin").join(t)).unwrap();
        let ldd = Command::new("ldd").arg(&src).output().unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            if let Some(p) = line.split_whitespace().find(|w| w.starts_with('/')) {
                libs.insert(PathBuf::from(p));
            }
        }
    }
    for lib in libs {
        let dest = root.join(lib.strip_prefix("/").unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&lib, &dest).unwrap();
    }
    for d in ["tmp", "etc", "proc", "sys", "dev"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
}

/// A local image (`docker import` of `mini_rootfs`), returned as its ID.
pub fn mini_image(tag: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    mini_rootfs(&dir.path().join("root"));
    sh(
        dir.path(),
        &format!("tar -C root -c . | docker import - {tag} >/dev/null"),
    );
    sh(
        dir.path(),
        &format!("docker image inspect --format '{{{{.Id}}}}' {tag}"),
    )
    .trim()
    .to_string()
}

/// A dockerd of the test's own, on a data-root the test chose: its own
/// exec-root and socket under `run`, in its own network namespace (no route
/// anywhere, as on a device, and the host engine's bridge untouched).
/// Stopped (SIGTERM, then waited for) when dropped.
pub struct Dockerd {
    child: Child,
    run: PathBuf,
    /// `unix://<socket>`, for `docker -H` and `DOCKER_HOST`.
    pub host: String,
}

impl Dockerd {
    /// Starts the daemon and waits until it answers (its log is
    /// `run/dockerd.log`).
    pub fn start(data_root: &Path, run: &Path) -> Dockerd {
        let sock = run.join("d.sock");
        let log = run.join("dockerd.log");
        let child = Command::new("unshare")
            .args(["--net", "dockerd"])
            .arg("--data-root")
            .arg(data_root)
            .arg("--exec-root")
            .arg(run.join("x"))
            .arg("--pidfile")
            .arg(run.join("pid"))
            .arg("--host")
            .arg(format!("unix://{}", sock.display()))
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("dockerd starts (scripts/docker-up.sh installs it)");
        let daemon = Dockerd {
            child,
            run: run.to_path_buf(),
            host: format!("unix://{}", sock.display()),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !Command::new("docker")
            .args(["-H", &daemon.host, "info"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
        {
            assert!(
                Instant::now() < deadline,
                "the test's dockerd did not answer:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        daemon
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Network namespaces the daemon mounted for its containers.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umount {}/x/netns/* 2>/dev/null",
                self.run.display()
            ))
            .status();
    }
}

/// A `docker-registry` on its own 127.0.0.1 port and storage folder,
/// stopped when dropped.
pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Registry {
    /// Starts a registry; with `basic` (user, password) it requires HTTP
    /// basic authentication (htpasswd, bcrypt).
    pub fn start(basic: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = spawn_registry(dir.path(), port, basic);
        Registry { port, dir, child }
    }

    /// Stops the registry and starts it again on the same port and storage
    /// folder, now with (or without) basic authentication: what was pushed
    /// to an open registry can then be pulled from a protected one.
    pub fn restart(&mut self, basic: Option<(&str, &str)>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_registry(self.dir.path(), self.port, basic);
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The stored blob file of `sha256:<hex>` (filesystem driver layout).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes the local image `image` as `<registry>/<name>:<tag>` with
    /// `docker push` and returns the manifest digest (`sha256:...`).
    pub fn push(&self, image: &str, name: &str, tag: &str) -> String {
        let target = format!("{}/{name}:{tag}", self.host());
        let dir = self.dir.path();
        sh(dir, &format!("docker tag {image} {target}"));
        let out = sh(dir, &format!("docker push {target}"));
        sh(dir, &format!("docker rmi {target} >/dev/null"));
        out.lines()
            .find_map(|l| l.split("digest: ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no digest in docker push output:\n{out}"))
            .to_string()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the configuration for a registry storing in `dir/data` and
/// listening on 127.0.0.1:`port`, starts it and waits until it accepts
/// connections.
fn spawn_registry(dir: &Path, port: u16, basic: Option<(&str, &str)>) -> Child {
    let auth = match basic {
        None => String::new(),
        Some((user, pass)) => {
            let htpasswd = dir.join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd (apache2-utils) runs");
            fs::write(&htpasswd, out.stdout).unwrap();
            format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                htpasswd.display()
            )
        }
    };
    let config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
        dir.join("data").display()
    );
    let config_path = dir.join("config.yml");
    fs::write(&config_path, config).unwrap();
    let mut child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .expect("docker-registry starts (scripts/docker-up.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "registry did not start:\n{}",
                fs::read_to_string(dir.join("log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `script` with `sh -c` in `dir`, asserts success, returns stdout.
pub fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(
        out.status.success(),
        "{script}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
