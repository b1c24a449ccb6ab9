//! `run` steps in images through remote execution, on real components:
//! BuildGrid 0.4.4 on PostgreSQL (`common::execution::Service`), a
//! `strata worker` with the Docker Engine of `scripts/docker-up.sh`, and
//! qemu-user through binfmt_misc (`scripts/binfmt-up.sh`) for linux/arm64.
//! One service serves every scenario (it takes a while to start).
//!
//! - A step in an image Strata made runs on the worker, in that image
//!   (which the local build of the same workspace loaded into the engine
//!   the worker shares): `out/` byte for byte a local build's.
//! - A step in a linux/arm64 image runs on the worker, emulated, with the
//!   same output as locally (`aarch64`).
//! - A step whose image the worker's engine lacks fails, naming the image.
//! - A worker without an engine does not advertise `container-runtime`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::Ws;
use common::docker::{docker_available, mini_rootfs};
use common::emulation::arm64_runs;
use common::execution::{Service, Worker};
use common::remote::buildgrid_available;

/// `base`: an image of a tiny root file system (host binaries); `words`
/// a host step, and `shout` a step in `base` that reads its source, its
/// dependency and the image, and writes a file and a folder.
const BUILD: &str = r#"
targets:
  base:
    rule: image
    srcs: ["rootfs/**"]
    from: srcs:rootfs
  words:
    rule: run
    cmd: printf 'pear\napple\n' > $OUT/words.txt
    outs: [words.txt]
  shout:
    rule: run
    image: base
    deps: [words]
    srcs: [note.txt]
    cmd: |
      cat note.txt $DEPS/words/words.txt /etc/marker > $OUT/all.txt
      mkdir -p $OUT/tree/sub
      echo "$OUT $HOME $TMPDIR $PWD" > $OUT/tree/layout.txt
      id -u > $OUT/tree/sub/uid
      cp /bin/true $OUT/tree/tool
    outs: [all.txt, tree/]
"#;

/// A workspace of `BUILD` whose image holds `marker` in `/etc/marker`.
fn workspace(marker: &str) -> Ws {
    let ws = Ws::new();
    ws.write("BUILD.yaml", BUILD);
    ws.write("note.txt", "a note\n");
    mini_rootfs(&ws.path().join("rootfs"));
    ws.write("rootfs/etc/marker", marker);
    ws
}

/// Every file under `out/<target>` with its content (see [`shown`]) and
/// executable bit.
fn out_files(ws: &Ws, target: &str) -> BTreeMap<String, (String, bool)> {
    let mut files = BTreeMap::new();
    let root = ws.path().join("out").join(target);
    let mut todo = vec![root.clone()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path);
            } else {
                let rel = path.strip_prefix(&root).unwrap().display().to_string();
                let executable = meta.permissions().mode() & 0o100 != 0;
                files.insert(rel, (shown(fs::read(&path).unwrap()), executable));
            }
        }
    }
    files
}

/// A file's text, or for a program its size and a hash of its bytes
/// (equal for equal bytes, short in a failure's message).
fn shown(bytes: Vec<u8>) -> String {
    use std::hash::{Hash, Hasher};
    String::from_utf8(bytes).unwrap_or_else(|e| {
        let bytes = e.into_bytes();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut hasher);
        format!("<{} bytes, hash {:016x}>", bytes.len(), hasher.finish())
    })
}

#[test]
fn steps_in_images_run_on_a_worker_in_its_docker_engine() {
    if !buildgrid_available() || !docker_available() {
        return;
    }
    let service = Service::start(10);
    let worker = Worker::start(&service, 2, "1G");
    let serving = worker.log();
    assert!(
        serving.contains("container-runtime=docker"),
        "a worker with an engine advertises it: {serving}"
    );
    a_step_in_an_image_gives_what_a_local_build_gives(&service, &worker);
    a_step_in_an_image_the_worker_lacks_fails_naming_it(&service);
    a_worker_without_an_engine_runs_no_images(&service);
    if arm64_runs() {
        an_arm64_step_runs_emulated_on_the_worker(&service, &worker);
    }
}

fn a_step_in_an_image_gives_what_a_local_build_gives(service: &Service, worker: &Worker) {
    // The local build loads `base` into the engine the worker shares.
    let local = workspace("from the image\n");
    local.build_ok(&["shout"]);
    let expected = out_files(&local, "shout");
    assert_eq!(
        expected["all.txt"].0,
        "a note\npear\napple\nfrom the image\n"
    );
    assert_eq!(
        expected["tree/layout.txt"].0,
        "/strata/out /strata/home /strata/tmp /strata/work\n"
    );
    assert!(expected["tree/tool"].1, "{expected:?}");

    let remote = workspace("from the image\n");
    let run = remote.build_ok(&["shout", "--remote-executor", &service.url()]);
    let json = run.json();
    // `words` on the host and `shout` in the image, both on the worker.
    assert_eq!(json["remote_executed"], 2, "{}\n{}", run.stdout, run.stderr);
    let finished = worker.finished();
    assert_eq!(finished.len(), 2, "{}", worker.log());
    assert!(
        finished.iter().all(|(_, what)| what.starts_with("exit 0")),
        "{}",
        worker.log()
    );
    assert_eq!(out_files(&remote, "shout"), expected);
}

