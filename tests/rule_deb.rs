//! The `deb` rule, checked with `dpkg-deb` and `dpkg` as oracles.

mod common;

use common::{Ws, sh};

const LONG: &str =
    "a-folder-name-long-enough-that-the-whole-path-needs-a-gnu-long-name-entry-in-the-tar";

const DEB: &str = "out/package/hello_1.2.3_all.deb";

fn workspace() -> Ws {
    let ws = Ws::new();
    ws.write(
        "debian/postinst",
        "#!/bin/sh\nset -e\nmkdir -p \"${DPKG_ROOT}/var/lib/hello\"\necho \"configured $1\" > \"${DPKG_ROOT}/var/lib/hello/postinst-ran\"\n",
    );
    ws.write(
        "BUILD.yaml",
        &r#"
vars:
  SOURCE_DATE_EPOCH: "1700000000"
  version: "1.2.3"
  maint: "Ops <ops@example.com>"
targets:
  tree:
    rule: run
    cmd: >-
      mkdir -p $OUT/usr/bin $OUT/etc/hello $OUT/usr/share/hello/LONG &&
      printf '#!/bin/sh\necho hello\n' > $OUT/usr/bin/hello && chmod +x $OUT/usr/bin/hello &&
      echo greeting=hi > $OUT/etc/hello/hello.conf &&
      echo deep > $OUT/usr/share/hello/LONG/data.txt &&
      ln -s hello $OUT/usr/bin/hi
    outs: [usr/, etc/]
  package:
    rule: deb
    srcs: [debian/postinst]
    from: tree
    control:
      Package: hello
      Version: "${version}"
      Architecture: all
      Maintainer: "${maint}"
      Depends: "dash (>= 0.5)"
      Section: utils
      Priority: optional
      Description: "Says hello\n Built by Strata, version ${version}."
    scripts: {postinst: debian/postinst}
    conffiles: [/etc/hello/hello.conf]
"#
        .replace("LONG", LONG),
    );
    ws
}

#[test]
fn a_package_reads_and_installs_with_dpkg() {
    let ws = workspace();
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["package", "tree"]);
    let dir = ws.path();

    let info = sh(dir, &format!("dpkg-deb --info {DEB}"));
    let control = sh(dir, &format!("dpkg-deb --field {DEB}"));
    // Installed-Size as dpkg-gencontrol counts: 1 KiB for each of 3 files
    // and a symlink, 1 for the root and each of 7 folders.
    assert_eq!(
        control,
        "Package: hello\n\
         Version: 1.2.3\n\
         Architecture: all\n\
         Maintainer: Ops <ops@example.com>\n\
         Installed-Size: 12\n\
         Depends: dash (>= 0.5)\n\
         Section: utils\n\
         Priority: optional\n\
         Description: Says hello\n \
         Built by Strata, version 1.2.3.\n",
        "{info}"
    );
    for member in ["control", "md5sums", "conffiles", "postinst"] {
        assert!(info.contains(&format!(" {member} ")), "{info}");
    }

    let contents = sh(dir, &format!("dpkg-deb --contents {DEB}"));
    let lines: Vec<&str> = contents.lines().collect();
    assert_eq!(lines.len(), 12, "{contents}");
    for l in &lines {
        assert!(
            l.contains(" root/root ") && l.contains(" 2023-11-14 22:13 ./"),
            "{contents}"
        );
    }
    assert!(lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" ./"));
    assert!(
        contents.contains("-rwxr-xr-x root/root        21 2023-11-14 22:13 ./usr/bin/hello\n"),
        "{contents}"
    );
    assert!(contents.contains("./usr/bin/hi -> hello\n"), "{contents}");
    assert!(
        contents.contains(&format!("./usr/share/hello/{LONG}/data.txt\n")),
        "{contents}"
    );
    assert_eq!(
        sh(dir, &format!("ar t {DEB}")),
        "debian-binary\ncontrol.tar.xz\ndata.tar.xz\n"
    );
    sh(dir, &format!("ar p {DEB} control.tar.xz | xz -t"));

    // Installed into an empty root by the real dpkg: files, conffiles and
    // md5sums registered, and the postinst ran.
    sh(
        dir,
        "mkdir -p root/var/lib/dpkg/info root/var/lib/dpkg/updates && : > root/var/lib/dpkg/status",
    );
    sh(
        dir,
        &format!(
            "dpkg --root=\"$PWD/root\" --force-not-root --force-script-chrootless --force-depends -i {DEB}"
        ),
    );
    assert_eq!(
        ws.read("root/var/lib/hello/postinst-ran"),
        "configured configure\n"
    );
    assert_eq!(ws.read("root/usr/bin/hello"), "#!/bin/sh\necho hello\n");
    let status = sh(dir, "dpkg --root=\"$PWD/root\" --status hello");
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(status.contains("\n /etc/hello/hello.conf "), "{status}");
    // `--verify` checks every file against md5sums: no output, no failure.
    assert_eq!(sh(dir, "dpkg --root=\"$PWD/root\" --verify hello"), "");
    assert_eq!(
        ws.read("root/var/lib/dpkg/info/hello.md5sums"),
        sh(
            dir,
            &format!(
                "cd root && md5sum etc/hello/hello.conf usr/bin/hello usr/share/hello/{LONG}/data.txt"
            )
        )
    );
}

