//! The `rootfs` rule, checked through an `archive` of it with `tar` as the
//! oracle: modes (setuid), owners, symlinks and device nodes survive without
//! root privileges.

mod common;

use common::Ws;

fn tool(args: &[&str], dir: &std::path::Path) -> String {
    common::tool(dir, args)
}

/// The tests build `image` (the archive) rather than every target: `out/`
/// of the rootfs itself would hold absolute symlinks, which the
/// materializer cannot create yet (cap-std `Dir::symlink` refuses them).
fn workspace() -> Ws {
    let ws = Ws::new();
    ws.write("files/tool", "#!/bin/sh\necho tool\n")
        .write(
            "files/app.service",
            "[Unit]\nDescription=App\n\n[Install]\nWantedBy=multi-user.target\n",
        )
        .write("files/conf/app.conf", "key=1\n")
        .write("files/conf/sub/extra.conf", "extra\n");
    ws.write(
        "BUILD.yaml",
        r#"
vars:
  SOURCE_DATE_EPOCH: "1700000000"
targets:
  base:
    rule: run
    cmd: >-
      mkdir -p $OUT/base/usr/bin $OUT/base/usr/share/doc/base $OUT/base/etc &&
      echo base > $OUT/base/etc/hostname &&
      printf '#!/bin/sh\necho hi\n' > $OUT/base/usr/bin/hi && chmod +x $OUT/base/usr/bin/hi &&
      echo doc > $OUT/base/usr/share/doc/base/README
    outs: [base/]
  rootfs:
    rule: rootfs
    srcs: [files]
    layers:
      - {from: "base:base"}
    components:
      - {type: file, source: files/tool, target: /usr/bin/tool, chmod: "4755", chown: "root:root"}
      - {type: directory, source: files/conf, target: /etc/app, chmod: "0640", chown: "1000:1000"}
      - {type: systemd, service: files/app.service, enable: true}
      - {type: symlink, target: /usr/bin/hi, link: /usr/local/bin/hello}
      - {type: device, path: /dev/console, kind: char, major: 5, minor: 1, mode: "0600"}
      - {type: directory, target: /tmp, chmod: "1777"}
      - {type: directory, target: /usr/bin, chmod: "0750", chown: "0:10"}
      - {type: directory, target: /var/empty}
    remove: [/usr/share/doc, /not/there]
  image:
    rule: archive
    from: rootfs
    compression: none
"#,
    );
    ws
}

/// The `tar -tv` line of `path`, panicking with the listing if absent.
fn line<'a>(listing: &'a str, path: &str) -> &'a str {
    listing
        .lines()
        .find(|l| l.ends_with(&format!(" {path}")) || l.contains(&format!(" {path} -> ")))
        .unwrap_or_else(|| panic!("no `{path}` in\n{listing}"))
}