fn a_step_in_an_image_the_worker_lacks_fails_naming_it(service: &Service) {
    // A marker of its own: an image no build has loaded anywhere.
    let nonce = format!("{:?}\n", std::time::SystemTime::now());
    let ws = workspace(&nonce);
    let run = ws.build_fails(&["shout", "--remote-executor", &service.url()], 1);
    let image = manifest_config(&ws);
    assert!(
        run.stderr.contains(&format!(
            "image {image} is not in this worker's Docker Engine"
        )),
        "{image}: {}",
        run.stderr
    );
    assert!(!ws.path().join("out/shout").exists());
}

/// The image ID (`sha256:<hex>` of its config) of the workspace's `base`,
/// from its layout in `out/base`.
fn manifest_config(ws: &Ws) -> String {
    ws.build_ok(&["base"]);
    let manifest: serde_json::Value =
        serde_json::from_str(&ws.read("out/base/manifest.json")).unwrap();
    manifest[0]["Config"]
        .as_str()
        .and_then(|c| c.strip_prefix("blobs/sha256/"))
        .map(|hex| format!("sha256:{hex}"))
        .unwrap_or_else(|| panic!("{manifest}"))
}

fn a_worker_without_an_engine_runs_no_images(service: &Service) {
    let worker = Worker::start_with_env(
        service,
        1,
        "100M",
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    let log = worker.log();
    assert!(log.contains("no container-image actions here"), "{log}");
    let serving = log.lines().find(|l| l.contains("serving")).unwrap();
    assert!(!serving.contains("container-runtime"), "{serving}");
    assert!(
        serving.contains("ISA=x86-64") || serving.contains("ISA=aarch64"),
        "{serving}"
    );
}

/// The arm64 busybox-static of Debian 12 and its SHA-256
/// (as in `tests/foreign_arch.rs`).
const ARM64_BUSYBOX: &str = "http://deb.debian.org/debian/pool/main/b/busybox/busybox-static_1.35.0-4%2bdeb12u1%2bb1_arm64.deb";
const ARM64_BUSYBOX_SHA256: &str =
    "732c9135564fc71337e0e05fb4da4d11e6c28c1834bce3e405e575afef2a52f5";

fn arm64_workspace() -> Ws {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        &format!(
            r#"targets:
  busybox-deb:
    rule: run
    network: true
    outs: [busybox.deb]
    cmd: |
      curl -fsSL --retry 3 -o $OUT/busybox.deb {ARM64_BUSYBOX}
      echo "{ARM64_BUSYBOX_SHA256}  $OUT/busybox.deb" | sha256sum -c --strict --quiet
  busybox:
    rule: extract
    from: busybox-deb:busybox.deb
  root:
    rule: rootfs
    layers: [{{from: busybox}}]
    components:
      - {{type: symlink, target: /bin/busybox, link: /bin/sh}}
      - {{type: directory, target: /tmp, chmod: "1777"}}
  arm-image:
    rule: image
    from: root
    platform: linux/arm64
  arch:
    rule: run
    image: arm-image
    cmd: "uname -m > $OUT/arch; busybox sha256sum /bin/busybox > $OUT/sum"
    outs: [arch, sum]
"#
        ),
    );
    ws
}

fn an_arm64_step_runs_emulated_on_the_worker(service: &Service, worker: &Worker) {
    let serving = worker.log();
    if std::env::consts::ARCH != "aarch64" {
        assert!(serving.contains("ISA=aarch64"), "{serving}");
    }
    // The local build loads `arm-image` into the engine the worker shares.
    let local = arm64_workspace();
    local.build_ok(&["arch"]);
    assert_eq!(local.read("out/arch/arch"), "aarch64\n");

    let before = worker.finished().len();
    let remote = arm64_workspace();
    let run = remote.build_ok(&["arch", "--remote-executor", &service.url()]);
    // The fetch needs the network, which keeps it here; `arch` went.
    assert_eq!(
        run.json()["remote_executed"],
        1,
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(worker.finished().len(), before + 1, "{}", worker.log());
    assert_eq!(out_files(&remote, "arch"), out_files(&local, "arch"));
}
