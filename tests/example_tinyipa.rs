//! examples/tinyipa, end to end: a TinyIPA-style network-boot ramdisk made
//! from pinned Debian 12 packages and sources, with ipmitool and lshw
//! compiled in a build image, booted under qemu (software emulation): init
//! runs, the tools print their versions, the guest powers off; for x86_64
//! also as `tinyipa-x86_64.iso` (the `iso` rule, isolinux from Debian)
//! booted from `-cdrom` to the same checks. The same for aarch64, its tools cross-compiled on an amd64 build image and booted on
//! qemu's `virt` machine. Also: the `require_*` variables shape the graph,
//! and arm64 build images are refused before anything runs on a machine
//! that cannot run them. Needs a Docker Engine, Debian's archive,
//! qemu-system-x86_64, qemu-system-aarch64 and xorriso (`scripts/test.sh`
//! installs them).

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

/// Whether `qemu` (a qemu-system-* program) can be run; in CI
/// (STRATA_REQUIRE_DOCKER set, as for every container test) its absence
/// fails the test.
fn qemu_available(qemu: &str, package: &str) -> bool {
    common::docker::runs(
        qemu,
        &["--version"],
        &format!("{qemu} is missing (scripts/test.sh installs {package})"),
    )
}

/// The machine each architecture's ramdisk boots on, as the README's boot
/// commands give it: the qemu program, its machine arguments and the serial
/// console's name.
fn machine(arch: &str) -> (&'static str, &'static [&'static str], &'static str) {
    match arch {
        "x86_64" => ("qemu-system-x86_64", &[], "ttyS0"),
        "aarch64" => (
            "qemu-system-aarch64",
            &["-M", "virt", "-cpu", "cortex-a57"],
            "ttyAMA0",
        ),
        _ => panic!("no machine for {arch}"),
    }
}

/// Boots `kernel` with `initrd` as the TinyIPA boot command does (serial
/// console, no reboot: a powered-off or panicking guest ends qemu) and
/// returns the serial console and qemu's exit status, killing qemu after
/// `limit`.
fn boot(arch: &str, kernel: &Path, initrd: &Path, limit: Duration) -> (String, Option<i32>) {
    let (qemu, machine, console) = machine(arch);
    let mut cmd = Command::new(qemu);
    cmd.args(machine)
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-nographic", "-no-reboot", "-m", "512"])
        .arg("-append")
        .arg(format!("console={console} panic=-1"));
    run_qemu(cmd, limit)
}

/// Boots a PC from a CD image (its El Torito boot loader, which passes the
/// console to the kernel itself).
fn boot_cdrom(iso: &Path, limit: Duration) -> (String, Option<i32>) {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.arg("-cdrom")
        .arg(iso)
        .args(["-nographic", "-no-reboot", "-m", "512"]);
    run_qemu(cmd, limit)
}

/// Runs qemu until it exits or `limit` passes; its console and status.
fn run_qemu(mut cmd: Command, limit: Duration) -> (String, Option<i32>) {
    let qemu = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{qemu} starts: {e}"));
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

/// What a ramdisk of each architecture holds: its dynamic loader, its libc
/// and the ELF machine number of its programs (EM_X86_64, EM_AARCH64).
fn expected(arch: &str) -> (&'static str, &'static str, u16) {
    match arch {
        "x86_64" => (
            "lib64/ld-linux-x86-64.so.2",
            "lib/x86_64-linux-gnu/libc.so.6",
            62,
        ),
        "aarch64" => (
            "lib/ld-linux-aarch64.so.1",
            "lib/aarch64-linux-gnu/libc.so.6",
            183,
        ),
        _ => panic!("nothing expected for {arch}"),
    }
}

/// The ELF machine (e_machine, little-endian at offset 18) of `path` in the
/// gzipped cpio `ramdisk`.
fn elf_machine(ws: &Ws, ramdisk: &str, path: &str) -> u16 {
    let out = sh(
        ws.path(),
        &format!(
            "gzip -dc {ramdisk} | cpio -i --quiet --to-stdout {path} | head -c 20 | od -An -tx1"
        ),
    );
    let bytes: Vec<u8> = out
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    assert_eq!(&bytes[..4], b"\x7fELF", "{path} is not an ELF file: {out}");
    u16::from_le_bytes([bytes[18], bytes[19]])
}

/// The console of a boot that reached init, ran each tool and powered
/// off, qemu exiting on its own.
fn assert_reaches_its_tools(arch: &str, console: &str, status: Option<i32>) {
    assert!(
        console.contains(&format!("tinyipa: init running on {arch}")),
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
}

/// Builds the example for `arch` as CI can afford it (no qemu-img) and
/// checks the Packer guide's output set, what the ramdisk holds, and that
/// it boots to its tools and powers off.
fn builds_and_boots(arch: &str) -> Ws {
    let ws = Ws::new();
    copy_example(&ws);
    let mut args = CI_BUILD.to_vec();
    let arch_var = format!("arch={arch}");
    args.extend(["--var", &arch_var]);
    let r = ws.build_ok(&args);
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

    // The outputs of the Packer guide, named after the architecture and
    // branch_path, in output_dir: the default targets only.
    let base = format!("tinyipa-{arch}-master");
    let placed = sh(ws.path(), "ls dist");
    assert_eq!(placed, "bundle\nchecksums\nramdisk\nsbom\nvmlinuz\n");
    let shipped = [
        format!("ramdisk/{base}.gz"),
        format!("vmlinuz/{base}.vmlinuz"),
        format!("bundle/{base}.tar.gz"),
    ];
    let gz = ws.path().join("dist").join(&shipped[0]);
    let kernel = ws.path().join("dist").join(&shipped[1]);
    assert!(gz.is_file() && kernel.is_file());
    let listing = sh(ws.path(), &format!("tar -tzf dist/{} | sort", shipped[2]));
    assert_eq!(listing, format!("{base}.gz\n{base}.vmlinuz\n"));
    // The checksums are those of the files shipped: in SHA256SUMS, one
    // `.sha256` per file, and build-manifest.txt.
    let sums = ws.read("dist/checksums/SHA256SUMS");
    let manifest = ws.read("dist/checksums/build-manifest.txt");
    for file in &shipped {
        let actual = sh(ws.path(), &format!("sha256sum dist/{file} | cut -d' ' -f1"));
        let actual = actual.trim();
        assert!(
            sums.contains(actual),
            "{file} ({actual}) not in SHA256SUMS:\n{sums}"
        );
        let one = ws.read(&format!("dist/checksums/{file}.sha256"));
        let name = Path::new(file).file_name().unwrap().to_str().unwrap();
        assert_eq!(one, format!("{actual}  {name}\n"), "{file}.sha256");
        assert!(
            manifest.contains(&format!("{file}  ")) && manifest.contains(actual),
            "{file} not in build-manifest.txt:\n{manifest}"
        );
    }

    // The SBOM shipped beside them names the Debian packages in the bundle
    // (busybox-static in the ramdisk, the kernel's package in vmlinuz) with
    // their versions and the tools compiled from Debian source packages;
    // it is listed in SHA256SUMS.
    let deb_arch = if arch == "x86_64" { "amd64" } else { "arm64" };
    let spdx: serde_json::Value =
        serde_json::from_str(&ws.read("dist/sbom/bundle.spdx.json")).unwrap();
    let packages = spdx["packages"].as_array().unwrap();
    let package = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in the SBOM"))
    };
    let busybox = package("busybox-static");
    assert_eq!(busybox["versionInfo"], "1:1.35.0-4+deb12u1+b1");
    assert_eq!(
        busybox["externalRefs"][0]["referenceLocator"],
        format!("pkg:deb/debian/busybox-static@1%3A1.35.0-4%2Bdeb12u1%2Bb1?arch={deb_arch}")
    );
    assert!(
        busybox["downloadLocation"]
            .as_str()
            .unwrap()
            .starts_with("http://deb.debian.org/debian/pool/main/b/busybox/"),
        "{busybox}"
    );
    assert!(
        package("ipmitool")["sourceInfo"]
            .as_str()
            .unwrap()
            .starts_with("compiled from Debian source package ipmitool "),
        "{}",
        package("ipmitool")
    );
    assert!(sums.contains("sbom/bundle.spdx.json"), "{sums}");
    let cdx: serde_json::Value =
        serde_json::from_str(&ws.read("dist/sbom/bundle.cdx.json")).unwrap();
    let nested = cdx.to_string();
    assert!(
        nested.contains("\"bom-ref\":\"runtime-deb-busybox-static\""),
        "{nested}"
    );

    // The ramdisk holds busybox, init, the tools and their libraries (the
    // architecture's own), and no qemu-img.
    let ramdisk = format!("dist/{}", shipped[0]);
    let files = sh(
        ws.path(),
        &format!("gzip -dc {ramdisk} | cpio -it --quiet | sort"),
    );
    let (loader, libc, machine_number) = expected(arch);
    for f in [
        "init",
        "bin/busybox",
        "dev/console",
        "usr/bin/ipmitool",
        "usr/sbin/lshw",
        loader,
        libc,
    ] {
        assert!(
            files.lines().any(|l| l == f),
            "{f} not in the ramdisk:\n{files}"
        );
    }
    assert!(!files.contains("qemu-img"), "{files}");
    for program in ["bin/busybox", "usr/bin/ipmitool", "usr/sbin/lshw", libc] {
        assert_eq!(
            elf_machine(&ws, &ramdisk, program),
            machine_number,
            "{program} is not a {arch} program"
        );
    }

    // It boots: init runs, each tool prints its version, the guest powers
    // off and qemu exits on its own.
    let (console, status) = boot(arch, &kernel, &gz, Duration::from_secs(300));
    assert_reaches_its_tools(arch, &console, status);

    // Nothing changed: nothing runs.
    let again = ws.build_ok(&args);
    assert!(again.executed().is_empty(), "{:?}", again.executed());
    ws
}

#[test]
fn the_ramdisk_builds_and_boots_to_its_tools_and_powers_off() {
    let (qemu, _, _) = machine("x86_64");
    if !docker_available() || !qemu_available(qemu, "qemu-system-x86") {
        return;
    }
    let ws = builds_and_boots("x86_64");

    // The same kernel and ramdisk as a CD image (`iso`: isolinux from
    // Debian, El Torito) boot to the same checks from `-cdrom`.
    let mut args = CI_BUILD.to_vec();
    args.push("iso");
    let r = ws.build_ok(&args);
    assert_eq!(r.json()["targets"]["iso"]["status"], "executed");
    let iso = ws.path().join("dist/iso/tinyipa-x86_64-master.iso");
    let torito = sh(
        ws.path(),
        &format!(
            "xorriso -no_rc -indev {} -report_el_torito plain",
            iso.display()
        ),
    );
    assert!(
        torito.contains("El Torito img path :   1  /isolinux/isolinux.bin"),
        "{torito}"
    );
    let (console, status) = boot_cdrom(&iso, Duration::from_secs(300));
    assert!(
        console.contains("ISOLINUX"),
        "isolinux did not start:\n{console}"
    );
    assert_reaches_its_tools("x86_64", &console, status);
}

/// The platform (`os/architecture`) in the config of the OCI image layout
/// placed at `dir`.
fn image_platform(ws: &Ws, dir: &str) -> String {
    let blob = |digest: &str| -> serde_json::Value {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        serde_json::from_str(&ws.read(&format!("{dir}/blobs/sha256/{hex}"))).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_str(&ws.read(&format!("{dir}/index.json"))).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    format!(
        "{}/{}",
        config["os"].as_str().unwrap(),
        config["architecture"].as_str().unwrap()
    )
}

#[test]
fn the_aarch64_ramdisk_is_cross_compiled_and_boots_on_the_virt_machine() {
    let (qemu, _, _) = machine("aarch64");
    if !docker_available() || !qemu_available(qemu, "qemu-system-arm") {
        return;
    }
    let ws = builds_and_boots("aarch64");
    // Its tools (arm64 programs, checked above) were compiled on an amd64
    // build image: Debian's cross toolchain, nothing emulated. The
    // manifest of the build says how each step's programs ran.
    let r = ws.run(&["manifest", "--json", "ipmitool", "lshw"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let manifest = r.json();
    for tool in ["ipmitool", "lshw"] {
        let props = &manifest["targets"][tool]["inputs"]["properties"];
        assert_eq!(props["platform"], "linux/amd64", "{tool}: {props}");
        assert!(props["emulator"].is_null(), "{tool} was emulated: {props}");
    }
    let mut args = CI_BUILD.to_vec();
    args.extend(["--var", "arch=aarch64", "build-image"]);
    let r = ws.build_ok(&args);
    assert!(r.executed().is_empty(), "{:?}", r.executed());
    assert_eq!(image_platform(&ws, "dist/build-image"), "linux/amd64");
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
fn the_architectures_pick_their_files_and_an_unknown_one_is_refused() {
    let ws = Ws::new();
    copy_example(&ws);
    // aarch64 on the default x86_64 build images: the cross toolchain's
    // packages on top of x86_64's build image, arm64 runtime and kernel.
    let cross = graph(&ws, &["--var", "arch=aarch64"]);
    for name in [
        "cross-debs",
        "cross-base-rootfs",
        "cross-build-rootfs",
        "build-image",
    ] {
        assert!(cross.iter().any(|n| n == name), "{name} in {cross:?}");
    }
    let x86 = graph(&ws, &[]);
    assert!(!x86.iter().any(|n| n.starts_with("cross-")), "{x86:?}");
    assert!(
        ws.read("arch/aarch64/kernel-packages.yaml")
            .contains("_arm64.deb")
    );
    assert!(
        ws.read("arch/aarch64/on-x86_64/cross-packages.yaml")
            .contains("gcc-aarch64-linux-gnu_")
    );

    // An architecture the example has no files for is a configuration
    // error at the include that names it.
    let r = ws.run(&["graph", "--var", "arch=riscv64"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("`arch/riscv64/*.yaml` matches no file")
            && r.stderr.contains("BUILD.yaml:"),
        "{}",
        r.stderr
    );
    // So is an x86_64 ramdisk from arm64 build images (not provided).
    let r = ws.run(&["graph", "--var", "build_arch=aarch64"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("`arch/x86_64/on-aarch64/*.yaml` matches no file"),
        "{}",
        r.stderr
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
fn native_arm64_build_images_are_refused_without_an_emulator() {
    // Whatever this machine has registered, Strata sees no handler.
    let ws = Ws::new().without_emulators();
    copy_example(&ws);
    // `build_arch=aarch64` compiles in linux/arm64 images, from their own
    // package lock, instead of cross-compiling.
    let nodes = graph(
        &ws,
        &["--var", "arch=aarch64", "--var", "build_arch=aarch64"],
    );
    assert!(nodes.iter().any(|n| n == "build-image"), "{nodes:?}");
    assert!(!nodes.iter().any(|n| n.starts_with("cross-")), "{nodes:?}");
    assert!(
        ws.read("toolchains/aarch64/build-packages.yaml")
            .contains("_arm64.deb")
    );

    let r = ws.build_fails(&["--var", "arch=aarch64", "--var", "build_arch=aarch64"], 2);
    assert!(
        r.stderr.contains("an image for linux/arm64")
            && r.stderr.contains("no binfmt_misc handler for arm64"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("arch/aarch64/on-aarch64/images.yaml"),
        "{}",
        r.stderr
    );
    // Nothing ran: the refusal comes before the first step.
    assert!(!ws.path().join("out").exists());
}
