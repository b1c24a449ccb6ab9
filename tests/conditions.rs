//! `when:` (targets switched on and off by variables, as Packer's
//! `require_*` flags), `${var}` in `include:`, and `out_dir:`.

mod common;

use std::fs;

use common::Ws;
use serde_json::Value;

/// A pipeline with an optional tool: `extra` exists only when `with_extra`
/// is true; lists that name it (deps, layers, of) leave it out otherwise.
fn optional_tool() -> Ws {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"vars:
  with_extra: !ENV ${WITH_EXTRA:true}
targets:
  base:
    rule: run
    cmd: echo base > $OUT/base.txt
    outs: [base.txt]
  extra:
    when: ${with_extra}
    rule: run
    cmd: echo extra > $OUT/extra.txt
    outs: [extra.txt]
  listing:
    rule: run
    deps: [base, extra]
    cmd: ls $DEPS > $OUT/deps.txt
    outs: [deps.txt]
  tree:
    rule: rootfs
    layers:
      - {from: base, prefix: /opt}
      - {from: extra, prefix: /opt}
  sums:
    rule: checksums
    of: [base, extra]
"#,
    );
    ws
}

fn graph_targets(ws: &Ws, vars: &[&str]) -> Vec<String> {
    let mut args = vec!["graph", "--format", "json"];
    args.extend_from_slice(vars);
    let r = ws.run(&args);
    assert_eq!(r.code, 0, "graph failed:\n{}", r.stderr);
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    doc["targets"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[test]
fn a_switched_off_target_leaves_the_graph_and_every_list_that_names_it() {
    let ws = optional_tool();
    assert!(graph_targets(&ws, &[]).contains(&"extra".to_string()));
    ws.build_ok(&[]);
    assert_eq!(ws.read("out/listing/deps.txt"), "base\nextra\n");
    assert!(ws.path().join("out/tree/opt/extra.txt").exists());
    assert!(ws.read("out/sums/SHA256SUMS").contains("extra.txt"));

    let off = ["--var", "with_extra=false"];
    assert!(!graph_targets(&ws, &off).contains(&"extra".to_string()));
    let r = ws.build_ok(&off);
    assert!(!r.stdout.contains("extra\""), "{}", r.stdout);
    assert_eq!(ws.read("out/listing/deps.txt"), "base\n");
    assert!(ws.path().join("out/tree/opt/base.txt").exists());
    assert!(!ws.path().join("out/tree/opt/extra.txt").exists());
    assert!(!ws.read("out/sums/SHA256SUMS").contains("extra.txt"));
    assert!(!ws.path().join("out/extra").exists());
}

#[test]
fn a_flag_read_with_env_switches_a_target_off() {
    let ws = optional_tool();
    let r = ws
        .cmd(&["graph", "--format", "json"])
        .env("WITH_EXTRA", "false")
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert!(doc["targets"].get("extra").is_none(), "{doc}");
    assert!(doc["targets"].get("listing").is_some(), "{doc}");
}

#[test]
fn asking_for_a_switched_off_target_says_so() {
    let ws = optional_tool();
    let r = ws.build_fails(&["--var", "with_extra=false", "extra"], 2);
    assert!(
        r.stderr
            .contains("target `extra` is switched off by its `when:` at BUILD.yaml:9:"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_single_reference_to_a_switched_off_target_is_an_error_at_the_reference() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"vars:
  with_extra: "false"
targets:
  extra:
    when: "${with_extra}"
    rule: run
    cmd: echo extra > $OUT/extra.txt
    outs: [extra.txt]
  packed:
    rule: archive
    from: extra
"#,
    );
    let r = ws.build_fails(&[], 2);
    assert!(
        r.stderr
            .contains("`packed` needs `extra`, which is switched off"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("BUILD.yaml:11:11"), "{}", r.stderr);
    assert!(
        r.stderr.contains("BUILD.yaml:5:11"),
        "the hint names the condition:\n{}",
        r.stderr
    );
    // The same condition on the user switches both off together.
    let text = ws.read("BUILD.yaml").replace(
        "    rule: archive\n",
        "    rule: archive\n    when: \"${with_extra}\"\n",
    );
    ws.write("BUILD.yaml", &text);
    ws.build_ok(&[]);
    assert!(!ws.path().join("out/packed").exists());
}

#[test]
fn one_name_may_have_one_definition_per_condition() {
    // Keys of one YAML mapping are unique, so the definitions live in
    // files of their own, as per-architecture files do.
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "vars:\n  arch: x86_64\ninclude: [\"arch/*.yaml\"]\n",
    );
    for (file, cond, out) in [
        ("amd64", "${arch} == x86_64", "amd64"),
        ("arm64", "${arch} != x86_64", "arm64"),
    ] {
        ws.write(
            &format!("arch/{file}.yaml"),
            &format!(
                "targets:\n  tool:\n    when: {cond}\n    rule: run\n    cmd: echo {out} > $OUT/arch\n    outs: [arch]\n"
            ),
        );
    }
    ws.build_ok(&[]);
    assert_eq!(ws.read("out/tool/arch"), "amd64\n");
    ws.build_ok(&["--var", "arch=aarch64"]);
    assert_eq!(ws.read("out/tool/arch"), "arm64\n");
    // Two definitions that are both on are still a duplicate.
    let text = ws
        .read("arch/arm64.yaml")
        .replace("!= x86_64", "!= riscv64");
    ws.write("arch/arm64.yaml", &text);
    let r = ws.build_fails(&[], 2);
    assert!(
        r.stderr.contains("target `tool` is declared twice"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_condition_that_is_not_true_or_false_is_a_config_error() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"targets:
  a:
    rule: run
    when: "yes"
    cmd: "true"
"#,
    );
    let r = ws.build_fails(&[], 2);
    assert!(r.stderr.contains("bad condition `yes`"), "{}", r.stderr);
    assert!(r.stderr.contains("BUILD.yaml:4:11"), "{}", r.stderr);
    assert!(r.stderr.contains("help:"), "{}", r.stderr);
}

#[test]
fn include_patterns_take_variables() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "vars:\n  arch: x86_64\ninclude: [\"arch/${arch}.yaml\"]\n",
    );
    for arch in ["x86_64", "aarch64"] {
        ws.write(
            &format!("arch/{arch}.yaml"),
            &format!(
                "targets:\n  kernel:\n    rule: run\n    cmd: echo {arch} > $OUT/name\n    outs: [name]\n"
            ),
        );
    }
    ws.build_ok(&[]);
    assert_eq!(ws.read("out/kernel/name"), "x86_64\n");
    ws.build_ok(&["--var", "arch=aarch64"]);
    assert_eq!(ws.read("out/kernel/name"), "aarch64\n");
    let r = ws.build_fails(&["--var", "arch=riscv64"], 2);
    assert!(
        r.stderr
            .contains("include pattern `arch/riscv64.yaml` matches no file"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("patterns are relative to the root BUILD.yaml's folder"),
        "{}",
        r.stderr
    );
}

#[test]
fn out_dir_places_outputs_and_clean_removes_them() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"vars:
  output_dir: dist
out_dir: ${output_dir}
targets:
  a:
    rule: run
    cmd: echo a > $OUT/a
    outs: [a]
"#,
    );
    ws.build_ok(&[]);
    assert_eq!(ws.read("dist/a/a"), "a\n");
    assert!(!ws.path().join("out").exists());
    ws.build_ok(&["--var", "output_dir=images/v1"]);
    assert_eq!(ws.read("images/v1/a/a"), "a\n");
    // --out-dir wins over the file.
    ws.build_ok(&["--out-dir", "elsewhere"]);
    assert_eq!(ws.read("elsewhere/a/a"), "a\n");
    let r = ws.run(&["clean"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!ws.path().join("dist").exists());
    assert!(ws.path().join("BUILD.yaml").exists());
}

#[test]
fn out_dir_holding_the_workspace_is_refused() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "out_dir: sub/..\ntargets:\n  a:\n    rule: run\n    cmd: \"true\"\n",
    );
    let r = ws.build_fails(&[], 2);
    assert!(r.stderr.contains("holds the workspace"), "{}", r.stderr);
    assert!(r.stderr.contains("BUILD.yaml:1:10"), "{}", r.stderr);
    let r = ws.run(&["clean"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(fs::metadata(ws.path().join("BUILD.yaml")).is_ok());
}

#[test]
fn explain_and_audit_leave_out_dir_out_of_the_sources_as_the_build_does() {
    let ws = Ws::new();
    ws.write("src/a.txt", "a\n");
    ws.write(
        "BUILD.yaml",
        "out_dir: dist\ntargets:\n  all:\n    rule: run\n    srcs: [\"**\"]\n    cmd: cat src/a.txt > $OUT/a\n    outs: [a]\n",
    );
    ws.build_ok(&[]);
    assert_eq!(ws.read("dist/all/a"), "a\n");
    let r = ws.run(&["explain", "--json", "all"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["state"], "cached", "{}", r.stdout);
    let r = ws.run(&["audit", "all"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}

/// Three finals and a helper; `default:` names one final and a
/// switched-off target.
const WITH_DEFAULT: &str = r#"vars:
  with_extra: "false"
default: [image, extra, image]
targets:
  helper:
    rule: run
    cmd: echo helper > $OUT/h.txt
    outs: [h.txt]
  image:
    rule: run
    deps: [helper]
    cmd: cat $DEPS/helper/h.txt > $OUT/i.txt
    outs: [i.txt]
  docs:
    rule: run
    cmd: echo docs > $OUT/d.txt
    outs: [d.txt]
  extra:
    when: ${with_extra}
    rule: run
    cmd: echo extra > $OUT/e.txt
    outs: [e.txt]
"#;

#[test]
fn default_names_what_a_build_without_targets_builds() {
    let ws = Ws::new();
    ws.write("BUILD.yaml", WITH_DEFAULT);
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["helper", "image"]);
    assert_eq!(ws.read("out/image/i.txt"), "helper\n");
    let out: Vec<String> = fs::read_dir(ws.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    assert_eq!(
        out,
        ["image"],
        "only the default targets are placed in out/"
    );
    assert_eq!(graph_targets(&ws, &[]), ["helper", "image"]);
    // Named targets still win, and a switched-on default is built.
    assert_eq!(ws.build_ok(&["docs"]).executed(), ["docs"]);
    let r = ws.build_ok(&["--var", "with_extra=true"]);
    assert_eq!(r.executed(), ["extra"]);
    assert_eq!(r.with_status("cached"), ["helper", "image"]);
}

#[test]
fn a_bad_default_is_a_config_error_at_its_place() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        &WITH_DEFAULT.replace("[image, extra, image]", "[imgae]"),
    );
    let r = ws.build_fails(&[], 2);
    assert!(
        r.stderr
            .contains("`default` names `imgae`, which is not a target"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("BUILD.yaml:3:11"), "{}", r.stderr);
    assert!(r.stderr.contains("did you mean `image`?"), "{}", r.stderr);

    ws.write(
        "BUILD.yaml",
        &WITH_DEFAULT.replace("[image, extra, image]", "[]"),
    );
    let r = ws.build_fails(&[], 2);
    assert!(
        r.stderr.contains("`default` lists no target"),
        "{}",
        r.stderr
    );

    ws.write(
        "BUILD.yaml",
        &WITH_DEFAULT.replace("default: [image, extra, image]\n", "include: [more.yaml]\n"),
    );
    ws.write("more.yaml", "default: [docs]\nout_dir: dist\ntargets: {}\n");
    let r = ws.build_fails(&[], 2);
    assert!(
        r.stderr
            .contains("`default` may only be set in the root BUILD.yaml"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("more.yaml:1:"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("`out_dir` may only be set in the root BUILD.yaml"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("more.yaml:2:"), "{}", r.stderr);
}
