//! The Docker executor against a real Docker Engine: containers, their
//! logs, isolation and cleanup; images from the store; exports.
//!
//! Each test makes its own image (a `docker import` of a tiny root file
//! system) and removes it; containers are found by this process's
//! `strata.pid` label and that image.

#[path = "../../tests/common/docker.rs"]
mod harness;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{Registry, docker_available, mini_image, mini_rootfs};
use strata_docker::{
    self as docker, ContainerSpec, DockerError, Engine, Finished, LogSink, LogStream, Mount,
};
use strata_rules::builtin::{Ctx, From, extract};
use strata_rules::platform::Platform;
use strata_store::tree::{self, Meta, Node, TreeBuilder};
use strata_store::{Digest, DigestFunction, Store};

/// Runs `docker args...`; returns stdout, or panics with stderr.
fn cli(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test's own image, removed when dropped.
struct Image {
    id: String,
}

impl Image {
    fn new(test: &str) -> Image {
        Image {
            id: mini_image(&format!("strata-test-docker:{test}")),
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.id])
            .output();
    }
}

/// This process's containers of `image` (all states).
fn containers_of(image: &str, running_only: bool) -> Vec<String> {
    let pid = format!("label=strata.pid={}", std::process::id());
    let ancestor = format!("ancestor={image}");
    let mut args = vec!["ps", "-aq", "--filter", &pid, "--filter", &ancestor];
    if running_only {
        args.extend(["--filter", "status=running"]);
    }
    cli(&args).lines().map(str::to_string).collect()
}

/// Waits up to 20 s for `check` to hold.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn store(dir: &Path) -> Store {
    Store::open(&dir.join("store"), DigestFunction::Blake3).unwrap()
}

fn sh(image: &str, script: &str) -> ContainerSpec {
    ContainerSpec {
        image: image.to_string(),
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        workdir: "/".into(),
        ..Default::default()
    }
}

/// What a run printed, each stream as the callback saw it.
#[derive(Default)]
struct Seen {
    lines: Vec<(LogStream, String)>,
}

struct Logs {
    dir: tempfile::TempDir,
    seen: Arc<Mutex<Seen>>,
}

impl Logs {
    fn new() -> Logs {
        Logs {
            dir: tempfile::tempdir().unwrap(),
            seen: Arc::default(),
        }
    }

    fn sink(&self) -> LogSink {
        let seen = self.seen.clone();
        LogSink::new(
            self.dir.path().join("stdout"),
            self.dir.path().join("stderr"),
            move |stream, line| seen.lock().unwrap().lines.push((stream, line.to_string())),
        )
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    fn lines(&self, stream: LogStream) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, l)| l.clone())
            .collect()
    }
}

async fn engine() -> Engine {
    docker::connect().await.expect("the engine answers")
}

