//! `strata graph` (the DAG as DOT or JSON) and `strata build --trace` (a
//! Chrome trace of what the build did).

mod common;

use std::fs;
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

/// The events of a trace file, checked against the Chrome trace-event
/// format: every event names its phase type, process and track; spans have a
/// start and a duration in microseconds, instants a scope.
fn trace_events(ws: &Ws, file: &str) -> Vec<Value> {
    let doc: Value = serde_json::from_str(&ws.read(file)).expect("the trace is JSON");
    let events = doc["traceEvents"]
        .as_array()
        .expect("a traceEvents array")
        .clone();
    for e in &events {
        assert!(e["name"].is_string(), "{e}");
        assert!(e["pid"].is_u64() && e["tid"].is_u64(), "{e}");
        match e["ph"].as_str() {
            Some("X") => assert!(e["ts"].is_u64() && e["dur"].is_u64(), "{e}"),
            Some("i") => assert!(e["ts"].is_u64() && e["s"] == "t", "{e}"),
            Some("M") => assert!(e["args"].is_object(), "{e}"),
            _ => panic!("unexpected event {e}"),
        }
    }
    events
}

fn of_cat<'a>(events: &'a [Value], cat: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["cat"] == cat).collect()
}

fn names(events: &[&Value]) -> Vec<String> {
    let mut n: Vec<String> = events
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

#[test]
fn trace_has_one_span_per_executed_action_and_markers_for_cache_hits() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  a:
    rule: run
    cmd: "echo a > $OUT/a"
    outs: [a]
  b:
    rule: run
    deps: [a]
    cmd: "cat $DEPS/a/a > $OUT/b"
    outs: [b]
  c:
    rule: run
    cmd: "echo c > $OUT/c"
    outs: [c]
  sums:
    rule: checksums
    of: [b, c]
"#,
    );
    let cold = ws.build_ok(&["--trace", "cold.json"]);
    let events = trace_events(&ws, "cold.json");
    let spans = of_cat(&events, "action");
    assert_eq!(names(&spans), ["a", "b", "c", "sums"]);
    assert_eq!(names(&spans), cold.executed());
    for s in &spans {
        let name = s["name"].as_str().unwrap();
        assert_eq!(s["ph"], "X");
        assert_eq!(s["args"]["status"], "executed");
        assert_eq!(s["args"]["key"], cold.json()["targets"][name]["key"], "{s}");
        let rule = if name == "sums" { "checksums" } else { "run" };
        assert_eq!(s["args"]["rule"], rule);
    }
    assert!(of_cat(&events, "cache-hit").is_empty());
    // A dependent's span starts after its dependency's ends.
    let span = |n: &str| spans.iter().find(|s| s["name"] == n).unwrap();
    let end = |s: &Value| s["ts"].as_u64().unwrap() + s["dur"].as_u64().unwrap();
    assert!(span("b")["ts"].as_u64().unwrap() >= end(span("a")));
    let phases = names(&of_cat(&events, "phase"));
    for p in ["execute", "key", "load", "materialize"] {
        assert!(phases.iter().any(|x| x == p), "{phases:?}");
    }

    let warm = ws.build_ok(&["--trace", "warm.json"]);
    assert!(warm.executed().is_empty());
    let events = trace_events(&ws, "warm.json");
    assert!(of_cat(&events, "action").is_empty(), "{events:?}");
    let hits = of_cat(&events, "cache-hit");
    assert_eq!(names(&hits), ["a", "b", "c", "sums"]);
    for h in hits {
        let name = h["name"].as_str().unwrap();
        assert_eq!(h["args"]["status"], "cached");
        assert_eq!(h["args"]["key"], cold.json()["targets"][name]["key"]);
    }
}

#[test]
fn a_failed_step_has_a_failed_span_and_the_trace_is_still_written() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "targets:\n  bad:\n    rule: run\n    cmd: \"exit 3\"\n  good:\n    rule: run\n    cmd: \"echo > $OUT/g\"\n    outs: [g]\n",
    );
    ws.build_fails(&["-k", "--trace", "t.json"], 1);
    let events = trace_events(&ws, "t.json");
    let spans = of_cat(&events, "action");
    assert_eq!(names(&spans), ["bad", "good"]);
    let status = |n: &str| spans.iter().find(|s| s["name"] == n).unwrap()["args"]["status"].clone();
    assert_eq!(status("bad"), "failed");
    assert_eq!(status("good"), "executed");
}

/// Two steps that each wait for the other's marker: they only succeed if
/// they run at the same time (unsandboxed, so both see the markers).
#[test]
fn concurrent_actions_land_on_separate_tracks() {
    let ws = Ws::new();
    let dir = ws.path().join("markers");
    fs::create_dir_all(&dir).unwrap();
    let step = |me: &str, other: &str| {
        format!(
            "  {me}:\n    rule: run\n    env: {{DIR: \"{}\"}}\n    cmd: \"touch $DIR/{me}; i=0; while [ ! -e $DIR/{other} ]; do i=$((i+1)); [ $i -gt 200 ] && exit 1; sleep 0.1; done; sleep 0.5; echo ok > $OUT/o\"\n    outs: [o]\n",
            dir.display(),
        )
    };
    // `after` runs once both are done, on whichever lane is free.
    ws.write(
        "BUILD.yaml",
        &format!(
            "targets:\n{}{}  after:\n    rule: run\n    deps: [left, right]\n    cmd: \"echo > $OUT/o\"\n    outs: [o]\n",
            step("left", "right"),
            step("right", "left")
        ),
    );
    let r: common::Run = ws
        .cmd(&["build", "--json", "-j2", "--trace", "t.json"])
        .env("STRATA_SANDBOX", "off")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let events = trace_events(&ws, "t.json");
    let spans = of_cat(&events, "action");
    assert_eq!(names(&spans), ["after", "left", "right"]);
    let interval = |s: &Value| {
        let ts = s["ts"].as_u64().unwrap();
        (ts, ts + s["dur"].as_u64().unwrap())
    };
    let span = |n: &str| *spans.iter().find(|s| s["name"] == n).unwrap();
    let (l, rt) = (interval(span("left")), interval(span("right")));
    assert!(
        l.0 < rt.1 && rt.0 < l.1,
        "the rendezvous overlaps: {l:?} {rt:?}"
    );
    assert_ne!(span("left")["tid"], span("right")["tid"]);
    // No track ever holds two spans at once.
    for a in &spans {
        for b in &spans {
            if a["name"] != b["name"] && a["tid"] == b["tid"] {
                let (x, y) = (interval(a), interval(b));
                assert!(x.1 <= y.0 || y.1 <= x.0, "{a} and {b} share a track");
            }
        }
    }
    // Every track with a span is named, for the viewer.
    for s in &spans {
        assert!(
            events
                .iter()
                .any(|e| e["ph"] == "M" && e["name"] == "thread_name" && e["tid"] == s["tid"]),
            "{s}"
        );
    }
}

#[test]
fn an_unwritable_trace_path_is_refused_before_building() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "targets:\n  a:\n    rule: run\n    cmd: \"echo > $OUT/a\"\n    outs: [a]\n",
    );
    for (path, message) in [("no/such/t.json", "no folder"), (".", "is a folder")] {
        let r = ws.build_fails(&["--trace", path], 2);
        assert!(r.stderr.contains(message), "{}", r.stderr);
        assert!(!ws.path().join("out").exists(), "nothing was built");
    }
}
