//! End-to-end behaviour of `strata build`: caching, early cutoff,
//! parallelism, isolation, failures and `out/`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::Ws;

/// words <- data/*.txt ; count <- words ; upper <- words ; report <- count, upper
fn pipeline() -> Ws {
    let ws = Ws::new();
    ws.write("data/a.txt", "pear\napple\n")
        .write("data/b.txt", "fig\n")
        .write("other/c.txt", "unrelated\n");
    ws.write(
        "BUILD.yaml",
        r#"
vars:
  greeting: hello
targets:
  words:
    rule: run
    srcs: ["data/*.txt"]
    cmd: "cat data/*.txt | sort > $OUT/words.txt"
    outs: [words.txt]
  count:
    rule: run
    deps: [words]
    env: {LABEL: "${greeting}"}
    cmd: "echo $LABEL $(wc -l < $DEPS/words/words.txt) > $OUT/count.txt"
    outs: [count.txt]
  upper:
    rule: run
    deps: [words]
    cmd: "tr a-z A-Z < $DEPS/words/words.txt > $OUT/upper.txt"
    outs: [upper.txt]
  other:
    rule: run
    srcs: ["other/c.txt"]
    cmd: "cp other/c.txt $OUT/"
    outs: [c.txt]
  report:
    rule: run
    deps: [count, upper]
    cmd: "cat $DEPS/count/count.txt $DEPS/upper/upper.txt > $OUT/report.txt"
    outs: [report.txt]
"#,
    );
    ws
}

fn all_targets() -> Vec<String> {
    ["count", "other", "report", "upper", "words"]
        .map(String::from)
        .to_vec()
}

#[test]
fn cold_build_executes_everything_and_a_second_build_nothing() {
    let ws = pipeline();
    let first = ws.build_ok(&[]);
    assert_eq!(first.executed(), all_targets());
    assert_eq!(
        ws.read("out/report/report.txt"),
        "hello 3\nAPPLE\nFIG\nPEAR\n"
    );
    let second = ws.build_ok(&[]);
    assert!(second.executed().is_empty(), "{}", second.stdout);
    assert_eq!(second.with_status("cached"), all_targets());
    assert_eq!(
        first.json()["targets"],
        second.json()["targets"]
            .clone()
            .as_object()
            .map(|o| {
                // Same keys and outputs, only the status differs.
                let mut o = o.clone();
                for v in o.values_mut() {
                    v["status"] = "executed".into();
                }
                serde_json::Value::Object(o)
            })
            .unwrap()
    );
}

#[test]
fn json_document_has_the_documented_shape() {
    let ws = pipeline();
    let doc = ws.build_ok(&[]).json();
    assert_eq!(doc["executed"], 5);
    assert_eq!(doc["cached"], 0);
    assert_eq!(doc["failed"], 0);
    assert_eq!(doc["skipped"], 0);
    let words = &doc["targets"]["words"];
    assert_eq!(words["status"], "executed");
    let key = words["key"].as_str().unwrap();
    assert_eq!(key.len(), 64);
    assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(words["output"].as_str().unwrap().starts_with("blake3:"));
}

