//! Steps on linux/arm64 images on an x86_64 machine, through qemu-user
//! registered with binfmt_misc (`scripts/binfmt-up.sh`), on the real Docker
//! Engine. The arm64 base image is made here: Debian's arm64
//! busybox-static package, fetched as a fixed-output step, unpacked and
//! turned into an image by the built-in rules (which never emulate).
//! Emulation is recorded in keys, build records, `strata manifest` and
//! `strata explain`; pulls and `docker-data-root` stay native.

mod common;

use std::fs;
use std::path::Path;

use common::docker::{Dockerd, Registry, docker_available};
use common::emulation::{aarch64_handler, arm64_runs};
use common::{Run, Ws, sh};

/// The arm64 busybox-static of Debian 12 and its SHA-256.
const ARM64_BUSYBOX: &str = "http://deb.debian.org/debian/pool/main/b/busybox/busybox-static_1.35.0-4%2bdeb12u1%2bb1_arm64.deb";
const ARM64_BUSYBOX_SHA256: &str =
    "732c9135564fc71337e0e05fb4da4d11e6c28c1834bce3e405e575afef2a52f5";
/// The output of the fetch step below (its `busybox.deb`).
const ARM64_FETCH_DIGEST: &str =
    "blake3:5f778c779225acb1275bf62b4ffea4f73d9da836d7fb740441df4d831ca7e57f";
/// The amd64 package of the same version.
const AMD64_BUSYBOX: &str = "http://deb.debian.org/debian/pool/main/b/busybox/busybox-static_1.35.0-4%2bdeb12u1%2bb1_amd64.deb";

/// The fetch, the root file system and `arm-image` (for `${plat}`,
/// `linux/arm64` unless `--var plat=...`), then `rest`.
fn workspace(ws: &Ws, tag: &str, rest: &str) {
    ws.write(
        "BUILD.yaml",
        &format!(
            r#"vars:
  plat: linux/arm64
targets:
  busybox-deb:
    rule: run
    output_digest: {ARM64_FETCH_DIGEST}
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
    platform: ${{plat}}
    tag: "{tag}"
    config: {{cmd: ["/bin/busybox", "uname", "-m"]}}
{rest}"#
        ),
    );
}

/// A `run` step and a two-step stage on `arm-image`, each recording the
/// machine it ran as.
const STEPS: &str = r#"  arch:
    rule: run
    image: arm-image
    cmd: "uname -m > $OUT/arch"
    outs: [arch]
  staged:
    rule: stage
    from: arm-image
    steps:
      - cmd: "uname -m > /arch"
      - cmd: "mkdir -p /etc && echo second > /etc/second"
"#;

/// The newest build record of the workspace, as JSON.
fn last_record(ws: &Ws) -> serde_json::Value {
    let mut files: Vec<_> = walk(&ws.store.join("meta/records"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let newest = files.last().expect("a build record");
    serde_json::from_slice(&fs::read(newest).unwrap()).unwrap()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                found.push(e.path());
            }
        }
    }
    found
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}:\n{}\n{}", r.stdout, r.stderr))
}

fn ok(r: Run) -> Run {
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r
}

#[test]
fn run_and_stage_steps_on_an_arm64_image_run_as_aarch64_and_say_so() {
    if !docker_available() || !arm64_runs() {
        return;
    }
    let ws = Ws::new();
    workspace(&ws, "strata-test/arm64-steps:1", STEPS);
    ws.build_ok(&["arch", "staged"]);
    assert_eq!(ws.read("out/arch/arch"), "aarch64\n");
    assert_eq!(ws.read("out/staged/arch"), "aarch64\n");
    assert_eq!(ws.read("out/staged/etc/second"), "second\n");

    // The image a stage step ran on is labelled for arm64 and tagged apart
    // from an amd64 image of the same tree.
    let tags = sh(ws.path(), "docker images strata-tree --format '{{.Tag}}'");
    let arm64_tags: Vec<&str> = tags
        .lines()
        .filter(|t| t.ends_with("-linux-arm64"))
        .collect();
    assert!(!arm64_tags.is_empty(), "{tags}");
    for t in arm64_tags {
        let platform = sh(
            ws.path(),
            &format!(
                "docker image inspect --format '{{{{.Os}}}}/{{{{.Architecture}}}}' strata-tree:{t}"
            ),
        );
        assert_eq!(platform.trim(), "linux/arm64", "strata-tree:{t}");
    }

    if std::env::consts::ARCH == "aarch64" {
        return; // native: nothing below is emulated
    }
    let (_, interpreter) = aarch64_handler().expect("the handler that ran the steps");
    let sha256 = format!(
        "sha256:{}",
        sh(
            ws.path(),
            &format!("sha256sum \"$(readlink -f {interpreter})\" | cut -d' ' -f1")
        )
        .trim()
    );

    // The build record: the platform and emulator of each step that ran an
    // image's programs; none for the native work around them.
    let record = last_record(&ws);
    for name in ["arch", "staged", "staged#1"] {
        let t = &record["targets"][name];
        assert_eq!(t["platform"], "linux/arm64", "{name}: {t}");
        assert_eq!(t["emulator"]["interpreter"], interpreter.as_str(), "{name}");
        assert_eq!(t["emulator"]["sha256"], sha256.as_str(), "{name}");
        assert!(
            t["emulator"]["flags"].as_str().unwrap().contains('F'),
            "{name}: {t}"
        );
    }
    for name in ["busybox-deb", "busybox", "root", "arm-image"] {
        let t = &record["targets"][name];
        assert!(
            t["platform"].is_null() && t["emulator"].is_null(),
            "{name}: {t}"
        );
    }

    // `strata manifest`: the emulator is among the key's parts, and said.
    let m = json(&ok(ws.run(&["manifest", "--json", "arch"])));
    let props = &m["targets"]["arch"]["inputs"]["properties"];
    assert_eq!(props["platform"], "linux/arm64");
    assert_eq!(props["emulator"], interpreter.as_str());
    assert_eq!(props["emulator.sha256"], sha256.as_str());
    let text = ok(ws.run(&["manifest", "staged"])).stdout;
    assert!(
        text.contains(&format!("runs    linux/arm64, emulated by {interpreter}")),
        "{text}"
    );

    // `strata explain`: the same, before anything runs.
    let e = ok(ws.run(&["explain", "arch"])).stdout;
    assert!(
        e.contains(&format!(
            "`arch` runs linux/arm64, emulated by {interpreter}"
        )) && e.contains(&sha256),
        "{e}"
    );
    let e = json(&ok(ws.run(&["explain", "--json", "staged"])));
    assert_eq!(e["state"], "cached");
    assert_eq!(
        e["components"]["properties"]["emulator"],
        interpreter.as_str()
    );
}

