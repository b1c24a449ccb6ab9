//! examples/appliance, end to end: a Debian root file system with a
//! docker-compose component (one service built by Strata, one pulled from a
//! local registry by digest), made into an ext4 root partition beside a FAT
//! boot partition on an MBR disk image (no container, no root), bundled
//! with a flash script, flashed onto a loop device and booted by a fresh
//! dockerd with no registry reachable; and the services' .deb.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::docker::{Dockerd, Registry, docker_available, mini_rootfs, runs};
use common::emulation::arm64_runs;
use common::{Ws, sh};

const GIT: &str = "git -c user.name=t -c user.email=t@example.com";

fn copy_example(ws: &Ws) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/appliance");
    sh(
        ws.path(),
        &format!("cp -a {}/. . && rm -rf out", src.display()),
    );
}

/// The pulled service's image: a mini root file system that sleeps.
fn agent_image(tag: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    mini_rootfs(&dir.path().join("root"));
    sh(
        dir.path(),
        &format!(
            "tar -C root -c . | docker import -c 'CMD [\"/bin/sleep\", \"1000000\"]' - {tag} >/dev/null"
        ),
    );
    tag.to_string()
}

/// What to release when the test ends, last first: containers, a daemon,
/// a mount, a loop device, whether the test passes or not.
#[derive(Default)]
struct Cleanup(Vec<Step>);

enum Step {
    Sh(String),
    Daemon(Dockerd),
}

impl Cleanup {
    fn sh(&mut self, cmd: String) {
        self.0.push(Step::Sh(cmd));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        while let Some(step) = self.0.pop() {
            match step {
                Step::Sh(cmd) => {
                    let _ = Command::new("sh").arg("-c").arg(cmd).status();
                }
                Step::Daemon(daemon) => drop(daemon),
            }
        }
    }
}

