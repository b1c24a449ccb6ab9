//! `strata graph` (the DAG as DOT or JSON) and `strata build --trace` (a
//! Chrome trace of what the build did).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::Ws;
use serde_json::{Value, json};

/// tool <- data ; tool <- img (a two-step stage) ; data, img <- sums ;
/// lonely stands apart. Targets in the order given.
const TARGETS: [&str; 5] = [
    "  tool:\n    rule: run\n    cmd: \"echo > $OUT/t\"\n    outs: [t]\n",
    "  data:\n    rule: run\n    deps: [tool]\n    cmd: \"echo > $OUT/d\"\n    outs: [d]\n",
    "  img:\n    rule: stage\n    from: scratch\n    steps:\n      - cmd: \"true\"\n      - deps: [tool]\n        cmd: \"true\"\n",
    "  sums:\n    rule: checksums\n    of: [img, data]\n",
    "  lonely:\n    rule: run\n    cmd: \"echo > $OUT/l\"\n    outs: [l]\n",
];

fn write_targets<'a>(ws: &Ws, order: impl Iterator<Item = &'a str>) {
    ws.write(
        "BUILD.yaml",
        &format!("targets:\n{}", order.collect::<String>()),
    );
}

fn workspace() -> Ws {
    let ws = Ws::new();
    write_targets(&ws, TARGETS.into_iter());
    ws
}

fn graph_ok(ws: &Ws, args: &[&str]) -> String {
    let mut all = vec!["graph"];
    all.extend_from_slice(args);
    let r = ws.run(&all);
    assert_eq!(r.code, 0, "graph failed:\n{}", r.stderr);
    r.stdout
}

#[test]
fn json_lists_every_target_with_its_rule_and_exact_deps() {
    let ws = workspace();
    let doc: Value = serde_json::from_str(&graph_ok(&ws, &["--format", "json"])).unwrap();
    // The hidden first step of the stage is a node like any other.
    assert_eq!(
        doc,
        json!({"targets": {
            "data": {"rule": "run", "deps": ["tool"]},
            "img": {"rule": "stage", "deps": ["img#1", "tool"]},
            "img#1": {"rule": "stage", "deps": []},
            "lonely": {"rule": "run", "deps": []},
            "sums": {"rule": "checksums", "deps": ["data", "img"]},
            "tool": {"rule": "run", "deps": []},
        }})
    );
}

#[test]
fn named_targets_bring_only_their_dependencies() {
    let ws = workspace();
    let doc: Value = serde_json::from_str(&graph_ok(&ws, &["--format", "json", "data"])).unwrap();
    assert_eq!(
        doc,
        json!({"targets": {
            "data": {"rule": "run", "deps": ["tool"]},
            "tool": {"rule": "run", "deps": []},
        }})
    );
}

#[test]
fn dot_points_from_dependency_to_dependent_in_a_stable_order() {
    let ws = workspace();
    let dot = graph_ok(&ws, &["sums"]);
    assert_eq!(
        dot,
        r#"// strata graph: an edge points from a dependency to the target that uses it
digraph strata {
  rankdir=LR;
  node [shape=box, fontname="monospace"];
  "data" [label="data\nrun"];
  "img" [label="img\nstage"];
  "img#1" [label="img#1\nstage", style=dashed];
  "sums" [label="sums\nchecksums"];
  "tool" [label="tool\nrun"];
  "data" -> "sums";
  "img" -> "sums";
  "img#1" -> "img";
  "tool" -> "data";
  "tool" -> "img";
}
"#
    );
    // The same graph declared in another order prints the same bytes.
    write_targets(&ws, TARGETS.into_iter().rev());
    assert_eq!(graph_ok(&ws, &["sums"]), dot);
}

#[test]
fn dot_output_is_read_by_graphviz() {
    let ws = workspace();
    let dot = graph_ok(&ws, &[]);
    // scripts/test.sh installs graphviz.
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("graphviz's `dot` is installed (scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "{stderr}\n{dot}");
    let svg = String::from_utf8_lossy(&out.stdout);
    for node in ["tool", "data", "img#1", "img", "sums", "lonely"] {
        assert!(
            svg.contains(&format!("<title>{node}</title>")),
            "{node} missing:\n{svg}"
        );
    }
    assert!(svg.contains("<title>img#1&#45;&gt;img</title>"), "{svg}");
}

#[test]
fn graph_reports_configuration_errors_like_build() {
    let ws = workspace();
    let r = ws.run(&["graph", "nope"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("no target named `nope`"), "{}", r.stderr);
    assert!(r.stdout.is_empty());

    let r = ws.run(&["graph", "--format", "svg"]);
    assert_eq!(r.code, 2, "{}", r.stderr);

    let r = ws.run(&["graph", "--var", "=x"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("--var expects NAME=VALUE"),
        "{}",
        r.stderr
    );

    let r = ws.run(&["graph", "-f", "missing.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);

    ws.write(
        "BUILD.yaml",
        "targets:\n  a:\n    rule: run\n    deps: [b]\n    cmd: \"true\"\n  b:\n    rule: run\n    deps: [a]\n    cmd: \"true\"\n",
    );
    let r = ws.run(&["graph", "--format", "json"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("dependency cycle"), "{}", r.stderr);
    assert!(r.stdout.is_empty());

    // Variables reach dependencies, as in a build.
    ws.write(
        "BUILD.yaml",
        "vars: {d: a}\ntargets:\n  a:\n    rule: run\n    cmd: \"true\"\n  b:\n    rule: run\n    cmd: \"true\"\n  c:\n    rule: run\n    deps: [\"${d}\"]\n    cmd: \"true\"\n",
    );
    let doc: Value =
        serde_json::from_str(&graph_ok(&ws, &["--format", "json", "--var", "d=b", "c"])).unwrap();
    assert_eq!(doc["targets"]["c"]["deps"], json!(["b"]));
    assert!(doc["targets"].get("a").is_none());
}