#[test]
fn keys_name_the_platform_of_every_container_step() {
    let ws = Ws::new();
    workspace(
        &ws,
        "strata-test/arm64-keys:1",
        &format!(
            r#"{STEPS}  pulled:
    rule: image-pull
    image: 127.0.0.1:1/strata-test/any@sha256:{hex}
    platform: ${{plat}}
  data:
    rule: docker-data-root
    images: [arm-image]
  pinned:
    rule: run
    image: 127.0.0.1:1/strata-test/any@sha256:{hex}
    platform: ${{plat}}
    cmd: "true"
  device:
    rule: rootfs
    layers: [{{from: root}}]
    components:
      - type: docker-compose
        file: compose.yaml
        target: /etc/compose.yaml
        platform: ${{plat}}
"#,
            hex = "ab".repeat(32)
        ),
    );
    // A service pulled for the device's platform.
    ws.write(
        "compose.yaml",
        &format!(
            "services:\n  agent:\n    image: 127.0.0.1:1/strata-test/agent@sha256:{}\n",
            "cd".repeat(32)
        ),
    );
    // Keyed without running anything, on both platforms.
    let explain = |target: &str, plat: &str| {
        json(&ok(ws.run(&[
            "explain",
            "--json",
            target,
            "--var",
            &format!("plat={plat}"),
        ])))
    };
    let emulated = std::env::consts::ARCH != "aarch64" && aarch64_handler().is_some();
    for target in ["arch", "staged", "staged#1", "pinned"] {
        let amd64 = explain(target, "linux/amd64");
        let arm64 = explain(target, "linux/arm64");
        assert_ne!(amd64["key"], arm64["key"], "{target}");
        assert_eq!(
            amd64["components"]["properties"]["platform"], "linux/amd64",
            "{target}: {amd64}"
        );
        assert_eq!(
            arm64["components"]["properties"]["platform"], "linux/arm64",
            "{target}: {arm64}"
        );
        if std::env::consts::ARCH == "x86_64" {
            assert!(amd64["components"]["properties"]["emulator"].is_null());
            assert_eq!(
                arm64["components"]["properties"]["emulator"].is_string(),
                emulated,
                "{target}: {arm64}"
            );
        }
    }
    for target in ["pulled", "data", "device#compose-0-agent"] {
        let amd64 = explain(target, "linux/amd64");
        let arm64 = explain(target, "linux/arm64");
        assert_ne!(amd64["key"], arm64["key"], "{target}");
        let args = arm64["components"]["arguments"].to_string();
        assert!(args.contains("linux/arm64"), "{target}: {args}");
        // Pulls and data-roots run natively: no emulator in their keys.
        assert!(arm64["components"]["properties"]["emulator"].is_null());
    }
}