#[test]
fn a_rootfs_keeps_modes_owners_links_and_devices() {
    let ws = workspace();
    let r = ws.build_ok(&["image"]);
    assert_eq!(r.executed(), ["base", "image", "rootfs"]);
    let listing = tool(&["tar", "-tvf", "out/image/rootfs.tar"], ws.path());
    let tool_line = line(&listing, "usr/bin/tool");
    assert!(tool_line.starts_with("-rwsr-xr-x 0/0"), "{listing}");
    assert!(tool_line.contains("2023-11-14 22:13"), "{listing}");
    assert!(
        line(&listing, "dev/console").starts_with("crw------- 0/0"),
        "{listing}"
    );
    assert!(line(&listing, "dev/console").contains("5,1"), "{listing}");
    assert!(
        line(&listing, "etc/systemd/system/app.service").starts_with("-rw-r--r-- 0/0"),
        "{listing}"
    );
    let wants = line(
        &listing,
        "etc/systemd/system/multi-user.target.wants/app.service",
    );
    assert!(
        wants.starts_with("lrwxrwxrwx 0/0")
            && wants.ends_with("-> /etc/systemd/system/app.service"),
        "{listing}"
    );
    assert!(
        line(&listing, "usr/local/bin/hello").ends_with("usr/local/bin/hello -> /usr/bin/hi"),
        "{listing}"
    );
    assert!(
        line(&listing, "etc/app/").starts_with("drwxr-xr-x 1000/1000"),
        "{listing}"
    );
    assert!(
        line(&listing, "etc/app/sub/extra.conf").starts_with("-rw-r----- 1000/1000"),
        "{listing}"
    );
    assert!(
        line(&listing, "usr/bin/hi").starts_with("-rwxr-xr-x 0/0"),
        "{listing}"
    );
    assert!(line(&listing, "etc/hostname").starts_with("-rw-r--r-- 0/0"));
    // Folders without a source: made empty, or an existing one's mode and
    // owner changed with its contents kept.
    assert!(
        line(&listing, "tmp/").starts_with("drwxrwxrwt 0/0"),
        "{listing}"
    );
    assert!(
        line(&listing, "var/empty/").starts_with("drwxr-xr-x 0/0"),
        "{listing}"
    );
    assert!(
        line(&listing, "usr/bin/").starts_with("drwxr-x--- 0/10"),
        "{listing}"
    );
    assert!(
        line(&listing, "usr/bin/hi").starts_with("-rwxr-xr-x 0/0"),
        "{listing}"
    );
    assert!(line(&listing, "usr/share/").starts_with("drwxr-xr-x"));
    assert!(!listing.contains("usr/share/doc"), "{listing}");

    // Extracted (we are root here, or tar keeps what it can), the files are
    // the sources.
    tool(
        &[
            "sh",
            "-c",
            "mkdir x && tar -xf out/image/rootfs.tar -C x --no-same-owner --exclude=dev/console",
        ],
        ws.path(),
    );
    assert_eq!(ws.read("x/usr/bin/tool"), "#!/bin/sh\necho tool\n");
    assert_eq!(ws.read("x/etc/hostname"), "base\n");

    // Nothing changed: everything is cached.
    let again = ws.build_ok(&["image"]);
    assert_eq!(again.with_status("cached"), ["base", "image", "rootfs"]);
}

#[test]
fn a_rootfs_is_identical_across_workspaces() {
    let a = workspace();
    let b = workspace();
    let first = a.build_ok(&["image"]);
    let second = b.build_ok(&["-j1", "image"]);
    for t in ["rootfs", "image"] {
        assert!(first.json()["targets"][t]["output"].is_string(), "{t}");
        assert_eq!(
            first.json()["targets"][t]["output"],
            second.json()["targets"][t]["output"],
            "{t}"
        );
    }
}

#[test]
fn rootfs_mistakes_name_the_component_and_path() {
    let ws = workspace();
    let yaml = ws
        .read("BUILD.yaml")
        .replace("target: /usr/bin/tool", "target: /usr/../../tool");
    ws.write("BUILD.yaml", &yaml);
    let r = ws.build_fails(&[], 2);
    assert!(r.stderr.contains("BUILD.yaml:"), "{}", r.stderr);
    assert!(
        r.stderr.contains("components[0] (file `/usr/../../tool`)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("`..`"), "{}", r.stderr);

    let ws = workspace();
    let yaml = ws.read("BUILD.yaml").replace("kind: char", "kind: socket");
    ws.write("BUILD.yaml", &yaml);
    let r = ws.build_fails(&[], 2);
    assert!(
        r.stderr.contains("components[4] (device `/dev/console`)") && r.stderr.contains("socket"),
        "{}",
        r.stderr
    );

    // A source file that is not there is a configuration error at the
    // component, before anything runs: component sources are inputs.
    let ws = workspace();
    let yaml = ws.read("BUILD.yaml").replace(
        "service: files/app.service",
        "service: files/missing.service",
    );
    ws.write("BUILD.yaml", &yaml);
    let r = ws.build_fails(&[], 2);
    assert!(
        r.stderr.contains("`files/missing.service` matches no file")
            && r.stderr.contains("BUILD.yaml:21:34"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.is_empty() && !r.stderr.contains("executed"),
        "{}",
        r.stderr
    );

    // A path missing from a dependency's output fails the step, naming the
    // component.
    let ws = workspace();
    let yaml = ws.read("BUILD.yaml").replace(
        "service: files/app.service",
        "service: \"base:base/etc/missing.service\"",
    );
    ws.write("BUILD.yaml", &yaml);
    let r = ws.build_fails(&[], 1);
    assert!(
        r.stderr
            .contains("components[2] (systemd `base:base/etc/missing.service`)"),
        "{}",
        r.stderr
    );
}