#[test]
fn human_output_ends_with_the_summary_line() {
    let ws = pipeline();
    let r = ws.run(&["build"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let last = r.stdout.lines().last().unwrap();
    assert!(
        last.starts_with("5 executed, 0 cached, 0 failed in "),
        "{last}"
    );
    assert!(last.ends_with(" s"), "{last}");
}

#[test]
fn touching_a_source_without_changing_it_executes_nothing() {
    let ws = pipeline();
    ws.build_ok(&[]);
    std::thread::sleep(Duration::from_millis(1100));
    let f = fs::File::options()
        .write(true)
        .open(ws.path().join("data/a.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    let r = ws.build_ok(&[]);
    assert!(r.executed().is_empty(), "{}", r.stdout);
}

#[test]
fn changing_a_source_reexecutes_exactly_its_dependents() {
    let ws = pipeline();
    ws.build_ok(&[]);
    ws.write("data/b.txt", "fig\nkiwi\n");
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["count", "report", "upper", "words"]);
    assert_eq!(r.with_status("cached"), ["other"]);
    assert_eq!(
        ws.read("out/report/report.txt"),
        "hello 4\nAPPLE\nFIG\nKIWI\nPEAR\n"
    );
}

#[test]
fn adding_a_matching_source_changes_the_key() {
    let ws = pipeline();
    ws.build_ok(&[]);
    ws.write("data/z.txt", "zucchini\n");
    let r = ws.build_ok(&["words"]);
    assert_eq!(r.executed(), ["words"]);
}

/// A build answers a folder whose stat has not changed from the listing it
/// kept (once that listing is older than the folder's last change); every
/// file added, removed or renamed, at any depth, still changes the key.
#[test]
fn files_added_removed_or_renamed_in_a_listed_folder_change_the_key() {
    let ws = Ws::new();
    ws.write("data/a.txt", "a\n").write("data/sub/b.txt", "b\n");
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  all:
    rule: run
    srcs: ["data"]
    cmd: "cd data && find . -type f | sort > $OUT/files.txt"
    outs: [files.txt]
  top:
    rule: run
    srcs: ["data/*.txt"]
    cmd: "ls data > $OUT/files.txt"
    outs: [files.txt]
"#,
    );
    let listed = |ws: &Ws| {
        (
            ws.read("out/all/files.txt").lines().count(),
            ws.read("out/top/files.txt").lines().count(),
        )
    };
    // Each folder changed in an earlier second than the build lists it,
    // so the next build trusts the listings it keeps.
    let settle = |ws: &Ws| {
        std::thread::sleep(Duration::from_millis(1100));
        ws.build_ok(&[]);
        let r = ws.build_ok(&[]);
        assert!(r.executed().is_empty(), "{}", r.stdout);
    };
    settle(&ws);
    assert_eq!(listed(&ws), (2, 1));

    ws.write("data/sub/c.txt", "c\n");
    assert_eq!(ws.build_ok(&[]).executed(), ["all"]);
    assert_eq!(listed(&ws), (3, 1));
    settle(&ws);

    fs::rename(
        ws.path().join("data/sub/c.txt"),
        ws.path().join("data/sub/d.txt"),
    )
    .unwrap();
    assert_eq!(ws.build_ok(&[]).executed(), ["all"]);
    assert_eq!(
        ws.read("out/all/files.txt"),
        "./a.txt\n./sub/b.txt\n./sub/d.txt\n"
    );
    settle(&ws);

    ws.write("data/e.txt", "e\n");
    assert_eq!(ws.build_ok(&[]).executed(), ["all", "top"]);
    assert_eq!(listed(&ws), (4, 2));
    settle(&ws);

    fs::remove_file(ws.path().join("data/sub/d.txt")).unwrap();
    fs::remove_file(ws.path().join("data/e.txt")).unwrap();
    // Back to the first build's keys, whose results are cached.
    assert_eq!(ws.build_ok(&[]).with_status("cached"), ["all", "top"]);
    assert_eq!(listed(&ws), (2, 1));
}

#[test]
fn early_cutoff_stops_at_an_identical_output() {
    let ws = Ws::new();
    ws.write("in.txt", "a b c\n");
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  squeeze:
    rule: run
    srcs: [in.txt]
    cmd: "tr -d ' ' < in.txt > $OUT/s.txt"
    outs: [s.txt]
  use:
    rule: run
    deps: [squeeze]
    cmd: "cat $DEPS/squeeze/s.txt $DEPS/squeeze/s.txt > $OUT/u.txt"
    outs: [u.txt]
"#,
    );
    ws.build_ok(&[]);
    // Different input bytes, same output bytes.
    ws.write("in.txt", "abc \n");
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["squeeze"]);
    assert_eq!(r.with_status("cached"), ["use"]);
    assert_eq!(ws.read("out/use/u.txt"), "abc\nabc\n");
}

/// Two steps that each wait for the other's marker: they only succeed if
/// they run at the same time.
fn rendezvous(ws: &Ws, wait_s: u32) {
    let dir = ws.path().join("markers");
    fs::create_dir_all(&dir).unwrap();
    let step = |me: &str, other: &str| {
        format!(
            "    rule: run\n    env: {{DIR: \"{}\"}}\n    cmd: \"touch $DIR/{me}; i=0; while [ ! -e $DIR/{other} ]; do i=$((i+1)); [ $i -gt {} ] && exit 1; sleep 0.1; done; echo ok > $OUT/o\"\n    outs: [o]\n",
            dir.display(),
            wait_s * 10
        )
    };
    ws.write(
        "BUILD.yaml",
        &format!(
            "targets:\n  left:\n{}  right:\n{}",
            step("left", "right"),
            step("right", "left")
        ),
    );
}

#[test]
fn independent_steps_overlap_under_j2() {
    let ws = Ws::new();
    rendezvous(&ws, 20);
    // The markers live outside the sandbox, so run these steps unsandboxed.
    let r: common::Run = ws
        .cmd(&["build", "--json", "-j2"])
        .env("STRATA_SANDBOX", "off")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.executed(), ["left", "right"]);
}