/// Flashes the bundle onto a loop device, checks what it wrote (an MBR
/// disk: the FAT boot partition read with mtools, the ext4 root with
/// e2fsprogs) and mounts the root partition (read-write, as a device boots
/// it); returns the mount point.
fn flash_and_mount(ws: &Ws, bundle: &Path, scratch: &Path, cleanup: &mut Cleanup) -> PathBuf {
    let backing = scratch.join("device.img");
    sh(scratch, &format!("truncate -s 400M {}", backing.display()));
    let device = sh(scratch, &format!("losetup -f --show {}", backing.display()))
        .trim()
        .to_string();
    cleanup.sh(format!("losetup -d {device}"));
    let flashed = sh(
        scratch,
        &format!("{} --quiet -- {device}", bundle.display()),
    );
    assert!(
        flashed.contains(&format!("verified: {device} holds the appliance image")),
        "{flashed}"
    );
    let table: serde_json::Value =
        serde_json::from_str(&sh(scratch, &format!("sfdisk --json {device}"))).unwrap();
    let parts = table["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(table["partitiontable"]["label"], "dos", "{table}");
    assert_eq!(
        (&parts[0]["type"], &parts[1]["type"]),
        (&"c".into(), &"83".into())
    );
    let sector = |p: &serde_json::Value, f: &str| p[f].as_u64().unwrap() * 512;
    assert_eq!(
        sh(
            scratch,
            &format!(
                "mtype -i {}@@{} ::/cmdline.txt",
                backing.display(),
                sector(&parts[0], "start")
            )
        ),
        ws.read("boot/cmdline.txt")
    );
    // The root partition as a device of its own (no partition scanning).
    let root = sh(
        scratch,
        &format!(
            "losetup -f --show -o {} --sizelimit {} {device}",
            sector(&parts[1], "start"),
            sector(&parts[1], "size")
        ),
    )
    .trim()
    .to_string();
    cleanup.sh(format!("losetup -d {root}"));
    sh(scratch, &format!("e2fsck -fn {root}"));
    let motd = sh(
        scratch,
        &format!("debugfs -R 'cat /etc/motd' {root} 2>/dev/null"),
    );
    assert_eq!(motd, ws.read("files/motd"));
    let mnt = scratch.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sh(scratch, &format!("mount {root} {}", mnt.display()));
    cleanup.sh(format!("umount {}", mnt.display()));
    mnt
}

/// A CycloneDX document's nested components, one line each (indented by
/// depth): `bom-ref: name version purl`, files left out.
fn nesting(components: &serde_json::Value, depth: usize) -> Vec<String> {
    let mut out = Vec::new();
    for c in components.as_array().into_iter().flatten() {
        if c["scope"] == "excluded" || c["properties"].is_null() {
            continue;
        }
        out.push(format!(
            "{}{}: {} {} {}",
            "  ".repeat(depth),
            c["bom-ref"].as_str().unwrap_or(""),
            c["name"].as_str().unwrap_or(""),
            c["version"].as_str().unwrap_or(""),
            c["purl"].as_str().unwrap_or("")
        ));
        out.extend(nesting(&c["components"], depth + 1));
    }
    out
}

/// The bom-refs of the lines `line` is nested in, innermost first.
fn ancestors(tree: &[String], line: usize) -> Vec<String> {
    let depth = |l: &str| l.len() - l.trim_start().len();
    let mut want = depth(&tree[line]);
    let mut out = Vec::new();
    for l in tree[..line].iter().rev() {
        if depth(l) < want {
            want = depth(l);
            out.push(l.trim_start().split(':').next().unwrap_or("").to_string());
        }
    }
    out
}

#[test]
fn the_appliance_is_built_flashed_and_starts_its_services_without_a_registry() {
    if !docker_available() {
        return;
    }
    // The pulled service, pushed to a local registry and pinned by digest.
    let registry = Registry::start(None);
    let agent = agent_image("strata-test/appliance-agent:1");
    let digest = registry.push(&agent, "appliance/agent", "1");
    let _ = Command::new("docker").args(["rmi", "-f", &agent]).output();
    let registry_host = registry.host();
    let agent_ref = format!("{registry_host}/appliance/agent@{digest}");

    let ws = Ws::new();
    copy_example(&ws);
    sh(
        ws.path(),
        &format!(
            "git init -q && {GIT} add -A && {GIT} commit -qm init && {GIT} tag -a v1.2.0 -m v1.2.0"
        ),
    );
    let vars = [
        "--var".to_string(),
        format!("registry={}", registry.host()),
        "--var".to_string(),
        format!("agent_digest={digest}"),
    ];
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    let r = ws.build_ok(&vars);
    assert!(r.executed().contains(&"bundle".to_string()));
    // From here on, no registry exists.
    drop(registry);
    assert!(
        ws.build_ok(&vars).executed().is_empty(),
        "a second build is a no-op"
    );

    // The rootfs: the components, and the compose file with the digest.
    let compose = ws.read("out/rootfs/etc/appliance/compose.yaml");
    assert!(
        compose.contains(&format!("image: {agent_ref}\n")),
        "{compose}"
    );
    assert!(compose.contains("image: appliance/web:1\n"), "{compose}");
    let repos = ws.read("out/rootfs/var/lib/docker/image/overlay2/repositories.json");
    assert!(repos.contains(&format!("\"{agent_ref}\"")), "{repos}");
    assert!(repos.contains("\"appliance/web:1\""), "{repos}");

    // The SBOM shipped with it nests the pulled service in the data-root in
    // the rootfs in the disk image in the flashing bundle, and names the
    // Debian packages of the rootfs; SHA256SUMS lists it.
    let cdx: serde_json::Value =
        serde_json::from_str(&ws.read("out/sbom/bundle.cdx.json")).unwrap();
    let tree = nesting(&cdx["components"], 0);
    eprintln!("the bundle's SBOM nests:\n{}", tree.join("\n"));
    let encoded_digest = digest.replace(':', "%3A");
    let agent_line = tree
        .iter()
        .position(|l| l.contains(&format!("pkg:oci/agent@{encoded_digest}")))
        .unwrap_or_else(|| panic!("the agent image is not nested:\n{}", tree.join("\n")));
    let ancestors = ancestors(&tree, agent_line);
    for outer in ["rootfs", "rootfs-tar", "disk", "flash-payload"] {
        assert!(
            ancestors.iter().any(|a| a == outer),
            "{outer} not around the agent: {ancestors:?}"
        );
    }
    assert!(
        tree.iter()
            .any(|l| l.contains("pkg:deb/debian/coreutils@9.1-1?arch=amd64")),
        "{}",
        tree.join("\n")
    );
    assert!(
        ws.read("out/sums/SHA256SUMS")
            .contains("sbom/bundle.spdx.json")
    );

    // The .deb: version from `git describe`, the services' files, the
    // postinst that loads, pulls and starts them.
    let deb = ws
        .path()
        .join("out/package/appliance-services_1.2.0_amd64.deb");
    let fields = sh(
        ws.path(),
        &format!(
            "dpkg-deb --field {} Package Version Architecture Depends",
            deb.display()
        ),
    );
    assert_eq!(
        fields,
        "Package: appliance-services\nVersion: 1.2.0\nArchitecture: amd64\nDepends: docker.io | docker-ce\n"
    );
    let info = sh(ws.path(), &format!("dpkg-deb -I {}", deb.display()));
    assert!(info.contains(" postinst"), "{info}");
    assert!(info.contains(" conffiles"), "{info}");
    let contents = sh(ws.path(), &format!("dpkg-deb -c {}", deb.display()));
    for (mode, path) in [
        ("-rw-r--r-- root/root", "./etc/appliance/compose.yaml"),
        ("-rwxr-xr-x root/root", "./usr/lib/appliance/compose"),
        (
            "-rw-r--r-- root/root",
            "./lib/systemd/system/appliance.service",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/share/appliance/images/web.tar",
        ),
    ] {
        assert!(
            contents
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(path)),
            "{path}: {contents}"
        );
    }
    let control = ws.path().join("control");
    sh(
        ws.path(),
        &format!("dpkg-deb -e {} {}", deb.display(), control.display()),
    );
    // The postinst, with a `docker` that has the compose plugin and then
    // one that lacks it (docker-compose takes over).
    let postinst = |plugin: bool| -> String {
        let stubs = tempfile::tempdir().unwrap();
        let log = stubs.path().join("log");
        let version_status = if plugin { 0 } else { 1 };
        std::fs::write(
            stubs.path().join("docker"),
            format!(
                "#!/bin/sh\necho \"docker $*\" >> {log}\n[ \"$1 $2\" = \"compose version\" ] && exit {version_status}\nexit 0\n",
                log = log.display()
            ),
        )
        .unwrap();
        std::fs::write(
            stubs.path().join("docker-compose"),
            format!(
                "#!/bin/sh\necho \"docker-compose $*\" >> {}\n",
                log.display()
            ),
        )
        .unwrap();
        sh(stubs.path(), "chmod +x docker docker-compose");
        sh(
            stubs.path(),
            &format!(
                "PATH={}:/usr/bin:/bin sh {}/postinst configure",
                stubs.path().display(),
                control.display()
            ),
        );
        std::fs::read_to_string(log).unwrap()
    };
    let f = "-p appliance -f /etc/appliance/compose.yaml";
    assert_eq!(
        postinst(true),
        format!(
            "docker load -i /usr/share/appliance/images/web.tar\n\
             docker compose version\ndocker compose {f} pull --ignore-pull-failures\n\
             docker compose version\ndocker compose {f} up -d\n"
        )
    );
    assert_eq!(
        postinst(false),
        format!(
            "docker load -i /usr/share/appliance/images/web.tar\n\
             docker compose version\ndocker-compose {f} pull --ignore-pull-failures\n\
             docker compose version\ndocker-compose {f} up -d\n"
        )
    );

    // The bundle verifies itself, and a corrupted copy is refused.
    let bundle = ws.path().join("out/bundle/appliance-flash.run");
    let check = sh(ws.path(), &format!("{} --check", bundle.display()));
    assert!(check.contains("intact"), "{check}");
    let corrupt = ws.path().join("corrupt.run");
    std::fs::copy(&bundle, &corrupt).unwrap();
    let mut bytes = std::fs::read(&corrupt).unwrap();
    let at = bytes.len() - 1000;
    bytes[at] ^= 0xff;
    std::fs::write(&corrupt, bytes).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let refused_file = scratch.path().join("refused.img");
    let out = Command::new("sh")
        .arg(&corrupt)
        .args(["--", refused_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a corrupted bundle ran");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("corrupt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!refused_file.exists(), "a corrupted bundle wrote its image");

    // Flashing onto a loop device gives a clean file system with the files.
    // (`run`, the booted dockerd's folder, outlives the cleanup.)
    let run = tempfile::Builder::new()
        .prefix("strata-appl")
        .tempdir()
        .unwrap();
    let mut cleanup = Cleanup::default();
    let mnt = flash_and_mount(&ws, &bundle, scratch.path(), &mut cleanup);
    let listing = sh(
        &mnt,
        "stat -c '%n %a %u:%g %F' etc/appliance/compose.yaml etc/appliance/conf.d/appliance.conf \
         usr/lib/appliance/compose etc/systemd/system/appliance.service \
         etc/systemd/system/multi-user.target.wants/appliance.service bin/sh",
    );
    assert_eq!(
        listing,
        "etc/appliance/compose.yaml 644 0:0 regular file\n\
         etc/appliance/conf.d/appliance.conf 644 0:0 regular file\n\
         usr/lib/appliance/compose 755 0:0 regular file\n\
         etc/systemd/system/appliance.service 644 0:0 regular file\n\
         etc/systemd/system/multi-user.target.wants/appliance.service 777 0:0 symbolic link\n\
         bin/sh 777 0:0 symbolic link\n"
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/appliance/compose.yaml")).unwrap(),
        compose
    );

    // A fresh dockerd on the flashed data-root, with no network: compose
    // starts both services from what is preloaded, pulling nothing.
    let daemon = Dockerd::start(&mnt.join("var/lib/docker"), run.path());
    let host = daemon.host.clone();
    cleanup.0.push(Step::Daemon(daemon));
    let compose_file = mnt.join("etc/appliance/compose.yaml");
    let compose_cmd = format!(
        "DOCKER_HOST={host} docker-compose -p appliance -f {}",
        compose_file.display()
    );
    cleanup.sh(format!("{compose_cmd} down -t 1"));
    sh(run.path(), &format!("{compose_cmd} up -d"));
    let agent_inspect = sh(
        run.path(),
        &format!("docker -H {host} image inspect --format '{{{{json .RepoDigests}}}}' {agent_ref}"),
    );
    assert!(agent_inspect.contains(&agent_ref), "{agent_inspect}");
    let page = sh(
        run.path(),
        &format!(
            "docker -H {host} exec appliance_web_1 /bin/busybox wget -qO- http://127.0.0.1:8080/"
        ),
    );
    assert_eq!(page, ws.read("www/index.html"));
    let running = sh(
        run.path(),
        &format!(
            "docker -H {host} ps --filter status=running --format '{{{{.Names}}}} {{{{.Image}}}}' | sort"
        ),
    );
    assert_eq!(
        running,
        format!(
            "appliance_agent_1 {registry_host}/appliance/agent\nappliance_web_1 appliance/web:1\n"
        ),
    );
}

/// The pulled service's image for arm64: libc6 and busybox from the
/// example's own arm64 lock, made an image by Strata in a workspace beside
/// the example's (sharing its store) and loaded into the engine. Built-in
/// rules only: nothing here runs under emulation.
fn arm64_agent_image(ws: &Ws, tag: &str) -> String {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/appliance");
    let build = std::fs::read_to_string(example.join("BUILD.yaml")).unwrap();
    let digest = build
        .lines()
        .find_map(|l| l.trim().strip_prefix("arm64_debs_digest: "))
        .expect("BUILD.yaml declares arm64_debs_digest");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        example.join("packages-aarch64.yaml"),
        dir.path().join("packages.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("BUILD.yaml"),
        format!(
            "vars:\n  SOURCE_DATE_EPOCH: \"1700000000\"\n  arm64_debs_digest: {digest}\n\
             include: [packages.yaml]\n\
             targets:\n\
             \x20 agent-root: {{rule: rootfs, layers: [{{from: deb-libc6}}, {{from: deb-busybox}}]}}\n\
             \x20 agent-image:\n\
             \x20   rule: image\n\
             \x20   from: agent-root\n\
             \x20   platform: linux/arm64\n\
             \x20   tag: {tag}\n\
             \x20   config: {{entrypoint: [/bin/busybox, sleep, \"1000000\"]}}\n"
        ),
    )
    .unwrap();
    let out = ws
        .cmd(&["build", "agent-image"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the arm64 agent image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    sh(
        dir.path(),
        "tar -C out/agent-image -c . | docker load >/dev/null",
    );
    tag.to_string()
}

/// The ELF machine of a program (`e_machine`, bytes 18-19): 183 is
/// aarch64, 62 x86-64.
fn elf_machine(path: &Path) -> u16 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..4], b"\x7fELF", "{} is not ELF", path.display());
    u16::from_le_bytes([bytes[18], bytes[19]])
}

