//! A step that names `dep:path` is keyed by that path only: other changes
//! in the dependency's output leave it cached (built-in rules and `copy`
//! steps; a `run` step may read all of `$DEPS` and keys everything).

mod common;

use common::Ws;

fn workspace() -> Ws {
    let ws = Ws::new();
    ws.write("a.txt", "a1\n").write("b.txt", "b1\n");
    ws.write(
        "BUILD.yaml",
        r#"targets:
  fetch:
    rule: run
    srcs: [a.txt, b.txt]
    cmd: mkdir $OUT/files && cp a.txt b.txt $OUT/files/
    outs: [files/]
  tree:
    rule: rootfs
    components:
      - {type: file, source: "fetch:files/a.txt", target: /etc/a}
  runtime:
    rule: stage
    from: scratch
    steps:
      - copy: "fetch:files/a.txt"
        to: /a
  whole:
    rule: rootfs
    layers: [{from: fetch}]
  script:
    rule: run
    deps: [fetch]
    cmd: cat $DEPS/fetch/files/a.txt > $OUT/a
    outs: [a]
"#,
    );
    ws
}

#[test]
fn a_change_outside_the_path_read_leaves_the_step_cached() {
    let ws = workspace();
    ws.build_ok(&[]);
    assert_eq!(ws.read("out/tree/etc/a"), "a1\n");
    assert_eq!(ws.read("out/runtime/a"), "a1\n");

    ws.write("b.txt", "b2\n");
    let r = ws.build_ok(&[]);
    let mut executed = r.executed();
    executed.sort();
    assert_eq!(executed, ["fetch", "script", "whole"], "{}", r.stdout);

    ws.write("a.txt", "a2\n");
    let r = ws.build_ok(&[]);
    let mut executed = r.executed();
    executed.sort();
    assert_eq!(
        executed,
        ["fetch", "runtime", "script", "tree", "whole"],
        "{}",
        r.stdout
    );
    assert_eq!(ws.read("out/tree/etc/a"), "a2\n");
    assert_eq!(ws.read("out/runtime/a"), "a2\n");
}
