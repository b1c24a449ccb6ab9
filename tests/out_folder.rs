//! The output folder only ever loses what Strata put there: whatever
//! `out_dir:` says (inside the workspace, beside it, absolute) and whether
//! `out` is a symlink, an entry Strata did not make is never replaced, and
//! `strata clean` removes only Strata's own entries.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::Ws;

/// Two targets; `projects` is a name a foreign folder may well have.
const TARGETS: &str = r#"targets:
  projects:
    rule: run
    cmd: echo built > $OUT/p.txt
    outs: [p.txt]
  tools:
    rule: run
    cmd: echo built > $OUT/t.txt
    outs: [t.txt]
"#;

/// A folder someone else owns: a project of theirs and a loose file.
fn foreign_folder(dir: &Path) {
    fs::create_dir_all(dir.join("projects/important")).unwrap();
    fs::write(dir.join("projects/important/code.c"), "int main;\n").unwrap();
    fs::write(dir.join("notes.txt"), "mine\n").unwrap();
}

fn assert_foreign_intact(dir: &Path) {
    assert_eq!(
        fs::read_to_string(dir.join("projects/important/code.c")).unwrap(),
        "int main;\n"
    );
    assert_eq!(fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine\n");
}

/// A build with an output folder holding a foreign `projects` entry is
/// refused before any step runs, naming the entry and the target; once the
/// entry is moved away the build places its outputs beside the foreign
/// files, and `strata clean` takes only what the build placed.
/// `shown` is the output folder as configured (through a symlink, say).
fn only_own_entries_are_replaced_and_cleaned(ws: &Ws, out: &Path, shown: &Path) {
    foreign_folder(out);
    let r = ws.build_fails(&["--json"], 2);
    let entry = shown.join("projects");
    assert!(
        r.stderr
            .contains(&format!("{} was not made by Strata", entry.display())),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("BUILD.yaml:"),
        "points at the target: {}",
        r.stderr
    );
    assert!(r.stderr.contains("move it away"), "{}", r.stderr);
    assert_foreign_intact(out);
    assert!(!out.join("tools").exists(), "nothing is placed");

    fs::rename(out.join("projects"), out.join("moved")).unwrap();
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["projects", "tools"]);
    assert_eq!(
        fs::read_to_string(out.join("projects/p.txt")).unwrap(),
        "built\n"
    );
    // Its own entries are replaced as before.
    ws.write(
        "BUILD.yaml",
        &ws.read("BUILD.yaml")
            .replace("echo built > $OUT/p", "echo again > $OUT/p"),
    );
    ws.build_ok(&[]);
    assert_eq!(
        fs::read_to_string(out.join("projects/p.txt")).unwrap(),
        "again\n"
    );

    let r = ws.run(&["clean"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!out.join("projects").exists() && !out.join("tools").exists());
    assert!(!out.join(".strata").exists());
    fs::rename(out.join("moved"), out.join("projects")).unwrap();
    assert_foreign_intact(out);
}

#[test]
fn out_dir_beside_the_workspace_keeps_foreign_entries() {
    let ws = Ws::new();
    // The workspace is the temporary folder; `victim` is its sibling.
    let victim = ws.path().parent().unwrap().join(format!(
        "victim-of-{}",
        ws.path().file_name().unwrap().to_string_lossy()
    ));
    ws.write(
        "BUILD.yaml",
        &format!(
            "out_dir: ../{}\n{TARGETS}",
            victim.file_name().unwrap().to_string_lossy()
        ),
    );
    only_own_entries_are_replaced_and_cleaned(&ws, &victim, &victim);
    fs::remove_dir_all(&victim).unwrap();
}

#[test]
fn an_absolute_out_dir_keeps_foreign_entries_and_is_not_deleted_by_clean() {
    let ws = Ws::new();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = elsewhere.path().join("my/build/output");
    ws.write("BUILD.yaml", TARGETS);
    // As the Packer guide does: the folder is given on the command line.
    foreign_folder(&out);
    let arg = out.to_str().unwrap();
    let r = ws.build_fails(&["--out-dir", arg], 2);
    assert!(r.stderr.contains("was not made by Strata"), "{}", r.stderr);
    assert_foreign_intact(&out);
    fs::remove_dir_all(out.join("projects")).unwrap();
    ws.build_ok(&["--out-dir", arg]);
    assert!(out.join("tools/t.txt").exists());
    let r = ws.run(&["clean", "--out-dir", arg]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!out.join("tools").exists() && !out.join("projects").exists());
    assert_eq!(fs::read_to_string(out.join("notes.txt")).unwrap(), "mine\n");
    assert!(
        r.stdout.contains("kept"),
        "says why the folder stays: {}",
        r.stdout
    );

    // A folder that held only Strata's outputs goes away with them.
    fs::remove_file(out.join("notes.txt")).unwrap();
    ws.build_ok(&["--out-dir", arg]);
    let r = ws.run(&["clean", "--out-dir", arg]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!out.exists());
}

/// A committed `out -> ../elsewhere` symlink is followed (outputs land in
/// the folder it names, as with an `out_dir:` there), and the symlink and
/// everything foreign in that folder survive builds and `strata clean`.
#[test]
fn an_out_symlink_is_followed_and_keeps_what_it_points_at() {
    let ws = Ws::new();
    ws.write("BUILD.yaml", TARGETS);
    let elsewhere = tempfile::tempdir().unwrap();
    symlink(elsewhere.path(), ws.path().join("out")).unwrap();
    only_own_entries_are_replaced_and_cleaned(&ws, elsewhere.path(), &ws.path().join("out"));
    assert!(
        fs::symlink_metadata(ws.path().join("out"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

/// A removed target's folder is Strata's and goes; a folder of the same
/// name that Strata never made is kept even when no target claims it.
#[test]
fn only_recorded_folders_of_removed_targets_are_removed() {
    let ws = Ws::new();
    ws.write("BUILD.yaml", TARGETS);
    ws.build_ok(&[]);
    fs::create_dir_all(ws.path().join("out/handmade")).unwrap();
    fs::write(ws.path().join("out/handmade/keep.txt"), "keep\n").unwrap();
    ws.write("BUILD.yaml", &TARGETS.replace("  tools:", "  tools2:"));
    ws.build_ok(&[]);
    assert!(!ws.path().join("out/tools").exists());
    assert!(ws.path().join("out/tools2/t.txt").exists());
    assert_eq!(ws.read("out/handmade/keep.txt"), "keep\n");
    let r = ws.run(&["clean"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(ws.read("out/handmade/keep.txt"), "keep\n");
    assert!(!ws.path().join("out/tools2").exists());
}

/// Changing `out_dir:` leaves the old folder as it is (Strata removes
/// nothing unasked), and the first build that places elsewhere says so,
/// once per folder, with the command that cleans it.
#[test]
fn a_changed_out_dir_says_once_that_the_old_folder_still_holds_outputs() {
    let ws = Ws::new();
    let with_out_dir = |dir: &str| ws.write("BUILD.yaml", &format!("out_dir: {dir}\n{TARGETS}"));
    let said = |r: &common::Run, old: &str| {
        r.stderr.contains(&format!(
            "warning: the output folder is now {}; {old} still holds 2 outputs of earlier builds, \
             which Strata leaves (`strata clean --out-dir {old}` removes them)",
            if old == "out" { "dist" } else { "out" }
        ))
    };
    ws.write("BUILD.yaml", TARGETS);
    let r = ws.build_ok(&[]);
    assert!(!r.stderr.contains("still holds"), "{}", r.stderr);

    with_out_dir("dist");
    let r = ws.build_ok(&[]);
    assert!(said(&r, "out"), "{}", r.stderr);
    assert_eq!(ws.read("out/projects/p.txt"), "built\n", "left as it was");
    assert_eq!(ws.read("dist/projects/p.txt"), "built\n");
    let r = ws.build_ok(&[]);
    assert!(!r.stderr.contains("still holds"), "once: {}", r.stderr);

    // Back and forth (an output folder per variant): each old folder once.
    with_out_dir("out");
    let r = ws.build_ok(&[]);
    assert!(said(&r, "dist"), "{}", r.stderr);
    with_out_dir("dist");
    let r = ws.build_ok(&[]);
    assert!(!r.stderr.contains("still holds"), "{}", r.stderr);

    // The command it names removes what Strata placed there.
    let r = ws.run(&["clean", "--out-dir", "out"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!ws.path().join("out").exists());
}
