//! Matrix builds: `strata build --matrix arch=amd64,arm64` builds both values
//! in one graph. Targets whose definition does not depend on the value
//! (a fixed-output fetch, a script, an `Architecture: all` package) are one
//! node, executed once; outputs land in `out/<value>/<target>/`; `clean`,
//! `explain`, `manifest`, `audit` and the out/ record keep working; bad
//! input is a configuration error at its place. The pipelines need no
//! emulation: host steps, fixed-output steps and built-in rules only.

mod common;

use std::fs;
use std::path::Path;

use common::{Run, Ws};
use serde_json::Value;

/// A fixed-output fetch whose command names the architecture (only in a
/// comment: its key is its name and digest, so it is shared), a script
/// packaged as `Architecture: all`, a "compiled" tool and its package per
/// architecture, and an image only amd64 has (Packer's ISO). Host steps
/// append to `counter` (an absolute path: the tests run them unsandboxed),
/// which counts what really executed.
fn build_yaml(counter: &Path, src_digest: Option<&str>) -> String {
    let counter = counter.display();
    let digest = src_digest
        .map(|d| format!("    output_digest: \"{d}\"\n"))
        .unwrap_or_default();
    format!(
        r#"vars:
  arch: amd64
matrix:
  arch: [amd64, arm64]
targets:
  src:
    rule: run
{digest}    outs: [src.txt]
    cmd: |
      # fetched while building for ${{arch}}
      echo source > $OUT/src.txt
      echo src >> {counter}
  script:
    rule: run
    srcs: [tool.sh]
    outs: [tool.sh]
    cmd: "cp tool.sh $OUT/tool.sh && echo script >> {counter}"
  compiled:
    rule: run
    deps: [src]
    srcs: ["flags/${{arch}}.txt"]
    outs: ["bin-${{arch}}"]
    cmd: "cat $DEPS/src/src.txt flags/${{arch}}.txt > $OUT/bin-${{arch}} && echo compiled-${{arch}} >> {counter}"
  doc:
    rule: deb
    from: script
    control: {{Package: doc, Version: "1.0", Architecture: all, Maintainer: me, Description: docs}}
  pkg:
    rule: deb
    from: compiled
    control: {{Package: tool, Version: "1.0", Architecture: "${{arch}}", Maintainer: me, Description: tool}}
  iso:
    when: ${{arch}} == amd64
    rule: run
    deps: [compiled]
    outs: [tool.iso]
    cmd: "cp $DEPS/compiled/bin-amd64 $OUT/tool.iso && echo iso >> {counter}"
"#
    )
}

/// The workspace, with `src` pinned by the digest its bytes have.
struct Matrix {
    ws: Ws,
    counter: tempfile::TempDir,
}

impl Matrix {
    fn new() -> Matrix {
        let counter = tempfile::tempdir().unwrap();
        let ws = Ws::new();
        ws.write("tool.sh", "echo tool\n")
            .write("flags/amd64.txt", "-m64\n")
            .write("flags/arm64.txt", "-march=armv8-a\n");
        let m = Matrix { ws, counter };
        // The digest `src` produces, from a build of it unpinned.
        let probe = m.counter.path().join("probe");
        m.ws.write("BUILD.yaml", &build_yaml(&probe, None));
        let digest = m.build_ok(&["src"]).json()["targets"]["src"]["output"]
            .as_str()
            .unwrap()
            .to_string();
        m.ws.write("BUILD.yaml", &build_yaml(&m.counter_file(), Some(&digest)));
        m
    }

    fn counter_file(&self) -> std::path::PathBuf {
        self.counter.path().join("count")
    }

