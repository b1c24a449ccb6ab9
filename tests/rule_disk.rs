//! The `disk` rule, checked by util-linux's `sfdisk --json` (the table as
//! another project reads it) and by reading each partition back with the
//! file system's own tools (`fsck.vfat`/`mtype` at the partition's offset,
//! `unsquashfs -o`); images identical across paths, umask, TZ and locale.

mod common;

use common::Ws;

fn workspace() -> Ws {
    let ws = Ws::new();
    ws.write("boot/config.txt", "arm_64bit=1\n")
        .write("root/etc/hostname", "pi\n");
    ws.write(
        "BUILD.yaml",
        r#"
vars:
  SOURCE_DATE_EPOCH: "1700000000"
targets:
  boot-fs:
    rule: vfat
    srcs: [boot]
    from: srcs:boot
    size: 8MiB
    label: BOOT
  root-fs:
    rule: squashfs
    srcs: [root]
    from: srcs:root
  gpt:
    rule: disk
    name: gpt.img
    partitions:
      - {type: efi, from: boot-fs, size: 16MiB, label: boot}
      - {type: linux, from: root-fs, label: root}
      - {type: linux-swap, size: 4MiB, start: 40MiB}
  sdcard:
    rule: disk
    table: mbr
    size: 64MiB
    name: sdcard.img
    partitions:
      - {type: fat32, from: boot-fs}
      - {type: linux, from: root-fs}
"#,
    );
    ws
}

fn sfdisk(ws: &Ws, img: &str) -> serde_json::Value {
    let out = common::tool(ws.path(), &["sfdisk", "--json", img]);
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["partitiontable"].clone()
}

#[test]
fn gpt_and_mbr_tables_read_back_with_their_partitions() {
    let ws = workspace();
    ws.build_ok(&["gpt", "sdcard"]);
    let gpt = "out/gpt/gpt.img";
    let t = sfdisk(&ws, gpt);
    assert_eq!(t["label"], "gpt", "{t}");
    assert_eq!(t["sectorsize"], 512, "{t}");
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "{t}");
    // 1 MiB aligned, one after another; the swap where `start` put it.
    assert_eq!(
        (&parts[0]["start"], &parts[0]["size"]),
        (&2048.into(), &32768.into())
    );
    assert_eq!(parts[1]["start"], 2048 + 32768, "{t}");
    assert_eq!(
        (&parts[2]["start"], &parts[2]["size"]),
        (&81920.into(), &8192.into())
    );
    assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(parts[1]["type"], "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    assert_eq!(parts[0]["name"], "boot");
    assert_eq!(parts[1]["name"], "root");
    // sfdisk checks both headers and the entries' CRCs: no complaint.
    let verify = common::tool(ws.path(), &["sfdisk", "--verify", gpt]);
    assert!(verify.contains("No errors detected"), "{verify}");
    // The partitions hold the file systems.
    common::sh(
        ws.path(),
        &format!("dd if={gpt} of=p1 bs=1M skip=1 count=16 status=none && fsck.vfat -n p1"),
    );
    assert_eq!(
        common::tool(
            ws.path(),
            &["mtype", "-i", &format!("{gpt}@@1M"), "::/config.txt"]
        ),
        "arm_64bit=1\n"
    );
    let root_offset = ((2048 + 32768) * 512).to_string();
    let listing = common::tool(ws.path(), &["unsquashfs", "-o", &root_offset, "-lln", gpt]);
    assert!(listing.contains("squashfs-root/etc/hostname"), "{listing}");
    // The disk and partition GUIDs are distinct.
    let ids = [
        &t["id"],
        &parts[0]["uuid"],
        &parts[1]["uuid"],
        &parts[2]["uuid"],
    ];
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            assert_ne!(a, b, "{t}");
        }
    }

    let sd = "out/sdcard/sdcard.img";
    assert_eq!(
        std::fs::metadata(ws.path().join(sd)).unwrap().len(),
        64 << 20
    );
    let t = sfdisk(&ws, sd);
    assert_eq!(t["label"], "dos", "{t}");
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts[0]["type"], "c", "{t}");
    assert_eq!(parts[1]["type"], "83", "{t}");
    assert_eq!(
        (&parts[0]["start"], &parts[0]["size"]),
        (&2048.into(), &16384.into())
    );
    assert_eq!(
        common::tool(
            ws.path(),
            &["mtype", "-i", &format!("{sd}@@1M"), "::/config.txt"]
        ),
        "arm_64bit=1\n"
    );
}

#[test]
fn disks_are_identical_across_paths_umask_tz_and_locale() {
    let a = workspace();
    let b = workspace();
    let first = a.build_ok(&["gpt", "sdcard"]);
    let mut cmd = b.cmd(&["build", "--json", "gpt", "sdcard"]);
    common::perturbed(&mut cmd);
    let second: common::Run = cmd.output().unwrap().into();
    assert_eq!(second.code, 0, "{}", second.stderr);
    for t in ["gpt", "sdcard"] {
        assert_eq!(
            first.json()["targets"][t]["output"],
            second.json()["targets"][t]["output"],
            "{t}"
        );
    }
}

#[test]
fn unknown_types_and_overlaps_are_config_errors_at_their_place() {
    let ws = workspace();
    let yaml = ws.read("BUILD.yaml");
    ws.write(
        "BUILD.yaml",
        &yaml.replace("{type: efi,", "{type: efi-system,"),
    );
    let r = ws.build_fails(&["gpt"], 2);
    assert!(
        r.stderr.contains("unknown partition type `efi-system`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("BUILD.yaml:19:16"), "{}", r.stderr);
    assert!(r.stderr.contains("linux-swap"), "{}", r.stderr);

    ws.write(
        "BUILD.yaml",
        &yaml
            .replace("start: 40MiB", "start: 10MiB")
            .replace("from: root-fs, label: root", "size: 8MiB, label: root"),
    );
    let r = ws.build_fails(&["gpt"], 2);
    assert!(
        r.stderr
            .contains("inside partitions[1], which ends at 25 MiB"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("BUILD.yaml:21:47"), "{}", r.stderr);

    // Known only once the images are built: a partition too small for
    // its image, a disk too small for its partitions.
    ws.write("BUILD.yaml", &yaml.replace("size: 16MiB", "size: 4MiB"));
    let r = ws.build_fails(&["gpt"], 1);
    assert!(
        r.stderr
            .contains("partitions[0]` is 4 MiB and its image `boot-fs` is 8 MiB"),
        "{}",
        r.stderr
    );
    ws.write("BUILD.yaml", &yaml.replace("size: 64MiB", "size: 8MiB"));
    let r = ws.build_fails(&["sdcard"], 1);
    assert!(r.stderr.contains("need a disk of"), "{}", r.stderr);
}
