//! The `extract` rule on archives made by the system's `tar`, `dpkg-deb` and
//! Python's `tarfile` (which writes hostile names that tar refuses to).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::Ws;

fn tool(args: &[&str], dir: &Path) -> String {
    common::tool(dir, args)
}

/// Every path below `root` (files, folders, symlinks), relative, sorted.
fn listing(root: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.insert(rel);
            if e.file_type().unwrap().is_dir() {
                walk(base, &e.path(), out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// A source tree `src/pkg-1.0/` with an executable, a text file, a symlink
/// and a nested folder.
fn source_tree(ws: &Ws) {
    ws.write("src/pkg-1.0/bin/tool", "#!/bin/sh\necho tool\n")
        .write("src/pkg-1.0/README", "read me\n")
        .write("src/pkg-1.0/share/doc/notes.txt", "notes\n");
    let tool_path = ws.path().join("src/pkg-1.0/bin/tool");
    fs::set_permissions(&tool_path, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("bin/tool", ws.path().join("src/pkg-1.0/run")).unwrap();
}

#[test]
fn tarballs_made_by_tar_are_extracted_whatever_the_compression() {
    let ws = Ws::new();
    source_tree(&ws);
    for (flag, name) in [
        ("-czf", "pkg.tar.gz"),
        ("-cJf", "pkg.tar.xz"),
        ("-cjf", "pkg.tar.bz2"),
        ("--zstd -cf", "pkg.tar.zst"),
        ("-cf", "pkg.tar"),
    ] {
        tool(
            &[
                "sh",
                "-c",
                &format!("tar {flag} {name} --owner=0 --group=0 -C src pkg-1.0"),
            ],
            ws.path(),
        );
    }
    // The .xz one renamed: the format is read from the content.
    fs::rename(ws.path().join("pkg.tar.xz"), ws.path().join("pkg.bin")).unwrap();
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  gz:
    rule: extract
    srcs: ["pkg.tar.gz"]
    from: "srcs:pkg.tar.gz"
  xz:
    rule: extract
    srcs: ["pkg.bin"]
    from: "srcs:pkg.bin"
  bz2:
    rule: extract
    srcs: ["pkg.tar.bz2"]
    from: "srcs:pkg.tar.bz2"
  zst:
    rule: extract
    srcs: ["pkg.tar.zst"]
    from: "srcs:pkg.tar.zst"
  plain:
    rule: extract
    srcs: ["pkg.tar"]
    from: "srcs:pkg.tar"
  stripped:
    rule: extract
    srcs: ["pkg.tar.gz"]
    from: "srcs:pkg.tar.gz"
    strip_components: 1
    exclude: ["share/doc/**"]
    prefix: opt/pkg
  only-bin:
    rule: extract
    srcs: ["pkg.tar.gz"]
    from: "srcs:pkg.tar.gz"
    strip_components: 1
    include: ["bin"]
"#,
    );
    let r = ws.build_ok(&[]);
    assert_eq!(
        r.executed(),
        ["bz2", "gz", "only-bin", "plain", "stripped", "xz", "zst"]
    );
    let doc = r.json();
    let out = |t: &str| doc["targets"][t]["output"].as_str().unwrap().to_string();
    // Same entries, same tree, whatever the compression.
    for t in ["xz", "bz2", "zst", "plain"] {
        assert_eq!(out(t), out("gz"), "{t}");
    }
    let gz = ws.path().join("out/gz");
    assert_eq!(
        listing(&gz),
        [
            "pkg-1.0",
            "pkg-1.0/README",
            "pkg-1.0/bin",
            "pkg-1.0/bin/tool",
            "pkg-1.0/run",
            "pkg-1.0/share",
            "pkg-1.0/share/doc",
            "pkg-1.0/share/doc/notes.txt",
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(ws.read("out/gz/pkg-1.0/README"), "read me\n");
    let tool_meta = fs::metadata(gz.join("pkg-1.0/bin/tool")).unwrap();
    assert_ne!(tool_meta.permissions().mode() & 0o111, 0, "executable");
    assert_eq!(
        fs::read_link(gz.join("pkg-1.0/run")).unwrap(),
        Path::new("bin/tool")
    );
    // strip_components, exclude, prefix.
    assert_eq!(
        listing(&ws.path().join("out/stripped")),
        [
            "opt",
            "opt/pkg",
            "opt/pkg/README",
            "opt/pkg/bin",
            "opt/pkg/bin/tool",
            "opt/pkg/run",
            "opt/pkg/share",
            // `share/doc/**` is what is below the folder, not the folder.
            "opt/pkg/share/doc",
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(
        listing(&ws.path().join("out/only-bin")),
        ["bin", "bin/tool"].map(String::from).into()
    );
    // Nothing changed: everything is cached.
    let again = ws.build_ok(&[]);
    assert!(again.executed().is_empty(), "{}", again.stdout);
}

/// GNU tar leaves a FIFO's device fields empty (all NUL bytes); a FIFO is
/// metadata in the tree whatever the format wrote there.
#[test]
fn fifos_in_archives_made_by_tar_are_kept_as_metadata() {
    let ws = Ws::new();
    fs::create_dir_all(ws.path().join("src/run")).unwrap();
    ws.write("src/run/readme", "a fifo lives here\n");
    tool(&["mkfifo", "-m", "0600", "src/run/initctl"], ws.path());
    let mut yaml = String::from("targets:\n");
    for format in ["gnu", "posix", "ustar", "oldgnu"] {
        tool(
            &[
                "tar",
                &format!("--format={format}"),
                "--owner=0",
                "--group=0",
                "-cf",
                &format!("{format}.tar"),
                "-C",
                "src",
                "run",
            ],
            ws.path(),
        );
        yaml.push_str(&format!(
            "  {format}:\n    rule: extract\n    srcs: [\"{format}.tar\"]\n    from: \"srcs:{format}.tar\"\n"
        ));
    }
    ws.write("BUILD.yaml", &yaml);
    ws.build_ok(&[]);
    let r = ws.run(&["manifest", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    for format in ["gnu", "posix", "ustar", "oldgnu"] {
        let files = doc["targets"][format]["files"].as_array().unwrap();
        let fifo = files
            .iter()
            .find(|f| f["path"] == "run/initctl")
            .unwrap_or_else(|| panic!("{format}: no FIFO in {files:?}"));
        assert_eq!(fifo["type"], "fifo", "{format}: {fifo}");
        assert_eq!(fifo["mode"], "0600", "{format}: {fifo}");
        assert!(files.iter().any(|f| f["path"] == "run/readme"), "{format}");
    }
}

#[test]
fn an_archive_made_by_another_target_is_extracted() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  gen:
    rule: run
    cmd: "mkdir -p $TMPDIR/t/etc && echo hi > $TMPDIR/t/etc/motd && tar -C $TMPDIR/t -cJf $OUT/rootfs.tar.xz etc"
    outs: [rootfs.tar.xz]
  root:
    rule: extract
    from: "gen:rootfs.tar.xz"
    prefix: sysroot
"#,
    );
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["gen", "root"]);
    assert_eq!(ws.read("out/root/sysroot/etc/motd"), "hi\n");
}

/// A package tree for `dpkg-deb --build`.
fn deb_tree(ws: &Ws) {
    ws.write(
        "pkg/DEBIAN/control",
        "Package: hello\nVersion: 1.0\nArchitecture: all\nMaintainer: T <t@example.com>\nDescription: test\n",
    )
    .write("pkg/DEBIAN/postinst", "#!/bin/sh\nexit 0\n")
    .write("pkg/usr/bin/hello", "#!/bin/sh\necho hello\n")
    .write("pkg/usr/share/doc/hello/copyright", "(c)\n");
    for p in ["pkg/DEBIAN/postinst", "pkg/usr/bin/hello"] {
        fs::set_permissions(ws.path().join(p), fs::Permissions::from_mode(0o755)).unwrap();
    }
    for p in [
        "pkg",
        "pkg/DEBIAN",
        "pkg/usr",
        "pkg/usr/bin",
        "pkg/usr/share",
    ] {
        fs::set_permissions(ws.path().join(p), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn a_deb_built_by_dpkg_deb_matches_dpkg_deb_raw_extract() {
    let ws = Ws::new();
    deb_tree(&ws);
    tool(
        &[
            "dpkg-deb",
            "--root-owner-group",
            "-Zxz",
            "--build",
            "pkg",
            "hello.deb",
        ],
        ws.path(),
    );
    tool(&["dpkg-deb", "-R", "hello.deb", "reference"], ws.path());
    // The package tree itself must not be a source of the targets.
    fs::remove_dir_all(ws.path().join("pkg")).unwrap();
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  data:
    rule: extract
    srcs: ["hello.deb"]
    from: "srcs:hello.deb"
  full:
    rule: extract
    srcs: ["hello.deb"]
    from: "srcs:hello.deb"
    control: true
"#,
    );
    ws.build_ok(&[]);
    let reference = listing(&ws.path().join("reference"));
    assert_eq!(listing(&ws.path().join("out/full")), reference);
    let data: BTreeSet<String> = reference
        .into_iter()
        .filter(|p| !p.starts_with("DEBIAN"))
        .collect();
    assert_eq!(listing(&ws.path().join("out/data")), data);
    assert_eq!(
        ws.read("out/full/DEBIAN/control"),
        ws.read("reference/DEBIAN/control")
    );
    assert_eq!(ws.read("out/data/usr/bin/hello"), "#!/bin/sh\necho hello\n");
    // `control` on something that is not a .deb is an error of the target.
    tool(&["tar", "-czf", "plain.tgz", "reference"], ws.path());
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: extract\n    srcs: [plain.tgz]\n    from: \"srcs:plain.tgz\"\n    control: true\n",
    );
    let r = ws.build_fails(&[], 1);
    assert!(r.stderr.contains("not a .deb"), "{}", r.stderr);
}

#[test]
fn a_cached_deb_from_apt_matches_dpkg_deb_extract() {
    // Optional: only where apt has kept a package.
    let Some(deb) = fs::read_dir("/var/cache/apt/archives")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .min_by_key(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(u64::MAX))
    else {
        eprintln!("no .deb in /var/cache/apt/archives; skipped");
        return;
    };
    let ws = Ws::new();
    fs::copy(&deb, ws.path().join("real.deb")).unwrap();
    tool(&["dpkg-deb", "-x", "real.deb", "reference"], ws.path());
    ws.write(
        "BUILD.yaml",
        "targets:\n  real:\n    rule: extract\n    srcs: [real.deb]\n    from: \"srcs:real.deb\"\n",
    );
    ws.build_ok(&[]);
    assert_eq!(
        listing(&ws.path().join("out/real")),
        listing(&ws.path().join("reference"))
    );
}

/// Writes `name` with a Python `tarfile` script whose body uses `t` (the
/// open archive) and helpers `add(name, data)`, `link(name, target, kind)`.
fn python_tar(ws: &Ws, name: &str, mode: &str, body: &str) {
    let script = format!(
        r#"
import io, tarfile
t = tarfile.open({name:?}, {mode:?}, format=tarfile.GNU_FORMAT)
def add(name, data=b"x"):
    i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))
def link(name, target, kind):
    i = tarfile.TarInfo(name); i.type = kind; i.linkname = target; t.addfile(i)
{body}
t.close()
"#
    );
    tool(&["python3", "-c", &script], ws.path());
}

#[test]
fn hostile_archives_fail_the_build_and_write_nothing_outside_out() {
    let ws = Ws::new();
    // A folder outside the workspace that a symlink in the archive points at.
    let victim = tempfile::tempdir().unwrap();
    let victim_path = victim.path().to_str().unwrap().to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "dotdot",
            "add('ok.txt'); add('../../escaped.txt', b'pwned')".into(),
            "../../escaped.txt",
        ),
        (
            "symlink",
            format!(
                "link('evil', {victim_path:?}, tarfile.SYMTYPE); add('evil/passwd', b'root::0:0')"
            ),
            "evil/passwd",
        ),
        (
            "hardlink",
            "link('shadow', '/etc/shadow', tarfile.LNKTYPE)".into(),
            "shadow",
        ),
        (
            "hardlink-up",
            "add('a'); link('b', '../../a', tarfile.LNKTYPE)".into(),
            "b",
        ),
        (
            "bomb",
            "add('small'); add('zeros', bytes(8 << 20))".into(),
            "zeros",
        ),
    ];
    for (target, body, _) in &cases {
        python_tar(&ws, &format!("{target}.tar.gz"), "w:gz", body);
    }
    let mut yaml = String::from("targets:\n");
    for (target, _, _) in &cases {
        yaml.push_str(&format!(
            "  {target}:\n    rule: extract\n    srcs: [{target}.tar.gz]\n    from: \"srcs:{target}.tar.gz\"\n    max_size: 1048576\n"
        ));
    }
    ws.write("BUILD.yaml", &yaml);
    for (target, _, entry) in &cases {
        let r = ws.build_fails(&[target], 1);
        assert!(
            r.stderr.contains(&format!("refused entry `{entry}`")),
            "{target}: {}",
            r.stderr
        );
        if *target == "bomb" {
            assert!(r.stderr.contains("archive bomb"), "{}", r.stderr);
        }
        assert!(!ws.path().join("out").join(target).exists(), "{target}");
    }
    // Nothing escaped: not beside out/, not in the workspace's parents, not
    // through the symlink.
    let mut dir = ws.path().join("out");
    loop {
        for name in ["escaped.txt", "passwd", "shadow"] {
            assert!(!dir.join(name).exists(), "{}", dir.join(name).display());
        }
        if !dir.pop() || dir.as_os_str().is_empty() || dir == Path::new("/") {
            break;
        }
    }
    assert_eq!(fs::read_dir(victim.path()).unwrap().count(), 0);
    // The same archive without the hostile entries extracts fine, and an
    // absolute path lands inside out/.
    python_tar(
        &ws,
        "fine.tar.gz",
        "w:gz",
        &format!(
            "add('ok.txt'); add({:?}, b'inside')",
            format!("{victim_path}/abs.txt")
        ),
    );
    ws.write(
        "BUILD.yaml",
        "targets:\n  fine:\n    rule: extract\n    srcs: [fine.tar.gz]\n    from: \"srcs:fine.tar.gz\"\n",
    );
    ws.build_ok(&[]);
    let inside = format!("out/fine/{}/abs.txt", victim_path.trim_start_matches('/'));
    assert_eq!(ws.read(&inside), "inside");
    assert_eq!(fs::read_dir(victim.path()).unwrap().count(), 0);
}