    /// The host steps that ran, sorted.
    fn ran(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_to_string(self.counter_file())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    fn run(&self, args: &[&str]) -> Run {
        self.ws
            .cmd(args)
            .env("STRATA_SANDBOX", "off")
            .output()
            .unwrap()
            .into()
    }

    fn build_ok(&self, args: &[&str]) -> Run {
        let mut all = vec!["build", "--json"];
        all.extend_from_slice(args);
        let r = self.run(&all);
        assert_eq!(r.code, 0, "build failed:\n{}\n{}", r.stdout, r.stderr);
        r
    }

    fn out(&self, rel: &str) -> std::path::PathBuf {
        self.ws.path().join("out").join(rel)
    }
}

fn sorted(doc: &Value, key: &str) -> Vec<String> {
    let mut v: Vec<String> = doc[key].as_object().unwrap().keys().cloned().collect();
    v.sort();
    v
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn one_invocation_builds_both_values_and_what_does_not_depend_on_them_once() {
    let m = Matrix::new();
    let r = m.build_ok(&["--matrix", "arch=amd64,arm64"]);
    let doc = r.json();
    // One graph: the shared nodes appear once, under their own names.
    assert_eq!(
        sorted(&doc, "targets"),
        [
            "amd64/compiled",
            "amd64/iso",
            "amd64/pkg",
            "arm64/compiled",
            "arm64/pkg",
            "doc",
            "script",
            "src"
        ]
    );
    assert_eq!(r.executed().len(), 8, "{}", r.stdout);
    assert_eq!(strings(&doc["configurations"]), ["amd64", "arm64"]);
    assert_eq!(doc["shared"], 3);
    for shared in ["src", "script", "doc"] {
        assert_eq!(
            strings(&doc["targets"][shared]["configurations"]),
            ["amd64", "arm64"],
            "{shared}"
        );
    }
    assert_eq!(
        strings(&doc["targets"]["arm64/pkg"]["configurations"]),
        ["arm64"]
    );
    // What really executed: the fetch and the script once, each compile once
    // per architecture (the fetch's command differs, but not its key).
    assert_eq!(
        m.ran(),
        ["compiled-amd64", "compiled-arm64", "iso", "script", "src"]
    );
    assert!(
        r.stderr
            .contains("2 configurations (amd64, arm64), 3 targets shared by them, built once"),
        "{}",
        r.stderr
    );

    // Outputs land per architecture; a shared target is placed in both.
    let amd = fs::read(m.out("amd64/pkg/tool_1.0_amd64.deb")).unwrap();
    let arm = fs::read(m.out("arm64/pkg/tool_1.0_arm64.deb")).unwrap();
    assert_ne!(amd, arm);
    assert_eq!(
        fs::read(m.out("amd64/doc/doc_1.0_all.deb")).unwrap(),
        fs::read(m.out("arm64/doc/doc_1.0_all.deb")).unwrap()
    );
    assert_eq!(
        fs::read_to_string(m.out("arm64/compiled/bin-arm64")).unwrap(),
        "source\n-march=armv8-a\n"
    );
    assert!(m.out("amd64/iso/tool.iso").is_file());
    assert!(!m.out("arm64/iso").exists(), "arm64 has no iso");
    assert!(!m.out("pkg").exists(), "nothing at the top level");

    // Nothing changed: nothing runs.
    let again = m.build_ok(&["--matrix", "arch=amd64,arm64"]);
    assert!(again.executed().is_empty(), "{}", again.stdout);
    assert_eq!(again.with_status("cached").len(), 8);

    // The keys are those of two sequential builds: each is fully cached and
    // runs nothing, and names the same keys.
    for arch in ["amd64", "arm64"] {
        let plain = m.build_ok(&["--var", &format!("arch={arch}")]);
        assert!(plain.executed().is_empty(), "{arch}: {}", plain.stdout);
        let p = plain.json();
        for t in ["src", "script", "doc"] {
            assert_eq!(p["targets"][t]["key"], doc["targets"][t]["key"], "{t}");
        }
        for t in ["compiled", "pkg"] {
            assert_eq!(
                p["targets"][t]["key"],
                doc["targets"][format!("{arch}/{t}").as_str()]["key"],
                "{arch}/{t}"
            );
        }
    }
    assert_eq!(m.ran().len(), 5, "the plain builds ran nothing");
}

#[test]
fn a_change_for_one_value_rebuilds_that_configuration_only() {
    let m = Matrix::new();
    m.build_ok(&["--matrix", "arch"]);
    m.ws.write("flags/arm64.txt", "-march=armv8.2-a\n");
    let r = m.build_ok(&["--matrix", "arch"]);
    assert_eq!(r.executed(), ["arm64/compiled", "arm64/pkg"]);
    assert_eq!(
        fs::read_to_string(m.out("arm64/compiled/bin-arm64")).unwrap(),
        "source\n-march=armv8.2-a\n"
    );
    // `build --explain` follows the dependency to its label in the record.
    let explained = m.run(&["build", "--explain", "--matrix", "arch"]);
    assert_eq!(explained.code, 0, "{}", explained.stderr);
    m.ws.write("flags/arm64.txt", "-march=armv9-a\n");
    let explained = m.run(&["build", "--explain", "--matrix", "arch"]);
    assert!(
        explained.stderr.contains(
            "explain: `arm64/pkg`: dependency `compiled` changed: source `flags/arm64.txt`"
        ),
        "{}",
        explained.stderr
    );
}

#[test]
fn steps_that_turn_out_the_same_in_two_configurations_run_once() {
    // `base` names the architecture in its command, so it is one node per
    // configuration, but it writes the same bytes for both: then `heavy`
    // has one key in both configurations (early cutoff), and runs once
    // while the other waits for it and takes its result.
    let counter = tempfile::tempdir().unwrap();
    let count = counter.path().join("count");
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        &format!(
            "vars:\n  arch: amd64\ntargets:\n  \
             base:\n    rule: run\n    outs: [b]\n    cmd: \"echo same > $OUT/b # ${{arch}}\"\n  \
             heavy:\n    rule: run\n    deps: [base]\n    outs: [h]\n    cmd: \"sleep 1; cp $DEPS/base/b $OUT/h; echo heavy >> {}\"\n",
            count.display()
        ),
    );
    let r: Run = ws
        .cmd(&["build", "--json", "--matrix", "arch=amd64,arm64", "-j", "2"])
        .env("STRATA_SANDBOX", "off")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc = r.json();
    assert_eq!(
        doc["targets"]["amd64/heavy"]["key"],
        doc["targets"]["arm64/heavy"]["key"]
    );
    let mut heavy: Vec<&str> = ["amd64/heavy", "arm64/heavy"]
        .iter()
        .map(|t| doc["targets"][*t]["status"].as_str().unwrap())
        .collect();
    heavy.sort();
    assert_eq!(heavy, ["cached", "executed"], "{}", r.stdout);
    assert_eq!(fs::read_to_string(&count).unwrap(), "heavy\n");
    assert_eq!(
        fs::read_to_string(ws.path().join("out/arm64/heavy/h")).unwrap(),
        "same\n"
    );
}

#[test]
fn graph_shows_each_node_once_with_the_configurations_sharing_it() {
    let m = Matrix::new();
    let r = m.run(&["graph", "--matrix", "arch", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["shared"], 3);
    assert_eq!(doc["targets"]["doc"]["deps"], serde_json::json!(["script"]));
    assert_eq!(
        doc["targets"]["arm64/pkg"]["deps"],
        serde_json::json!(["arm64/compiled"])
    );
    assert_eq!(
        doc["targets"]["arm64/compiled"]["deps"],
        serde_json::json!(["src"])
    );
    assert_eq!(doc["targets"]["arm64/compiled"]["target"], "compiled");
    let dot = m.run(&["graph", "--matrix", "arch=amd64,arm64"]).stdout;
    assert!(
        dot.contains(r#""doc" [label="doc\ndeb\nshared: amd64, arm64", style=bold];"#),
        "{dot}"
    );
    assert!(dot.contains(r#""src" -> "arm64/compiled";"#), "{dot}");
    // Without --matrix the graph is the plain one.
    let plain: Value = serde_json::from_str(&m.run(&["graph", "--format", "json"]).stdout).unwrap();
    assert!(plain.get("shared").is_none());
    assert_eq!(
        plain["targets"]["pkg"]["deps"],
        serde_json::json!(["compiled"])
    );
}

#[test]
fn includes_and_conditions_are_read_once_per_value() {
    // As examples/tinyipa: the value picks the files that define targets.
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "vars:\n  arch: x86_64\ninclude: [\"arch/${arch}/*.yaml\"]\ntargets:\n  \
         ramdisk:\n    rule: archive\n    from: kernel\n    name: \"ramdisk-${arch}.tar\"\n    compression: none\n",
    )
    .write(
        "arch/x86_64/kernel.yaml",
        "targets:\n  kernel:\n    rule: run\n    outs: [vmlinuz]\n    cmd: \"echo bzImage > $OUT/vmlinuz\"\n",
    )
    .write(
        "arch/aarch64/kernel.yaml",
        "targets:\n  kernel:\n    rule: run\n    outs: [vmlinuz]\n    cmd: \"echo Image > $OUT/vmlinuz\"\n  \
         dtb:\n    rule: run\n    outs: [board.dtb]\n    cmd: \"echo dtb > $OUT/board.dtb\"\n",
    );
    let r = ws.build_ok(&["--matrix", "arch=x86_64,aarch64"]);
    assert_eq!(
        r.executed(),
        [
            "aarch64/dtb",
            "aarch64/kernel",
            "aarch64/ramdisk",
            "x86_64/kernel",
            "x86_64/ramdisk"
        ]
    );
    let out = ws.path().join("out");
    assert!(out.join("aarch64/dtb/board.dtb").is_file());
    assert!(!out.join("x86_64/dtb").exists());
    assert!(out.join("x86_64/ramdisk/ramdisk-x86_64.tar").is_file());
    // A target named with its configuration is built there only.
    let one = ws.build_ok(&["--matrix", "arch=x86_64,aarch64", "aarch64/dtb"]);
    assert_eq!(sorted(&one.json(), "targets"), ["aarch64/dtb"]);
}

#[test]
fn two_matrix_variables_build_their_product() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "vars:\n  arch: amd64\n  flavor: debug\ntargets:\n  \
         base:\n    rule: run\n    outs: [b]\n    cmd: \"echo ${arch} > $OUT/b\"\n  \
         app:\n    rule: run\n    deps: [base]\n    outs: [a]\n    cmd: \"cat $DEPS/base/b > $OUT/a; echo ${flavor} >> $OUT/a\"\n",
    );
    let r = ws.build_ok(&[
        "--matrix",
        "arch=amd64,arm64",
        "--matrix",
        "flavor=debug,release",
    ]);
    // `base` depends on arch only: one node per arch, shared by both flavors.
    assert_eq!(
        r.executed(),
        [
            "amd64/debug/app",
            "amd64/release/app",
            "arm64/debug/app",
            "arm64/release/app",
            "{amd64/debug,amd64/release}/base",
            "{arm64/debug,arm64/release}/base",
        ]
    );
    let out = ws.path().join("out");
    assert_eq!(
        fs::read_to_string(out.join("arm64/release/app/a")).unwrap(),
        "arm64\nrelease\n"
    );
    assert_eq!(
        fs::read_to_string(out.join("amd64/release/base/b")).unwrap(),
        "amd64\n"
    );
    let clean = ws.run(&["clean"]);
    assert_eq!(clean.code, 0, "{}", clean.stderr);
    assert!(!out.exists(), "clean removed the nested folders and out/");
}

#[test]
fn the_out_record_keeps_configurations_apart_and_clean_removes_them() {
    let m = Matrix::new();
    m.build_ok(&["--matrix", "arch"]);
    // A plain build places at the top level and leaves the matrix's entries.
    m.build_ok(&["--var", "arch=arm64"]);
    assert!(m.out("pkg/tool_1.0_arm64.deb").is_file());
    assert!(m.out("amd64/pkg/tool_1.0_amd64.deb").is_file());
    assert!(m.out("arm64/pkg/tool_1.0_arm64.deb").is_file());
    // A target removed from BUILD.yaml leaves every configuration's folder
    // at the next matrix build; the plain build's entry waits for a plain
    // build.
    let yaml = m.ws.read("BUILD.yaml");
    let cut = yaml.find("  iso:\n").unwrap();
    let without_doc = yaml[..cut].replace("  doc:\n    rule: deb\n    from: script\n    control: {Package: doc, Version: \"1.0\", Architecture: all, Maintainer: me, Description: docs}\n", "");
    assert_ne!(without_doc, yaml[..cut]);
    m.ws.write("BUILD.yaml", &without_doc);
    m.build_ok(&["--matrix", "arch"]);
    assert!(!m.out("amd64/doc").exists() && !m.out("arm64/doc").exists());
    assert!(!m.out("amd64/iso").exists());
    assert!(m.out("doc/doc_1.0_all.deb").is_file());
    m.build_ok(&["--var", "arch=arm64"]);
    assert!(!m.out("doc").exists());

    // Files that are not Strata's survive clean, and keep their folder.
    fs::write(m.out("notes.txt"), "mine").unwrap();
    fs::write(m.out("amd64/mine.txt"), "mine").unwrap();
    let r = m.run(&["clean"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(fs::read_to_string(m.out("notes.txt")).unwrap(), "mine");
    assert_eq!(fs::read_to_string(m.out("amd64/mine.txt")).unwrap(), "mine");
    assert!(!m.out("amd64/pkg").exists() && !m.out("pkg").exists());
    assert!(
        !m.out("arm64").exists(),
        "an emptied folder of Strata's goes"
    );
    assert!(!m.out(".strata").exists());
}

#[test]
fn a_folder_strata_did_not_make_stops_a_matrix_build_before_anything_runs() {
    let m = Matrix::new();
    fs::create_dir_all(m.out("arm64")).unwrap();
    fs::write(m.out("arm64/firmware.bin"), "precious").unwrap();
    let r = m.run(&["build", "--matrix", "arch"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("out/arm64 was not made by Strata; placing `arm64/"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("would write into it"), "{}", r.stderr);
    assert!(m.ran().is_empty(), "nothing ran: {:?}", m.ran());
    assert_eq!(
        fs::read_to_string(m.out("arm64/firmware.bin")).unwrap(),
        "precious"
    );
}

#[test]
fn explain_manifest_and_audit_work_per_configuration() {
    let m = Matrix::new();
    m.build_ok(&["--matrix", "arch"]);
    m.ws.write("flags/arm64.txt", "-march=armv8.2-a\n");
    let r = m.run(&["explain", "compiled", "--matrix", "arch", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let list: Value = serde_json::from_str(&r.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["target"], "amd64/compiled");
    assert_eq!(list[0]["state"], "cached");
    assert_eq!(list[1]["target"], "arm64/compiled");
    assert_eq!(list[1]["state"], "would-run");
    assert_eq!(list[1]["changes"][0]["kind"], "source");
    assert_eq!(list[1]["changes"][0]["path"], "flags/arm64.txt");
    // A shared target is explained once; one configuration by its folder.
    let shared = m.run(&["explain", "src", "--matrix", "arch", "--json"]);
    let shared: Value = serde_json::from_str(&shared.stdout).unwrap();
    assert_eq!(shared.as_array().unwrap().len(), 1);
    assert_eq!(shared[0]["target"], "src");
    let one = m.run(&["explain", "amd64/pkg", "--matrix", "arch", "--json"]);
    let one: Value = serde_json::from_str(&one.stdout).unwrap();
    assert_eq!(one.as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one[0]["target"], "amd64/pkg");

    m.ws.write("flags/arm64.txt", "-march=armv8-a\n");
    let manifest = m.run(&["manifest", "pkg", "--json"]);
    assert_eq!(manifest.code, 0, "{}", manifest.stderr);
    let manifest: Value = serde_json::from_str(&manifest.stdout).unwrap();
    assert_eq!(sorted(&manifest, "targets"), ["amd64/pkg", "arm64/pkg"]);
    let all: Value = serde_json::from_str(&m.run(&["manifest", "--json"]).stdout).unwrap();
    assert_eq!(
        all["targets"]["src"]["inputs"]["deps"],
        serde_json::json!({})
    );
    assert_eq!(
        all["targets"]["arm64/pkg"]["inputs"]["deps"]["compiled"],
        all["targets"]["arm64/compiled"]["output"]
    );

    let audit = m.run(&["audit", "--matrix", "arch", "--json"]);
    assert_eq!(audit.code, 0, "{}\n{}", audit.stdout, audit.stderr);
    let audit: Value = serde_json::from_str(&audit.stdout).unwrap();
    assert_eq!(audit["reproducible"], true);
    assert_eq!(audit["targets"]["doc"]["status"], "reproducible");
    assert_eq!(audit["targets"]["arm64/pkg"]["status"], "reproducible");
    assert_eq!(audit["counts"]["reproducible"], 8);
}

// ---------------------------------------------------------------------------
// Bad input: configuration errors (exit 2) at their place, with a hint.
// ---------------------------------------------------------------------------

fn expect_error(ws: &Ws, args: &[&str], place: &str, phrase: &str) -> Run {
    let r = ws.run(args);
    assert_eq!(r.code, 2, "exit {}:\n{}", r.code, r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(r.stderr.contains(place), "not at `{place}`:\n{}", r.stderr);
    assert!(r.stderr.contains(phrase), "no `{phrase}`:\n{}", r.stderr);
    assert!(r.stderr.contains("help:"), "no hint:\n{}", r.stderr);
    r
}

const DECLARED: &str = "vars:\n  arch: amd64\nmatrix:\n  arch: [amd64, arm64]\ntargets:\n  t:\n    rule: run\n    outs: [t]\n    cmd: \"echo ${arch} > $OUT/t\"\n";

#[test]
fn an_unknown_value_on_the_command_line_points_at_it_and_at_the_declared_list() {
    let ws = Ws::new();
    ws.write("BUILD.yaml", DECLARED);
    let r = expect_error(
        &ws,
        &["build", "--matrix", "arch=amd64,armv64"],
        "[command line:1:21]",
        "`armv64` is not one of the values of `arch`",
    );
    assert!(r.stderr.contains("did you mean `arm64`?"), "{}", r.stderr);
    assert!(r.stderr.contains("BUILD.yaml:4:9"), "{}", r.stderr);
    // A plain build with an unlisted value: at the list in BUILD.yaml.
    expect_error(
        &ws,
        &["build", "--var", "arch=armv7"],
        "BUILD.yaml:4:9",
        "`arch` is `armv7` (from the command line), which is not one of the values `matrix` lists",
    );
}

#[test]
fn a_matrix_over_an_undeclared_variable_is_refused() {
    let ws = Ws::new();
    ws.write("BUILD.yaml", DECLARED);
    let r = expect_error(
        &ws,
        &["build", "--matrix", "archh=amd64,arm64"],
        "[command line:1:10]",
        "the workspace declares no variable `archh`",
    );
    assert!(r.stderr.contains("did you mean `arch`?"), "{}", r.stderr);
    // Without values it builds the declared ones; none declared is an error.
    let plain = Ws::new();
    plain.write(
        "BUILD.yaml",
        "vars:\n  arch: amd64\ntargets:\n  t:\n    rule: run\n    outs: [t]\n    cmd: \"echo > $OUT/t\"\n",
    );
    expect_error(
        &plain,
        &["build", "--matrix", "arch"],
        "[command line:1:10]",
        "BUILD.yaml lists none",
    );
}

#[test]
fn conflicting_and_malformed_flags_are_refused() {
    let ws = Ws::new();
    ws.write("BUILD.yaml", DECLARED);
    expect_error(
        &ws,
        &[
            "build",
            "--var",
            "arch=amd64",
            "--matrix",
            "arch=amd64,arm64",
        ],
        "[command line:1:27]",
        "`arch` is given by both `--var arch=amd64` and `--matrix`",
    );
    expect_error(
        &ws,
        &["build", "--var", "arch=amd64", "--var", "arch=arm64"],
        "[command line:1:24]",
        "`--var arch` is given twice, as `amd64` and as `arm64`",
    );
    expect_error(
        &ws,
        &["graph", "--matrix", "arch=amd64,", "--format", "json"],
        "[command line:1:21]",
        "has an empty value",
    );
    expect_error(
        &ws,
        &["explain", "t", "--matrix", "arch=../x"],
        "[command line:1:15]",
        "`../x` cannot be a matrix value",
    );
    expect_error(
        &ws,
        &["audit", "--matrix", "arch=amd64", "--matrix", "arch=arm64"],
        "[command line:1:30]",
        "`--matrix arch` is given twice",
    );
    assert!(!ws.path().join("out").exists());
}

#[test]
fn a_wrong_matrix_declaration_points_into_build_yaml() {
    let cases: [(&str, &str, &str); 6] = [
        (
            "vars:\n  arch: amd64\nmatrix:\n  archh: [amd64]\ntargets: {}\n",
            "BUILD.yaml:4:3",
            "`matrix` names `archh`, which `vars:` does not declare",
        ),
        (
            "vars:\n  arch: amd64\nmatrix:\n  arch: [amd64, \"a b\"]\ntargets: {}\n",
            "BUILD.yaml:4:17",
            "`a b` cannot be a matrix value",
        ),
        (
            "vars:\n  arch: amd64\nmatrix:\n  arch: [amd64, amd64]\ntargets: {}\n",
            "BUILD.yaml:4:17",
            "`matrix` lists `amd64` twice for `arch`",
        ),
        (
            "vars:\n  arch: amd64\nmatrix:\n  arch: []\ntargets: {}\n",
            "BUILD.yaml:4:9",
            "`matrix` lists no value for `arch`",
        ),
        (
            "vars:\n  arch: !ENV ${ARCH:amd64}\nmatrix:\n  arch: [amd64]\ntargets: {}\n",
            "BUILD.yaml:2:14",
            "`arch` is read with `!ENV`, so it cannot be a matrix variable",
        ),
        (
            "vars:\n  arch: armv7\nmatrix:\n  arch: [amd64, arm64]\ntargets: {}\n",
            "BUILD.yaml:2:9",
            "`arch` is `armv7`, which is not one of the values `matrix` lists for it",
        ),
    ];
    for (yaml, place, phrase) in cases {
        let ws = Ws::new();
        ws.write("BUILD.yaml", yaml);
        expect_error(&ws, &["build"], place, phrase);
    }
    // `matrix:` belongs to the root file.
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "vars:\n  arch: amd64\ninclude: [more.yaml]\ntargets: {}\n",
    )
    .write("more.yaml", "matrix:\n  arch: [amd64]\ntargets: {}\n");
    expect_error(
        &ws,
        &["build"],
        "more.yaml:2:3",
        "`matrix` may only be set in the root BUILD.yaml",
    );
}

#[test]
fn errors_of_one_value_say_which_and_out_dir_must_not_depend_on_the_value() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "vars:\n  arch: amd64\ninclude: [\"arch/${arch}.yaml\"]\ntargets: {}\n",
    )
    .write("arch/amd64.yaml", "targets: {}\n");
    expect_error(
        &ws,
        &["build", "--matrix", "arch=amd64,riscv64"],
        "BUILD.yaml:3:11",
        "with arch=riscv64: include pattern `arch/riscv64.yaml` matches no file",
    );
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "vars:\n  arch: amd64\nout_dir: \"out-${arch}\"\ntargets:\n  t:\n    rule: run\n    outs: [t]\n    cmd: \"echo > $OUT/t\"\n",
    );
    expect_error(
        &ws,
        &["build", "--matrix", "arch=amd64,arm64"],
        "BUILD.yaml:3:10",
        "`out_dir` is",
    );
    // --out-dir settles it.
    let r = ws.run(&["build", "--matrix", "arch=amd64,arm64", "--out-dir", "dist"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(ws.path().join("dist/arm64/t/t").is_file());
}
