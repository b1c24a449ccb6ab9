//! End-to-end behaviour around the build: includes, argv, Ctrl-C, flags,
//! build records and the unsandboxed fallback.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{Run, Ws};

#[test]
fn include_globs_and_the_include_tag_add_targets_with_their_own_folders() {
    let ws = Ws::new();
    ws.write("stages/compile/src/a.c", "int a;\n");
    ws.write(
        "stages/compile/targets.yaml",
        r#"
targets:
  compile:
    rule: run
    srcs: ["src/*.c"]          # relative to this file's folder
    cmd: "cat src/a.c > $OUT/a.o"
    outs: [a.o]
"#,
    );
    ws.write("fragments/env.yaml", "PHASE: release\n");
    ws.write(
        "BUILD.yaml",
        r#"
include: ["stages/*/targets.yaml"]
targets:
  link:
    rule: run
    deps: [compile]
    env: !include fragments/env.yaml
    cmd: "echo $PHASE > $OUT/bin; cat $DEPS/compile/a.o >> $OUT/bin"
    outs: [bin]
"#,
    );
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["compile", "link"]);
    assert_eq!(ws.read("out/link/bin"), "release\nint a;\n");
}

#[test]
fn include_tag_cannot_leave_the_workspace() {
    let ws = Ws::new();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("evil.yaml"), "X: y\n").unwrap();
    ws.write(
        "BUILD.yaml",
        &format!(
            "targets:\n  t:\n    rule: run\n    env: !include {}/evil.yaml\n    cmd: \"true\"\n",
            outside.path().display()
        ),
    );
    let r = ws.build_fails(&[], 2);
    assert!(r.stderr.contains("BUILD.yaml:4:"), "{}", r.stderr);
}

#[test]
fn include_tag_with_a_glob_inserts_one_item_per_file_in_path_order() {
    let ws = Ws::new();
    ws.write("conf/files/motd", "hello\n");
    ws.write("conf/files/motd.local", "site\n");
    // Patterns are relative to the file holding the tag; an included file
    // may include a fragment relative to its own folder. Both components
    // write /etc/motd: the later file in path order wins.
    ws.write(
        "conf/components/20-local.yaml",
        "{type: file, source: files/motd.local, target: /etc/motd, chmod: !include ../modes/plain.yaml}\n",
    );
    ws.write("conf/modes/plain.yaml", "\"0600\"\n");
    ws.write(
        "conf/components/10-motd.yaml",
        "{type: file, source: files/motd, target: /etc/motd}\n",
    );
    ws.write("conf/components/notes.txt", "not yaml\n");
    ws.write(
        "conf/rootfs.yaml",
        "targets:\n  root:\n    rule: rootfs\n    srcs: [\"files/*\"]\n    components: !include components/*.yaml\n",
    );
    ws.write("BUILD.yaml", "include: [conf/rootfs.yaml]\n");
    ws.build_ok(&["root"]);
    assert_eq!(ws.read("out/root/etc/motd"), "site\n");

    // A glob that matches no YAML file is an error at the tag.
    ws.write(
        "conf/rootfs.yaml",
        "targets:\n  root:\n    rule: rootfs\n    components: !include nothing/*.yaml\n",
    );
    let r = ws.build_fails(&[], 2);
    assert!(r.stderr.contains("matches no .yaml file"), "{}", r.stderr);
    assert!(r.stderr.contains("conf/rootfs.yaml:4:"), "{}", r.stderr);
}

#[test]
fn argv_runs_a_program_without_a_shell() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  literal:
    rule: run
    argv: ["/bin/sh", "-c", "printf '%s\n' \"$0\" > $OUT/o", "$HOME; not expanded"]
    outs: [o]
"#,
    );
    ws.build_ok(&[]);
    assert_eq!(ws.read("out/literal/o"), "$HOME; not expanded\n");
}