#[test]
fn packages_are_identical_across_workspaces() {
    let a = workspace();
    let b = workspace();
    let first = a.build_ok(&[]);
    let mut cmd = b.cmd(&["build", "--json", "-j1"]);
    cmd.env("TZ", "Asia/Tokyo").env("LANG", "de_DE.UTF-8");
    let second: common::Run = cmd.output().unwrap().into();
    assert_eq!(second.code, 0, "{}", second.stderr);
    let out = |r: &common::Run| r.json()["targets"]["package"]["output"].clone();
    assert!(out(&first).is_string());
    assert_eq!(out(&first), out(&second));
    assert_eq!(
        std::fs::read(a.path().join(DEB)).unwrap(),
        std::fs::read(b.path().join(DEB)).unwrap()
    );
    // A variable given on the command line reaches the control file and the
    // file name.
    let r = a.build_ok(&["--var", "version=2.0.1"]);
    assert_eq!(r.executed(), ["package"]);
    let control = sh(
        a.path(),
        "dpkg-deb --field out/package/hello_2.0.1_all.deb Version Description",
    );
    assert_eq!(
        control,
        "Version: 2.0.1\nDescription: Says hello\n Built by Strata, version 2.0.1.\n"
    );
}

#[test]
fn the_version_can_come_from_git_describe() {
    let ws = workspace();
    let yaml = ws.read("BUILD.yaml").replace(
        "    conffiles:",
        "    version: git-describe\n    conffiles:",
    );
    ws.write("BUILD.yaml", &yaml);
    let git = "git -c user.name=t -c user.email=t@example.com";
    sh(
        ws.path(),
        &format!(
            "git init -q && {git} add -A && {git} commit -qm init && {git} tag -a v3.1.4 -m v3.1.4"
        ),
    );
    ws.build_ok(&[]);
    let version = sh(
        ws.path(),
        "dpkg-deb --field out/package/hello_3.1.4_all.deb Version",
    );
    assert_eq!(version, "3.1.4\n");
}

#[test]
fn git_describe_without_tags_or_outside_git_is_explicit() {
    let git = "git -c user.name=t -c user.email=t@example.com";
    let with_describe = |ws: &Ws| {
        let yaml = ws.read("BUILD.yaml").replace(
            "    conffiles:",
            "    version: git-describe\n    conffiles:",
        );
        ws.write("BUILD.yaml", &yaml);
    };
    // A workspace that is no git checkout: a configuration error at the
    // field, not a made-up version.
    let ws = workspace();
    with_describe(&ws);
    let r = ws.build_fails(&[], 2);
    assert!(
        r.stderr.contains("cannot use `git describe`") && r.stderr.contains("not a git repository"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("BUILD.yaml:"), "{}", r.stderr);
    assert!(r.stderr.contains("git checkout"), "{}", r.stderr);

    // A fresh clone of a repository without tags: the abbreviated commit,
    // as a Debian version (`0~g<commit>`, sorting before any tagged one,
    // even when the commit starts with a digit).
    let origin = workspace();
    with_describe(&origin);
    sh(
        origin.path(),
        &format!("git init -q && {git} add -A && {git} commit -qm init"),
    );
    let commit = sh(origin.path(), "git rev-parse --short HEAD");
    let ws = Ws::new();
    sh(
        ws.path(),
        &format!("git clone -q {} .", origin.path().display()),
    );
    ws.build_ok(&[]);
    let deb = format!("out/package/hello_0~g{}_all.deb", commit.trim());
    let version = sh(ws.path(), &format!("dpkg-deb --field {deb} Version"));
    assert_eq!(version, format!("0~g{commit}"));
}

#[test]
fn deb_mistakes_are_reported_where_they_are_written() {
    let ws = workspace();
    let yaml = ws
        .read("BUILD.yaml")
        .replace("      Maintainer: \"${maint}\"\n", "");
    ws.write("BUILD.yaml", &yaml);
    let r = ws.build_fails(&[], 2);
    assert!(
        r.stderr.contains("field `control`") && r.stderr.contains("`Maintainer` is missing"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("BUILD.yaml:"), "{}", r.stderr);

    let ws = workspace();
    let yaml = ws.read("BUILD.yaml").replace("{postinst:", "{postinstall:");
    ws.write("BUILD.yaml", &yaml);
    let r = ws.build_fails(&[], 2);
    assert!(
        r.stderr.contains("field `scripts`") && r.stderr.contains("`postinstall`"),
        "{}",
        r.stderr
    );

    // A conffile that is not a file of the tree fails the step.
    let ws = workspace();
    let yaml = ws
        .read("BUILD.yaml")
        .replace("[/etc/hello/hello.conf]", "[/etc/hello/missing.conf]");
    ws.write("BUILD.yaml", &yaml);
    let r = ws.build_fails(&[], 1);
    assert!(
        r.stderr.contains("conffile `/etc/hello/missing.conf`"),
        "{}",
        r.stderr
    );
}
