//! The file-system image rules, checked by other projects' tools:
//! `squashfs` by squashfs-tools (`unsquashfs -lln`, and unpacking a file),
//! `vfat` by dosfstools (`fsck.vfat -n`) and mtools (`mdir`, `mtype`),
//! `ext4` by e2fsprogs (`fsck.ext4 -fn`, `debugfs` reading files, owners and
//! modes back), `iso` by xorriso reading the image (`-find -exec lsdl`,
//! `-report_el_torito`, `-pvd_info`, osirrox extracting a file), and all for
//! identical bytes across paths, umask, TZ and locale.

mod common;

use std::path::{Path, PathBuf};

use common::Ws;

fn workspace() -> Ws {
    let ws = Ws::new();
    ws.write("boot/config.txt", "arm_64bit=1\n")
        .write("boot/overlays/Some Long Overlay Name.dtbo", "dtbo\n")
        .write("boot/cmdline.txt", "console=serial0 root=/dev/mmcblk0p2\n")
        .write("boot/firmware/nested/deep.txt", "deep\n")
        .write("files/tool", "#!/bin/sh\necho tool\n")
        .write("files/odd/system-systemd\\x2dcryptsetup.slice", "slice\n")
        .write("files/odd/say \"hi\"", "quoted\n")
        .write("cd/isolinux/isolinux.bin", &"\u{90}".repeat(2048))
        .write("cd/isolinux/isolinux.cfg", "default tinyipa\n")
        .write("cd/it's here.txt", "quoted\n");
    ws.write(
        "BUILD.yaml",
        r#"
vars:
  SOURCE_DATE_EPOCH: "1700000000"
targets:
  rootfs:
    rule: rootfs
    srcs: [files]
    components:
      - {type: file, source: files/tool, target: /usr/bin/tool, chmod: "4755", chown: "0:0"}
      - {type: directory, target: /home/user, chmod: "0700", chown: "1000:1000"}
      - {type: directory, source: files/odd, target: /etc/odd}
      - {type: symlink, target: /usr/bin/tool, link: /usr/local/bin/t}
      - {type: device, path: /dev/console, kind: char, major: 5, minor: 1, mode: "0600"}
      - {type: device, path: /dev/sda1, kind: block, major: 8, minor: 1, mode: "0660", chown: "0:6"}
  root-ext4:
    rule: ext4
    from: rootfs
    label: root
  root-ext4-sized:
    rule: ext4
    from: rootfs
    size: 16MiB
    name: root.img
  cd-root:
    rule: rootfs
    srcs: [cd, files/tool]
    layers: [{from: "srcs:cd"}]
    components:
      - {type: file, source: files/tool, target: /bin/tool, chmod: "4755", chown: "1000:1000"}
      - {type: symlink, target: /bin/tool, link: /bin/t}
  cd:
    rule: iso
    from: cd-root
    volume_id: STRATA_TEST
    boot: {isolinux: /isolinux}
    name: test.iso
  root-iso:
    rule: iso
    from: rootfs
  root-squash:
    rule: squashfs
    from: rootfs
    compression: xz
  boot-fat:
    rule: vfat
    srcs: [boot]
    from: srcs:boot
    label: BOOT
    fat: 16
    name: boot.vfat
  boot-fat-sized:
    rule: vfat
    srcs: [boot]
    from: srcs:boot
    size: 8MiB
    name: boot.vfat
  boot-fat32:
    rule: vfat
    srcs: [boot]
    from: srcs:boot
    fat: 32
    name: boot.vfat
"#,
    );
    ws
}

fn output(ws: &Ws, target: &str, file: &str) -> PathBuf {
    let p = ws.path().join("out").join(target).join(file);
    assert!(p.is_file(), "{} missing", p.display());
    p
}

fn tool(dir: &Path, args: &[&str]) -> String {
    common::tool(dir, args)
}