/// The architecture in an image layout's (or docker-archive's) config.
fn layout_architecture(dir: &Path) -> String {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let config = manifest[0]["Config"].as_str().unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(config)).unwrap()).unwrap();
    format!(
        "{}/{}",
        config["os"].as_str().unwrap(),
        config["architecture"].as_str().unwrap()
    )
}

const AARCH64: u16 = 183;

#[test]
fn the_arm64_appliance_is_built_from_arm64_packages_without_emulation_and_runs_under_it() {
    if !docker_available() {
        return;
    }
    let ws = Ws::new();
    copy_example(&ws);
    sh(
        ws.path(),
        &format!(
            "git init -q && {GIT} add -A && {GIT} commit -qm init && {GIT} tag -a v1.2.0 -m v1.2.0"
        ),
    );
    // The pulled service, for arm64, pushed to a local registry and pinned
    // by digest.
    let registry = Registry::start(None);
    let agent = arm64_agent_image(&ws, "strata-test/appliance-agent:arm64");
    let digest = registry.push(&agent, "appliance/agent", "1");
    let _ = Command::new("docker").args(["rmi", "-f", &agent]).output();
    let registry_host = registry.host();
    let agent_ref = format!("{registry_host}/appliance/agent@{digest}");

    let vars = [
        "--var".to_string(),
        "arch=aarch64".to_string(),
        "--var".to_string(),
        format!("registry={registry_host}"),
        "--var".to_string(),
        format!("agent_digest={digest}"),
    ];
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    let r = ws.build_ok(&vars);
    assert!(r.executed().contains(&"bundle".to_string()));
    drop(registry);
    assert!(
        ws.build_ok(&vars).executed().is_empty(),
        "a second build is a no-op"
    );
    // Nothing in the build ran under emulation: no step runs in a
    // container (the disk image's tools are this machine's, in the
    // sandbox), the data-root's dockerd is this machine's, and loading
    // runs no image's programs.
    let manifest = ws.run(&["manifest"]);
    assert_eq!(manifest.code, 0, "{}", manifest.stderr);
    assert!(!manifest.stdout.contains("emulated"), "{}", manifest.stdout);

    // The rootfs holds arm64 programs from the arm64 packages, which run
    // under qemu-user (called directly, so with or without a binfmt_misc
    // handler), their libraries found in the rootfs.
    if !runs(
        "qemu-aarch64-static",
        &["--version"],
        "qemu-aarch64-static is missing (scripts/binfmt-up.sh installs qemu-user-static)",
    ) {
        return;
    }
    let rootfs = ws.path().join("out/rootfs");
    for program in [
        "bin/busybox",
        "bin/uname",
        "sbin/mke2fs",
        "lib/systemd/systemd",
    ] {
        assert_eq!(elf_machine(&rootfs.join(program)), AARCH64, "{program}");
    }
    let emulated = |args: &str| {
        sh(
            ws.path(),
            &format!(
                "qemu-aarch64-static -L {r} {r}/{args}",
                r = rootfs.display()
            ),
        )
    };
    assert_eq!(emulated("bin/uname -m"), "aarch64\n");
    assert_eq!(emulated("bin/busybox uname -m"), "aarch64\n");
    assert_eq!(emulated("bin/dash -c 'echo $((6 * 7))'"), "42\n");

    // The .deb is for arm64, and so is the web image it carries.
    let deb = ws
        .path()
        .join("out/package/appliance-services_1.2.0_arm64.deb");
    let fields = sh(
        ws.path(),
        &format!(
            "dpkg-deb --field {} Package Version Architecture",
            deb.display()
        ),
    );
    assert_eq!(
        fields,
        "Package: appliance-services\nVersion: 1.2.0\nArchitecture: arm64\n"
    );
    let unpacked = ws.path().join("deb-data");
    sh(
        ws.path(),
        &format!(
            "dpkg-deb -x {} {u} && mkdir {u}/web && tar -C {u}/web -xf {u}/usr/share/appliance/images/web.tar",
            deb.display(),
            u = unpacked.display()
        ),
    );
    assert_eq!(layout_architecture(&unpacked.join("web")), "linux/arm64");

    // The bundle, flashed: the same image the rootfs made, whose data-root
    // a dockerd on this machine starts the services from, emulated (through
    // the binfmt_misc handler, which containers need).
    if !arm64_runs() {
        return;
    }
    let bundle = ws.path().join("out/bundle/appliance-flash.run");
    let check = sh(ws.path(), &format!("{} --check", bundle.display()));
    assert!(check.contains("intact"), "{check}");
    let scratch = tempfile::tempdir().unwrap();
    let run = tempfile::Builder::new()
        .prefix("strata-appl")
        .tempdir()
        .unwrap();
    let mut cleanup = Cleanup::default();
    let mnt = flash_and_mount(&ws, &bundle, scratch.path(), &mut cleanup);
    assert_eq!(elf_machine(&mnt.join("bin/busybox")), AARCH64);
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/appliance/compose.yaml")).unwrap(),
        ws.read("out/rootfs/etc/appliance/compose.yaml")
    );
    let daemon = Dockerd::start(&mnt.join("var/lib/docker"), run.path());
    let host = daemon.host.clone();
    cleanup.0.push(Step::Daemon(daemon));
    let platforms = sh(
        run.path(),
        &format!(
            "docker -H {host} image inspect --format '{{{{.Os}}}}/{{{{.Architecture}}}}' appliance/web:1 {agent_ref}"
        ),
    );
    assert_eq!(platforms, "linux/arm64\nlinux/arm64\n");
    let docker_run = format!("docker -H {host} run --platform linux/arm64 --network none");
    assert_eq!(
        sh(
            run.path(),
            &format!("{docker_run} --rm --entrypoint /bin/busybox appliance/web:1 uname -m")
        ),
        "aarch64\n"
    );
    assert_eq!(
        sh(
            run.path(),
            &format!("{docker_run} --rm --entrypoint /bin/busybox {agent_ref} uname -m")
        ),
        "aarch64\n"
    );
    cleanup.sh(format!("docker -H {host} rm -f appliance-web >/dev/null"));
    sh(
        run.path(),
        &format!("{docker_run} -d --name appliance-web appliance/web:1"),
    );
    // httpd starts under emulation: ask until it answers.
    let page = sh(
        run.path(),
        &format!(
            "for i in $(seq 50); do docker -H {host} exec appliance-web /bin/busybox wget -qO- http://127.0.0.1:8080/ && exit 0; sleep 0.2; done; exit 1"
        ),
    );
    assert_eq!(page, ws.read("www/index.html"));
}