/// Runs `spec`, removes the container, returns the exit code and the logs.
async fn run_to_end(engine: &Engine, spec: &ContainerSpec) -> (i64, Logs) {
    let logs = Logs::new();
    let Finished {
        exit_code,
        container,
    } = docker::run(engine, spec, logs.sink())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    container.remove().await.unwrap();
    (exit_code, logs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_negotiates_the_engines_api_version() {
    if !docker_available() {
        return;
    }
    let engine = engine().await;
    let server = cli(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(engine.api_version(), server.trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_reaches_the_log_files_and_the_callback() {
    if !docker_available() {
        return;
    }
    let image = Image::new("logs");
    let engine = engine().await;
    let spec = sh(
        &image.id,
        "echo one; echo oops >&2; echo two; printf 'no newline'",
    );
    let (code, logs) = run_to_end(&engine, &spec).await;
    assert_eq!(code, 0);
    assert_eq!(logs.stdout(), "one\ntwo\nno newline");
    assert_eq!(logs.stderr(), "oops\n");
    assert_eq!(logs.lines(LogStream::Stdout), ["one", "two", "no newline"]);
    assert_eq!(logs.lines(LogStream::Stderr), ["oops"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_environment_are_the_commands() {
    if !docker_available() {
        return;
    }
    let image = Image::new("exit");
    let engine = engine().await;
    let mut spec = sh(&image.id, "echo \"$GREETING\"; exit 3");
    spec.env = vec![("GREETING".into(), "hello world".into())];
    let (code, logs) = run_to_end(&engine, &spec).await;
    assert_eq!(code, 3);
    assert_eq!(logs.stdout(), "hello world\n");
    let (code, _) = run_to_end(&engine, &sh(&image.id, "exit 255")).await;
    assert_eq!(code, 255);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_network_only_loopback_exists() {
    if !docker_available() {
        return;
    }
    let image = Image::new("network");
    let engine = engine().await;
    let spec = sh(&image.id, "ls /sys/class/net");
    let (code, logs) = run_to_end(&engine, &spec).await;
    assert_eq!((code, logs.stdout().as_str()), (0, "lo\n"));
    let networked = ContainerSpec {
        network: true,
        ..spec
    };
    let (code, logs) = run_to_end(&engine, &networked).await;
    assert_eq!(code, 0);
    assert_eq!(logs.stdout(), "eth0\nlo\n", "the default bridge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_mount_cannot_be_written_and_a_read_write_one_can() {
    if !docker_available() {
        return;
    }
    let image = Image::new("mounts");
    let engine = engine().await;
    let host = tempfile::tempdir().unwrap();
    let (work, out) = (host.path().join("work"), host.path().join("out"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(work.join("input"), "from the host\n").unwrap();
    let mut spec = sh(
        &image.id,
        "cat input; if touch /strata/work/new 2>/dev/null; then echo WROTE; fi; echo made > /strata/out/result",
    );
    spec.workdir = "/strata/work".into();
    spec.mounts = vec![
        Mount {
            host: work.clone(),
            target: "/strata/work".into(),
            read_only: true,
        },
        Mount {
            host: out.clone(),
            target: "/strata/out".into(),
            read_only: false,
        },
    ];
    let (code, logs) = run_to_end(&engine, &spec).await;
    assert_eq!(code, 0, "{}", logs.stderr());
    assert_eq!(logs.stdout(), "from the host\n");
    assert!(!work.join("new").exists());
    assert_eq!(
        std::fs::read_to_string(out.join("result")).unwrap(),
        "made\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_is_the_one_asked_for() {
    if !docker_available() {
        return;
    }
    let image = Image::new("user");
    let engine = engine().await;
    let mut spec = sh(&image.id, "id -u; id -g");
    spec.user = Some("1000:1000".into());
    let (code, logs) = run_to_end(&engine, &spec).await;
    assert_eq!((code, logs.stdout().as_str()), (0, "1000\n1000\n"));
    spec.user = None;
    let (_, logs) = run_to_end(&engine, &spec).await;
    assert_eq!(logs.stdout(), "0\n0\n", "the image's user (root)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_images_entrypoint_is_not_prepended() {
    if !docker_available() {
        return;
    }
    let image = Image::new("entrypoint-base");
    let tag = "strata-test-docker:entrypoint";
    let created = cli(&["create", &image.id, "/bin/true"]);
    cli(&[
        "commit",
        "--change",
        r#"ENTRYPOINT ["/bin/echo", "from the entrypoint"]"#,
        created.trim(),
        tag,
    ]);
    cli(&["rm", created.trim()]);
    let with_entrypoint = Image {
        id: cli(&["image", "inspect", "--format", "{{.Id}}", tag])
            .trim()
            .to_string(),
    };
    let engine = engine().await;
    let (code, logs) = run_to_end(&engine, &sh(&with_entrypoint.id, "echo mine")).await;
    assert_eq!((code, logs.stdout().as_str()), (0, "mine\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_are_removed_after_success_and_after_failure() {
    if !docker_available() {
        return;
    }
    let image = Image::new("removal");
    let engine = engine().await;

    let (code, _) = run_to_end(&engine, &sh(&image.id, "true")).await;
    assert_eq!(code, 0);
    assert_eq!(containers_of(&image.id, false), Vec::<String>::new());

    // A failed command whose handle is only dropped.
    let logs = Logs::new();
    let finished = docker::run(&engine, &sh(&image.id, "exit 1"), logs.sink())
        .await
        .unwrap();
    assert_eq!(finished.exit_code, 1);
    assert_eq!(containers_of(&image.id, false).len(), 1, "kept for export");
    drop(finished);
    eventually("the dropped container is removed", || {
        containers_of(&image.id, false).is_empty()
    })
    .await;

    // A command that cannot start at all.
    let spec = ContainerSpec {
        argv: vec!["/no/such/program".into()],
        ..sh(&image.id, "")
    };
    let err = docker::run(&engine, &spec, logs.sink()).await.unwrap_err();
    assert!(err.to_string().contains("starting container"), "{err}");
    assert_eq!(containers_of(&image.id, false), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_running_step_removes_its_container() {
    if !docker_available() {
        return;
    }
    let image = Image::new("cancel");
    let engine = engine().await;
    let logs = Logs::new();
    let spec = sh(&image.id, "sleep 30");
    let mut step = Box::pin(docker::run(&engine, &spec, logs.sink()));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::select! {
            r = &mut step => panic!("the step ended early: {:?}", r.map(|f| f.exit_code)),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if !containers_of(&image.id, true).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the container never ran");
    }
    let started = Instant::now();
    drop(step);
    eventually("the cancelled container is removed", || {
        containers_of(&image.id, false).is_empty()
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "removed by force, not after the command ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_all_removes_the_containers_still_running() {
    if !docker_available() {
        return;
    }
    let image = Image::new("remove-all");
    let engine = engine().await;
    let logs = Logs::new();
    let spec = sh(&image.id, "sleep 30");
    let step = tokio::spawn({
        let engine = engine.clone();
        let sink = logs.sink();
        async move { docker::run(&engine, &spec, sink).await.map(|f| f.exit_code) }
    });
    eventually("the container runs", || {
        !containers_of(&image.id, true).is_empty()
    })
    .await;
    docker::remove_all(&engine).await.unwrap();
    // Gone as soon as remove_all returns: nothing left to a background task.
    assert_eq!(containers_of(&image.id, false), Vec::<String>::new());
    let outcome = tokio::time::timeout(Duration::from_secs(15), step)
        .await
        .expect("the step ends once its container is gone")
        .unwrap();
    assert!(
        !matches!(outcome, Ok(0)),
        "a removed step does not succeed: {outcome:?}"
    );
}

/// Each connection (so each executor, which connects on its own) owns the
/// containers made through it: one's `remove_all` (an executor's shutdown
/// after Ctrl-C) neither removes nor waits on another's, even in the same
/// process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_all_leaves_another_connections_containers() {
    if !docker_available() {
        return;
    }
    let (mine, theirs) = (Image::new("live-mine"), Image::new("live-theirs"));
    let (engine, other) = (engine().await, engine().await);
    let logs = (Logs::new(), Logs::new());
    let start = |engine: &Engine, image: &Image, sink: LogSink| {
        let (engine, spec) = (engine.clone(), sh(&image.id, "sleep 30"));
        tokio::spawn(async move { docker::run(&engine, &spec, sink).await.map(|f| f.exit_code) })
    };
    let my_step = start(&engine, &mine, logs.0.sink());
    let their_step = start(&other, &theirs, logs.1.sink());
    eventually("both containers run", || {
        containers_of(&mine.id, true).len() == 1 && containers_of(&theirs.id, true).len() == 1
    })
    .await;

    docker::remove_all(&engine).await.unwrap();
    assert_eq!(containers_of(&mine.id, false), Vec::<String>::new());
    // remove_all has returned: had it taken the other container, it would
    // be gone already.
    assert_eq!(
        containers_of(&theirs.id, true).len(),
        1,
        "another connection's container was touched"
    );
    assert!(!their_step.is_finished());

    docker::remove_all(&other).await.unwrap();
    assert_eq!(containers_of(&theirs.id, false), Vec::<String>::new());
    for step in [my_step, their_step] {
        let outcome = tokio::time::timeout(Duration::from_secs(15), step)
            .await
            .expect("the step ends once its container is gone")
            .unwrap();
        assert!(!matches!(outcome, Ok(0)), "{outcome:?}");
    }
}

/// Field 22 of /proc/<pid>/stat: the process's start time.
fn start_time(pid: &str) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(19).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reap_stale_removes_the_containers_of_dead_builds_only() {
    if !docker_available() {
        return;
    }
    let image = Image::new("reap");
    let engine = engine().await;
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id().to_string();
    dead.wait().unwrap();
    let me = std::process::id().to_string();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let pidns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let pidns = pidns.to_str().unwrap();
    let create = |name: &str, pid: &str, start: &str, boot: &str| {
        let labels = [
            "strata=1".to_string(),
            format!("strata.pid={pid}"),
            format!("strata.start={start}"),
            format!("strata.boot={}", boot.trim()),
            format!("strata.pidns={pidns}"),
        ];
        let mut args = vec!["create".to_string(), "--name".into(), name.into()];
        for l in labels {
            args.extend(["--label".into(), l]);
        }
        args.extend([image.id.clone(), "/bin/true".into()]);
        cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    };
    let unique = format!("strata-test-reap-{me}");
    let dead_build = format!("{unique}-dead");
    let reused_pid = format!("{unique}-reused");
    let live_build = format!("{unique}-live");
    let other_machine = format!("{unique}-other");
    create(&dead_build, &dead_pid, "1", &boot);
    // Our PID, but a different start time: a build that died, its PID reused.
    create(&reused_pid, &me, "1", &boot);
    create(&live_build, &me, &start_time(&me), &boot);
    create(&other_machine, &dead_pid, "1", "another-boot");

    let removed = docker::reap_stale(&engine).await.unwrap();
    let names = cli(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("name={unique}"),
    ]);
    let mut left: Vec<&str> = names.lines().collect();
    left.sort();
    for name in &left {
        cli(&["rm", "-f", name]);
    }
    assert!(removed >= 2, "removed {removed}");
    assert_eq!(left, [live_build.as_str(), other_machine.as_str()]);
}

/// Stores the files of `root` (moved) as a tree without metadata.
fn capture_dir(store: &Store, root: &Path) -> Digest {
    let names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    tree::capture(store.cas(), root, &names).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_layout_loads_a_saved_image_under_its_id() {
    if !docker_available() {
        return;
    }
    let image = Image::new("layout");
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    let archive = dir.path().join("image.tar");
    cli(&["save", "-o", archive.to_str().unwrap(), &image.id]);
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap();
    assert!(untar.success());
    assert!(layout.join("manifest.json").exists());
    let layout_tree = capture_dir(&store, &layout);
    cli(&["rmi", "-f", &image.id]);

    let engine = engine().await;
    docker::ensure_layout(&engine, store.cas(), &layout_tree, &image.id)
        .await
        .unwrap();
    let id = cli(&["image", "inspect", "--format", "{{.Id}}", &image.id]);
    assert_eq!(id.trim(), image.id);

    // Present: the tree is not even read.
    let absent = store.function().of_bytes(b"no such tree");
    docker::ensure_layout(&engine, store.cas(), &absent, &image.id)
        .await
        .unwrap();

    // An archive of another image does not make this one present.
    let other = format!("sha256:{}", "0".repeat(64));
    let err = docker::ensure_layout(&engine, store.cas(), &layout_tree, &other)
        .await
        .unwrap_err();
    assert!(matches!(err, DockerError::Refused { .. }), "{err}");
    assert!(err.to_string().contains(&other), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_becomes_an_image_that_runs_and_is_reused() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let root = dir.path().join("root");
    mini_rootfs(&root);
    // Unique content, so no other run of this test shares the tag.
    std::fs::write(
        root.join("etc/unique"),
        format!("{:?} {}", Instant::now(), std::process::id()),
    )
    .unwrap();
    let rootfs = capture_dir(&store, &root);
    let engine = engine().await;
    let id = docker::ensure_tree_image(&engine, store.cas(), &rootfs, &amd64())
        .await
        .unwrap();
    let image = Image { id: id.clone() };
    let (code, logs) = run_to_end(&engine, &sh(&image.id, "echo ok")).await;
    assert_eq!((code, logs.stdout().as_str()), (0, "ok\n"));
    let tag = format!("{}:{}", docker::TREE_REPOSITORY, rootfs.hex());
    let tagged = cli(&["image", "inspect", "--format", "{{.Id}}", &tag]);
    assert_eq!(tagged.trim(), id);
    let again = docker::ensure_tree_image(&engine, store.cas(), &rootfs, &amd64())
        .await
        .unwrap();
    assert_eq!(again, id, "the tagged image is reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_holding_a_whiteout_name_is_refused_not_imported_without_it() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let mut b = TreeBuilder::new();
    let blob = store.cas().put_bytes(b"x").unwrap();
    b.insert("etc/.wh.passwd", Node::file(blob, false)).unwrap();
    let tree = b.store(store.cas()).unwrap();
    let engine = engine().await;
    let err = docker::ensure_tree_image(&engine, store.cas(), &tree, &amd64())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("etc/.wh.passwd"), "{err}");
    let tag = format!("{}:{}", docker::TREE_REPOSITORY, tree.hex());
    let inspect = Command::new("docker")
        .args(["image", "inspect", &tag])
        .output()
        .unwrap();
    assert!(!inspect.status.success(), "no image was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_pinned_pulls_by_digest_and_refuses_unpinned_references() {
    if !docker_available() {
        return;
    }
    let registry = Registry::start(None);
    let image = Image::new("pinned");
    let digest = registry.push(&image.id, "strata-test/pinned", "v1");
    let reference = format!("{}/strata-test/pinned@{digest}", registry.host());
    cli(&["rmi", "-f", &image.id]);
    let engine = engine().await;

    let pulled = docker::ensure_pinned(&engine, &reference, &amd64())
        .await
        .unwrap();
    assert_eq!(pulled, image.id, "the ID of the image to run");
    let id = cli(&["image", "inspect", "--format", "{{.Id}}", &reference]);
    assert_eq!(id.trim(), image.id, "the same image, pulled");
    // Present now: no registry needed.
    drop(registry);
    docker::ensure_pinned(&engine, &reference, &amd64())
        .await
        .unwrap();

    let unpinned = "127.0.0.1:1/strata-test/pinned:v1";
    let err = docker::ensure_pinned(&engine, unpinned, &amd64())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not pinned by digest"), "{err}");
}

/// The platform of the images these tests make (`docker import` on this
/// x86_64 machine labels them so).
fn amd64() -> Platform {
    Platform::default_platform()
}

/// A tar of `root` with owners and modes as they are, read by the `extract`
/// rule: a tree with the metadata an export also has.
fn rootfs_tree(store: &Store, dir: &Path, root: &Path) -> Digest {
    let archive = dir.join("rootfs.tar");
    let tar = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(root)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    let blob = store.cas().put_file_copy(&archive).unwrap();
    let mut input = TreeBuilder::new();
    input
        .insert("work/rootfs.tar", Node::file(blob, false))
        .unwrap();
    let params = extract::Params {
        from: From {
            target: None,
            path: "rootfs.tar".into(),
        },
        strip_components: 0,
        include: vec![],
        exclude: vec![],
        control: false,
        max_size: None,
        prefix: None,
    };
    let ctx = Ctx {
        cas: store.cas(),
        input_root: input.store(store.cas()).unwrap(),
        source_date_epoch: 0,
        dep_keys: BTreeMap::new(),
    };
    extract::run(&params, &ctx).unwrap()
}

/// `root`, made unique to this run so no earlier image stands in for it, as
/// a tree and as the engine's image of that tree.
async fn tree_and_image(
    store: &Store,
    dir: &Path,
    root: &Path,
    engine: &Engine,
) -> (Digest, Image) {
    std::fs::write(
        root.join("etc/unique"),
        format!("{:?} {}", Instant::now(), std::process::id()),
    )
    .unwrap();
    let parent = rootfs_tree(store, dir, root);
    let image = Image {
        id: docker::ensure_tree_image(engine, store.cas(), &parent, &amd64())
            .await
            .unwrap(),
    };
    (parent, image)
}

/// `work` mounted writable at `/strata/work`, as a step's work folder.
fn work_mount(work: &Path) -> Mount {
    Mount {
        host: work.to_path_buf(),
        target: "/strata/work".into(),
        read_only: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_is_the_parent_tree_plus_the_steps_changes() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let cas = store.cas();
    let root = dir.path().join("root");
    mini_rootfs(&root);
    let engine = engine().await;
    let (parent, image) = tree_and_image(&store, dir.path(), &root, &engine).await;
    let work = tempfile::tempdir().unwrap();
    let mounted = |script: &str| ContainerSpec {
        workdir: "/strata/work".into(),
        mounts: vec![work_mount(work.path())],
        ..sh(&image.id, script)
    };

    let export = |script: &'static str| {
        let engine = engine.clone();
        let spec = mounted(script);
        async move {
            let logs = Logs::new();
            let finished = docker::run(&engine, &spec, logs.sink()).await.unwrap();
            assert_eq!(finished.exit_code, 0, "{}", logs.stderr());
            let exported = finished.container.export_tree(cas).await.unwrap();
            let restored = docker::restore_injected(
                cas,
                &parent,
                &exported,
                finished.container.injected_paths(),
            )
            .unwrap();
            finished.container.remove().await.unwrap();
            (exported, restored)
        }
    };

    let (exported, unchanged) = export("true").await;
    assert_ne!(exported, parent, "the engine adds files to every container");
    assert_eq!(unchanged, parent);

    let (_, changed) = export("touch /new; rm /bin/cat; echo kept > /strata/work/x").await;
    let mut expected = TreeBuilder::load(cas, &parent).unwrap();
    expected
        .insert_at(
            cas,
            "new",
            Node::File {
                digest: cas.put_bytes(b"").unwrap(),
                executable: false,
                meta: Some(Meta {
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                }),
            },
            None,
        )
        .unwrap();
    assert!(expected.remove(cas, "bin/cat").unwrap());
    assert_eq!(changed, expected.store(cas).unwrap());
    // Mounted folders are not part of the container's file system.
    assert_eq!(
        std::fs::read_to_string(work.path().join("x")).unwrap(),
        "kept\n"
    );
}

/// What a step can do to a root file system, for comparing captures.
const EVERY_KIND_OF_CHANGE: &str = "set -e
echo new > /newfile
echo more >> /data/keep
chmod 4755 /data/keep
chown 1000:1000 /data/mode
chmod 600 /data/mode
rm /data/gone
rm -r /olddir
rm -r /replace && mkdir /replace && echo z > /replace/z
rm /file2dir && mkdir /file2dir && echo in > /file2dir/in
rm -r /dir2file && echo f > /dir2file
ln -s /newfile /newlink
rm /link && ln -s elsewhere /link
mkfifo /fifo
mknod /zero2 c 1 5
mkdir -p /deep/er/est && echo d > /deep/er/est/f
ln /newfile /hard
mkdir /emptydir
chmod 700 /etc
touch /strata/work/mounted
mkdir -p /build && echo built > /build/out
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_changes_on_the_parent_tree_equal_an_export() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let cas = store.cas();
    let root = dir.path().join("root");
    mini_rootfs(&root);
    for tool in ["chmod", "chown", "ln", "mkfifo", "mknod"] {
        let src = ["/bin", "/usr/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no {tool} on this machine"));
        std::fs::copy(&src, root.join("bin").join(tool)).unwrap();
    }
    for (path, content) in [
        ("data/keep", "keep\n"),
        ("data/mode", "mode\n"),
        ("data/gone", "gone\n"),
        ("olddir/a", "a\n"),
        ("replace/x", "x\n"),
        ("file2dir", "file\n"),
        ("dir2file/y", "y\n"),
    ] {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    std::os::unix::fs::symlink("/data/keep", root.join("link")).unwrap();
    let engine = engine().await;
    let (parent, image) = tree_and_image(&store, dir.path(), &root, &engine).await;
    let work = tempfile::tempdir().unwrap();
    let spec = ContainerSpec {
        workdir: "/build".into(),
        mounts: vec![work_mount(work.path())],
        ..sh(&image.id, EVERY_KIND_OF_CHANGE)
    };
    let logs = Logs::new();
    let finished = docker::run(&engine, &spec, logs.sink()).await.unwrap();
    assert_eq!(finished.exit_code, 0, "{}", logs.stderr());
    let injected = finished.container.injected_paths().to_vec();
    let from_upper = finished
        .container
        .changes_on(cas, &parent)
        .await
        .unwrap()
        .expect("this engine uses overlay2 on this machine");
    let exported = finished.container.export_tree(cas).await.unwrap();
    finished.container.remove().await.unwrap();
    let a = docker::restore_injected(cas, &parent, &from_upper, &injected).unwrap();
    let b = docker::restore_injected(cas, &parent, &exported, &injected).unwrap();
    if a != b {
        let listing = |d: &Digest| -> Vec<String> {
            tree::walk(cas, d)
                .unwrap()
                .into_iter()
                .map(|(p, e)| format!("{p} {e:?}"))
                .collect()
        };
        let (la, lb) = (listing(&a), listing(&b));
        let only_a: Vec<_> = la.iter().filter(|l| !lb.contains(l)).collect();
        let only_b: Vec<_> = lb.iter().filter(|l| !la.contains(l)).collect();
        let root = |d: &Digest| TreeBuilder::load(cas, d).unwrap().meta();
        panic!(
            "overlay changes and export differ:\nupper only: {only_a:#?}\nexport only: {only_b:#?}\nroots: {:?} {:?}",
            root(&a),
            root(&b)
        );
    }
    let listed: Vec<String> = tree::walk(cas, &a)
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    for present in [
        "newfile",
        "replace/z",
        "file2dir/in",
        "dir2file",
        "fifo",
        "zero2",
        "deep/er/est/f",
        "hard",
        "emptydir",
        "build/out",
    ] {
        assert!(
            listed.iter().any(|p| p == present),
            "{present} missing: {listed:#?}"
        );
    }
    for absent in [
        "data/gone",
        "olddir",
        "replace/x",
        "dir2file/y",
        "strata/work/mounted",
    ] {
        assert!(!listed.iter().any(|p| p == absent), "{absent} is there");
    }
}
