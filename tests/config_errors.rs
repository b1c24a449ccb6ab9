//! Configuration errors and step failures as the user sees them: a miette
//! diagnostic on stderr that names `file:line:column` of the offending token,
//! carries a `help:` hint, and exits 2 (configuration) or 1 (a failed step).
//!
//! Every YAML below is written so that the place of the offending token can be
//! counted by hand; the expected `line:column` is noted beside it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{Run, Ws};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Whether `stderr` names `place` (`file:line:column`) exactly: the match
/// must not continue with another digit (so `4:1` does not match `4:12`)
/// and must not be the tail of a longer file name.
fn names_place(stderr: &str, place: &str) -> bool {
    stderr.match_indices(place).any(|(i, _)| {
        let before = stderr[..i].chars().next_back();
        let after = stderr[i + place.len()..].chars().next();
        let clean_before =
            before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.'));
        let clean_after = after.is_none_or(|c| !c.is_ascii_digit());
        clean_before && clean_after
    })
}

fn dump(r: &Run) -> String {
    format!(
        "exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        r.code, r.stdout, r.stderr
    )
}

/// No run, failing or not, may end in a Rust panic.
fn assert_no_panic(r: &Run) {
    assert!(
        !r.stderr.contains("panicked"),
        "strata panicked:\n{}",
        dump(r)
    );
}

/// The shape shared by every diagnostic: the exact place, a key phrase of the
/// message, and a `help:` hint.
fn assert_diagnostic(r: &Run, place: &str, phrase: &str) {
    assert_no_panic(r);
    assert!(
        names_place(&r.stderr, place),
        "stderr does not point at `{place}`:\n{}",
        dump(r)
    );
    assert!(
        r.stderr.contains(phrase),
        "stderr does not say `{phrase}`:\n{}",
        dump(r)
    );
    assert!(
        r.stderr.contains("help:"),
        "stderr has no `help:` hint:\n{}",
        dump(r)
    );
}

/// `strata build` in `ws` must fail with a configuration error (exit 2) at
/// `place` whose text contains `phrase`.
fn expect_error_in(ws: &Ws, place: &str, phrase: &str) -> Run {
    let r = ws.build_fails(&[], 2);
    assert_diagnostic(&r, place, phrase);
    r
}

/// A workspace holding only `yaml` as BUILD.yaml; `strata build` must fail
/// with a configuration error at `place` mentioning `phrase`.
fn expect_config_error(yaml: &str, place: &str, phrase: &str) -> Run {
    let ws = Ws::new();
    ws.write("BUILD.yaml", yaml);
    expect_error_in(&ws, place, phrase)
}

/// Every regular file under `root`, recursively (symlinks are not followed).
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("cannot list {}: {e}", dir.display()),
        };
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Files under `root` whose bytes contain `needle`.
fn files_containing(root: &Path, needle: &str) -> Vec<PathBuf> {
    let needle = needle.as_bytes();
    files_under(root)
        .into_iter()
        .filter(|p| {
            let bytes = fs::read(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            bytes.windows(needle.len()).any(|w| w == needle)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Unknown dependency
// ---------------------------------------------------------------------------

#[test]
fn unknown_dependency_suggests_the_close_target() {
    let r = expect_config_error(
        r#"targets:
  words:
    rule: run
    cmd: "echo hi > $OUT/words.txt"
    outs: [words.txt]
  count:
    rule: run
    deps: [wrods]
    cmd: "wc -l < $DEPS/wrods/words.txt > $OUT/count.txt"
    outs: [count.txt]
"#,
        // line 8: `    deps: [wrods]`, `wrods` at column 12
        "BUILD.yaml:8:12",
        "wrods",
    );
    assert!(
        r.stderr.contains("did you mean"),
        "no suggestion:\n{}",
        dump(&r)
    );
    assert!(
        r.stderr.contains("`words`"),
        "the suggestion does not name `words`:\n{}",
        dump(&r)
    );
}

// ---------------------------------------------------------------------------
// 2. Duplicate target across an include
// ---------------------------------------------------------------------------

#[test]
fn duplicate_target_points_at_the_second_definition_in_the_included_file() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"targets:
  words:
    rule: run
    cmd: "echo a > $OUT/a.txt"
    outs: [a.txt]
include: ["stages/*.yaml"]
"#,
    );
    ws.write(
        "stages/x.yaml",
        r#"targets:
  other:
    rule: run
    cmd: "echo b > $OUT/b.txt"
    outs: [b.txt]
  words:
    rule: run
    cmd: "echo c > $OUT/c.txt"
    outs: [c.txt]
"#,
    );
    // stages/x.yaml line 6: `  words:`, the name at column 3
    let r = expect_error_in(&ws, "stages/x.yaml:6:3", "target `words` is declared twice");
    // The first declaration is shown too, in its own file.
    assert!(
        r.stderr.contains("BUILD.yaml:2:3") && r.stderr.contains("first declared here"),
        "the first declaration is not shown:\n{}",
        dump(&r)
    );
    assert!(
        !r.stderr.contains("DuplicateKeyPolicy"),
        "library internals leak:\n{}",
        dump(&r)
    );
}

// ---------------------------------------------------------------------------
// 3. Dependency cycle
// ---------------------------------------------------------------------------

#[test]
fn dependency_cycle_prints_the_whole_cycle() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"targets:
  a:
    rule: run
    deps: [b]
    cmd: "echo a > $OUT/a.txt"
    outs: [a.txt]
  b:
    rule: run
    deps: [c]
    cmd: "echo b > $OUT/b.txt"
    outs: [b.txt]
  c:
    rule: run
    deps: [a]
    cmd: "echo c > $OUT/c.txt"
    outs: [c.txt]
"#,
    );
    let r = ws.build_fails(&[], 2);
    assert_no_panic(&r);
    assert!(
        r.stderr.contains("cycle"),
        "no `cycle` in the message:\n{}",
        dump(&r)
    );
    assert!(r.stderr.contains("help:"), "no `help:` hint:\n{}", dump(&r));
    // `a` depends on `b`, `b` on `c`, `c` on `a`: any rotation of that chain,
    // in the direction of the dependencies.
    let rotations = ["a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"];
    assert!(
        rotations.iter().any(|c| r.stderr.contains(c)),
        "the cycle is not printed as one of {rotations:?}:\n{}",
        dump(&r)
    );
    // The diagnostic points at one of the dependency entries that make the
    // cycle: `[b]` (4:12), `[c]` (9:12) or `[a]` (14:12).
    let places = ["BUILD.yaml:4:12", "BUILD.yaml:9:12", "BUILD.yaml:14:12"];
    assert!(
        places.iter().any(|p| names_place(&r.stderr, p)),
        "the diagnostic points at none of the cycle's dependency entries {places:?}:\n{}",
        dump(&r)
    );
}