/// Pids of processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| {
            fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn ctrl_c_kills_running_steps_and_the_next_build_resumes() {
    let ws = Ws::new();
    // A unique sleep length marks this test's step among all processes.
    let marker = "sleep 271.828";
    ws.write(
        "BUILD.yaml",
        &format!(
            r#"
targets:
  quick:
    rule: run
    cmd: "echo quick > $OUT/o"
    outs: [o]
  slow:
    rule: run
    deps: [quick]               # so `quick` is done before the interrupt
    srcs: [flag]
    cmd: "if [ \"$(cat flag)\" = wait ]; then {marker}; fi; echo slow > $OUT/o"
    outs: [o]
"#
        ),
    );
    ws.write("flag", "wait");
    let mut child = ws.cmd(&["build", "-j2"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_with(marker).is_empty() {
        assert!(Instant::now() < deadline, "the slow step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(marker).is_empty() {
        assert!(Instant::now() < deadline, "the step survived Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
    ws.write("flag", "go");
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["slow"]);
    assert_eq!(r.with_status("cached"), ["quick"]);
}

#[test]
fn file_and_out_dir_flags() {
    let ws = Ws::new();
    ws.write(
        "sub/pipeline.yaml",
        "targets:\n  t:\n    rule: run\n    cmd: \"echo hi > $OUT/o\"\n    outs: [o]\n",
    );
    let r = ws.build_ok(&["-f", "sub/pipeline.yaml", "--out-dir", "elsewhere"]);
    assert_eq!(r.executed(), ["t"]);
    assert_eq!(ws.read("elsewhere/t/o"), "hi\n");
    assert!(!ws.path().join("sub/out").exists());
    let r = ws.run(&["clean", "-f", "sub/pipeline.yaml", "--out-dir", "elsewhere"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!ws.path().join("elsewhere").exists());
}

#[test]
fn var_flag_overrides_a_variable() {
    let ws = Ws::new();
    ws.write("BUILD.yaml", "vars:\n  flavour: plain\ntargets:\n  t:\n    rule: run\n    cmd: \"echo ${flavour} > $OUT/o\"\n    outs: [o]\n");
    ws.build_ok(&["--var", "flavour=spicy"]);
    assert_eq!(ws.read("out/t/o"), "spicy\n");
    // Applied before interpolation: variables built from it follow.
    ws.write("BUILD.yaml", "vars:\n  flavour: plain\n  dish: \"${flavour} soup\"\ntargets:\n  t:\n    rule: run\n    cmd: \"echo ${dish} > $OUT/o\"\n    outs: [o]\n");
    ws.build_ok(&["--var", "flavour=spicy"]);
    assert_eq!(ws.read("out/t/o"), "spicy soup\n");
    // Without any `vars:` section, and for names the file does not declare.
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: run\n    cmd: \"echo ${extra} > $OUT/o\"\n    outs: [o]\n",
    );
    ws.build_ok(&["--var", "extra=added"]);
    assert_eq!(ws.read("out/t/o"), "added\n");
    let r = ws.build_fails(&["--var", "no-equals-sign"], 2);
    assert!(r.stderr.contains("NAME=VALUE"), "{}", r.stderr);
}

fn records(ws: &Ws) -> Vec<serde_json::Value> {
    let dir = ws.store.join("meta/records");
    let mut out = Vec::new();
    for d in fs::read_dir(dir).unwrap().flatten() {
        for f in fs::read_dir(d.path()).unwrap().flatten() {
            out.push(serde_json::from_slice(&fs::read(f.path()).unwrap()).unwrap());
        }
    }
    out
}

#[test]
fn each_build_records_the_keys_it_built() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: run\n    cmd: \"echo > $OUT/o\"\n    outs: [o]\n",
    );
    let r = ws.build_ok(&[]);
    let key = r.json()["targets"]["t"]["key"].clone();
    let recs = records(&ws);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["targets"]["t"]["key"], key);
    assert_eq!(recs[0]["targets"]["t"]["status"], "executed");
    assert_eq!(recs[0]["isolation"], "sandbox");
    ws.build_ok(&[]);
    assert_eq!(records(&ws).len(), 2);
}

#[test]
fn without_namespaces_the_build_says_so_once_and_records_it() {
    let ws = Ws::new();
    let mut yaml = String::from("targets:\n");
    for i in 0..3 {
        yaml.push_str(&format!(
            "  t{i}:\n    rule: run\n    cmd: \"echo {i} > $OUT/o\"\n    outs: [o]\n"
        ));
    }
    ws.write("BUILD.yaml", &yaml);
    let r: Run = ws
        .cmd(&["build"])
        .env("STRATA_SANDBOX", "off")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stderr.matches("without a sandbox").count(),
        1,
        "{}",
        r.stderr
    );
    assert!(
        records(&ws)[0]["isolation"]
            .as_str()
            .unwrap()
            .starts_with("unsandboxed")
    );
}

#[test]
fn a_failed_step_leaves_nothing_in_the_store() {
    let ws = Ws::new();
    ws.write("BUILD.yaml", "targets:\n  t:\n    rule: run\n    cmd: \"echo partial > $OUT/o; exit 4\"\n    outs: [o]\n");
    ws.build_fails(&[], 1);
    for sub in ["cas", "ac"] {
        let files: Vec<_> = walk(&ws.store.join(sub));
        assert!(files.is_empty(), "{sub} holds {files:?}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn builds_sharing_an_out_folder_take_turns_and_say_who_holds_it() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: run\n    cmd: \"echo > $OUT/o\"\n    outs: [o]\n",
    );
    ws.build_ok(&[]);
    // Hold the lock the way a running build does: a flock on out/'s folder.
    let dir = fs::File::open(ws.path()).unwrap();
    dir.lock().unwrap();
    fs::write(
        ws.path().join("out/.strata/holder"),
        "pid 4242 (strata build)\n",
    )
    .unwrap();
    let mut child = ws
        .cmd(&["build"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the build must wait for the lock"
    );
    dir.unlock().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("locked by pid 4242 (strata build)"),
        "{stderr}"
    );
    // `clean` under the same lock removes out/ entirely.
    let r = ws.run(&["clean"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!ws.path().join("out").exists());
}

#[test]
fn store_verify_finds_a_flipped_byte() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: run\n    cmd: \"echo precious > $OUT/o\"\n    outs: [o]\n",
    );
    ws.build_ok(&[]);
    let store = ws.store.to_str().unwrap().to_string();
    let r = ws.run(&["store", "verify", "--store", &store]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("no corruption"), "{}", r.stdout);
    // Flip one byte of the output blob in place.
    let digest_name = find_blob_with(&ws.store, b"precious\n");
    let mut bytes = fs::read(&digest_name).unwrap();
    bytes[0] ^= 0x20;
    let mut perms = fs::metadata(&digest_name).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    fs::set_permissions(&digest_name, perms).unwrap();
    fs::write(&digest_name, &bytes).unwrap();
    let r = ws.run(&["store", "verify", "--store", &store]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains("corrupt object") && r.stdout.contains("CORRUPTION FOUND"),
        "{}",
        r.stdout
    );
}

/// The path of the blob in `store` holding exactly `content`.
fn find_blob_with(store: &std::path::Path, content: &[u8]) -> std::path::PathBuf {
    walk(&store.join("cas"))
        .into_iter()
        .find(|p| fs::read(p).map(|b| b == content).unwrap_or(false))
        .expect("blob present")
}
