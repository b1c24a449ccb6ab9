//! The store cannot be written through `out/`, edits there are undone by the
//! next build, and a store whose blob went bad heals: the bad blob is
//! dropped and made again by its step, and `strata store verify --repair`
//! removes what is corrupt and the action-cache entries that reach it.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::Ws;

const MOTD: &str = "Welcome to the Strata appliance\n";

/// A root file system with a motd, and a step that reads it.
fn appliance() -> Ws {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        &format!(
            r#"targets:
  rootfs:
    rule: run
    cmd: mkdir $OUT/etc && printf '{}' > $OUT/etc/motd
    outs: [etc/]
  banner:
    rule: run
    deps: [rootfs]
    cmd: tr a-z A-Z < $DEPS/rootfs/etc/motd > $OUT/banner
    outs: [banner]
"#,
            MOTD.replace('\n', "\\n")
        ),
    );
    ws
}

/// Makes `path` writable and runs `edit` on it, as a user (or root, who
/// needs no chmod) editing an output would.
fn edit(path: &Path, edit: impl FnOnce(&mut fs::File)) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    edit(&mut f);
}

fn append(path: &Path, text: &str) {
    edit(path, |f| {
        use std::io::Seek;
        f.seek(std::io::SeekFrom::End(0)).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    });
}

fn verify(ws: &Ws, extra: &[&str]) -> common::Run {
    let mut args = vec!["store", "verify"];
    args.extend_from_slice(extra);
    ws.run(&args)
}

/// The stored blob holding exactly `content`.
fn blob_holding(ws: &Ws, content: &str) -> PathBuf {
    walkdir(&ws.store.join("cas"))
        .into_iter()
        .find(|p| fs::read(p).is_ok_and(|b| b == content.as_bytes()))
        .unwrap_or_else(|| panic!("no blob holds {content:?}"))
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(walkdir(&p));
        } else {
            found.push(p);
        }
    }
    found
}

#[test]
fn editing_a_file_in_out_leaves_the_store_intact_and_the_next_build_undoes_it() {
    let ws = appliance();
    ws.build_ok(&[]);
    let motd = ws.path().join("out/rootfs/etc/motd");
    append(&motd, "x\n");
    let r = verify(&ws, &[]);
    assert_eq!(
        r.code, 0,
        "the store is not written through out/:\n{}",
        r.stdout
    );
    assert_eq!(fs::read_to_string(blob_holding(&ws, MOTD)).unwrap(), MOTD);

    let r = ws.build_ok(&[]);
    assert!(r.executed().is_empty(), "{}", r.stdout);
    assert_eq!(ws.read("out/rootfs/etc/motd"), MOTD, "the edit is undone");

    // An edit that keeps the size is noticed as well.
    edit(&motd, |f| f.write_all(b"w").unwrap());
    assert_ne!(ws.read("out/rootfs/etc/motd"), MOTD);
    ws.build_ok(&[]);
    assert_eq!(ws.read("out/rootfs/etc/motd"), MOTD);

    // A dependent step that runs again reads the stored motd.
    ws.write(
        "BUILD.yaml",
        &ws.read("BUILD.yaml").replace("tr a-z A-Z", "tr a-z A-Z "),
    );
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["banner"]);
    assert_eq!(ws.read("out/banner/banner"), MOTD.to_uppercase());
    assert_eq!(verify(&ws, &[]).code, 0);
}

/// A blob changed behind the store's back (as an edit through a hard link
/// did) is made again by the step that produced it, in the same build,
/// with or without the cache.
#[test]
fn a_blob_of_the_wrong_size_is_made_again_by_its_step() {
    for flags in [&[][..], &["--no-cache"][..]] {
        let ws = appliance();
        ws.build_ok(&[]);
        append(&blob_holding(&ws, MOTD), "x\n");
        assert_eq!(verify(&ws, &[]).code, 1);
        // The dependent step must run again to read the motd.
        ws.write(
            "BUILD.yaml",
            &ws.read("BUILD.yaml").replace("tr a-z A-Z", "tr a-z A-Z "),
        );
        let r = ws.build_ok(flags);
        assert!(
            r.executed().contains(&"rootfs".to_string()),
            "{flags:?}: {}",
            r.stdout
        );
        assert_eq!(ws.read("out/banner/banner"), MOTD.to_uppercase());
        assert_eq!(ws.read("out/rootfs/etc/motd"), MOTD);
        let r = verify(&ws, &[]);
        assert_eq!(r.code, 0, "{flags:?}: healed:\n{}", r.stdout);
    }
}

