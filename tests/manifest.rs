//! `strata manifest` and `strata manifest diff`: hash manifests of a
//! workspace's last build, compared across workspaces built with separate
//! stores (as on two machines).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Run, Ws, strata_bin};
use serde_json::Value;

const PIPELINE: &str = r#"
targets:
  words:
    rule: run
    srcs: ["data/*.txt"]
    cmd: "cat data/*.txt | sort > $OUT/words.txt"
    outs: [words.txt]
  count:
    rule: run
    deps: [words]
    cmd: "wc -l < $DEPS/words/words.txt > $OUT/count.txt"
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
"#;

/// The pipeline with `data/a.txt` holding `a_txt`, built with its own store.
fn built_pipeline(a_txt: &str) -> Ws {
    let ws = Ws::new();
    ws.write("BUILD.yaml", PIPELINE)
        .write("data/a.txt", a_txt)
        .write("data/b.txt", "fig\n")
        .write("other/c.txt", "unrelated\n");
    ws.build_ok(&[]);
    ws
}

/// `strata manifest --json ARGS` of `ws`, saved as `dir/name`.
fn save_manifest(ws: &Ws, dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let mut all = vec!["manifest", "--json"];
    all.extend_from_slice(args);
    let r = ws.run(&all);
    assert_eq!(r.code, 0, "manifest failed:\n{}\n{}", r.stdout, r.stderr);
    let path = dir.join(name);
    fs::write(&path, &r.stdout).unwrap();
    path
}

/// `strata manifest diff A B ARGS`, run outside any workspace.
fn diff(a: &Path, b: &Path, args: &[&str]) -> Run {
    std::process::Command::new(strata_bin())
        .arg("manifest")
        .arg("diff")
        .arg(a)
        .arg(b)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("strata runs")
        .into()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// The target entries of a `diff --json` document with `verdict`, by name.
fn with_verdict<'a>(doc: &'a Value, verdict: &str) -> Vec<(&'a str, &'a Value)> {
    doc["targets"]
        .as_array()
        .expect("targets array")
        .iter()
        .filter(|t| t["verdict"] == verdict)
        .map(|t| (t["name"].as_str().unwrap(), t))
        .collect()
}

fn names(entries: &[(&str, &Value)]) -> Vec<String> {
    entries.iter().map(|(n, _)| n.to_string()).collect()
}

