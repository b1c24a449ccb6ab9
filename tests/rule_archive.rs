//! The `archive` rule, checked with `tar` and `zstd` as oracles.

mod common;

use common::Ws;

fn tool(args: &[&str], dir: &std::path::Path) -> String {
    common::tool(dir, args)
}

fn workspace() -> Ws {
    let ws = Ws::new();
    ws.write("files/a.txt", "hello\n")
        .write("files/run.sh", "#!/bin/sh\necho hi\n");
    ws.write(
        "BUILD.yaml",
        r#"
vars:
  SOURCE_DATE_EPOCH: "1700000000"
targets:
  tree:
    rule: run
    srcs: ["files/*"]
    cmd: "mkdir -p $OUT/app && cp files/* $OUT/app/ && chmod +x $OUT/app/run.sh && ln -s run.sh $OUT/app/start"
    outs: [app/]
  tgz:
    rule: archive
    from: tree
  tzst:
    rule: archive
    from: tree:app
    compression: zstd
    level: 3
    prefix: opt/app
    name: app.tar.zst
  txz:
    rule: archive
    from: tree
    compression: xz
"#,
    );
    ws
}

#[test]
fn archives_list_with_tar_and_verify_with_zstd() {
    let ws = workspace();
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["tgz", "tree", "txz", "tzst"]);
    let listing = tool(&["tar", "-tvzf", "out/tgz/tree.tar.gz"], ws.path());
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 4, "{listing}");
    assert!(
        lines[0].starts_with("drwxr-xr-x 0/0") && lines[0].ends_with("2023-11-14 22:13 app/"),
        "{listing}"
    );
    assert!(
        lines[2].starts_with("-rwxr-xr-x 0/0") && lines[2].ends_with("app/run.sh"),
        "{listing}"
    );
    assert!(
        lines[3].starts_with("lrwxrwxrwx 0/0") && lines[3].ends_with("app/start -> run.sh"),
        "{listing}"
    );
    tool(&["zstd", "-t", "out/tzst/app.tar.zst"], ws.path());
    let zlist = tool(
        &["sh", "-c", "zstd -dc out/tzst/app.tar.zst | tar -t"],
        ws.path(),
    );
    assert_eq!(
        zlist,
        "opt/\nopt/app/\nopt/app/a.txt\nopt/app/run.sh\nopt/app/start\n"
    );
    let xlist = tool(&["tar", "-tJf", "out/txz/tree.tar.xz"], ws.path());
    assert_eq!(xlist, "app/\napp/a.txt\napp/run.sh\napp/start\n");
    // Extracting gives back the bytes.
    tool(
        &["sh", "-c", "mkdir x && tar -xzf out/tgz/tree.tar.gz -C x"],
        ws.path(),
    );
    assert_eq!(ws.read("x/app/a.txt"), "hello\n");
}

#[test]
fn archives_are_identical_across_paths_umask_tz_and_locale() {
    let a = workspace();
    let b = workspace();
    let first = a.build_ok(&[]);
    let mut cmd = b.cmd(&["build", "--json"]);
    common::perturbed(&mut cmd);
    let second: common::Run = cmd.output().unwrap().into();
    assert_eq!(second.code, 0, "{}", second.stderr);
    for t in ["tgz", "tzst", "txz"] {
        assert_eq!(
            first.json()["targets"][t]["output"],
            second.json()["targets"][t]["output"],
            "{t}"
        );
    }
}

#[test]
fn archive_parameters_are_checked_where_they_are_written() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: archive\n    from: srcs\n    compression: gzip\n    level: 42\n",
    );
    let r = ws.build_fails(&[], 2);
    assert!(r.stderr.contains("BUILD.yaml:6:12"), "{}", r.stderr);
    assert!(r.stderr.contains("out of range"), "{}", r.stderr);
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: archive\n    from: srcs\n    compression: lzip\n",
    );
    let r = ws.build_fails(&[], 2);
    assert!(r.stderr.contains("BUILD.yaml:5:18"), "{}", r.stderr);
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: archive\n    from: srcs\n    cmd: \"true\"\n",
    );
    let r = ws.build_fails(&[], 2);
    assert!(
        r.stderr
            .contains("field `cmd` does not apply to rule `archive`"),
        "{}",
        r.stderr
    );
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: run\n    cmd: \"true\"\n    compression: xz\n",
    );
    let r = ws.build_fails(&[], 2);
    assert!(
        r.stderr
            .contains("field `compression` does not apply to rule `run`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("BUILD.yaml:5:18"), "{}", r.stderr);
}

#[test]
fn an_archive_of_an_unchanged_tree_is_a_cache_hit() {
    let ws = workspace();
    ws.build_ok(&[]);
    // Re-run the producer with a different command but identical output.
    let yaml = ws.read("BUILD.yaml").replace(
        "ln -s run.sh $OUT/app/start",
        "ln -s run.sh $OUT/app/start; true",
    );
    ws.write("BUILD.yaml", &yaml);
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["tree"]);
    assert_eq!(r.with_status("cached"), ["tgz", "txz", "tzst"]);
}
