//! examples/tinyipa, end to end: a TinyIPA-style network-boot ramdisk made
//! from pinned Debian 12 packages and sources, with ipmitool and lshw
//! compiled in a build image, booted under qemu (software emulation): init
//! runs, the tools print their versions, the guest powers off. Also: the
//! `require_*` variables shape the graph, and an architecture this machine
//! cannot build for is refused before anything runs. Needs a Docker Engine,
//! Debian's archive and qemu-system-x86_64 (`scripts/test.sh` installs it).

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::docker::docker_available;
use common::{Ws, sh};

fn copy_example(ws: &Ws) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tinyipa");
    sh(
        ws.path(),
        &format!("cp -a {}/. . && rm -rf out", src.display()),
    );
}

/// Whether qemu-system-x86_64 can be run; in CI (STRATA_REQUIRE_DOCKER set,
/// as for every container test) its absence fails the test.
fn qemu_available() -> bool {
    common::docker::runs(
        "qemu-system-x86_64",
        &["--version"],
        "qemu-system-x86_64 is missing (scripts/test.sh installs qemu-system-x86)",
    )
}

/// Boots `kernel` with `initrd` as the TinyIPA boot command does (serial
/// console, no reboot: a powered-off or panicking guest ends qemu) and
/// returns the serial console and qemu's exit status, killing qemu after
/// `limit`.
fn boot(kernel: &Path, initrd: &Path, limit: Duration) -> (String, Option<i32>) {
    let mut child = Command::new("qemu-system-x86_64")
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-nographic", "-no-reboot", "-m", "512"])
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 starts");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let console = reader.join().unwrap();
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    (format!("{console}{stderr}"), status)
}

/// Target names of `strata graph --format json ARGS` in the example.
fn graph(ws: &Ws, args: &[&str]) -> Vec<String> {
    let mut all = vec!["graph", "--format", "json"];
    all.extend_from_slice(args);
    let r = ws.run(&all);
    assert_eq!(r.code, 0, "graph failed:\n{}", r.stderr);
    r.json()["targets"]
        .as_object()
        .expect("targets")
        .keys()
        .cloned()
        .collect()
}

/// The build CI can afford (no qemu-img), with a branch suffix and an
/// output folder of its own.
const CI_BUILD: &[&str] = &[
    "--var",
    "require_qemu_img=false",
    "--var",
    "branch_path=-master",
    "--var",
    "output_dir=dist",
];

#[test]
fn the_ramdisk_builds_and_boots_to_its_tools_and_powers_off() {
    if !docker_available() || !qemu_available() {
        return;
    }
    let ws = Ws::new();
    copy_example(&ws);
    let r = ws.build_ok(CI_BUILD);
    let targets = r.json()["targets"].clone();
    let names: Vec<&String> = targets.as_object().unwrap().keys().collect();
    assert!(
        !names.iter().any(|n| n.contains("qemu")),
        "require_qemu_img=false leaves no qemu target: {names:?}"
    );
    for name in [
        "ipmitool", "lshw", "runtime", "ramdisk", "vmlinuz", "bundle",
    ] {
        assert_eq!(targets[name]["status"], "executed", "{name}");
    }

    // The outputs, named after branch_path, in output_dir: the default
    // targets only.
    let placed = sh(ws.path(), "ls dist");
    assert_eq!(placed, "bundle\nchecksums\nramdisk\nvmlinuz\n");
    let gz = ws.path().join("dist/ramdisk/tinyipa-master.gz");
    let kernel = ws.path().join("dist/vmlinuz/tinyipa-master.vmlinuz");
    assert!(gz.is_file() && kernel.is_file());
    let listing = sh(
        ws.path(),
        "tar -tzf dist/bundle/tinyipa-master.tar.gz | sort",
    );
    assert_eq!(listing, "tinyipa-master.gz\ntinyipa-master.vmlinuz\n");
    // The checksums are those of the files shipped.
    let sums = ws.read("dist/checksums/SHA256SUMS");
    for file in [
        "dist/ramdisk/tinyipa-master.gz",
        "dist/vmlinuz/tinyipa-master.vmlinuz",
        "dist/bundle/tinyipa-master.tar.gz",
    ] {
        let actual = sh(ws.path(), &format!("sha256sum {file} | cut -d' ' -f1"));
        assert!(
            sums.contains(actual.trim()),
            "{file} ({}) not in SHA256SUMS:\n{sums}",
            actual.trim()
        );
    }
    assert!(
        ws.read("dist/checksums/build-manifest.txt")
            .contains("tinyipa-master.gz")
    );

    // The ramdisk holds busybox, init, the tools and their libraries, and
    // no qemu-img.
    let files = sh(
        ws.path(),
        "gzip -dc dist/ramdisk/tinyipa-master.gz | cpio -it --quiet | sort",
    );
    for f in [
        "init",
        "bin/busybox",
        "dev/console",
        "usr/bin/ipmitool",
        "usr/sbin/lshw",
        "lib64/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libc.so.6",
    ] {
        assert!(
            files.lines().any(|l| l == f),
            "{f} not in the ramdisk:\n{files}"
        );
    }
    assert!(!files.contains("qemu-img"), "{files}");

    // It boots: init runs, each tool prints its version, the guest powers
    // off and qemu exits on its own.
    let (console, status) = boot(&kernel, &gz, Duration::from_secs(300));
    assert!(
        console.contains("tinyipa: init running on x86_64"),
        "init did not run:\n{console}"
    );
    assert!(
        console.contains("tinyipa: ipmitool (exit 0): ipmitool version 1.8.19"),
        "{console}"
    );
    assert!(
        console.contains("tinyipa: lshw (exit 0): 02.19.git.2021.06.19.996aaad9c7"),
        "{console}"
    );
    assert!(
        console.contains("tinyipa: qemu-img: not in this image"),
        "{console}"
    );
    assert!(
        console.contains("reboot: Power down"),
        "the guest did not power off:\n{console}"
    );
    assert!(!console.contains("Kernel panic"), "{console}");
    assert_eq!(status, Some(0), "qemu did not exit by itself:\n{console}");

    // Nothing changed: nothing runs.
    let again = ws.build_ok(CI_BUILD);
    assert!(again.executed().is_empty(), "{:?}", again.executed());
}