#[test]
fn j1_runs_one_step_at_a_time() {
    let ws = Ws::new();
    rendezvous(&ws, 2);
    let r: common::Run = ws
        .cmd(&["build", "--json", "-j1", "-k"])
        .env("STRATA_SANDBOX", "off")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.with_status("failed").len(), 1, "{}", r.stdout);
}

#[test]
fn a_step_cannot_read_undeclared_workspace_files() {
    let ws = Ws::new();
    ws.write("declared.txt", "ok\n")
        .write("secret.txt", "do not read\n");
    let secret = ws.path().join("secret.txt");
    ws.write(
        "BUILD.yaml",
        &format!(
            r#"
targets:
  honest:
    rule: run
    srcs: [declared.txt]
    cmd: "cat declared.txt > $OUT/o"
    outs: [o]
  sneaky:
    rule: run
    srcs: [declared.txt]
    cmd: "cat {} > $OUT/o"
    outs: [o]
  relative:
    rule: run
    cmd: "cat ../secret.txt ../../secret.txt secret.txt > $OUT/o"
    outs: [o]
  store:
    rule: run
    cmd: "ls {} > $OUT/o"
    outs: [o]
"#,
            secret.display(),
            ws.store.display()
        ),
    );
    let r = ws.build_fails(&["--json", "-k"], 1);
    assert_eq!(r.executed(), ["honest"]);
    assert_eq!(r.with_status("failed"), ["relative", "sneaky", "store"]);
}

#[test]
fn the_step_environment_is_cleared_and_fixed() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"
vars:
  SOURCE_DATE_EPOCH: "1700000000"
targets:
  env:
    rule: run
    env: {MINE: "yes"}
    cmd: "env | sort > $OUT/env; pwd > $OUT/pwd"
    outs: [env, pwd]
"#,
    );
    let r: common::Run = ws
        .cmd(&["build", "--json"])
        .env("LEAKY_HOST_VAR", "1")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let env = ws.read("out/env/env");
    assert!(!env.contains("LEAKY_HOST_VAR"), "{env}");
    for line in [
        "LANG=C.UTF-8",
        "TZ=UTC",
        "SOURCE_DATE_EPOCH=1700000000",
        "MINE=yes",
        "OUT=/strata/out",
        "DEPS=/strata/deps",
        "HOME=/strata/home",
        "TMPDIR=/strata/tmp",
    ] {
        assert!(env.lines().any(|l| l == line), "missing {line} in:\n{env}");
    }
    assert_eq!(ws.read("out/env/pwd"), "/strata/work\n");
}

fn interfaces(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|s| s.trim().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn steps_have_no_network_unless_declared() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  offline:
    rule: run
    cmd: "cat /proc/net/dev > $OUT/dev"
    outs: [dev]
  online:
    rule: run
    network: true
    cmd: "cat /proc/net/dev > $OUT/dev"
    outs: [dev]
"#,
    );
    let r = ws.build_ok(&[]);
    assert_eq!(interfaces(&ws.read("out/offline/dev")), ["lo"]);
    let host = interfaces(&fs::read_to_string("/proc/net/dev").unwrap());
    assert_eq!(interfaces(&ws.read("out/online/dev")), host);
    // `network` enters the key: the two otherwise identical steps differ.
    let doc = r.json();
    assert_ne!(
        doc["targets"]["offline"]["key"],
        doc["targets"]["online"]["key"]
    );
}

#[test]
fn fail_fast_stops_launching_and_keep_going_builds_the_rest() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  bad:
    rule: run
    cmd: "echo broken >&2; exit 3"
    outs: [o]
  after-bad:
    rule: run
    deps: [bad]
    cmd: "echo > $OUT/o"
    outs: [o]
  slow:
    rule: run
    cmd: "sleep 1; echo > $OUT/o"
    outs: [o]
  after-slow:
    rule: run
    deps: [slow]
    cmd: "echo > $OUT/o"
    outs: [o]
"#,
    );
    let r = ws.build_fails(&["--json", "-j2"], 1);
    assert_eq!(r.with_status("failed"), ["bad"]);
    assert_eq!(r.executed(), ["slow"], "the running step finishes");
    assert_eq!(r.with_status("skipped"), ["after-bad", "after-slow"]);
    assert!(r.stderr.contains("broken"), "{}", r.stderr);

    let r = ws.build_fails(&["--json", "-j2", "--keep-going"], 1);
    assert_eq!(r.with_status("failed"), ["bad"]);
    assert_eq!(r.with_status("skipped"), ["after-bad"]);
    assert_eq!(r.executed(), ["after-slow"]);
    assert_eq!(r.with_status("cached"), ["slow"]);
}