/// A build answers the lookups of a no-op from the action-cache hits and
/// the folder listings earlier builds kept, once they are older than the
/// second those were recorded in. It still notices a blob gone from the
/// store or of the wrong size, an action-cache entry removed, a file edited
/// or deleted in `out/` and a changed command.
#[test]
fn a_no_op_answered_from_kept_hits_still_notices_every_change() {
    let ws = appliance();
    ws.build_ok(&[]);
    // What the builds keep is trusted once older than a second; then a
    // build with nothing changed executes nothing.
    let settle = |ws: &Ws| {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        ws.build_ok(&[]);
        let r = ws.build_ok(&[]);
        assert!(r.executed().is_empty(), "{}", r.stdout);
        assert_eq!(ws.read("out/rootfs/etc/motd"), MOTD);
        assert_eq!(ws.read("out/banner/banner"), MOTD.to_uppercase());
        r
    };
    settle(&ws);

    let blob = blob_holding(&ws, MOTD);
    fs::remove_file(&blob).unwrap();
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["rootfs"], "a missing blob: {}", r.stdout);
    assert_eq!(fs::read_to_string(&blob).unwrap(), MOTD);
    settle(&ws);

    append(&blob, "x\n");
    let r = ws.build_ok(&[]);
    assert_eq!(
        r.executed(),
        ["rootfs"],
        "a blob of another size: {}",
        r.stdout
    );
    assert_eq!(fs::read_to_string(&blob).unwrap(), MOTD);
    let key = settle(&ws).json()["targets"]["banner"]["key"]
        .as_str()
        .unwrap()
        .to_string();

    let entry = ws.store.join("ac/blake3").join(&key[..2]).join(&key);
    fs::remove_file(&entry).unwrap();
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["banner"], "a removed entry: {}", r.stdout);
    assert!(entry.exists());
    settle(&ws);

    let motd = ws.path().join("out/rootfs/etc/motd");
    edit(&motd, |f| f.write_all(b"w").unwrap());
    let r = ws.build_ok(&[]);
    assert!(r.executed().is_empty(), "{}", r.stdout);
    assert!(
        r.stderr.contains("was changed since it was placed"),
        "{}",
        r.stderr
    );
    settle(&ws);

    fs::remove_file(ws.path().join("out/banner/banner")).unwrap();
    let r = ws.build_ok(&[]);
    assert!(r.executed().is_empty(), "{}", r.stdout);
    settle(&ws);

    ws.write(
        "BUILD.yaml",
        &ws.read("BUILD.yaml").replace("tr a-z A-Z", "tr a-z A-Z "),
    );
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["banner"], "a changed command: {}", r.stdout);
    assert_eq!(verify(&ws, &[]).code, 0);
}

/// A flipped byte keeps the size, so only hashing finds it: `verify
/// --repair` removes the blob and every entry reaching it, and the next
/// build makes them again.
#[test]
fn verify_repair_removes_a_corrupt_blob_and_the_entries_reaching_it() {
    let ws = appliance();
    ws.build_ok(&[]);
    let blob = blob_holding(&ws, MOTD);
    edit(&blob, |f| f.write_all(b"w").unwrap());
    let r = verify(&ws, &[]);
    assert_eq!(r.code, 1, "{}", r.stdout);

    let r = verify(&ws, &["--repair"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains(&format!("removed corrupt object {}", blob.display())),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("removed action-cache entry"),
        "{}",
        r.stdout
    );
    assert!(!blob.exists());
    assert_eq!(verify(&ws, &[]).code, 0);

    fs::remove_dir_all(ws.path().join("out")).unwrap();
    let r = ws.build_ok(&[]);
    assert_eq!(
        r.executed(),
        ["rootfs"],
        "banner's output is intact: {}",
        r.stdout
    );
    assert_eq!(ws.read("out/rootfs/etc/motd"), MOTD);
    assert_eq!(fs::read_to_string(&blob).unwrap(), MOTD);
}