#[test]
fn squashfs_keeps_modes_owners_links_and_devices() {
    let ws = workspace();
    ws.build_ok(&["root-squash"]);
    let img = output(&ws, "root-squash", "rootfs.squashfs");
    let img = img.to_str().unwrap();
    let listing = tool(ws.path(), &["unsquashfs", "-lln", img]);
    let line = |path: &str| -> String {
        listing
            .lines()
            .find(|l| l.ends_with(path) || l.contains(&format!("{path} -> ")))
            .unwrap_or_else(|| panic!("{path} not listed:\n{listing}"))
            .to_string()
    };
    assert!(
        line("squashfs-root/usr/bin/tool").starts_with("-rwsr-xr-x 0/0 "),
        "{listing}"
    );
    assert!(
        line("squashfs-root/home/user").starts_with("drwx------ 1000/1000 "),
        "{listing}"
    );
    assert!(
        line("squashfs-root/usr/local/bin/t").ends_with("-> /usr/bin/tool"),
        "{listing}"
    );
    let console = line("squashfs-root/dev/console");
    assert!(console.starts_with("crw------- 0/0"), "{console}");
    assert!(
        console.contains("5,  1") || console.contains("5, 1"),
        "{console}"
    );
    let disk = line("squashfs-root/dev/sda1");
    assert!(disk.starts_with("brw-rw---- 0/6"), "{disk}");
    // Every time is SOURCE_DATE_EPOCH (2023-11-14 22:13 UTC).
    assert!(console.contains("2023-11-14 22:13"), "{console}");
    // A file read back.
    let dest = ws.path().join("unpacked");
    tool(
        ws.path(),
        &[
            "unsquashfs",
            "-n",
            "-d",
            dest.to_str().unwrap(),
            img,
            "/usr/bin/tool",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("usr/bin/tool")).unwrap(),
        "#!/bin/sh\necho tool\n"
    );
}

#[test]
fn vfat_images_pass_fsck_and_read_back_with_long_names() {
    let ws = workspace();
    ws.build_ok(&["boot-fat", "boot-fat-sized", "boot-fat32"]);
    for (target, size) in [
        ("boot-fat", None),
        ("boot-fat-sized", Some(8 << 20)),
        ("boot-fat32", None),
    ] {
        let img = output(&ws, target, "boot.vfat");
        if let Some(size) = size {
            assert_eq!(std::fs::metadata(&img).unwrap().len(), size);
        }
        let img = img.to_str().unwrap();
        tool(ws.path(), &["fsck.vfat", "-n", img]);
        let listing = tool(ws.path(), &["mdir", "-i", img, "::/overlays"]);
        assert!(listing.contains("Some Long Overlay Name.dtbo"), "{listing}");
        assert_eq!(
            tool(ws.path(), &["mtype", "-i", img, "::/cmdline.txt"]),
            "console=serial0 root=/dev/mmcblk0p2\n"
        );
    }
    let img = output(&ws, "boot-fat", "boot.vfat");
    let info = tool(ws.path(), &["minfo", "-i", img.to_str().unwrap(), "::"]);
    assert!(info.contains("BOOT"), "{info}");
    assert!(info.contains("FAT16"), "{info}");
    let img = output(&ws, "boot-fat32", "boot.vfat");
    let info = tool(ws.path(), &["minfo", "-i", img.to_str().unwrap(), "::"]);
    assert!(info.contains("FAT32"), "{info}");
}

#[test]
fn images_are_identical_across_paths_umask_tz_and_locale() {
    let a = workspace();
    let b = workspace();
    let targets = [
        "root-squash",
        "boot-fat",
        "boot-fat-sized",
        "root-ext4",
        "root-ext4-sized",
        "cd",
    ];
    let first = a.build_ok(&targets);
    let mut cmd = b.cmd(&["build", "--json"]);
    cmd.args(targets);
    common::perturbed(&mut cmd);
    let second: common::Run = cmd.output().unwrap().into();
    assert_eq!(second.code, 0, "{}", second.stderr);
    for t in targets {
        assert_eq!(
            first.json()["targets"][t]["output"],
            second.json()["targets"][t]["output"],
            "{t}"
        );
    }
}

#[test]
fn a_tree_larger_than_the_size_names_the_size_needed() {
    let ws = Ws::new();
    ws.write("big/a.bin", &"x".repeat(3 << 20));
    ws.write(
        "BUILD.yaml",
        "targets:\n  fat:\n    rule: vfat\n    srcs: [big]\n    from: srcs:big\n    size: 2MiB\n",
    );
    let r = ws.build_fails(&[], 1);
    assert!(
        r.stderr.contains("does not fit in a 2 MiB FAT image"),
        "{}",
        r.stderr
    );
    let needed: u64 = r
        .stderr
        .split("it needs ")
        .nth(1)
        .and_then(|t| t.split(" MiB").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size needed in:\n{}", r.stderr));
    // More than the content, less than twice it.
    assert!((4..=6).contains(&needed), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("size: {needed}MiB")),
        "{}",
        r.stderr
    );
    // What the message says is enough is.
    ws.write(
        "BUILD.yaml",
        &format!("targets:\n  fat:\n    rule: vfat\n    srcs: [big]\n    from: srcs:big\n    size: {needed}MiB\n"),
    );
    ws.build_ok(&[]);
}

