//! `strata explain` and `strata build --explain`: the exact changed file,
//! environment variable or dependency, followed to the root cause.

mod common;

use common::Ws;

const BUILD: &str = r#"vars:
  token: !ENV EXPLAIN_TOKEN
targets:
  words:
    rule: run
    srcs: [words.txt, unused.txt]
    cmd: sort words.txt > $OUT/words.txt
    outs: [words.txt]
  count:
    rule: run
    deps: [words]
    env: {MODE: lines, TOKEN: "${token}"}
    cmd: wc -l < $DEPS/words/words.txt > $OUT/count.txt
    outs: [count.txt]
  tarball:
    rule: archive
    from: count
"#;

/// `strata ARGS` with the secret the workspace reads.
fn strata(ws: &Ws, args: &[&str], token: &str) -> common::Run {
    ws.cmd(args)
        .env("EXPLAIN_TOKEN", token)
        .output()
        .unwrap()
        .into()
}

fn workspace() -> Ws {
    let ws = Ws::new();
    ws.write("BUILD.yaml", BUILD);
    ws.write("words.txt", "b\na\n");
    ws.write("unused.txt", "x\n");
    let r = strata(&ws, &["build"], "first-secret");
    assert_eq!(r.code, 0, "{}", r.stderr);
    ws
}

fn explain(ws: &Ws, target: &str) -> serde_json::Value {
    let r = strata(ws, &["explain", target, "--json"], "first-secret");
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.json()
}

#[test]
fn a_changed_source_is_named_through_the_dependency_chain() {
    let ws = workspace();
    ws.write("words.txt", "b\nc\na\n");
    let e = explain(&ws, "tarball");
    assert_eq!(e["target"], "tarball");
    assert_eq!(e["state"], "pending", "{e:#}");
    let count = &e["because"][0];
    assert_eq!(count["target"], "count");
    let words = &count["because"][0];
    assert_eq!(words["target"], "words");
    assert_eq!(words["state"], "would-run");
    let changes = words["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "only the changed file: {changes:#?}");
    assert_eq!(changes[0]["kind"], "source");
    assert_eq!(changes[0]["path"], "words.txt");
    assert_ne!(changes[0]["old"], changes[0]["new"]);

    // Text form, then the build says the same per executed target.
    let r = strata(&ws, &["explain", "words"], "first-secret");
    assert!(r.stdout.contains("source `words.txt`"), "{}", r.stdout);
    let r = strata(&ws, &["build", "--explain"], "first-secret");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = |t: &str| {
        r.stderr
            .lines()
            .find(|l| l.starts_with(&format!("explain: `{t}`")))
            .unwrap_or_else(|| panic!("no line for {t}:\n{}", r.stderr))
            .to_string()
    };
    assert!(line("words").contains("source `words.txt`"));
    assert!(
        line("count").contains("dependency `words` changed: source `words.txt`"),
        "{}",
        line("count")
    );
    assert!(line("tarball").contains("dependency `count`"));
    assert!(!r.stderr.contains("unused.txt"));
}

#[test]
fn a_changed_environment_variable_is_named() {
    let ws = workspace();
    ws.write("BUILD.yaml", &BUILD.replace("MODE: lines", "MODE: words"));
    let e = explain(&ws, "count");
    assert_eq!(e["state"], "would-run");
    let changes = e["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!(changes[0]["kind"], "env");
    assert_eq!(changes[0]["name"], "MODE");
    assert_eq!(changes[0]["old"], "lines");
    assert_eq!(changes[0]["new"], "words");
    assert!(
        e["because"].as_array().unwrap().is_empty(),
        "its dependency did not change"
    );
}

#[test]
fn a_changed_secret_is_named_without_its_value() {
    let ws = workspace();
    let r = strata(&ws, &["explain", "count", "--json"], "second-secret");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let changes = r.json()["changes"].clone();
    assert_eq!(changes[0]["name"], "TOKEN", "{changes:#}");
    assert!(!r.stdout.contains("first-secret") && !r.stdout.contains("second-secret"));
}

#[test]
fn after_a_build_the_target_is_cached_and_unchanged() {
    let ws = workspace();
    ws.write("words.txt", "z\n");
    let r = strata(&ws, &["build"], "first-secret");
    assert_eq!(r.code, 0);
    // Now everything is built: `count` is cached, and its last key differs
    // from the one before by the dependency's output.
    let e = explain(&ws, "count");
    assert_eq!(e["state"], "cached");
    assert!(
        e["changes"].as_array().unwrap().is_empty(),
        "nothing changed since the last build: {e:#}"
    );
}

#[test]
fn an_unknown_target_is_a_usage_error() {
    let ws = workspace();
    let r = strata(&ws, &["explain", "cuont"], "first-secret");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("count"),
        "suggests the close name: {}",
        r.stderr
    );
}