#[test]
fn outputs_are_read_only_and_out_dir_follows_the_build() {
    let ws = pipeline();
    ws.build_ok(&[]);
    let p = ws.path().join("out/words/words.txt");
    assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o222, 0);
    // Rename a target: its old folder goes away.
    let yaml = ws.read("BUILD.yaml").replace("  other:", "  other2:");
    ws.write("BUILD.yaml", &yaml);
    ws.build_ok(&[]);
    assert!(!ws.path().join("out/other").exists());
    assert_eq!(ws.read("out/other2/c.txt"), "unrelated\n");
    // A target that now fails loses its stale output.
    let yaml = ws
        .read("BUILD.yaml")
        .replace("cp other/c.txt $OUT/", "exit 1");
    ws.write("BUILD.yaml", &yaml);
    ws.build_fails(&[], 1);
    assert!(!ws.path().join("out/other2").exists());
    // Deleted out/ is restored from the cache without executing.
    fs::remove_dir_all(ws.path().join("out")).unwrap();
    let r = ws.build_fails(&["--json", "-k"], 1);
    assert!(r.executed().is_empty());
    assert_eq!(ws.read("out/words/words.txt"), "apple\nfig\npear\n");
}

#[test]
fn clean_removes_out_but_not_the_store() {
    let ws = pipeline();
    ws.build_ok(&[]);
    let r = ws.run(&["clean"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!ws.path().join("out").exists());
    let r = ws.build_ok(&[]);
    assert!(r.executed().is_empty());
    assert!(ws.path().join("out/report/report.txt").exists());
}

#[test]
fn fixed_output_steps_are_keyed_by_their_declared_digest() {
    let ws = Ws::new();
    let yaml = |digest: &str, cmd: &str| {
        format!(
            "targets:\n  fetch:\n    rule: run\n    output_digest: \"{digest}\"\n    cmd: \"{cmd}\"\n    outs: [f]\n"
        )
    };
    let wrong = format!("blake3:{}", "0".repeat(64));
    ws.write("BUILD.yaml", &yaml(&wrong, "printf hello > $OUT/f"));
    let r = ws.build_fails(&[], 1);
    assert!(r.stderr.contains(&wrong), "{}", r.stderr);
    let actual = r
        .stderr
        .lines()
        .find_map(|l| l.split_once("actual:").map(|(_, s)| s.trim().to_string()))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(actual.starts_with("blake3:") && actual != wrong);
    // Nothing was stored for the mismatch: declaring the right digest runs it.
    ws.write("BUILD.yaml", &yaml(&actual, "printf hello > $OUT/f"));
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["fetch"]);
    assert_eq!(r.json()["targets"]["fetch"]["output"], actual.as_str());
    // How the bytes are obtained does not matter, only the declared digest.
    ws.write("BUILD.yaml", &yaml(&actual, "echo -n hello > $OUT/f"));
    let r = ws.build_ok(&[]);
    assert_eq!(r.with_status("cached"), ["fetch"]);
}

#[test]
fn no_cache_runs_everything_again() {
    let ws = pipeline();
    ws.build_ok(&[]);
    let r = ws.build_ok(&["--no-cache"]);
    assert_eq!(r.executed(), all_targets());
}

#[test]
fn requested_targets_build_with_their_dependencies_only() {
    let ws = pipeline();
    let r = ws.build_ok(&["count"]);
    assert_eq!(r.executed(), ["count", "words"]);
    assert!(ws.path().join("out/count/count.txt").exists());
    let r = ws.build_fails(&["cuont"], 2);
    assert!(r.stderr.contains("did you mean `count`"), "{}", r.stderr);
}

#[test]
fn folder_outputs_keep_symlinks_and_executable_bits() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  tree:
    rule: run
    cmd: "mkdir -p $OUT/dist/bin && printf '#!/bin/sh\necho hi\n' > $OUT/dist/bin/tool && chmod +x $OUT/dist/bin/tool && ln -s bin/tool $OUT/dist/link && mkdir $OUT/dist/empty"
    outs: [dist/]
  use:
    rule: run
    deps: [tree]
    cmd: "$DEPS/tree/dist/link > $OUT/o"
    outs: [o]
