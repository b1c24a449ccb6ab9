//! `docker-data-root`: images preloaded into a Docker data-root tree.
//!
//! An ephemeral `dockerd` (Docker-in-Docker style: its own data-root,
//! exec-root and socket, no network, no iptables) loads each image layout,
//! then stops cleanly; its data-root becomes the output tree, with owners,
//! modes and overlay whiteout devices kept. Docker writes random IDs and
//! times there, so the rule is declared non-reproducible.
//!
//! References the data-root must resolve (a compose file's `image:`s) are
//! added before it is captured: tags through the engine (`docker tag`),
//! digest references (`name@sha256:<hex>`) into Docker's reference store,
//! `image/<driver>/repositories.json`, once the engine has stopped. `docker
//! load` records only tags; `docker pull` by digest records exactly such an
//! entry (repository -> reference -> image ID), which is what `docker run`
//! and compose look a digest reference up in.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use strata_formats::oci;
use strata_formats::unpack::{Limits, tar_to_tree};
use strata_rules::data_root::DataRootParams;
use strata_store::{Digest, Store};

use strata_exec::step::{Failure, StepFailure};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

fn fail(failure: Failure, scratch: Option<&Path>, log: &Path) -> StepFailure {
    StepFailure {
        failure,
        stdout: String::new(),
        stderr: std::fs::read_to_string(log)
            .map(|s| {
                let mut start = s.len().saturating_sub(8 * 1024);
                while !s.is_char_boundary(start) {
                    start += 1;
                }
                s[start..].to_string()
            })
            .unwrap_or_default(),
        scratch: scratch.map(Path::to_path_buf),
    }
}

/// A running ephemeral dockerd, killed if dropped before `stop`.
struct Daemon {
    child: tokio::process::Child,
}

impl Daemon {
    async fn stop(mut self) -> Result<(), Failure> {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(Failure::Rule(format!(
                "the ephemeral dockerd stopped with {status}"
            ))),
            Ok(Err(e)) => Err(Failure::Io(format!(
                "cannot wait for the ephemeral dockerd: {e}"
            ))),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(Failure::Rule(format!(
                    "the ephemeral dockerd did not stop within {} s",
                    STOP_TIMEOUT.as_secs()
                )))
            }
        }
    }
}