/// The example's compose file is checked at load time, with the place of
/// each mistake (no Docker needed).
#[test]
fn compose_mistakes_are_reported_in_the_compose_file() {
    let ws = Ws::new();
    copy_example(&ws);
    sh(
        ws.path(),
        &format!("git init -q && {GIT} add -A && {GIT} commit -qm init"),
    );
    let digest = format!("sha256:{}", "a".repeat(64));
    let var = format!("agent_digest={digest}");
    let args = ["--var", var.as_str()];

    // A tag instead of a digest: not reproducible, refused.
    let compose = ws.read("compose.yaml");
    ws.write(
        "compose.yaml",
        &compose.replace("${registry}/appliance/agent@${agent_digest}", "redis:7"),
    );
    let r = ws.build_fails(&args, 2);
    assert!(
        r.stderr.contains(
            "the image `redis:7` of service `agent` is neither built by Strata nor pinned by digest"
        ),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("compose.yaml:14:12"), "{}", r.stderr);

    // A service with no image.
    ws.write(
        "compose.yaml",
        &compose.replace(
            "    image: ${registry}/appliance/agent@${agent_digest}\n",
            "",
        ),
    );
    let r = ws.build_fails(&args, 2);
    assert!(
        r.stderr.contains("service `agent` has no `image:`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("compose.yaml:12:3"), "{}", r.stderr);

    // An unknown target building a service, in the included component.
    ws.write("compose.yaml", &compose);
    let component = ws.read("components/50-compose.yaml");
    ws.write(
        "components/50-compose.yaml",
        &component.replace("{web: web-image}", "{web: web-imag}"),
    );
    let r = ws.build_fails(&args, 2);
    assert!(
        r.stderr
            .contains("service `web` of `rootfs` is built by unknown target `web-imag`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("components/50-compose.yaml:"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("did you mean `web-image`?"),
        "{}",
        r.stderr
    );

    // The image target switched off: the service cannot do without it.
    ws.write("components/50-compose.yaml", &component);
    let platform = ws.read("platform-x86_64.yaml");
    ws.write(
        "platform-x86_64.yaml",
        &platform.replace(
            "  web-image:\n    rule: image\n",
            "  web-image:\n    when: \"${with_web}\"\n    rule: image\n",
        ),
    );
    let r = ws.build_fails(&["--var", var.as_str(), "--var", "with_web=false"], 2);
    assert!(
        r.stderr
            .contains("service `web` of `rootfs` is built by `web-image`, which is switched off"),
        "{}",
        r.stderr
    );
    ws.write("platform-x86_64.yaml", &platform);

    // A data-root serves one device: the component's platform and the
    // images built for it must agree, and it must be a platform.
    ws.write(
        "components/50-compose.yaml",
        &format!("{component}platform: linux/amd64\n"),
    );
    let r = ws.build_fails(&["--var", var.as_str(), "--var", "arch=aarch64"], 2);
    assert!(
        r.stderr.contains(
            "the docker-compose component of `rootfs` is for linux/amd64, but its service `web` runs `web-image`, an image for linux/arm64"
        ),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("components/50-compose.yaml:6:15"),
        "{}",
        r.stderr
    );
    ws.write(
        "components/50-compose.yaml",
        &format!("{component}platform: aarch64\n"),
    );
    let r = ws.build_fails(&["--var", var.as_str(), "--var", "arch=aarch64"], 2);
    assert!(
        r.stderr
            .contains("`aarch64` is not a platform such as `linux/amd64`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("components/50-compose.yaml:8:11"),
        "{}",
        r.stderr
    );
    ws.write(
        "compose.yaml",
        &format!("{compose}  tools:\n    image: appliance/tools:1\n"),
    );
    let build = ws.read("BUILD.yaml");
    ws.write(
        "BUILD.yaml",
        &format!(
            "{build}  tools-image:\n    rule: image\n    from: web-root\n    platform: linux/amd64\n    tag: appliance/tools:1\n"
        ),
    );
    ws.write(
        "components/50-compose.yaml",
        &component.replace("{web: web-image}", "{web: web-image, tools: tools-image}"),
    );
    let r = ws.build_fails(&["--var", var.as_str(), "--var", "arch=aarch64"], 2);
    assert!(
        r.stderr.contains(
            "service `tools` of `rootfs` runs `tools-image`, an image for linux/amd64, but service `web` runs `web-image`, for linux/arm64"
        ),
        "{}",
        r.stderr
    );
    ws.write("compose.yaml", &compose);
    ws.write("components/50-compose.yaml", &component);
    ws.write("BUILD.yaml", &build);

    // Without the digest variable, the compose file says what is missing.
    let r = ws.build_fails(&[], 2);
    assert!(
        r.stderr.contains("unknown variable `agent_digest`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("compose.yaml:14:"), "{}", r.stderr);
}

/// An architecture the example has no files for is a configuration error
/// at the include that names it (no Docker needed).
#[test]
fn an_unknown_architecture_is_refused_where_it_is_included() {
    let ws = Ws::new();
    copy_example(&ws);
    sh(
        ws.path(),
        &format!("git init -q && {GIT} add -A && {GIT} commit -qm init"),
    );
    let digest = format!("agent_digest=sha256:{}", "a".repeat(64));
    let r = ws.build_fails(&["--var", "arch=armv7", "--var", digest.as_str()], 2);
    assert!(
        r.stderr
            .contains("include pattern `packages-armv7.yaml` matches no file"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("BUILD.yaml:33:"), "{}", r.stderr);
    // Nothing ran: the build stopped while loading.
    assert!(!r.stderr.contains("] executed"), "{}", r.stderr);
}

/// The two hand-written architecture files stay twins: they differ only in
/// the architecture's names, so a change made to one is made to both.
#[test]
fn the_platform_files_differ_only_in_the_architecture() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/appliance");
    // Past the header, which names both files.
    let read = |arch: &str| {
        let text = std::fs::read_to_string(example.join(format!("platform-{arch}.yaml"))).unwrap();
        text[text.find("\ntargets:\n").expect("a targets: line")..].to_string()
    };
    let arm64 = read("aarch64");
    assert!(arm64.contains("platform: linux/arm64\n"), "{arm64}");
    assert!(arm64.contains("Architecture: arm64\n"), "{arm64}");
    assert_eq!(
        read("x86_64")
            .replace("x86_64", "aarch64")
            .replace("amd64", "arm64"),
        arm64
    );
}