"#,
    );
    ws.build_ok(&[]);
    assert_eq!(ws.read("out/use/o"), "hi\n");
    let dist = ws.path().join("out/tree/dist");
    assert_eq!(
        fs::read_link(dist.join("link")).unwrap().to_str().unwrap(),
        "bin/tool"
    );
    assert_eq!(
        fs::metadata(dist.join("bin/tool"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111,
        0o111
    );
    assert!(dist.join("empty").is_dir());
}

#[test]
fn a_build_killed_midway_leaves_a_store_the_next_build_completes() {
    let ws = Ws::new();
    let mut yaml = String::from("targets:\n");
    for i in 0..16 {
        yaml.push_str(&format!(
            "  t{i}:\n    rule: run\n    cmd: \"sleep 0.2; echo {i} > $OUT/o\"\n    outs: [o]\n"
        ));
    }
    yaml.push_str("  all:\n    rule: run\n    deps: [");
    yaml.push_str(
        &(0..16)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    yaml.push_str("]\n    cmd: \"cat $DEPS/*/o | sort -n > $OUT/all\"\n    outs: [all]\n");
    ws.write("BUILD.yaml", &yaml);
    let mut child = ws
        .cmd(&["build", "-j2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let start = Instant::now();
    let r = ws.build_ok(&[]);
    let done = r.executed().len() + r.with_status("cached").len();
    assert_eq!(done, 17);
    assert!(
        !r.with_status("cached").is_empty(),
        "steps finished before the kill are reused"
    );
    let expected: String = (0..16).map(|i| format!("{i}\n")).collect();
    assert_eq!(ws.read("out/all/all"), expected);
    assert!(start.elapsed() < Duration::from_secs(60));
}

#[test]
fn steps_cannot_reach_the_host_through_outputs_devices_or_privileges() {
    let ws = Ws::new();
    ws.write("in.txt", "x\n");
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  dep:
    rule: run
    cmd: "echo original > $OUT/o"
    outs: [o]
  link-parent:
    rule: run
    cmd: "ln -s /etc $OUT/h"
    outs: [h/passwd]
  swap-out:
    rule: run
    cmd: "rmdir $OUT && ln -s / $OUT"
    outs: [etc/]
  remount:
    rule: run
    deps: [dep]
    cmd: "mount -o remount,rw /strata/deps || mount -o remount,rw /strata; echo changed > $DEPS/dep/o"
    outs: [o]
  tty:
    rule: run
    cmd: "echo hi > /dev/tty"
    outs: [o]
  sysctl:
    rule: run
    cmd: "echo 1 > /proc/sys/kernel/sysrq"
    outs: [o]
  write-work:
    rule: run
    srcs: [in.txt]
    cmd: "echo y > in.txt"
    outs: [o]
"#,
    );
    let r = ws.build_fails(&["--json", "-k"], 1);
    assert_eq!(r.executed(), ["dep"]);
    assert_eq!(
        r.with_status("failed"),
        [
            "link-parent",
            "remount",
            "swap-out",
            "sysctl",
            "tty",
            "write-work"
        ]
    );
    assert!(
        r.stderr.contains("lies behind the symlink `$OUT/h`"),
        "{}",
        r.stderr
    );
    // The dependency's stored output is untouched.
    assert_eq!(ws.read("out/dep/o"), "original\n");
    assert_eq!(ws.read("in.txt"), "x\n");
}

#[test]
fn a_file_deleted_from_out_is_restored_without_executing() {
    let ws = pipeline();
    ws.build_ok(&[]);
    fs::remove_file(ws.path().join("out/words/words.txt")).unwrap();
    let r = ws.build_ok(&[]);
    assert!(r.executed().is_empty());
    assert_eq!(ws.read("out/words/words.txt"), "apple\nfig\npear\n");
}

/// A step longer than the async runtime's idle-thread lifetime (10 s) runs
/// to its end while its neighbours finish and publish: a sandboxed step dies
/// with strata, and once died with whichever runtime thread had started it
/// (the neighbours' publishing retired that thread). Failed two runs in
/// four before the fix.
#[test]
fn a_long_step_outlives_the_threads_of_its_short_neighbours() {
    let ws = Ws::new();
    let mut yaml = String::from(
        "targets:\n  long:\n    rule: run\n    cmd: \"sleep 16; echo done > $OUT/o\"\n    outs: [o]\n",
    );
    for i in 0..24 {
        yaml += &format!(
            "  short{i}:\n    rule: run\n    cmd: \"sleep 0.{}; echo {i} > $OUT/o\"\n    outs: [o]\n",
            i % 3 + 1
        );
    }
    ws.write("BUILD.yaml", &yaml);
    let run = ws.build_ok(&["-j", "4"]);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["executed"], 25, "{}", run.stdout);
    assert_eq!(ws.read("out/long/o"), "done\n");
}