// ---------------------------------------------------------------------------
// 4. A srcs glob matching nothing
// ---------------------------------------------------------------------------

#[test]
fn srcs_glob_matching_nothing() {
    let ws = Ws::new();
    ws.write("data/readme.md", "not a .txt file\n");
    ws.write(
        "BUILD.yaml",
        r#"targets:
  words:
    rule: run
    srcs:
      - data/*.txt
    cmd: "cat data/*.txt > $OUT/words.txt"
    outs: [words.txt]
"#,
    );
    // line 5: `      - data/*.txt`, the pattern at column 9
    expect_error_in(&ws, "BUILD.yaml:5:9", "matches no file");
}

// ---------------------------------------------------------------------------
// 5. Missing required !ENV variable
// ---------------------------------------------------------------------------

#[test]
fn missing_required_env_variable() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"vars:
  token: !ENV MY_TOKEN_UNSET_XYZ
targets:
  t:
    rule: run
    cmd: "test -n ${token} && echo ok > $OUT/t.txt"
    outs: [t.txt]
"#,
    );
    let r: Run = ws
        .cmd(&["build"])
        .env_remove("MY_TOKEN_UNSET_XYZ")
        .output()
        .expect("strata runs")
        .into();
    assert_eq!(r.code, 2, "expected exit 2:\n{}", dump(&r));
    assert_no_panic(&r);
    // line 2: `  token: !ENV MY_TOKEN_UNSET_XYZ`; the value node begins with
    // its tag at column 10 (the name itself is at column 15: both are the
    // offending token).
    assert!(
        names_place(&r.stderr, "BUILD.yaml:2:10") || names_place(&r.stderr, "BUILD.yaml:2:15"),
        "stderr does not point at the !ENV value on line 2:\n{}",
        dump(&r)
    );
    assert!(
        r.stderr.contains("not set"),
        "the message does not say the variable is not set:\n{}",
        dump(&r)
    );
    assert!(
        r.stderr.contains("MY_TOKEN_UNSET_XYZ"),
        "the variable is not named:\n{}",
        dump(&r)
    );
    assert!(r.stderr.contains("help:"), "no `help:` hint:\n{}", dump(&r));
    // `token` is declared; its value is what is missing. A second diagnostic
    // calling it an unknown variable at its use in `cmd` would be misleading.
    assert!(
        !r.stderr.contains("unknown variable `token`"),
        "the missing !ENV value cascades into an `unknown variable` error at its use:\n{}",
        dump(&r)
    );
}

// ---------------------------------------------------------------------------
// 6. Bad interpolation
// ---------------------------------------------------------------------------

#[test]
fn interpolation_of_an_unknown_variable_points_at_the_dollar() {
    let r = expect_config_error(
        r#"vars:
  greeting: hello
targets:
  t:
    rule: run
    cmd: "echo ${nope} > $OUT/x.txt"
    outs: [x.txt]
"#,
        // line 6: `    cmd: "echo ${nope} ...`, the `$` at column 16
        "BUILD.yaml:6:16",
        "unknown variable",
    );
    assert!(
        r.stderr.contains("nope"),
        "the variable is not named:\n{}",
        dump(&r)
    );
}

#[test]
fn interpolation_left_unclosed() {
    expect_config_error(
        r#"targets:
  t:
    rule: run
    cmd: "echo ${unclosed > $OUT/x.txt"
    outs: [x.txt]
"#,
        // line 4: `    cmd: "echo ${unclosed ...`, the `$` at column 16
        "BUILD.yaml:4:16",
        "not closed",
    );
}

// ---------------------------------------------------------------------------
// 7. Type errors
// ---------------------------------------------------------------------------

#[test]
fn network_must_be_a_bool() {
    expect_config_error(
        r#"targets:
  t:
    rule: run
    network: maybe
    cmd: "echo x > $OUT/x.txt"
    outs: [x.txt]
"#,
        // line 4: `    network: maybe`, the value at column 14
        "BUILD.yaml:4:14",
        "boolean",
    );
}

#[test]
fn local_must_be_a_bool_of_a_run_target() {
    expect_config_error(
        r#"targets:
  t:
    rule: run
    local: 3
    cmd: "echo x > $OUT/x.txt"
    outs: [x.txt]
"#,
        // line 4: `    local: 3`, the value at column 12
        "BUILD.yaml:4:12",
        "boolean",
    );
    expect_config_error(
        r#"targets:
  t:
    rule: archive
    local: true
    from: [x]
"#,
        "BUILD.yaml:4:12",
        "does not apply to rule `archive`",
    );
}

#[test]
fn a_process_limit_must_be_a_positive_whole_number() {
    for value in ["0", "-3", "lots", "2.5"] {
        expect_config_error(
            &format!(
                r#"targets:
  t:
    rule: run
    limits: {{processes: {value}}}
    cmd: "echo x > $OUT/x.txt"
    outs: [x.txt]
"#
            ),
            // line 4: `    limits: {processes: 0}`, the value at column 25
            "BUILD.yaml:4:25",
            "bad limits.processes",
        );
    }
}

#[test]
fn a_memory_limit_must_be_a_size() {
    for value in [
        "0",
        "-3",
        "lots",
        "2.5G",
        "512MB",
        "1Q",
        "\"\"",
        "512K",
        "99999999999T",
    ] {
        expect_config_error(
            &format!(
                r#"targets:
  t:
    rule: run
    limits: {{memory: {value}}}
    cmd: "echo x > $OUT/x.txt"
    outs: [x.txt]
"#
            ),
            // line 4: `    limits: {memory: 0}`, the value at column 22
            "BUILD.yaml:4:22",
            "bad limits.memory",
        );
    }
}

#[test]
fn a_bad_memory_limit_says_how_to_write_one() {
    let r = expect_config_error(
        r#"targets:
  t:
    rule: run
    limits: {processes: 64, memory: 512MB}
    cmd: "echo x > $OUT/x.txt"
    outs: [x.txt]
"#,
        // line 4: the memory value at column 37
        "BUILD.yaml:4:37",
        "bad limits.memory `512MB`",
    );
    assert!(r.stderr.contains("512MiB"), "{}", r.stderr);
}

#[test]
fn a_memory_limit_in_any_accepted_unit_loads() {
    for value in ["512MiB", "2GiB", "64M", "1G", "1048576", "4096KiB", "1 GiB"] {
        let ws = Ws::new();
        ws.write(
            "BUILD.yaml",
            &format!(
                r#"targets:
  t:
    rule: run
    limits: {{memory: {value}}}
    cmd: "echo x > $OUT/x.txt"
    outs: [x.txt]
"#
            ),
        );
        let r = ws.run(&["graph"]);
        assert_eq!(r.code, 0, "{value}: {}", r.stderr);
    }
}

#[test]
fn a_time_limit_must_be_a_duration_with_a_unit() {
    for value in [
        "0s", "90", "-1s", "lots", "1.5h", "1d", "\"\"", "1h30m", "8761h", "[1]",
    ] {
        expect_config_error(
            &format!(
                r#"targets:
  t:
    rule: run
    limits: {{time: {value}}}
    cmd: "echo x > $OUT/x.txt"
    outs: [x.txt]
"#
            ),
            // line 4: `    limits: {time: 0s}`, the value at column 20
            "BUILD.yaml:4:20",
            "bad limits.time",
        );
    }
}

#[test]
fn a_bad_time_limit_says_how_to_write_one() {
    let r = expect_config_error(
        r#"targets:
  t:
    rule: run
    limits: {memory: 64MiB, time: 90}
    cmd: "echo x > $OUT/x.txt"
    outs: [x.txt]
"#,
        // line 4: the time value at column 35
        "BUILD.yaml:4:35",
        "bad limits.time `90`: no unit",
    );
    assert!(r.stderr.contains("`10m`"), "{}", r.stderr);
}

#[test]
fn a_time_limit_loads_in_the_sandbox_and_in_a_container() {
    for (image, value) in [
        ("", "90s"),
        ("", "10m"),
        ("", "2h"),
        (
            "image: \"alpine@sha256:0000000000000000000000000000000000000000000000000000000000000000\"",
            "1m",
        ),
    ] {
        let ws = Ws::new();
        ws.write(
            "BUILD.yaml",
            &format!(
                r#"targets:
  t:
    rule: run
    {image}
    limits: {{time: {value}}}
    cmd: "echo x > $OUT/x.txt"
    outs: [x.txt]
"#
            ),
        );
        let r = ws.run(&["graph"]);
        assert_eq!(r.code, 0, "{image} {value}: {}", r.stderr);
    }
}

#[test]
fn limits_do_not_apply_to_a_step_in_a_container() {
    expect_config_error(
        r#"targets:
  t:
    rule: run
    image: "alpine@sha256:0000000000000000000000000000000000000000000000000000000000000000"
    limits: {processes: 64}
    cmd: "echo x > $OUT/x.txt"
    outs: [x.txt]
"#,
        // line 5: `    limits: {processes: 64}`, the value at column 13
        "BUILD.yaml:5:13",
        "not in a container",
    );
    // A time limit beside them does not make them apply.
    expect_config_error(
        r#"targets:
  t:
    rule: run
    image: "alpine@sha256:0000000000000000000000000000000000000000000000000000000000000000"
    limits: {time: 1m, memory: 64MiB}
    cmd: "echo x > $OUT/x.txt"
    outs: [x.txt]
"#,
        "BUILD.yaml:5:13",
        "not in a container",
    );
}

#[test]
fn limits_name_known_resources_only() {
    expect_config_error(
        r#"targets:
  t:
    rule: run
    limits: {files: 10}
    cmd: "echo x > $OUT/x.txt"
    outs: [x.txt]
"#,
        // line 4: `    limits: {files: 10}`, the key at column 14
        "BUILD.yaml:4:14",
        "files",
    );
}

#[test]
fn srcs_must_be_a_list() {
    expect_config_error(
        r#"targets:
  t:
    rule: run
    srcs: 5
    cmd: "echo x > $OUT/x.txt"
    outs: [x.txt]
"#,
        // line 4: `    srcs: 5`, the value at column 11
        "BUILD.yaml:4:11",
        "sequence",
    );
}

#[test]
fn outs_must_be_a_list() {
    expect_config_error(
        r#"targets:
  t:
    rule: run
    cmd: "echo x > $OUT/x.txt"
    outs: {a: b}
"#,
        // line 5: `    outs: {a: b}`, the mapping at column 11
        "BUILD.yaml:5:11",
        "sequence",
    );
}

// ---------------------------------------------------------------------------
// 8. Unknown field
// ---------------------------------------------------------------------------

#[test]
fn unknown_field_in_a_target() {
    let r = expect_config_error(
        r#"targets:
  t:
    rule: run
    cmdd: "echo x > $OUT/x.txt"
    outs: [x.txt]
"#,
        // line 4: `    cmdd: ...`, the field at column 5
        "BUILD.yaml:4:5",
        "unknown field",
    );
    assert!(
        r.stderr.contains("cmdd"),
        "the field is not named:\n{}",
        dump(&r)
    );
}

// ---------------------------------------------------------------------------
// 9. Invalid target name
// ---------------------------------------------------------------------------

#[test]
fn invalid_target_name() {
    expect_config_error(
        r#"targets:
  ok:
    rule: run
    cmd: "echo x > $OUT/x.txt"
    outs: [x.txt]
  Bad_Name:
    rule: run
    cmd: "echo y > $OUT/y.txt"
    outs: [y.txt]
"#,
        // line 6: `  Bad_Name:`, the name at column 3
        "BUILD.yaml:6:3",
        "`Bad_Name` is not a valid target name",
    );
}

// ---------------------------------------------------------------------------
// 10. Outputs outside $OUT
// ---------------------------------------------------------------------------

#[test]
fn output_leaving_out_with_dotdot() {
    expect_config_error(
        r#"targets:
  t:
    rule: run
    cmd: "echo x > $OUT/../escape.txt"
    outs:
      - ../escape.txt
"#,
        // line 6: `      - ../escape.txt`, the entry at column 9
        "BUILD.yaml:6:9",
        "outside $OUT",
    );
}

#[test]
fn output_with_an_absolute_path() {
    expect_config_error(
        r#"targets:
  t:
    rule: run
    cmd: "echo x > /tmp/abs.txt"
    outs:
      - /abs.txt
"#,
        // line 6: `      - /abs.txt`, the entry at column 9
        "BUILD.yaml:6:9",
        "outside $OUT",
    );
}

// ---------------------------------------------------------------------------
// 11. A declared output the step did not create (exit 1)
// ---------------------------------------------------------------------------

#[test]
fn missing_declared_output_after_the_step_ran() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"targets:
  t:
    rule: run
    cmd: "true"
    outs: [x.txt]
"#,
    );
    let r = ws.build_fails(&[], 1);
    // line 5: `    outs: [x.txt]`, the entry at column 12
    assert_diagnostic(&r, "BUILD.yaml:5:12", "x.txt");
}

/// With several outputs, the diagnostic points at the one that is missing.
#[test]
fn missing_declared_output_points_at_its_entry() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"targets:
  t:
    rule: run
    cmd: "echo made > $OUT/made.txt"
    outs:
      - made.txt
      - x.txt
"#,
    );
    let r = ws.build_fails(&[], 1);
    // line 7: `      - x.txt`, the entry at column 9
    assert_diagnostic(&r, "BUILD.yaml:7:9", "x.txt");
}

// ---------------------------------------------------------------------------
// 12. Unknown rule
// ---------------------------------------------------------------------------

#[test]
fn unknown_rule_suggests_run() {
    let r = expect_config_error(
        r#"targets:
  t:
    rule: rnu
    cmd: "echo x > $OUT/x.txt"
    outs: [x.txt]
"#,
        // line 3: `    rule: rnu`, the value at column 11
        "BUILD.yaml:3:11",
        "unknown rule",
    );
    assert!(
        r.stderr.contains("did you mean `run`"),
        "the hint does not suggest `run`:\n{}",
        dump(&r)
    );
}

// ---------------------------------------------------------------------------
// 13. A step exiting non-zero (exit 1)
// ---------------------------------------------------------------------------

#[test]
fn failing_step_shows_its_stderr_and_keeps_the_scratch_folder() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"targets:
  t:
    rule: run
    cmd: "echo step-said-this-on-stderr >&2; exit 3"
    outs: [x.txt]
"#,
    );
    let r = ws.build_fails(&[], 1);
    assert_no_panic(&r);
    assert!(
        r.stderr.contains("step-said-this-on-stderr"),
        "the step's stderr is not shown:\n{}",
        dump(&r)
    );
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("scratch") && l.contains("kept"))
        .unwrap_or_else(|| {
            panic!(
                "stderr does not say the scratch folder was kept:\n{}",
                dump(&r)
            )
        });
    let path = line
        .split_whitespace()
        .rev()
        .find(|w| w.starts_with('/'))
        .unwrap_or_else(|| panic!("no absolute path in `{line}`:\n{}", dump(&r)));
    assert!(
        Path::new(path).is_dir(),
        "the kept scratch folder `{path}` does not exist:\n{}",
        dump(&r)
    );
}

// ---------------------------------------------------------------------------
// 14. Secrets never leak
// ---------------------------------------------------------------------------

#[test]
fn env_secret_never_appears_in_output_or_store() {
    const MARKER: &str = "hunter2-marker";
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"vars:
  secret: !ENV SECRET_MARKER_VALUE
targets:
  t:
    rule: run
    env: {X: "${secret}"}
    cmd: 'test -n "$X" && exit 3'
    outs: [x.txt]
"#,
    );
    let r: Run = ws
        .cmd(&["build"])
        .env("SECRET_MARKER_VALUE", MARKER)
        .output()
        .expect("strata runs")
        .into();
    assert_eq!(
        r.code,
        1,
        "the step should fail with exit 3, so strata exits 1:\n{}",
        dump(&r)
    );
    assert_no_panic(&r);
    assert!(
        !r.stdout.contains(MARKER),
        "the secret is on stdout:\n{}",
        dump(&r)
    );
    assert!(
        !r.stderr.contains(MARKER),
        "the secret is on stderr:\n{}",
        dump(&r)
    );
    let in_store = files_containing(&ws.store, MARKER);
    assert!(
        in_store.is_empty(),
        "the secret is in store files: {in_store:?}\n{}",
        dump(&r)
    );
    // The workspace (BUILD.yaml, out/, any kept scratch inside it) holds no
    // copy either.
    let in_ws = files_containing(ws.path(), MARKER);
    assert!(
        in_ws.is_empty(),
        "the secret is in workspace files: {in_ws:?}\n{}",
        dump(&r)
    );
}

/// A step that prints the secrets it received (whole, inside a longer
/// value, on stdout and stderr) shows `***` in their place, and neither its
/// failure output, its kept scratch folder nor its stored logs hold them.
#[test]
fn secrets_a_step_prints_are_masked_in_its_logs() {
    const MARKER: &str = "printed-secret-4471";
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"vars:
  secret: !ENV PRINTED_SECRET_VALUE
  header: "Bearer ${secret}"
targets:
  ok:
    rule: run
    env: {X: "${secret}", H: "${header}"}
    cmd: 'echo "token=$X"; echo "auth: $H" >&2; echo done > $OUT/o'
    outs: [o]
  fails:
    rule: run
    env: {X: "${secret}"}
    cmd: 'echo "token=$X"; echo "again $X" >&2; exit 3'
    outs: [o]
"#,
    );
    let run = |args: &[&str]| -> Run {
        ws.cmd(args)
            .env("PRINTED_SECRET_VALUE", MARKER)
            .output()
            .expect("strata runs")
            .into()
    };
    let r = run(&["build", "--keep-going"]);
    assert_eq!(r.code, 1, "`fails` fails the build:\n{}", dump(&r));
    assert!(
        !r.stdout.contains(MARKER) && !r.stderr.contains(MARKER),
        "the secret is shown:\n{}",
        dump(&r)
    );
    assert!(
        r.stderr.contains("token=***") || r.stdout.contains("token=***"),
        "the failure output does not show the masked line:\n{}",
        dump(&r)
    );
    let in_store = files_containing(&ws.store, MARKER);
    assert!(
        in_store.is_empty(),
        "the secret is in store files (logs or the kept scratch folder): {in_store:?}\n{}",
        dump(&r)
    );
    // The stored logs of the step that succeeded say where the secret was.
    let masked = files_containing(&ws.store, "token=***");
    assert!(
        !masked.is_empty(),
        "no stored log holds the masked line\n{}",
        dump(&r)
    );
    assert!(
        !files_containing(&ws.store, "auth: Bearer ***").is_empty(),
        "the secret inside a longer value is not masked in the stored stderr\n{}",
        dump(&r)
    );
}

#[test]
fn a_secret_in_a_condition_is_named_never_shown() {
    const MARKER: &str = "when-secret-8812";
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"vars:
  tok: !ENV WHEN_SECRET_VALUE
targets:
  t:
    when: "${tok}"
    rule: run
    cmd: "echo t > $OUT/t.txt"
    outs: [t.txt]
"#,
    );
    let r: Run = ws
        .cmd(&["build"])
        .env("WHEN_SECRET_VALUE", MARKER)
        .output()
        .expect("strata runs")
        .into();
    assert_eq!(
        r.code,
        2,
        "a bad condition is a configuration error:\n{}",
        dump(&r)
    );
    assert_diagnostic(&r, "BUILD.yaml:5:11", "bad condition");
    assert!(
        !r.stderr.contains(MARKER) && !r.stdout.contains(MARKER),
        "the secret is shown:\n{}",
        dump(&r)
    );
    assert!(
        r.stderr.contains("${tok}"),
        "the variable is not named:\n{}",
        dump(&r)
    );
}

#[test]
fn env_tag_outside_vars_is_an_error_at_its_place() {
    // `!ENV` in a target would otherwise be the literal text `TOKEN`.
    let r = expect_config_error(
        "targets:\n  t:\n    rule: run\n    env: {X: !ENV TOKEN}\n    cmd: \"echo $X > $OUT/x\"\n    outs: [x]\n",
        "BUILD.yaml:4:14",
        "`!ENV` is read only in `vars:`",
    );
    assert!(r.stderr.contains("vars:"), "{}", dump(&r));
}

#[test]
fn env_tag_in_an_included_fragment_is_an_error_in_that_file() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "targets:\n  t:\n    rule: run\n    env: !include env.yaml\n    cmd: \"echo $X > $OUT/x\"\n    outs: [x]\n",
    );
    ws.write("env.yaml", "X: !ENV TOKEN\n");
    expect_error_in(&ws, "env.yaml:1:4", "`!ENV` is read only in `vars:`");
}

#[test]
fn a_tool_that_is_not_installed_is_an_error_at_its_place() {
    expect_config_error(
        "targets:\n  t:\n    rule: run\n    tools: [sh, no-such-compiler-4471]\n    cmd: \"echo > $OUT/o\"\n    outs: [o]\n",
        "BUILD.yaml:4:17",
        "tool not found",
    );
}

#[test]
fn tools_do_not_apply_to_a_fixed_output_step() {
    expect_config_error(
        "targets:\n  t:\n    rule: run\n    tools: [sh]\n    output_digest: \"blake3:0000000000000000000000000000000000000000000000000000000000000000\"\n    cmd: \"echo > $OUT/o\"\n    outs: [o]\n",
        "BUILD.yaml:4:12",
        "`tools` keys a step that runs on the host",
    );
}

// ---------------------------------------------------------------------------
// 15. Binary garbage
// ---------------------------------------------------------------------------

#[test]
fn binary_garbage_as_build_file() {
    let ws = Ws::new();
    fs::write(
        ws.path().join("BUILD.yaml"),
        [
            0xff, 0xfe, 0x00, 0x01, 0x80, 0xc3, 0x28, 0x00, 0xff, b'\n', 0x9f,
        ],
    )
    .unwrap();
    let r = ws.build_fails(&[], 2);
    assert_no_panic(&r);
    assert!(
        r.stderr.contains("BUILD.yaml"),
        "the file is not named:\n{}",
        dump(&r)
    );
    assert!(r.stderr.contains("help:"), "no `help:` hint:\n{}", dump(&r));
}

// ---------------------------------------------------------------------------
// Containers, stages, image-pull, docker-data-root
// ---------------------------------------------------------------------------

#[test]
fn container_fields_without_an_image_are_refused() {
    expect_config_error(
        "targets:\n  t:\n    rule: run\n    user: \"1000\"\n    cmd: \"true\"\n",
        // line 4: `    user: "1000"`, the value at column 11
        "BUILD.yaml:4:11",
        "applies to steps in a container",
    );
}

#[test]
fn an_image_by_tag_is_refused_with_the_way_to_pin_it() {
    expect_config_error(
        "targets:\n  t:\n    rule: run\n    image: debian:bookworm\n    cmd: \"true\"\n",
        // line 4: `    image: debian:bookworm`, the value at column 12
        "BUILD.yaml:4:12",
        "sha256",
    );
}

#[test]
fn a_bad_cache_mount_point_is_named() {
    expect_config_error(
        "targets:\n  t:\n    rule: run\n    image: base\n    caches: {apt: var/cache/apt}\n    cmd: \"true\"\n  base:\n    rule: run\n    cmd: \"true\"\n",
        // line 5: `    caches: {apt: var/cache/apt}`, the path at column 19
        "BUILD.yaml:5:19",
        "not an absolute path",
    );
}

#[test]
fn a_stage_without_steps_or_from_is_named() {
    expect_config_error(
        "targets:\n  s:\n    rule: stage\n    from: scratch\n",
        // line 2: the target's name at column 3
        "BUILD.yaml:2:3",
        "has no `steps:`",
    );
    expect_config_error(
        "targets:\n  s:\n    rule: stage\n    steps:\n      - cmd: \"true\"\n",
        "BUILD.yaml:2:3",
        "has no `from:`",
    );
}

#[test]
fn a_stage_step_with_a_field_of_another_kind_is_named() {
    expect_config_error(
        "targets:\n  s:\n    rule: stage\n    from: scratch\n    steps:\n      - copy: srcs:a\n        to: /a\n        cmd: \"true\"\n",
        // line 8: `        cmd: "true"`, the value at column 14
        "BUILD.yaml:8:14",
        "does not apply to a `copy` step",
    );
    expect_config_error(
        "targets:\n  s:\n    rule: stage\n    from: scratch\n    steps:\n      - cmd: \"true\"\n        colour: red\n",
        // line 7: the unknown key at column 9
        "BUILD.yaml:7:9",
        "unknown field `colour`",
    );
}

#[test]
fn a_stage_reports_an_unknown_dependency_of_a_step() {
    expect_config_error(
        "targets:\n  s:\n    rule: stage\n    from: scratch\n    steps:\n      - deps: [nothere]\n        cmd: \"true\"\n",
        // line 6: `      - deps: [nothere]`, the name at column 16
        "BUILD.yaml:6:16",
        "nothere",
    );
}

#[test]
fn data_root_images_must_be_targets() {
    expect_config_error(
        "targets:\n  d:\n    rule: docker-data-root\n    images: [\"busybox:1.36\"]\n",
        // line 4: the entry at column 14
        "BUILD.yaml:4:14",
        "is not a target",
    );
}

#[test]
fn an_image_of_another_architecture_without_emulation_is_refused_before_anything_runs() {
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("skipped: needs an x86_64 machine (arm64 is native elsewhere)");
        return;
    }
    // Whatever this machine has registered, Strata sees no handler.
    let ws = Ws::new().without_emulators();
    ws.write(
        "BUILD.yaml",
        r#"targets:
  marker:
    rule: run
    cmd: "echo ran > $OUT/m"
    outs: [m]
  tree:
    rule: rootfs
    layers: [{from: marker}]
  arm-image:
    rule: image
    from: tree
    platform: linux/arm64
  compile:
    rule: stage
    from: arm-image
    steps:
      - cmd: "true"
"#,
    );
    let r = expect_error_in(&ws, "BUILD.yaml:9:3", "no binfmt_misc handler for arm64");
    assert!(
        r.stderr
            .contains("`compile` runs `arm-image`, an image for linux/arm64"),
        "{}",
        dump(&r)
    );
    assert!(r.stderr.contains("qemu-user-static"), "{}", dump(&r));
    // The exact commands that register one.
    assert!(
        r.stderr.contains(
            "cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register"
        ),
        "{}",
        dump(&r)
    );
    assert!(r.stderr.contains("mount -t binfmt_misc"), "{}", dump(&r));
    assert!(
        !ws.path().join("out").exists(),
        "nothing ran:\n{}",
        dump(&r)
    );
    // The image itself is made in-process and needs no emulation.
    ws.build_ok(&["arm-image"]);
}

// ---------------------------------------------------------------------------
// Platforms
// ---------------------------------------------------------------------------

/// An image of a tree, for `platform` tests: `tree` then `img` (line 6).
const PLATFORM_BASE: &str = r#"targets:
  tree:
    rule: rootfs
    components:
      - {type: directory, target: /tmp, chmod: "1777"}
  img:
    rule: image
    from: tree
"#;

#[test]
fn an_unknown_platform_is_a_config_error_at_its_place() {
    // `aarch64` is the kernel's name; OCI's is `arm64`.
    let r = expect_config_error(
        &format!("{PLATFORM_BASE}    platform: linux/aarch64\n"),
        // line 9: `platform: ` is 14 columns
        "BUILD.yaml:9:15",
        "`aarch64` is not an architecture Strata knows",
    );
    assert!(r.stderr.contains("platform"), "{}", dump(&r));
    expect_config_error(
        &format!(
            "{PLATFORM_BASE}  p:\n    rule: image-pull\n    image: r.example/x@sha256:{}\n    platform: linux/x86_64\n",
            "ab".repeat(32)
        ),
        // line 12
        "BUILD.yaml:12:15",
        "`x86_64` is not an architecture",
    );
    let r = expect_config_error(
        &format!(
            "{PLATFORM_BASE}  s:\n    rule: stage\n    from: tree\n    platform: linux/arm/v9\n    steps: [{{cmd: \"true\"}}]\n"
        ),
        // line 12
        "BUILD.yaml:12:15",
        "`v9` is not a variant of `arm`",
    );
    assert!(
        r.stderr.contains("linux/arm/v7"),
        "the hint shows one:\n{}",
        dump(&r)
    );
    expect_config_error(
        &format!(
            "{PLATFORM_BASE}  r:\n    rule: run\n    image: img\n    platform: windows/amd64\n    cmd: \"true\"\n"
        ),
        "BUILD.yaml:12:15",
        "not `windows`",
    );
}

#[test]
fn a_platform_that_is_not_the_images_is_refused_naming_both() {
    let arm = PLATFORM_BASE.to_string() + "    platform: linux/arm64\n";
    expect_config_error(
        &format!(
            "{arm}  r:\n    rule: run\n    image: img\n    platform: linux/amd64\n    cmd: \"true\"\n"
        ),
        // line 13: the run step's `platform`
        "BUILD.yaml:13:15",
        "`r` asks for linux/amd64, but its image `img` is for linux/arm64",
    );
    expect_config_error(
        &format!(
            "{arm}  s:\n    rule: stage\n    from: img\n    platform: linux/amd64\n    steps: [{{cmd: \"true\"}}]\n"
        ),
        "BUILD.yaml:13:15",
        "stage `s` asks for linux/amd64, but `from: img` is for linux/arm64",
    );
    // An image on a base of another platform: at its own `platform` or,
    // when it has none (linux/amd64), at the base.
    expect_config_error(
        &format!("{arm}  top:\n    rule: image\n    from: tree\n    base: img\n"),
        // line 13: `base: img`
        "BUILD.yaml:13:11",
        "image `top` is for linux/amd64 (the default), but its `base: img` is for linux/arm64",
    );
    // The same platform written twice is fine: only the image is built.
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        &format!("{arm}  top:\n    rule: image\n    from: tree\n    base: img\n    platform: linux/arm64/v8\n"),
    );
    ws.build_ok(&["top"]);
}

#[test]
fn platform_applies_to_steps_in_images_only() {
    expect_config_error(
        "targets:\n  r:\n    rule: run\n    platform: linux/arm64\n    cmd: \"true\"\n",
        // line 4
        "BUILD.yaml:4:15",
        "`platform` applies to steps in a container",
    );
}

#[test]
fn a_compose_components_platform_must_be_known() {
    let ws = Ws::new();
    ws.write(
        "compose.yaml",
        &format!(
            "services:\n  agent:\n    image: r.example/agent@sha256:{}\n",
            "ab".repeat(32)
        ),
    );
    ws.write(
        "BUILD.yaml",
        r#"targets:
  root:
    rule: rootfs
    components:
      - type: docker-compose
        file: compose.yaml
        target: /etc/compose.yaml
        platform: linux/aarch64
"#,
    );
    // line 8: the value after `platform: ` (8 + 10 columns)
    let r = expect_error_in(&ws, "BUILD.yaml:8:19", "`aarch64` is not an architecture");
    assert!(r.stderr.contains("docker-compose"), "{}", dump(&r));
}
