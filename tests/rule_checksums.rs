//! The `checksums` rule, checked with `sha256sum -c` and against the keys
//! `--json` reports.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::Ws;

/// Runs a shell command in `dir` and returns its stdout.
fn sh(cmd: &str, dir: &Path) -> String {
    common::sh(dir, cmd)
}

fn workspace() -> Ws {
    let ws = Ws::new();
    ws.write("files/vmlinuz", "not really a kernel\n")
        .write("files/readme.txt", "read me\n")
        .write("files/guide.txt", "a guide\n");
    ws.write(
        "BUILD.yaml",
        r#"
vars:
  SOURCE_DATE_EPOCH: "1700000000"
targets:
  kernel:
    rule: run
    srcs: ["files/vmlinuz"]
    cmd: "mkdir -p $OUT/boot && cp files/vmlinuz $OUT/boot/vmlinuz"
    outs: [boot/]
  docs:
    rule: run
    srcs: ["files/*.txt"]
    cmd: "mkdir -p $OUT/share/doc $OUT/other && cp files/*.txt $OUT/share/doc/ && echo x > $OUT/other/x && ln -s doc/readme.txt $OUT/share/README"
    outs: [share/, other/]
  ramdisk:
    rule: initramfs
    from: docs
  sums:
    rule: checksums
    of: [ramdisk, kernel, "docs:share"]
"#,
    );
    ws
}

const ARTIFACTS: [&str; 4] = [
    "docs/share/doc/guide.txt",
    "docs/share/doc/readme.txt",
    "kernel/boot/vmlinuz",
    "ramdisk/initramfs.cpio.gz",
];

#[test]
fn sha256sum_checks_the_artifacts_where_out_holds_them() {
    let ws = workspace();
    let r = ws.build_ok(&["sums", "kernel", "docs", "ramdisk"]);
    assert_eq!(r.executed(), ["docs", "kernel", "ramdisk", "sums"]);
    let sums = ws.read("out/sums/SHA256SUMS");
    let names: Vec<&str> = sums.lines().map(|l| &l[66..]).collect();
    assert_eq!(names, ARTIFACTS, "sorted, symlinks and `other/` left out");
    // `out/` is laid out as the sums name the files.
    sh(
        "sha256sum --strict -c sums/SHA256SUMS",
        &ws.path().join("out"),
    );
    // So is a folder holding copies of each target's outputs.
    let check = ws.path().join("check");
    fs::create_dir(&check).unwrap();
    for t in ["docs", "kernel", "ramdisk"] {
        sh(&format!("cp -R out/{t} check/{t}"), ws.path());
    }
    fs::copy(
        ws.path().join("out/sums/SHA256SUMS"),
        check.join("SHA256SUMS"),
    )
    .unwrap();
    let report = sh("sha256sum -c SHA256SUMS", &check);
    assert_eq!(
        report.lines().filter(|l| l.ends_with(": OK")).count(),
        4,
        "{report}"
    );
    // Each `.sha256` file checks its artifact from the artifact's folder.
    for a in ARTIFACTS {
        let (folder, file) = a.rsplit_once('/').unwrap();
        let one = ws.read(&format!("out/sums/{a}.sha256"));
        assert!(one.ends_with(&format!("  {file}\n")), "{one}");
        let list = ws.path().join(format!("out/sums/{a}.sha256"));
        sh(
            &format!("sha256sum --strict -c '{}'", list.display()),
            &ws.path().join("out").join(folder),
        );
    }
    // A changed byte is caught.
    fs::remove_file(check.join("kernel/boot/vmlinuz")).unwrap();
    fs::write(check.join("kernel/boot/vmlinuz"), "tampered\n").unwrap();
    let out = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&check)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("kernel/boot/vmlinuz: FAILED"));
}

