//! Snapshots of whole diagnostics as a user sees them (issue 15, points
//! 1-7): the message, the file, line and column, the source lines with the
//! underline and its label, and the hint. `tests/config_errors.rs` checks a
//! place and a phrase of many errors; these pin the full text of the ones a
//! new user meets first.
//!
//! The real binary renders them. Its output here is stable: stderr is a
//! pipe, so miette draws with unicode and no colour (`NO_COLOR`, and the
//! variables that force colour or a narrated report removed), and never
//! wraps lines (the binary's handler), so the terminal's width does not
//! matter. After a deliberate change of wording, `UPDATE_EXPECT=1 cargo test
//! --test diagnostics` rewrites the snapshots in this file for review.

mod common;

use common::Ws;
use expect_test::{Expect, expect};

/// `strata ARGS` in a workspace holding `files`; it must end with exit 2
/// (a configuration or usage error). Returns what the snapshots hold: the
/// command, then its stderr as printed.
fn config_error(files: &[(&str, &str)], args: &[&str]) -> String {
    let ws = Ws::new();
    for (path, text) in files {
        ws.write(path, text);
    }
    let out = ws
        .cmd(args)
        .env_remove("FORCE_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("NO_GRAPHICS")
        .output()
        .expect("strata runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The first line starts at column 0, so expect-test's trimming of the
    // literal's indentation leaves miette's own indentation alone.
    format!("$ strata {}\n{stderr}", args.join(" "))
}

/// `stderr` must be exactly `expected`.
fn assert_snapshot(expected: Expect, stderr: &str) {
    expected.assert_eq(stderr);
}

/// `strata build` on a BUILD.yaml alone must print exactly `expected`.
fn check(build: &str, expected: Expect) {
    assert_snapshot(
        expected,
        &config_error(&[("BUILD.yaml", build)], &["build"]),
    );
}

const TWO_TREES: &str = "  base:
    rule: run
    cmd: \"mkdir -p $OUT/etc\"
    outs: [etc/]
  app:
    rule: run
    cmd: \"mkdir -p $OUT/bin\"
    outs: [bin/]
";

// ---------------------------------------------------------------------------
// 1. The exact scalar at fault, at any depth
// ---------------------------------------------------------------------------

#[test]
fn an_unknown_target_in_a_later_layer_is_underlined_there() {
    check(
        &format!(
            "targets:
{TWO_TREES}  fs:
    rule: rootfs
    layers:
      - {{from: base}}
      - {{from: app, prefix: /opt/app}}
      - {{from: bsae}}
"
        ),
        expect![[r#"
            $ strata build
              × target `fs` depends on unknown target `bsae`
                ╭─[BUILD.yaml:15:16]
             14 │       - {from: app, prefix: /opt/app}
             15 │       - {from: bsae}
                ·                ──┬─
                ·                  ╰── unknown target
                ╰────
              help: did you mean `base`?

        "#]],
    );
}

#[test]
fn a_bad_mode_in_the_fifth_component_is_underlined_there() {
    check(
        "targets:
  fs:
    rule: rootfs
    components:
      - {type: directory, target: /tmp, chmod: \"1777\"}
      - {type: directory, target: /srv}
      - {type: directory, target: /var/log}
      - {type: symlink, target: /srv, link: /www}
      - {type: directory, target: /data, chmod: \"0980\"}
",
        expect![[r#"
            $ strata build
              × field `components`: `0980` is not an octal mode such as "0644"
               ╭─[BUILD.yaml:9:49]
             8 │       - {type: symlink, target: /srv, link: /www}
             9 │       - {type: directory, target: /data, chmod: "0980"}
               ·                                                 ───┬──
               ·                                                    ╰── components[4].chmod
               ╰────
              help: a mode is octal digits, quoted or not: `"0644"`, `0755`, `"1777"`

        "#]],
    );
}

#[test]
fn a_misspelt_component_type_is_underlined_with_the_nearest_type() {
    check(
        "targets:
  fs:
    rule: rootfs
    components:
      - {type: directory, target: /tmp, chmod: \"1777\"}
      - {type: directory, target: /srv}
      - {type: directory, target: /var/log}
      - {type: directory, target: /data}
      - {type: symlnk, target: /srv, link: /www}
",
        expect![[r#"
            $ strata build
              × field `components`: unknown variant `symlnk`, expected one of `file`, `directory`, `systemd`, `symlink`, `device`, `docker-compose`
               ╭─[BUILD.yaml:9:16]
             8 │       - {type: directory, target: /data}
             9 │       - {type: symlnk, target: /srv, link: /www}
               ·                ───┬──
               ·                   ╰── components[4].type
               ╰────
              help: did you mean `symlink`? (here: file, directory, systemd, symlink, device, docker-compose)

        "#]],
    );
}

#[test]
fn an_unknown_variable_inside_a_control_block_is_underlined_where_written() {
    check(
        "vars:
  version: \"1.0\"
targets:
  fs:
    rule: rootfs
    components: [{type: directory, target: /srv}]
  pkg:
    rule: deb
    from: fs
    control: |
      Package: hello
      Version: ${verison}
      Architecture: amd64
      Maintainer: Me <me@example.com>
      Description: hello
",
        expect![[r#"
            $ strata build
              × unknown variable `verison`
                ╭─[BUILD.yaml:12:16]
             11 │       Package: hello
             12 │       Version: ${verison}
                ·                ─────┬────
                ·                     ╰── here
             13 │       Architecture: amd64
                ╰────
              help: did you mean `version`? declare it under `vars:`, or pass it with `--var verison=...`; to hand `${verison}` to the shell, write `$${verison}` or `$verison`

        "#]],
    );
}

#[test]
fn an_unknown_name_in_a_flow_list_is_underlined_not_the_bracket() {
    check(
        &format!(
            "targets:
{TWO_TREES}  sums:
    rule: checksums
    of: [base, app, typo]
"
        ),
        expect![[r#"
            $ strata build
              × target `sums` depends on unknown target `typo`
                ╭─[BUILD.yaml:12:21]
             11 │     rule: checksums
             12 │     of: [base, app, typo]
                ·                     ──┬─
                ·                       ╰── unknown target
                ╰────
              help: dependencies name targets of this workspace

        "#]],
    );
}

#[test]
fn a_variable_in_a_list_in_a_list_is_found_at_its_depth() {
    check(
        &format!(
            "targets:
{TWO_TREES}  sums:
    rule: checksums
    of:
      - base
      - [app, \"${{nope}}\"]
"
        ),
        expect![[r#"
            $ strata build
              × unknown variable `nope`
                ╭─[BUILD.yaml:14:16]
             13 │       - base
             14 │       - [app, "${nope}"]
                ·                ───┬───
                ·                   ╰── here
                ╰────
              help: declare it under `vars:`, or pass it with `--var nope=...`; to hand `${nope}` to the shell, write `$${nope}` or `$nope`

        "#]],
    );
}

#[test]
fn an_error_in_an_included_file_is_underlined_in_that_file() {
    let stderr = config_error(
        &[
            (
                "BUILD.yaml",
                "targets:
  fs:
    rule: rootfs
    components: !include parts/web.yaml
",
            ),
            (
                "parts/web.yaml",
                "- {type: directory, target: /srv}
- type: file
  source: www/index.html
  target: /srv/index.html
  chmod: \"0x644\"
",
            ),
            ("www/index.html", "hi\n"),
        ],
        &["build"],
    );
    assert_snapshot(
        expect![[r#"
            $ strata build
              × field `components`: `0x644` is not an octal mode such as "0644"
               ╭─[parts/web.yaml:5:10]
             4 │   target: /srv/index.html
             5 │   chmod: "0x644"
               ·          ───┬───
               ·             ╰── components[1].chmod
               ╰────
              help: a mode is octal digits, quoted or not: `"0644"`, `0755`, `"1777"`

        "#]],
        &stderr,
    );
}

#[test]
fn a_list_where_a_component_goes_says_so() {
    let stderr = config_error(
        &[
            (
                "BUILD.yaml",
                "targets:
  fs:
    rule: rootfs
    components:
      - {type: directory, target: /tmp}
      - !include parts/web.yaml
",
            ),
            ("parts/web.yaml", "- {type: directory, target: /srv}\n"),
        ],
        &["build"],
    );
    assert_snapshot(
        expect![[r#"
            $ strata build
              × field `components`: components[1] is a list, not a component
               ╭─[parts/web.yaml:1:1]
             1 │ - {type: directory, target: /srv}
               · ┬
               · ╰── components[1]
               ╰────
              help: a component is a mapping such as `{type: file, source: files/motd, target: /etc/motd}`; to read the list of components from a file, write `components: !include file.yaml`

        "#]],
        &stderr,
    );
}

#[test]
fn a_misspelt_field_of_a_component_gets_the_components_own_fields() {
    check(
        "targets:
  fs:
    rule: rootfs
    components:
      - {type: directory, target: /srv}
      - {type: directory, target: /data, chmood: \"0750\"}
",
        expect![[r#"
            $ strata build
              × field `components`: unknown field `chmood`, expected one of `source`, `target`, `chmod`, `chown`
               ╭─[BUILD.yaml:6:42]
             5 │       - {type: directory, target: /srv}
             6 │       - {type: directory, target: /data, chmood: "0750"}
               ·                                          ───┬──
               ·                                             ╰── components[1].chmood
               ╰────
              help: did you mean `chmod`? (here: source, target, chmod, chown)

        "#]],
    );
}

// ---------------------------------------------------------------------------
// 2. A misspelt field: the nearest of this rule's fields, and only those
// ---------------------------------------------------------------------------

#[test]
fn a_misspelt_field_of_a_run_target_suggests_its_own_field() {
    check(
        "targets:
  hello:
    rule: run
    cmdd: \"echo hi > $OUT/hi.txt\"
    outs: [hi.txt]
",
        expect![[r#"
            $ strata build
              × unknown field `cmdd` in target `hello` (rule `run`)
               ╭─[BUILD.yaml:4:5]
             3 │     rule: run
             4 │     cmdd: "echo hi > $OUT/hi.txt"
               ·     ──┬─
               ·       ╰── not a field of `run`
             5 │     outs: [hi.txt]
               ╰────
              help: did you mean `cmd`? `run` takes: rule, when, srcs, deps, cmd, argv, env, outs, network, local, tools, output_digest, image, platform, user, caches, limits

        "#]],
    );
}

#[test]
fn a_misspelt_field_of_a_built_in_rule_suggests_its_own_field() {
    check(
        "targets:
  tarball:
    rule: archive
    srcs: [\"*.txt\"]
    from: srcs
    compresion: gz
",
        expect![[r#"
            $ strata build
              × unknown field `compresion` in target `tarball` (rule `archive`)
               ╭─[BUILD.yaml:6:5]
             5 │     from: srcs
             6 │     compresion: gz
               ·     ─────┬────
               ·          ╰── not a field of `archive`
               ╰────
              help: did you mean `compression`? `archive` takes: rule, when, srcs, deps, from, compression, level, name, prefix

        "#]],
    );
}

#[test]
fn a_misspelt_top_level_key_suggests_the_files_keys() {
    check(
        "targetz:
  hello:
    rule: run
    cmd: \"true\"
",
        expect![[r#"
            $ strata build
              × unknown field `targetz` at the top of the file
               ╭─[BUILD.yaml:1:1]
             1 │ targetz:
               · ───┬───
               ·    ╰── not a field of the file
             2 │   hello:
               ╰────
              help: did you mean `targets`? the file takes: vars, targets, include, out_dir, default, matrix

        "#]],
    );
}

// ---------------------------------------------------------------------------
// 3. A name declared twice: both places, no library internals
// ---------------------------------------------------------------------------

#[test]
fn a_target_declared_twice_shows_both_declarations() {
    check(
        "targets:
  hello:
    rule: run
    cmd: \"echo a > $OUT/a\"
    outs: [a]
  hello:
    rule: run
    cmd: \"echo b > $OUT/b\"
    outs: [b]
",
        expect![[r#"
            $ strata build
              × target `hello` is declared twice
               ╭─[BUILD.yaml:2:3]
             1 │ targets:
             2 │   hello:
               ·   ──┬──
               ·     ╰── first declared here
             3 │     rule: run
               ╰────
               ╭─[BUILD.yaml:6:3]
             5 │     outs: [a]
             6 │   hello:
               ·   ──┬──
               ·     ╰── declared again here
             7 │     rule: run
               ╰────
              help: target names are unique across the BUILD file and every file it includes: rename one of the two, or remove one (the first is at BUILD.yaml:2:3)

        "#]],
    );
}

#[test]
fn a_target_declared_again_in_an_included_file_shows_both_files() {
    let stderr = config_error(
        &[
            (
                "BUILD.yaml",
                "include: [more.yaml]
targets:
  hello:
    rule: run
    cmd: \"true\"
",
            ),
            (
                "more.yaml",
                "targets:
  hello:
    rule: run
    cmd: \"false\"
",
            ),
        ],
        &["build"],
    );
    assert_snapshot(
        expect![[r#"
            $ strata build
              × target `hello` is declared twice
               ╭─[more.yaml:2:3]
             1 │ targets:
             2 │   hello:
               ·   ──┬──
               ·     ╰── declared again here
             3 │     rule: run
               ╰────
              help: target names are unique across the BUILD file and every file it includes: rename one of the two, or remove one (the first is at BUILD.yaml:3:3)

            Advice: 
              ☞ first declared here
               ╭─[BUILD.yaml:3:3]
             2 │ targets:
             3 │   hello:
               ·   ──┬──
               ·     ╰── first declared here
             4 │     rule: run
               ╰────

        "#]],
        &stderr,
    );
}

#[test]
fn a_field_given_twice_shows_both() {
    check(
        "targets:
  hello:
    rule: run
    cmd: \"echo a\"
    outs: [a]
    cmd: \"echo b\"
",
        expect![[r#"
            $ strata build
              × field `cmd` is given twice in target `hello` (rule `run`)
               ╭─[BUILD.yaml:6:5]
             3 │     rule: run
             4 │     cmd: "echo a"
               ·     ─┬─
               ·      ╰── first given here
             5 │     outs: [a]
             6 │     cmd: "echo b"
               ·     ─┬─
               ·      ╰── given again here
               ╰────
              help: YAML keeps one value of a key: remove the one you do not mean

        "#]],
    );
}

#[test]
fn names_given_twice_in_vars_env_and_deps_show_both() {
    check(
        "vars:
  arch: x86_64
  arch: aarch64
targets:
  a:
    rule: run
    cmd: \"true\"
  b:
    rule: run
    env: {LANGUAGE: en, LANGUAGE: fr}
    deps: [a, a]
    cmd: \"true\"
",
        expect![[r#"
            $ strata build
              × variable `arch` is declared twice
               ╭─[BUILD.yaml:3:3]
             1 │ vars:
             2 │   arch: x86_64
               ·   ──┬─
               ·     ╰── first declared here
             3 │   arch: aarch64
               ·   ──┬─
               ·     ╰── declared again here
             4 │ targets:
               ╰────
              help: YAML keeps one value of a key: remove the one you do not mean

              × dependency `a` is listed twice
                ╭─[BUILD.yaml:11:15]
             10 │     env: {LANGUAGE: en, LANGUAGE: fr}
             11 │     deps: [a, a]
                ·            ┬  ┬
                ·            │  ╰── listed again
                ·            ╰── first listed here
             12 │     cmd: "true"
                ╰────
              help: a dependency is listed once

              × environment variable `LANGUAGE` is declared twice
                ╭─[BUILD.yaml:10:25]
              9 │     rule: run
             10 │     env: {LANGUAGE: en, LANGUAGE: fr}
                ·           ────┬───      ────┬───
                ·               │             ╰── declared again
                ·               ╰── first declared here
             11 │     deps: [a, a]
                ╰────
              help: YAML keeps one value of a key: remove the one you do not mean

        "#]],
    );
}

// ---------------------------------------------------------------------------
// 4. YAML structure: tabs and indentation, at the right line
// ---------------------------------------------------------------------------

#[test]
fn a_tab_is_reported_on_its_own_line() {
    check(
        "targets:\n  hello:\n    rule: run\n\tcmd: \"true\"\n",
        expect![[r#"
            $ strata build
              × a tab in the indentation of line 4
               ╭─[BUILD.yaml:4:1]
             3 │     rule: run
             4 │     cmd: "true"
               · ──┬─
               ·   ╰── tab
               ╰────
              help: YAML indents with spaces only: replace the tab with spaces, lining the line up with the keys of its mapping (the parser: while scanning a plain scalar, found a tab)

        "#]],
    );
}

#[test]
fn a_key_indented_less_than_its_siblings_says_where_yaml_expected_it() {
    check(
        "targets:
  hello:
    rule: run
    cmd: \"true\"
   outs: [a]
",
        expect![[r#"
            $ strata build
              × bad indentation: `outs` at column 4 lines up with no key above it
               ╭─[BUILD.yaml:5:4]
             4 │     cmd: "true"
             5 │    outs: [a]
               ·    ──┬─
               ·      ╰── YAML expected a key at column 5 (`cmd`), column 3 (`hello`) or column 1 (`targets`)
               ╰────
              help: YAML nests by indentation: the keys of one mapping start at the same column, with spaces (never tabs); a field of a target is indented deeper than the target's name (the parser: while parsing a block mapping, did not find expected key)

        "#]],
    );
}

#[test]
fn a_key_indented_more_than_its_siblings_says_where_yaml_expected_it() {
    check(
        "targets:
  hello:
    rule: run
    cmd: \"true\"
      outs: [a]
",
        expect![[r#"
            $ strata build
              × bad indentation: `outs` at column 7 lines up with no key above it
               ╭─[BUILD.yaml:5:7]
             4 │     cmd: "true"
             5 │       outs: [a]
               ·       ──┬─
               ·         ╰── YAML expected a key at column 5 (`cmd`), column 3 (`hello`) or column 1 (`targets`)
               ╰────
              help: YAML nests by indentation: the keys of one mapping start at the same column, with spaces (never tabs); a field of a target is indented deeper than the target's name (the parser: while parsing a block mapping, did not find expected key)

        "#]],
    );
}

#[test]
fn fields_at_the_level_of_their_target_leave_it_empty() {
    check(
        "targets:
  hello:
  rule: run
  cmd: \"true\"
",
        expect![[r#"
            $ strata build
              × target `hello` has no fields
               ╭─[BUILD.yaml:2:8]
             1 │ targets:
             2 │   hello:
               ·        ┬
               ·        ╰── a target's fields go here
             3 │   rule: run
               ╰────
              help: a target's fields are indented below its name, deeper than `hello:`, all at the same column (with spaces, not tabs); if `hello` is a field of the target above, indent it as that target's other fields

        "#]],
    );
}

// ---------------------------------------------------------------------------
// 5. `chmod: 0755` unquoted is the octal mode YAML 1.1 and chmod(1) mean
// ---------------------------------------------------------------------------

/// The modes of the entries of the gzipped tarball `path`, by name.
fn tar_modes(path: &std::path::Path) -> Vec<(String, u32)> {
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            (name, e.header().mode().unwrap())
        })
        .collect()
}

#[test]
fn unquoted_modes_with_a_leading_zero_are_octal() {
    let ws = Ws::new();
    ws.write("files/motd", "welcome\n");
    ws.write(
        "BUILD.yaml",
        "targets:
  fs:
    rule: rootfs
    components:
      - {type: file, source: files/motd, target: /etc/motd, chmod: 0600}
      - {type: directory, target: /data, chmod: 0750}
      - {type: directory, target: /tmp, chmod: 1777}
      - {type: directory, target: /srv, chmod: \"0711\"}
  tarball:
    rule: archive
    from: fs
",
    );
    ws.build_ok(&[]);
    let modes = tar_modes(&ws.path().join("out/tarball/fs.tar.gz"));
    for (name, mode) in [
        ("etc/motd", 0o600),
        ("data/", 0o750),
        ("tmp/", 0o1777),
        ("srv/", 0o711),
    ] {
        assert!(
            modes.contains(&(name.to_string(), mode)),
            "{name} is not {mode:o}: {modes:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// 6. --var naming no variable
// ---------------------------------------------------------------------------

#[test]
fn a_misspelt_command_line_variable_is_an_error_with_the_nearest_name() {
    let stderr = config_error(
        &[(
            "BUILD.yaml",
            "vars:
  version: \"1.0\"
targets:
  hello:
    rule: run
    cmd: \"echo ${version} > $OUT/v\"
    outs: [v]
",
        )],
        &["build", "--var", "verison=2"],
    );
    assert_snapshot(
        expect![[r#"
            $ strata build --var verison=2
              × `--var verison`: the workspace has no variable `verison`
               ╭─[command line:1:7]
             1 │ --var verison=2
               ·       ───┬───
               ·          ╰── not a variable of the workspace
               ╰────
              help: did you mean `version`? the workspace's variables: version (declared under `vars:`, or used as `${name}`)

        "#]],
        &stderr,
    );
}

#[test]
fn a_misspelt_matrix_variable_is_an_error_with_the_nearest_name() {
    let stderr = config_error(
        &[(
            "BUILD.yaml",
            "vars:
  arch: x86_64
matrix:
  arch: [x86_64, aarch64]
targets:
  hello:
    rule: run
    cmd: \"echo ${arch} > $OUT/v\"
    outs: [v]
",
        )],
        &["build", "--matrix", "ach=x86_64,aarch64"],
    );
    assert_snapshot(
        expect![[r#"
        $ strata build --matrix ach=x86_64,aarch64
          × `--matrix ach`: the workspace declares no variable `ach`
           ╭─[command line:1:10]
         1 │ --matrix ach=x86_64,aarch64
           ·          ─┬─
           ·           ╰── not a variable of the workspace
           ╰────
          help: did you mean `arch`?

    "#]],
        &stderr,
    );
}

#[test]
fn a_command_line_variable_may_set_a_declared_or_a_used_variable() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        "vars:
  version: \"1.0\"
targets:
  hello:
    rule: run
    cmd: \"echo ${version} ${digest} > $OUT/v\"
    outs: [v]
",
    );
    // `digest` has no default: only the command line gives it.
    ws.build_ok(&["--var", "version=2", "--var", "digest=abc"]);
    assert_eq!(ws.read("out/hello/v"), "2 abc\n");
    for command in [&["graph"][..], &["explain", "hello"]] {
        let mut args = command.to_vec();
        args.extend(["--var", "digest=abc", "--var", "verison=2"]);
        let r = ws.run(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("did you mean `version`?"), "{}", r.stderr);
    }
}

// ---------------------------------------------------------------------------
// 7. A component's source is an input of its target
// ---------------------------------------------------------------------------

#[test]
fn component_sources_need_not_be_listed_in_srcs() {
    let ws = Ws::new();
    ws.write("files/motd", "welcome\n");
    ws.write("units/app.service", "[Unit]\n");
    ws.write("www/index.html", "<p>hi</p>\n");
    ws.write(
        "BUILD.yaml",
        "targets:
  fs:
    rule: rootfs
    srcs: [\"www/*\"]
    components:
      - {type: file, source: files/motd, target: /etc/motd}
      - {type: systemd, service: units/app.service}
      - {type: directory, source: www, target: /srv/www}
",
    );
    ws.build_ok(&[]);
    assert_eq!(ws.read("out/fs/etc/motd"), "welcome\n");
    assert_eq!(ws.read("out/fs/etc/systemd/system/app.service"), "[Unit]\n");
    assert_eq!(ws.read("out/fs/srv/www/index.html"), "<p>hi</p>\n");
    // A changed source is an input like any other: the target runs again.
    ws.write("files/motd", "changed\n");
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["fs"], "{}", r.stdout);
    assert_eq!(ws.read("out/fs/etc/motd"), "changed\n");
}

#[test]
fn srcs_still_select_what_a_component_folder_contributes() {
    let ws = Ws::new();
    ws.write("conf/app.conf", "key=1\n");
    ws.write("conf/app.conf~", "an editor's backup\n");
    ws.write(
        "BUILD.yaml",
        "targets:
  fs:
    rule: rootfs
    srcs: [\"conf/*.conf\"]
    components:
      - {type: directory, source: conf, target: /etc/app}
",
    );
    ws.build_ok(&[]);
    assert_eq!(ws.read("out/fs/etc/app/app.conf"), "key=1\n");
    assert!(!ws.path().join("out/fs/etc/app/app.conf~").exists());
    // Without `srcs:`, the folder named is staged whole.
    let yaml = ws
        .read("BUILD.yaml")
        .replace("    srcs: [\"conf/*.conf\"]\n", "");
    ws.write("BUILD.yaml", &yaml);
    ws.build_ok(&[]);
    assert!(ws.path().join("out/fs/etc/app/app.conf~").exists());
}

#[test]
fn a_missing_component_source_is_an_error_at_the_component() {
    let stderr = config_error(
        &[
            (
                "BUILD.yaml",
                "targets:
  fs:
    rule: rootfs
    components:
      - {type: directory, target: /srv}
      - {type: file, source: files/motd, target: /etc/motd}
",
            ),
            ("files/other", "x\n"),
        ],
        &["build"],
    );
    assert_snapshot(
        expect![[r#"
            $ strata build
              × `files/motd` matches no file
               ╭─[BUILD.yaml:6:30]
             5 │       - {type: directory, target: /srv}
             6 │       - {type: file, source: files/motd, target: /etc/motd}
               ·                              ─────┬────
               ·                                   ╰── matches nothing
               ╰────
              help: a file a rule installs by name (a component's `source:`) is one of the target's sources, relative to the workspace root

        "#]],
        &stderr,
    );
}