#[test]
fn pulls_and_data_roots_of_arm64_images_are_native_and_the_data_root_runs_them() {
    if !docker_available() || !arm64_runs() {
        return;
    }
    // Strata sees no emulator: any step needing one would be refused.
    let ws = Ws::new().without_emulators();
    let tag = "strata-test/arm64-data-root:1";
    workspace(&ws, tag, "");
    ws.build_ok(&["arm-image"]);

    // The arm64 image in a registry of the test's own, pulled back by digest.
    let registry = Registry::start(None);
    let id = sh(
        ws.path(),
        "tar -C out/arm-image -c . | docker load -q | sed -n 's/^Loaded image: //p'",
    );
    assert_eq!(id.trim(), tag, "{id}");
    let digest = registry.push(tag, "strata-test/arm64", "v1");
    sh(ws.path(), &format!("docker rmi {tag} >/dev/null"));
    let reference = format!("{}/strata-test/arm64@{digest}", registry.host());
    workspace(
        &ws,
        tag,
        &format!(
            r#"  pulled:
    rule: image-pull
    image: {reference}
    platform: linux/arm64
  wrong:
    rule: image-pull
    image: {reference}
    platform: linux/amd64
  data:
    rule: docker-data-root
    images: [arm-image, pulled]
"#
        ),
    );
    ws.build_ok(&["data"]);
    let record = last_record(&ws);
    for name in ["pulled", "data"] {
        let t = &record["targets"][name];
        assert_eq!(t["status"], "executed", "{name}: {t}");
        assert!(
            t["emulator"].is_null() && t["platform"].is_null(),
            "{name}: {t}"
        );
    }

    // An image of another platform than the one asked for is refused, both
    // named.
    let r = ws.build_fails(&["wrong"], 1);
    assert!(
        r.stderr.contains("is for linux/arm64, not linux/amd64"),
        "{}",
        r.stderr
    );

    // The shipped data-root starts the arm64 image on a dockerd of its own,
    // as a device would.
    let dir = tempfile::tempdir().unwrap();
    let data_root = dir.path().join("docker");
    sh(
        ws.path(),
        &format!("cp -a out/data {}", data_root.display()),
    );
    let run = dir.path().join("run");
    fs::create_dir_all(&run).unwrap();
    let daemon = Dockerd::start(&data_root, &run);
    let host = &daemon.host;
    let platform = sh(
        ws.path(),
        &format!(
            "docker -H {host} image inspect --format '{{{{.Os}}}}/{{{{.Architecture}}}}' {tag}"
        ),
    );
    assert_eq!(platform.trim(), "linux/arm64");
    let out = sh(
        ws.path(),
        &format!("docker -H {host} run --rm --network none --platform linux/arm64 {tag}"),
    );
    assert_eq!(out, "aarch64\n");
    drop(daemon);

    // A step on the image pinned by digest: the engine pulls it for arm64
    // (natively) and runs it under the emulator.
    let steps = Ws::new();
    steps.write(
        "BUILD.yaml",
        &format!(
            "targets:\n  arch:\n    rule: run\n    image: {reference}\n    platform: linux/arm64\n    cmd: \"uname -m > $OUT/arch\"\n    outs: [arch]\n"
        ),
    );
    steps.build_ok(&[]);
    assert_eq!(steps.read("out/arch/arch"), "aarch64\n");
    let platform = sh(
        ws.path(),
        &format!("docker image inspect --format '{{{{.Os}}}}/{{{{.Architecture}}}}' {reference}"),
    );
    assert_eq!(platform.trim(), "linux/arm64");
    sh(ws.path(), &format!("docker rmi {reference} >/dev/null"));
}

#[test]
fn without_a_handler_the_build_stops_before_anything_runs_saying_how_to_register_one() {
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("skipped: arm64 is not foreign here");
        return;
    }
    let ws = Ws::new().without_emulators();
    workspace(
        &ws,
        "strata-test/arm64-refused:1",
        &format!(
            r#"{STEPS}  pinned:
    rule: run
    image: 127.0.0.1:1/strata-test/any@sha256:{}
    platform: linux/arm64
    cmd: "true"
"#,
            "ab".repeat(32)
        ),
    );
    let r = ws.build_fails(&[], 2);
    for expected in [
        "`arch` runs `arm-image`, an image for linux/arm64",
        "`staged` runs `arm-image`, an image for linux/arm64",
        "`pinned` runs `127.0.0.1:1/strata-test/any@sha256:",
        "no binfmt_misc handler for arm64",
        "apt-get install qemu-user-static",
        "cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register",
    ] {
        assert!(r.stderr.contains(expected), "{expected}:\n{}", r.stderr);
    }
    // One error per step and image, not one per stage step.
    assert_eq!(r.stderr.matches("`staged` runs").count(), 1, "{}", r.stderr);
    assert!(
        !ws.path().join("out").exists(),
        "nothing ran:\n{}",
        r.stderr
    );
    assert!(
        !ws.store.join("meta/records").exists(),
        "no build was recorded"
    );
}

#[test]
fn a_fixed_output_fetch_of_the_wrong_architecture_fails_on_its_digest() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        &format!(
            r#"targets:
  busybox-deb:
    rule: run
    output_digest: {ARM64_FETCH_DIGEST}
    outs: [busybox.deb]
    cmd: curl -fsSL --retry 3 -o $OUT/busybox.deb {AMD64_BUSYBOX}
"#
        ),
    );
    let r = ws.build_fails(&[], 1);
    assert!(
        r.stderr.contains(&ARM64_FETCH_DIGEST["blake3:".len()..]),
        "the declared digest is named:\n{}",
        r.stderr
    );
    assert!(r.stderr.contains("output_digest"), "{}", r.stderr);
}