#[test]
fn switching_a_requirement_off_removes_its_nodes() {
    let ws = Ws::new();
    copy_example(&ws);
    let all = graph(&ws, &[]);
    for name in [
        "ipmitool",
        "ipmitool-closure",
        "ipmitool-src",
        "qemu-img",
        "qemu-src",
    ] {
        assert!(all.iter().any(|n| n == name), "{name} in {all:?}");
    }
    assert!(!all.iter().any(|n| n.contains("biosdevname")), "{all:?}");

    let no_ipmitool = graph(&ws, &["--var", "require_ipmitool=false"]);
    let left: Vec<&String> = no_ipmitool
        .iter()
        .filter(|n| n.contains("ipmitool"))
        .collect();
    assert!(left.is_empty(), "ipmitool nodes left: {left:?}");
    assert!(no_ipmitool.iter().any(|n| n == "lshw"));
    assert!(no_ipmitool.iter().any(|n| n == "runtime"));

    let no_qemu = graph(&ws, &["--var", "require_qemu_img=false"]);
    let left: Vec<&String> = no_qemu.iter().filter(|n| n.contains("qemu")).collect();
    assert!(left.is_empty(), "qemu nodes left: {left:?}");

    // The environment switches them too, as the template's `!ENV` says.
    let r = ws
        .cmd(&["graph", "--format", "json"])
        .env("REQUIRE_IPMITOOL", "false")
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert!(
        !doc["targets"]
            .as_object()
            .unwrap()
            .keys()
            .any(|n| n.contains("ipmitool"))
    );
}

#[test]
fn biosdevname_cannot_be_required_on_debian_12() {
    let ws = Ws::new();
    copy_example(&ws);
    let on = graph(&ws, &["--var", "require_biosdevname=true"]);
    assert!(on.iter().any(|n| n == "biosdevname"), "{on:?}");
    let r = ws.build_fails(&["biosdevname", "--var", "require_biosdevname=true"], 1);
    assert!(
        r.stderr
            .contains("biosdevname is not packaged in Debian 12 (bookworm)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("--var require_biosdevname=false"),
        "{}",
        r.stderr
    );
}

#[test]
fn aarch64_is_declared_but_refused_without_an_emulator() {
    // Whatever this machine has registered, Strata sees no handler.
    let ws = Ws::new().without_emulators();
    copy_example(&ws);
    // The graph is declared for aarch64: its own package lock and images.
    let nodes = graph(&ws, &["--var", "arch=aarch64"]);
    assert!(nodes.iter().any(|n| n == "build-image"), "{nodes:?}");
    assert!(
        ws.read("arch/aarch64/build-packages.yaml")
            .contains("_arm64.deb")
    );

    let r = ws.build_fails(&["--var", "arch=aarch64"], 2);
    assert!(
        r.stderr.contains("an image for linux/arm64")
            && r.stderr.contains("no binfmt_misc handler for arm64"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("arch/aarch64/images.yaml"),
        "{}",
        r.stderr
    );
    // Nothing ran: the refusal comes before the first step.
    assert!(!ws.path().join("out").exists());
}
