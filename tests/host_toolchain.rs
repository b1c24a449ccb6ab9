//! Steps on the host are keyed by the host toolchain: their declared
//! `tools:` (each program's contents, libraries and interpreter), or else the
//! host's package database. Two machines with different compilers never
//! share such a result.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::Ws;
use serde_json::Value;

/// A tool the sandbox can run: under /opt, which steps see read-only.
fn host_tool(dir: &Path, body: &str) -> String {
    let tool = dir.join("mycc");
    fs::write(&tool, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    tool.display().to_string()
}

fn explain(ws: &Ws, target: &str) -> Value {
    let r = ws.run(&["explain", target, "--json"]);
    assert_eq!(r.code, 0, "explain failed:\n{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

#[test]
fn a_changed_declared_tool_reruns_the_step_and_explain_names_it() {
    let opt = tempfile::Builder::new()
        .prefix("strata-toolchain-test")
        .tempdir_in("/opt")
        .expect("a folder under /opt (the tests run as root)");
    let tool = host_tool(opt.path(), "echo compiled-by-v1");
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        &format!(
            "targets:\n  obj:\n    rule: run\n    tools: [\"{tool}\"]\n    cmd: \"{tool} > $OUT/o\"\n    outs: [o]\n  plain:\n    rule: run\n    tools: []\n    cmd: \"echo plain > $OUT/p\"\n    outs: [p]\n"
        ),
    );
    let first = ws.build_ok(&[]);
    assert_eq!(first.executed().len(), 2, "{}", first.stdout);
    assert_eq!(ws.read("out/obj/o"), "compiled-by-v1\n");
    assert!(ws.build_ok(&[]).executed().is_empty());

    // Another machine's compiler: the same name, other bytes.
    host_tool(opt.path(), "echo compiled-by-v2");
    let e = explain(&ws, "obj");
    assert_eq!(e["state"], "would-run", "{e:#}");
    let changes = e["changes"].to_string();
    assert!(
        changes.contains(&format!("strata.tool.{tool}")),
        "explain does not name the tool: {e:#}"
    );
    let second = ws.build_ok(&[]);
    assert_eq!(
        second.executed(),
        vec!["obj".to_string()],
        "only the step using the tool re-runs"
    );
    assert_eq!(ws.read("out/obj/o"), "compiled-by-v2\n");

    // Back to the first compiler: its result is still known.
    host_tool(opt.path(), "echo compiled-by-v1");
    let third = ws.build_ok(&[]);
    assert!(third.executed().is_empty(), "{}", third.stdout);
    assert_eq!(ws.read("out/obj/o"), "compiled-by-v1\n");
}

#[test]
fn a_step_declaring_no_tools_is_keyed_by_the_host_packages() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: run\n    cmd: \"echo hi > $OUT/o\"\n    outs: [o]\n  fetched:\n    rule: run\n    cmd: \"echo hi > $OUT/o\"\n    outs: [o]\n    output_digest: \"blake3:0000000000000000000000000000000000000000000000000000000000000000\"\n",
    );
    ws.build_fails(&["--keep-going"], 1);
    let properties = &explain(&ws, "t")["components"]["properties"];
    let packages = properties["strata.host.packages"]
        .as_str()
        .unwrap_or_default();
    assert!(
        packages.starts_with("blake3:"),
        "a host step without tools: is not keyed by the package database: {properties:#}"
    );
    // A fixed-output step is checked by its digest, whatever made it.
    let fixed = &explain(&ws, "fetched")["components"]["properties"];
    assert!(fixed.get("strata.host.packages").is_none(), "{fixed:#}");
}