#[test]
fn names_and_entries_fat_cannot_hold_are_refused_naming_them() {
    let ws = Ws::new();
    ws.write("boot/a:b.txt", "x\n");
    ws.write(
        "BUILD.yaml",
        "targets:\n  fat:\n    rule: vfat\n    srcs: [boot]\n    from: srcs:boot\n",
    );
    let r = ws.build_fails(&[], 1);
    assert!(r.stderr.contains("`a:b.txt`"), "{}", r.stderr);
    assert!(r.stderr.contains("':'"), "{}", r.stderr);

    let ws = Ws::new();
    ws.write("boot/README", "x\n").write("boot/readme", "y\n");
    ws.write(
        "BUILD.yaml",
        "targets:\n  fat:\n    rule: vfat\n    srcs: [boot]\n    from: srcs:boot\n",
    );
    let r = ws.build_fails(&[], 1);
    assert!(r.stderr.contains("differ only in case"), "{}", r.stderr);

    let ws = workspace();
    ws.write(
        "BUILD.yaml",
        &ws.read("BUILD.yaml").replace(
            "from: srcs:boot\n    label: BOOT",
            "from: rootfs\n    label: BOOT",
        ),
    );
    let r = ws.build_fails(&["boot-fat"], 1);
    assert!(r.stderr.contains("FAT has no"), "{}", r.stderr);
}

#[test]
fn image_parameters_are_checked_where_they_are_written() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: vfat\n    from: srcs\n    size: 64MB\n",
    );
    let r = ws.build_fails(&[], 2);
    assert!(r.stderr.contains("BUILD.yaml:5:11"), "{}", r.stderr);
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: squashfs\n    from: srcs\n    compression: lzo\n",
    );
    let r = ws.build_fails(&[], 2);
    assert!(r.stderr.contains("BUILD.yaml:5:18"), "{}", r.stderr);
}

#[test]
fn ext4_passes_fsck_and_keeps_modes_owners_links_and_devices() {
    let ws = workspace();
    let r = ws.build_ok(&["root-ext4", "root-ext4-sized"]);
    // The layout step is hidden; the image is the target's output.
    assert!(
        !ws.path().join("out/root-ext4#layout").exists(),
        "{}",
        r.stdout
    );
    for (target, file, size) in [
        ("root-ext4", "rootfs.ext4", None),
        ("root-ext4-sized", "root.img", Some(16u64 << 20)),
    ] {
        let img = output(&ws, target, file);
        if let Some(size) = size {
            assert_eq!(std::fs::metadata(&img).unwrap().len(), size);
        }
        let img = img.to_str().unwrap();
        tool(ws.path(), &["fsck.ext4", "-fn", img]);
        let debugfs = |request: &str| tool(ws.path(), &["debugfs", "-R", request, img]);
        assert_eq!(debugfs("cat /usr/bin/tool"), "#!/bin/sh\necho tool\n");
        let stat = debugfs("stat /usr/bin/tool");
        assert!(stat.contains("Mode:  04755"), "{stat}");
        assert!(stat.contains("User:     0   Group:     0"), "{stat}");
        let stat = debugfs("stat /home/user");
        assert!(stat.contains("Mode:  0700"), "{stat}");
        assert!(stat.contains("User:  1000   Group:  1000"), "{stat}");
        assert!(stat.contains("mtime: 0x6553f100"), "{stat}");
        let stat = debugfs("stat /usr/local/bin/t");
        assert!(stat.contains("Type: symlink"), "{stat}");
        assert!(stat.contains("Fast link dest: \"/usr/bin/tool\""), "{stat}");
        // Names systemd writes with a backslash, and a quote.
        assert_eq!(
            debugfs("cat \"/etc/odd/system-systemd\\x2dcryptsetup.slice\""),
            "slice\n"
        );
        assert_eq!(debugfs("cat \"/etc/odd/say \"\"hi\"\"\""), "quoted\n");
        let dev = debugfs("ls -l /dev");
        assert!(dev.contains("20600") && dev.contains("console"), "{dev}");
        let stat = debugfs("stat /dev/sda1");
        assert!(stat.contains("Type: block special"), "{stat}");
        assert!(stat.contains("Device major/minor number: 08:01"), "{stat}");
        assert!(stat.contains("Group:     6"), "{stat}");
    }
    let sb = tool(
        ws.path(),
        &[
            "dumpe2fs",
            "-h",
            output(&ws, "root-ext4", "rootfs.ext4").to_str().unwrap(),
        ],
    );
    assert!(sb.contains("Filesystem volume name:   root"), "{sb}");
    // One inode per 16 KiB, as mke2fs alone gives: room to write to the
    // image once it is flashed.
    let sb = tool(
        ws.path(),
        &[
            "dumpe2fs",
            "-h",
            output(&ws, "root-ext4-sized", "root.img").to_str().unwrap(),
        ],
    );
    assert!(sb.contains("Inode count:              1024\n"), "{sb}");
}