/// Builds the data-root of `params.images` (their layouts among `deps`).
pub async fn build(
    store: &Store,
    scratch_prefix: &str,
    params: &DataRootParams,
    deps: &[(String, Digest)],
) -> Result<Digest, StepFailure> {
    let early = StepFailure::without_logs;
    // The data-root lives in the store's file system (it becomes blobs);
    // sockets need a short path, so the exec-root is in the temp folder.
    strata_exec::step::remove_stale_scratch(store, scratch_prefix);
    let (scratch, _scratch_lock) = strata_exec::step::create_scratch(store, scratch_prefix)
        .map_err(|e| early(Failure::Io(format!("cannot create a scratch folder: {e}"))))?;
    let run_dir = tempfile::Builder::new()
        .prefix("strata-dd")
        .tempdir()
        .map_err(|e| {
            early(Failure::Io(format!(
                "cannot create a temporary folder: {e}"
            )))
        })?;
    let data = scratch.join("data-root");
    let log = scratch.join("dockerd.log");
    let socket = run_dir.path().join("docker.sock");
    let config = run_dir.path().join("daemon.json");
    std::fs::create_dir_all(&data)
        .and_then(|()| std::fs::write(&config, "{}\n"))
        .map_err(|e| early(Failure::Io(e.to_string())))?;
    let log_file = std::fs::File::create(&log).map_err(|e| early(Failure::Io(e.to_string())))?;
    let mut cmd = tokio::process::Command::new("dockerd");
    cmd.arg("--data-root")
        .arg(&data)
        .arg("--exec-root")
        .arg(run_dir.path().join("x"))
        .arg("--pidfile")
        .arg(run_dir.path().join("pid"))
        .arg("--config-file")
        .arg(&config)
        .arg("--host")
        .arg(format!("unix://{}", socket.display()))
        .args([
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--ipv6=false",
            "--userland-proxy=false",
            "--log-level=warn",
        ])
        .stdin(Stdio::null())
        .stdout(
            log_file
                .try_clone()
                .map_err(|e| early(Failure::Io(e.to_string())))?,
        )
        .stderr(log_file)
        .kill_on_drop(true);
    // Its own network namespace: the ephemeral engine can neither reach the
    // network nor touch the host's interfaces (a second dockerd in the host
    // namespace would manage the host engine's bridge).
    // SAFETY: unshare(2) and prctl(2) are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        fail(
            Failure::Io(format!(
                "cannot start dockerd (is docker.io installed?): {e}"
            )),
            Some(&scratch),
            &log,
        )
    })?;
    let daemon = Daemon { child };
    let host = format!("unix://{}", socket.display());
    let deadline = Instant::now() + START_TIMEOUT;
    let engine = loop {
        if socket.exists()
            && let Ok(engine) = crate::connect_to(&host).await
        {
            break engine;
        }
        if Instant::now() > deadline {
            return Err(fail(
                Failure::Rule("the ephemeral dockerd did not answer within 60 s".into()),
                Some(&scratch),
                &log,
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut ids: Vec<(String, String)> = Vec::new();
    // Only data is moved: this machine's dockerd loads images of any
    // platform, running none of their programs.
    for (name, platform) in params.images.iter().zip(&params.platforms) {
        let layout = deps
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| *d)
            .expect("images are dependencies");
        let (cas_store, platform) = (store.clone(), platform.to_string());
        let image = tokio::task::spawn_blocking(move || {
            oci::layout::read(cas_store.cas(), &layout, &platform)
        })
        .await
        .map_err(|e| early(Failure::Io(e.to_string())))?
        .map_err(|e| early(Failure::Rule(format!("`{name}` is not an image: {e}"))))?;
        crate::ensure_layout(&engine, store.cas(), &layout, &image.config.sha256)
            .await
            .map_err(|e| {
                fail(
                    Failure::Rule(format!("loading `{name}`: {e}")),
                    Some(&scratch),
                    &log,
                )
            })?;
        ids.push((name.clone(), image.config.sha256.clone()));
    }
    let id_of = |image: &str| {
        ids.iter()
            .find(|(n, _)| n == image)
            .map(|(_, id)| id.clone())
            .expect("references name loaded images")
    };
    for r in params.references.iter().filter(|r| !r.is_digest()) {
        crate::tag(&engine, &id_of(&r.image), &r.reference)
            .await
            .map_err(|e| fail(Failure::Rule(e.to_string()), Some(&scratch), &log))?;
    }
    drop(engine);
    daemon
        .stop()
        .await
        .map_err(|f| fail(f, Some(&scratch), &log))?;
    let digests: Vec<(String, String)> = params
        .references
        .iter()
        .filter(|r| r.is_digest())
        .map(|r| (r.reference.clone(), id_of(&r.image)))
        .collect();
    if !digests.is_empty() {
        record_digests(&data, &digests).map_err(|f| fail(f, Some(&scratch), &log))?;
    }
    let output = capture(store, &data)
        .await
        .map_err(|f| fail(f, Some(&scratch), &log))?;
    strata_exec::fstree::remove_tree(&scratch);
    Ok(output)
}

/// The data-root as a tree: read by `tar` (which keeps owners, modes and
/// device nodes) and unpacked with the same checks as any archive.
async fn capture(store: &Store, data: &Path) -> Result<Digest, Failure> {
    let mut tar = std::process::Command::new("tar")
        .args(["--numeric-owner", "--sort=name", "-C"])
        .arg(data)
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::Io(format!("cannot run tar: {e}")))?;
    let stdout = tar.stdout.take().expect("piped");
    let s = store.clone();
    let tree = tokio::task::spawn_blocking(move || {
        let limits = Limits {
            max_size: u64::MAX / 2,
            ..Limits::default()
        };
        let mut reader = std::io::BufReader::new(stdout);
        let tree = tar_to_tree(s.cas(), &mut reader, limits);
        // The archive ends before the stream does (tar pads it to whole
        // records): read to the end, or tar dies of SIGPIPE writing them.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
        tree
    })
    .await
    .map_err(|e| Failure::Io(e.to_string()))?;
    let out = tar
        .wait_with_output()
        .map_err(|e| Failure::Io(format!("tar: {e}")))?;
    // A reader that gave up closed the pipe, so tar died of SIGPIPE: the
    // reader's error is the cause, not tar's.
    let tree = tree.map_err(|e| Failure::Rule(format!("reading the data-root: {e}")))?;
    if !out.status.success() {
        return Err(Failure::Io(format!(
            "tar of the data-root failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(tree)
}

/// Adds `name@sha256:<hex>` -> image ID entries to the reference store of
/// the stopped engine's data-root (`image/<driver>/repositories.json`), as
/// `docker pull name@sha256:<hex>` would have.
fn record_digests(data: &Path, digests: &[(String, String)]) -> Result<(), Failure> {
    let io = |what: &str, e: &dyn std::fmt::Display| Failure::Io(format!("{what}: {e}"));
    let image = data.join("image");
    let mut drivers: Vec<_> = std::fs::read_dir(&image)
        .map_err(|e| io("reading the data-root's image folder", &e))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.path())
        .collect();
    drivers.sort();
    let [driver] = drivers.as_slice() else {
        return Err(Failure::Rule(format!(
            "the data-root has {} storage drivers' image stores; expected one",
            drivers.len()
        )));
    };
    let path = driver.join("repositories.json");
    let mut store: serde_json::Value = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| io("reading Docker's repositories.json", &e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(io("reading Docker's repositories.json", &e)),
    };
    let repositories = store
        .as_object_mut()
        .ok_or_else(|| Failure::Rule("Docker's repositories.json is not an object".into()))?
        .entry("Repositories")
        .or_insert_with(|| serde_json::json!({}));
    for (reference, id) in digests {
        let familiar = familiar(reference);
        let (name, _) = familiar.rsplit_once('@').expect("a digest reference");
        let repo = repositories
            .as_object_mut()
            .ok_or_else(|| Failure::Rule("Docker's repositories.json is malformed".into()))?
            .entry(name.to_string())
            .or_insert_with(|| serde_json::json!({}));
        repo.as_object_mut()
            .ok_or_else(|| Failure::Rule("Docker's repositories.json is malformed".into()))?
            .insert(familiar.clone(), serde_json::Value::String(id.clone()));
    }
    let bytes = serde_json::to_vec(&store).expect("JSON serializes");
    std::fs::write(&path, bytes).map_err(|e| io("writing Docker's repositories.json", &e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io("writing Docker's repositories.json", &e))
}

/// A reference as Docker's reference store keys it (its "familiar" form):
/// Docker Hub's `docker.io/` and `library/` prefixes dropped, any other
/// registry kept.
fn familiar(reference: &str) -> String {
    let first = reference.split('/').next().unwrap_or("");
    let has_host = reference.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    let rest = match first {
        "docker.io" | "index.docker.io" => &reference[first.len() + 1..],
        _ if has_host => return reference.to_string(),
        _ => reference,
    };
    match rest.strip_prefix("library/") {
        Some(r) if !r.split('@').next().unwrap_or("").contains('/') => r.to_string(),
        _ => rest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_keyed_in_their_familiar_form() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            familiar(&format!("127.0.0.1:5000/hello@{d}")),
            format!("127.0.0.1:5000/hello@{d}")
        );
        assert_eq!(
            familiar(&format!("docker.io/library/nginx@{d}")),
            format!("nginx@{d}")
        );
        assert_eq!(
            familiar(&format!("library/nginx@{d}")),
            format!("nginx@{d}")
        );
        assert_eq!(
            familiar(&format!("docker.io/me/app@{d}")),
            format!("me/app@{d}")
        );
        assert_eq!(
            familiar(&format!("localhost/app@{d}")),
            format!("localhost/app@{d}")
        );
    }

    #[test]
    fn digest_references_join_the_reference_store() {
        let dir = tempfile::tempdir().unwrap();
        let driver = dir.path().join("image/overlay2");
        std::fs::create_dir_all(&driver).unwrap();
        std::fs::write(
            driver.join("repositories.json"),
            r#"{"Repositories":{"app/web":{"app/web:1":"sha256:1111"}}}"#,
        )
        .unwrap();
        let d = format!("sha256:{}", "b".repeat(64));
        record_digests(
            dir.path(),
            &[
                (format!("127.0.0.1:5000/db@{d}"), "sha256:2222".into()),
                (format!("docker.io/library/redis@{d}"), "sha256:3333".into()),
            ],
        )
        .unwrap();
        let store: serde_json::Value =
            serde_json::from_slice(&std::fs::read(driver.join("repositories.json")).unwrap())
                .unwrap();
        assert_eq!(
            store,
            serde_json::json!({"Repositories": {
                "app/web": {"app/web:1": "sha256:1111"},
                "127.0.0.1:5000/db": {format!("127.0.0.1:5000/db@{d}"): "sha256:2222"},
                "redis": {format!("redis@{d}"): "sha256:3333"},
            }})
        );
    }
}