#[test]
fn the_manifest_names_the_keys_of_the_targets_that_made_each_file() {
    let ws = workspace();
    let r = ws.build_ok(&["sums", "kernel", "docs", "ramdisk"]);
    let doc = r.json();
    let key = |t: &str| doc["targets"][t]["key"].as_str().unwrap().to_string();
    let manifest = ws.read("out/sums/build-manifest.txt");
    let lines: Vec<&str> = manifest.lines().collect();
    assert_eq!(lines.len(), 5, "{manifest}");
    assert!(lines[0].starts_with("# "), "a header line: {manifest}");
    let sums = ws.read("out/sums/SHA256SUMS");
    for (line, (artifact, sum_line)) in lines[1..].iter().zip(ARTIFACTS.iter().zip(sums.lines())) {
        let fields: Vec<&str> = line.split("  ").collect();
        assert_eq!(fields.len(), 4, "{line}");
        assert_eq!(fields[0], *artifact);
        let size = fs::metadata(ws.path().join("out").join(artifact))
            .unwrap()
            .len();
        assert_eq!(fields[1], format!("size={size}"), "{line}");
        assert_eq!(fields[2], format!("sha256={}", &sum_line[..64]), "{line}");
        let target = artifact.split('/').next().unwrap();
        assert_eq!(fields[3], format!("key={}", key(target)), "{line}");
    }
}

#[test]
fn the_outputs_hold_no_time_and_no_path() {
    let a = workspace();
    let b = workspace();
    let first = a.build_ok(&["sums"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = a.build_ok(&["sums", "--no-cache"]);
    let other = b.build_ok(&["sums"]);
    let out = |r: &common::Run| r.json()["targets"]["sums"]["output"].clone();
    assert_eq!(out(&first), out(&again));
    assert_eq!(out(&first), out(&other));
    assert_eq!(
        a.read("out/sums/build-manifest.txt"),
        b.read("out/sums/build-manifest.txt")
    );
}

#[test]
fn a_rebuilt_dependency_with_a_new_key_changes_the_manifest() {
    let ws = workspace();
    let first = ws.build_ok(&["sums"]);
    let before = ws.read("out/sums/build-manifest.txt");
    let sums_before = ws.read("out/sums/SHA256SUMS");
    // Same bytes, different command: a new key for `kernel`.
    let yaml = ws
        .read("BUILD.yaml")
        .replace("$OUT/boot/vmlinuz\"", "$OUT/boot/vmlinuz && true\"");
    ws.write("BUILD.yaml", &yaml);
    let second = ws.build_ok(&["sums"]);
    assert!(
        second.executed().contains(&"sums".to_string()),
        "{:?}",
        second.executed()
    );
    let after = ws.read("out/sums/build-manifest.txt");
    let new_key = second.json()["targets"]["kernel"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(
        first.json()["targets"]["kernel"]["key"].as_str().unwrap(),
        new_key
    );
    assert!(after.contains(&format!("key={new_key}")), "{after}");
    assert_eq!(
        before
            .lines()
            .filter(|l| l.starts_with("docs/"))
            .collect::<Vec<_>>(),
        after
            .lines()
            .filter(|l| l.starts_with("docs/"))
            .collect::<Vec<_>>()
    );
    // The sums themselves did not change.
    assert_eq!(sums_before, ws.read("out/sums/SHA256SUMS"));
}

#[test]
fn checksums_parameters_are_checked_where_they_are_written() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: checksums\n    of: [srcs]\n",
    );
    let r = ws.build_fails(&[], 2);
    // The item, not the list's `[`.
    assert!(r.stderr.contains("BUILD.yaml:4:10"), "{}", r.stderr);
    assert!(r.stderr.contains("`srcs` cannot be listed"), "{}", r.stderr);
    ws.write(
        "BUILD.yaml",
        "targets:\n  a:\n    rule: run\n    cmd: \"touch $OUT/f\"\n    outs: [f]\n  t:\n    rule: checksums\n    of: [a]\n    name: build-manifest.txt\n",
    );
    let r = ws.build_fails(&[], 2);
    assert!(r.stderr.contains("BUILD.yaml:9:11"), "{}", r.stderr);
}