fn blake3_of(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

#[test]
fn one_changed_source_shows_as_the_source_and_its_downstream_dependencies() {
    let saved = tempfile::tempdir().unwrap();
    let a = built_pipeline("pear\napple\n");
    let b = built_pipeline("pear\nplum\n");
    let ma = save_manifest(&a, saved.path(), "a.json", &[]);
    let mb = save_manifest(&b, saved.path(), "b.json", &[]);

    let r = diff(&ma, &mb, &["--json"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let doc = r.json();
    assert_eq!(doc["identical"], false);
    assert_eq!(doc["version"], 1);
    let changed = with_verdict(&doc, "key_changed");
    // `count` has the same output on both sides (3 lines), so `report`
    // changes only through `upper`; `other` reads nothing that changed.
    assert_eq!(names(&changed), ["count", "report", "upper", "words"]);
    assert_eq!(doc["targets"].as_array().unwrap().len(), 4);
    let change = |name: &str| -> Vec<Value> {
        changed.iter().find(|(n, _)| *n == name).unwrap().1["changes"]
            .as_array()
            .unwrap_or_else(|| panic!("changes of {name}: {doc}"))
            .clone()
    };
    let words = change("words");
    assert_eq!(words.len(), 1, "{words:?}");
    assert_eq!(words[0]["kind"], "source");
    assert_eq!(words[0]["path"], "data/a.txt");
    assert_eq!(words[0]["old"], blake3_of(b"pear\napple\n"));
    assert_eq!(words[0]["new"], blake3_of(b"pear\nplum\n"));
    for (target, dep) in [("count", "words"), ("upper", "words"), ("report", "upper")] {
        let c = change(target);
        assert_eq!(c.len(), 1, "{target}: {c:?}");
        assert_eq!(c[0]["kind"], "dep", "{target}");
        assert_eq!(c[0]["name"], dep, "{target}");
    }
    let count = changed.iter().find(|(n, _)| *n == "count").unwrap().1;
    assert_eq!(count["output_a"], count["output_b"]);
    let words_diff = changed.iter().find(|(n, _)| *n == "words").unwrap().1;
    assert_eq!(words_diff["files"][0]["path"], "words.txt");
    assert!(with_verdict(&doc, "reproducibility_failure").is_empty());

    let text = diff(&ma, &mb, &[]);
    assert_eq!(text.code, 1, "{}", text.stderr);
    assert!(text.stdout.contains("key changed:"), "{}", text.stdout);
    assert!(text.stdout.contains("\n  words: key "), "{}", text.stdout);
    assert!(
        text.stdout.contains("    source `data/a.txt` "),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("    dependency `words` output "),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("    dependency `upper` output "),
        "{}",
        text.stdout
    );
    assert!(!text.stdout.contains("other"), "{}", text.stdout);
    assert!(!text.stdout.contains("REPRODUCIBILITY"), "{}", text.stdout);
}

#[test]
fn identical_workspaces_give_identical_manifests_and_no_differences() {
    let saved = tempfile::tempdir().unwrap();
    let a = built_pipeline("pear\napple\n");
    let b = built_pipeline("pear\napple\n");
    // A second build (all cached) must not change the manifest either.
    b.build_ok(&[]);
    let ma = save_manifest(&a, saved.path(), "a.json", &[]);
    let mb = save_manifest(&b, saved.path(), "b.json", &[]);
    assert_eq!(fs::read(&ma).unwrap(), fs::read(&mb).unwrap());

    let r = diff(&ma, &mb, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "no differences\n");
    let j = diff(&ma, &mb, &["--json"]);
    assert_eq!(j.code, 0, "{}", j.stderr);
    let doc = j.json();
    assert_eq!(doc["identical"], true);
    assert_eq!(doc["targets"], serde_json::json!([]));
}

#[test]
fn same_key_with_another_output_is_a_reproducibility_failure() {
    let saved = tempfile::tempdir().unwrap();
    let build = || {
        let ws = Ws::new();
        ws.write(
            "BUILD.yaml",
            r#"
targets:
  stamp:
    rule: run
    cmd: "echo fixed > $OUT/fixed.txt; date +%s%N > $OUT/stamp.txt"
    outs: [fixed.txt, stamp.txt]
  steady:
    rule: run
    cmd: "echo steady > $OUT/steady.txt"
    outs: [steady.txt]
"#,
        );
        ws.build_ok(&[]);
        ws
    };
    let (a, b) = (build(), build());
    let ma = save_manifest(&a, saved.path(), "a.json", &[]);
    let mb = save_manifest(&b, saved.path(), "b.json", &[]);

    let r = diff(&ma, &mb, &["--json"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let doc = r.json();
    let failures = with_verdict(&doc, "reproducibility_failure");
    assert_eq!(names(&failures), ["stamp"]);
    let stamp = failures[0].1;
    assert_eq!(stamp["key_a"], stamp["key_b"]);
    assert_ne!(stamp["output_a"], stamp["output_b"]);
    let files = stamp["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["path"], "stamp.txt");
    assert_ne!(files[0]["a"]["digest"], files[0]["b"]["digest"]);
    assert_eq!(doc["targets"].as_array().unwrap().len(), 1);

    let text = diff(&ma, &mb, &[]);
    assert_eq!(text.code, 1);
    assert!(
        text.stdout
            .starts_with("REPRODUCIBILITY FAILURE (same key, different output):\n  stamp: key "),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("    file `stamp.txt` "),
        "{}",
        text.stdout
    );
    assert!(!text.stdout.contains("fixed.txt"), "{}", text.stdout);
    assert!(
        text.stdout.contains("1 reproducibility failure(s)"),
        "{}",
        text.stdout
    );

    // A rule declared non-reproducible (`docker-data-root`) is expected to
    // do this: the same difference is then reported apart, not as a failure.
    for path in [&ma, &mb] {
        let mut m = read_json(path);
        m["targets"]["stamp"]["reproducible"] = false.into();
        fs::write(path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    }
    let r = diff(&ma, &mb, &["--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let doc = r.json();
    assert!(with_verdict(&doc, "reproducibility_failure").is_empty());
    assert_eq!(names(&with_verdict(&doc, "non_reproducible")), ["stamp"]);
    let text = diff(&ma, &mb, &[]);
    assert!(!text.stdout.contains("REPRODUCIBILITY"), "{}", text.stdout);
    assert!(
        text.stdout
            .contains("declared non-reproducible:\n  stamp: key "),
        "{}",
        text.stdout
    );
}

#[test]
fn the_manifest_lists_keys_inputs_and_every_output_file() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  tree:
    rule: run
    srcs: ["data/in.txt"]
    cmd: |
      mkdir -p $OUT/pkg/bin
      cp data/in.txt $OUT/pkg/copy.txt
      printf '#!/bin/sh\necho hi\n' > $OUT/pkg/bin/tool
      chmod +x $OUT/pkg/bin/tool
      ln -s copy.txt $OUT/pkg/link
    outs: [pkg/]
  after:
    rule: run
    deps: [tree]
    cmd: "wc -c < $DEPS/tree/pkg/copy.txt > $OUT/n"
    outs: [n]
"#,
    )
    .write("data/in.txt", "some input\n");
    let build = ws.build_ok(&[]).json();
    let r = ws.run(&["manifest", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m = r.json();
    assert_eq!(m["version"], 1);
    assert_eq!(m["digest_function"], "blake3");
    let names: Vec<&String> = m["targets"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["after", "tree"]);
    for name in ["after", "tree"] {
        let t = &m["targets"][name];
        assert_eq!(t["rule"], "run");
        assert_eq!(t["reproducible"], true);
        assert_eq!(t["key"], build["targets"][name]["key"], "{name}");
        assert_eq!(t["output"], build["targets"][name]["output"], "{name}");
        assert_eq!(t["inputs"]["salt"], "strata/run/v1");
    }
    let tree = &m["targets"]["tree"];
    assert_eq!(
        tree["inputs"]["sources"]["data/in.txt"],
        blake3_of(b"some input\n")
    );
    assert_eq!(
        m["targets"]["after"]["inputs"]["deps"]["tree"],
        tree["output"]
    );

    // Each file is checked against the materialized copy in out/, hashed
    // here, independently of the store.
    let files = tree["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["pkg", "pkg/bin", "pkg/bin/tool", "pkg/copy.txt", "pkg/link"]
    );
    for f in files {
        let path = f["path"].as_str().unwrap();
        let on_disk = ws.path().join("out/tree").join(path);
        let meta = fs::symlink_metadata(&on_disk).unwrap();
        match f["type"].as_str().unwrap() {
            "file" => {
                let bytes = fs::read(&on_disk).unwrap();
                assert_eq!(f["size"], bytes.len() as u64, "{path}");
                assert_eq!(f["digest"], blake3_of(&bytes), "{path}");
                let exec = meta.permissions().mode() & 0o111 != 0;
                assert_eq!(f["executable"], exec, "{path}");
            }
            "dir" => assert!(meta.is_dir(), "{path}"),
            "symlink" => {
                assert_eq!(
                    f["target"],
                    fs::read_link(&on_disk).unwrap().to_str().unwrap()
                );
            }
            other => panic!("unexpected type {other}"),
        }
    }
    let tool = files.iter().find(|f| f["path"] == "pkg/bin/tool").unwrap();
    assert_eq!(tool["executable"], true);
    assert_eq!(tool["size"], "#!/bin/sh\necho hi\n".len());

    // The text form: target and rule, key, output, inputs, then the files.
    let r = ws.run(&["manifest", "tree"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let key = tree["key"].as_str().unwrap();
    let output = tree["output"].as_str().unwrap();
    let copy = blake3_of(b"some input\n");
    let expected = format!(
        "tree  run\n  key     {key}\n  output  {output}\n  source  data/in.txt  {copy}\n  \
         dir     pkg\n  dir     pkg/bin\n  file    pkg/bin/tool  18  {}  executable\n  \
         file    pkg/copy.txt  11  {copy}\n  symlink pkg/link -> copy.txt\n",
        blake3_of(b"#!/bin/sh\necho hi\n"),
    );
    assert_eq!(r.stdout, expected);
}

#[test]
fn named_targets_and_targets_on_one_side_only() {
    let saved = tempfile::tempdir().unwrap();
    let ws = built_pipeline("pear\n");
    let only = save_manifest(&ws, saved.path(), "words.json", &["words"]);
    let names: Vec<String> = read_json(&only)["targets"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(names, ["words"]);
    let all = save_manifest(&ws, saved.path(), "all.json", &[]);
    let r = diff(&only, &all, &["--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let doc = r.json();
    assert_eq!(doc["only_in_a"], serde_json::json!([]));
    assert_eq!(
        doc["only_in_b"],
        serde_json::json!(["count", "other", "report", "upper"])
    );
    assert_eq!(doc["targets"], serde_json::json!([]));
    let text = diff(&only, &all, &[]);
    assert!(
        text.stdout.contains(&format!(
            "only in {}: count, other, report, upper\n",
            all.display()
        )),
        "{}",
        text.stdout
    );
}

#[test]
fn bad_usage_exits_2_with_a_message() {
    let ws = built_pipeline("pear\n");
    let r = ws.run(&["manifest", "wrods"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr.contains("target `wrods` is not in the last build")
            && r.stderr.contains("did you mean `words`?"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());

    let never = Ws::new();
    never.write("BUILD.yaml", PIPELINE);
    // A workspace never built with an existing store, and with no store.
    fs::create_dir_all(&never.store).unwrap();
    let r = never.run(&["manifest", "--store", ws.store.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("run `strata build` first"),
        "{}",
        r.stderr
    );
    let r = never.run(&["manifest"]);
    assert_eq!(r.code, 2);
    let r = never.run(&["manifest", "--store", "/nonexistent/strata-store"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no store at"), "{}", r.stderr);
    assert!(!Path::new("/nonexistent/strata-store").exists());
    let r = ws.run(&["manifest", "-f", "missing.yaml"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("missing.yaml"), "{}", r.stderr);
}

#[test]
fn a_malformed_manifest_exits_2_naming_the_file() {
    let saved = tempfile::tempdir().unwrap();
    let ws = built_pipeline("pear\n");
    let good = save_manifest(&ws, saved.path(), "good.json", &[]);
    let text = fs::read_to_string(&good).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "truncated.json",
            text[..text.len() / 2].to_string(),
            "not a strata manifest",
        ),
        ("empty.json", String::new(), "not a strata manifest"),
        ("list.json", "[1, 2]".into(), "not a strata manifest"),
        (
            "future.json",
            text.replacen("\"version\": 1", "\"version\": 2", 1),
            "manifest version 2 is not supported",
        ),
        (
            "typo.json",
            text.replacen("\"output\"", "\"outptu\"", 1),
            "unknown field `outptu`",
        ),
        (
            "wrongtype.json",
            text.replacen("\"reproducible\": true", "\"reproducible\": \"yes\"", 1),
            "not a strata manifest",
        ),
        (
            "binary.json",
            "\u{0}\u{1}garbage".into(),
            "not a strata manifest",
        ),
    ];
    for (name, content, message) in cases {
        let bad = saved.path().join(name);
        fs::write(&bad, content).unwrap();
        for (a, b) in [(&good, &bad), (&bad, &good)] {
            let r = diff(a, b, &[]);
            assert_eq!(r.code, 2, "{name}: {}\n{}", r.stdout, r.stderr);
            assert!(r.stderr.contains(name), "{name}: {}", r.stderr);
            assert!(r.stderr.contains(message), "{name}: {}", r.stderr);
            assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        }
    }
    let r = diff(&good, &saved.path().join("absent.json"), &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("absent.json"), "{}", r.stderr);
    // Digests of different functions are not comparable.
    let sha = saved.path().join("sha.json");
    fs::write(&sha, text.replace("\"blake3\"", "\"sha256\"")).unwrap();
    let r = diff(&good, &sha, &[]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr.contains("different digest functions"),
        "{}",
        r.stderr
    );
}

#[test]
fn modes_owners_and_devices_of_root_file_systems_are_listed_and_compared() {
    let saved = tempfile::tempdir().unwrap();
    let build = |mode: &str| {
        let ws = Ws::new();
        ws.write("files/motd", "hello\n").write(
            "BUILD.yaml",
            &format!(
                r#"
targets:
  root:
    rule: rootfs
    srcs: ["files/motd"]
    components:
      - {{type: file, source: files/motd, target: /etc/motd, chmod: "{mode}", chown: "0:0"}}
      - {{type: device, path: /dev/console, kind: char, major: 5, minor: 1, mode: "0600"}}
"#
            ),
        );
        ws.build_ok(&[]);
        ws
    };
    let (a, b) = (build("0640"), build("0644"));
    let r = a.run(&["manifest"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let motd = blake3_of(b"hello\n");
    assert!(
        r.stdout
            .contains("\n  char    dev/console  5:1  mode 0600  owner 0:0\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!(
            "\n  file    etc/motd  6  {motd}  mode 0640  owner 0:0\n"
        )),
        "{}",
        r.stdout
    );

    let ma = save_manifest(&a, saved.path(), "a.json", &[]);
    let mb = save_manifest(&b, saved.path(), "b.json", &[]);
    let console = read_json(&ma)["targets"]["root"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "dev/console")
        .cloned()
        .unwrap();
    assert_eq!(
        console,
        serde_json::json!({"path": "dev/console", "type": "char", "major": 5, "minor": 1,
                           "mode": "0600", "uid": 0, "gid": 0})
    );
    let r = diff(&ma, &mb, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.contains("  root: key "), "{}", r.stdout);
    let short = &motd["blake3:".len()..][..10];
    assert!(
        r.stdout.contains(&format!(
            "    file `etc/motd` 6 bytes {short}.. mode 0640 owner 0:0 -> 6 bytes {short}.. mode 0644 owner 0:0\n"
        )),
        "{}",
        r.stdout
    );
    // Only the entry that differs is listed (the command mentions both).
    assert!(!r.stdout.contains("file `dev/console`"), "{}", r.stdout);
    assert!(!r.stdout.contains("file `etc`"), "{}", r.stdout);
}