#[test]
fn an_ext4_tree_larger_than_the_size_names_the_size_needed() {
    let ws = Ws::new();
    ws.write("big/a.bin", &"x".repeat(3 << 20));
    ws.write(
        "BUILD.yaml",
        "targets:\n  fs:\n    rule: ext4\n    srcs: [big]\n    from: srcs:big\n    size: 2MiB\n",
    );
    let r = ws.build_fails(&[], 1);
    assert!(
        r.stderr.contains("does not fit in a 2 MiB ext4 image"),
        "{}",
        r.stderr
    );
    let needed = r
        .stderr
        .split("size: ")
        .nth(1)
        .and_then(|t| t.split("MiB").next())
        .unwrap_or_else(|| panic!("no size in:\n{}", r.stderr))
        .to_string();
    ws.write(
        "BUILD.yaml",
        &format!("targets:\n  fs:\n    rule: ext4\n    srcs: [big]\n    from: srcs:big\n    size: {needed}MiB\n"),
    );
    ws.build_ok(&[]);
    let img = output(&ws, "fs", "srcs.ext4");
    tool(ws.path(), &["fsck.ext4", "-fn", img.to_str().unwrap()]);
}

#[test]
fn iso_keeps_modes_owners_and_links_and_boots_through_el_torito() {
    let ws = workspace();
    ws.build_ok(&["cd"]);
    let img = output(&ws, "cd", "test.iso");
    let img = img.to_str().unwrap();
    let xorriso = |args: &[&str]| {
        let mut all = vec!["xorriso", "-no_rc", "-indev", img];
        all.extend_from_slice(args);
        tool(ws.path(), &all)
    };
    let listing = xorriso(&["-find", "/", "-exec", "lsdl"]);
    let line = |path: &str| -> String {
        listing
            .lines()
            .find(|l| {
                // The entry's own path is the first quoted one.
                let own = l.find('\'').map_or("", |i| &l[i..]);
                own == format!("'{path}'") || own.starts_with(&format!("'{path}' -> "))
            })
            .unwrap_or_else(|| panic!("{path} not listed:\n{listing}"))
            .to_string()
    };
    assert!(
        line("/bin/tool").starts_with("-rwsr-xr-x    1 1000     1000 "),
        "{listing}"
    );
    assert!(
        line("/bin/t").ends_with("'/bin/t' -> '/bin/tool'"),
        "{listing}"
    );
    assert!(
        line("/isolinux/isolinux.cfg").starts_with("-rw-r--r--    1 0        0 "),
        "{listing}"
    );
    // Every time is SOURCE_DATE_EPOCH (2023-11-14).
    assert!(line("/bin/tool").contains("Nov 14  2023"), "{listing}");
    // xorriso writes the quote as a shell would: '/it'"'"'s here.txt'.
    assert!(
        listing
            .lines()
            .any(|l| l.contains("s here.txt'") && l.contains("Nov 14  2023")),
        "{listing}"
    );
    let torito = xorriso(&["-report_el_torito", "plain"]);
    assert!(
        torito.contains("El Torito img path :   1  /isolinux/isolinux.bin"),
        "{torito}"
    );
    assert!(
        torito.contains("El Torito cat path : /isolinux/boot.cat"),
        "{torito}"
    );
    let pvd = xorriso(&["-pvd_info"]);
    assert!(pvd.contains("Volume Id    : STRATA_TEST"), "{pvd}");
    let dest = ws.path().join("extracted");
    xorriso(&[
        "-osirrox",
        "on",
        "-extract",
        "/it's here.txt",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "quoted\n");
}

#[test]
fn device_nodes_an_iso_cannot_hold_are_refused_naming_them() {
    let ws = workspace();
    let r = ws.build_fails(&["root-iso"], 1);
    assert!(
        r.stderr.contains("refused entry `dev/console`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("no device nodes"), "{}", r.stderr);
}
