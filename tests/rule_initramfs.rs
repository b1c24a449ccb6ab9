//! The `initramfs` rule, checked with `cpio`, `zcat` and `zstd` as oracles.

mod common;

use common::Ws;

/// Runs a shell command in `dir` (C locale, UTC) and returns its stdout.
fn sh(cmd: &str, dir: &std::path::Path) -> String {
    common::sh(dir, cmd)
}

fn workspace() -> Ws {
    let ws = Ws::new();
    ws.write("files/motd", "hello\n")
        .write("files/init", "#!/bin/sh\nexec /bin/sh\n");
    ws.write(
        "BUILD.yaml",
        r#"
vars:
  SOURCE_DATE_EPOCH: "1700000000"
targets:
  app:
    rule: run
    srcs: ["files/*"]
    cmd: "mkdir -p $OUT/app/bin && cp files/init $OUT/app/init && chmod +x $OUT/app/init && cp files/motd $OUT/app/motd && ln -s ../init $OUT/app/bin/start"
    outs: [app/]
  plain:
    rule: initramfs
    from: app:app
    compression: none
  rootfs:
    rule: rootfs
    srcs: ["files/*"]
    layers:
      - {from: app, prefix: /opt}
    components:
      - {type: file, source: files/motd, target: /etc/motd, chmod: "0600", chown: "1000:100"}
      - {type: file, source: files/init, target: /init, chmod: "0755", chown: "0:0"}
      - {type: device, path: /dev/console, kind: char, major: 5, minor: 1, mode: "0600"}
  ramdisk:
    rule: initramfs
    from: rootfs
  ramdisk-zst:
    rule: initramfs
    from: rootfs
    compression: zstd
    level: 3
    name: initrd.zst
"#,
    );
    ws
}

#[test]
fn a_tree_without_metadata_lists_with_cpio() {
    let ws = workspace();
    let r = ws.build_ok(&["plain"]);
    assert_eq!(r.executed(), ["app", "plain"]);
    let listing = sh("cpio -itvn < out/plain/initramfs.cpio", ws.path());
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 4, "{listing}");
    let expect = [
        ("drwxr-xr-x   2 0        0 ", "bin"),
        ("lrwxrwxrwx   1 0        0 ", "bin/start -> ../init"),
        ("-rwxr-xr-x   1 0        0 ", "init"),
        ("-rw-r--r--   1 0        0 ", "motd"),
    ];
    for (line, (start, end)) in lines.iter().zip(expect) {
        assert!(line.starts_with(start), "{line}\n{listing}");
        assert!(line.ends_with(&format!("Nov 14  2023 {end}")), "{line}");
    }
    assert_eq!(
        sh(
            "cpio -i --quiet --to-stdout motd < out/plain/initramfs.cpio",
            ws.path()
        ),
        "hello\n"
    );
}

#[test]
fn a_root_file_system_keeps_owners_modes_and_devices() {
    let ws = workspace();
    let r = ws.build_ok(&["ramdisk", "ramdisk-zst"]);
    assert_eq!(r.executed(), ["app", "ramdisk", "ramdisk-zst", "rootfs"]);
    let listing = sh(
        "zcat out/ramdisk/initramfs.cpio.gz | cpio -itvn --quiet",
        ws.path(),
    );
    let line = |name: &str| -> String {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")) || l.contains(&format!(" {name} -> ")))
            .unwrap_or_else(|| panic!("no {name} in\n{listing}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("dev/console"),
        "crw------- 1 0 0 5, 1 Nov 14 2023 dev/console"
    );
    assert_eq!(
        line("etc/motd"),
        "-rw------- 1 1000 100 6 Nov 14 2023 etc/motd"
    );
    assert_eq!(line("init"), "-rwxr-xr-x 1 0 0 23 Nov 14 2023 init");
    assert_eq!(
        line("opt/app/bin/start"),
        "lrwxrwxrwx 1 0 0 7 Nov 14 2023 opt/app/bin/start -> ../init"
    );
    assert!(
        line("opt/app").starts_with("drwxr-xr-x 2 0 0 "),
        "{listing}"
    );
    // Parents come before their children, in path order.
    let names = sh(
        "zcat out/ramdisk/initramfs.cpio.gz | cpio -it --quiet",
        ws.path(),
    );
    let names: Vec<&str> = names.lines().collect();
    assert!(
        names.iter().all(|n| *n != "." && !n.starts_with("./")),
        "no `.` entry, no `./` prefixes: {names:?}"
    );
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(
        names.contains(&"dev") && names.contains(&"opt/app/motd"),
        "{names:?}"
    );
    // zstd holds the same archive.
    sh("zstd -q -t out/ramdisk-zst/initrd.zst", ws.path());
    assert_eq!(
        sh("zstd -dc out/ramdisk-zst/initrd.zst | md5sum", ws.path()),
        sh("zcat out/ramdisk/initramfs.cpio.gz | md5sum", ws.path())
    );
    assert_eq!(
        sh(
            "zstd -dc out/ramdisk-zst/initrd.zst | cpio -i --quiet --to-stdout etc/motd",
            ws.path()
        ),
        "hello\n"
    );
}

#[test]
fn archives_are_identical_across_workspace_paths() {
    let a = workspace();
    let b = workspace();
    let targets = ["plain", "ramdisk", "ramdisk-zst"];
    let first = a.build_ok(&targets);
    let second = b.build_ok(&targets);
    for t in targets {
        let out = &first.json()["targets"][t]["output"];
        assert!(out.is_string(), "{t}");
        assert_eq!(out, &second.json()["targets"][t]["output"], "{t}");
    }
}

#[test]
fn initramfs_parameters_are_checked_where_they_are_written() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: initramfs\n    from: srcs\n    compression: xz\n",
    );
    let r = ws.build_fails(&[], 2);
    assert!(r.stderr.contains("BUILD.yaml:5:18"), "{}", r.stderr);
    assert!(r.stderr.contains("gzip, zstd or none"), "{}", r.stderr);
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: initramfs\n    from: srcs\n    name: boot/initrd\n",
    );
    let r = ws.build_fails(&[], 2);
    assert!(r.stderr.contains("BUILD.yaml:5:11"), "{}", r.stderr);
    assert!(r.stderr.contains("not a file name"), "{}", r.stderr);
}
