use super::*;
use crate::error::StoreError;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::fs::symlink;

fn store() -> (tempfile::TempDir, crate::Store) {
    let d = tempfile::tempdir().unwrap();
    let s = crate::Store::open(&d.path().join("s"), DigestFunction::Blake3).unwrap();
    (d, s)
}

fn write(base: &Path, rel: &str, content: &str) {
    let p = base.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

#[test]
fn creation_order_does_not_change_the_digest() {
    let (d, s) = store();
    let a = d.path().join("a");
    let b = d.path().join("b");
    for (rel, c) in [
        ("x/1", "one"),
        ("x/2", "two"),
        ("y", "why"),
        ("z/deep/f", "f"),
    ] {
        write(&a, rel, c);
    }
    for (rel, c) in [
        ("z/deep/f", "f"),
        ("y", "why"),
        ("x/2", "two"),
        ("x/1", "one"),
    ] {
        write(&b, rel, c);
    }
    let paths = ["x".to_string(), "y".to_string(), "z".to_string()];
    let da = digest_on_disk(s.function(), &a, &paths).unwrap();
    let db = digest_on_disk(s.function(), &b, &paths).unwrap();
    assert_eq!(da, db);
    // Capturing stores the same tree it hashed.
    assert_eq!(capture(s.cas(), &a, &paths).unwrap(), da);
}

#[test]
fn symlinks_are_kept_verbatim_and_never_followed() {
    let (d, s) = store();
    let base = d.path().join("t");
    write(&base, "file", "content");
    symlink("/etc/passwd", base.join("abs")).unwrap();
    symlink("../../outside", base.join("rel")).unwrap();
    symlink("missing", base.join("dangling")).unwrap();
    let names: Vec<String> = ["abs", "dangling", "file", "rel"]
        .map(String::from)
        .to_vec();
    let root = capture(s.cas(), &base, &names).unwrap();
    let entries = walk(s.cas(), &root).unwrap();
    assert_eq!(
        entries[0],
        (
            "abs".to_string(),
            Entry::Symlink {
                target: "/etc/passwd".into(),
                meta: None,
            }
        )
    );
    assert_eq!(
        entries[3],
        (
            "rel".to_string(),
            Entry::Symlink {
                target: "../../outside".into(),
                meta: None,
            }
        )
    );
    // Changing only a link target changes the digest.
    let other = d.path().join("u");
    write(&other, "file", "content");
    symlink("/etc/shadow", other.join("abs")).unwrap();
    symlink("../../outside", other.join("rel")).unwrap();
    symlink("missing", other.join("dangling")).unwrap();
    assert_ne!(digest_on_disk(s.function(), &other, &names).unwrap(), root);
}

#[test]
fn the_executable_bit_is_part_of_the_digest() {
    let (d, s) = store();
    let base = d.path().join("t");
    write(&base, "tool", "#!/bin/sh\n");
    let names = ["tool".to_string()];
    let plain = digest_on_disk(s.function(), &base, &names).unwrap();
    fs::set_permissions(base.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
    let exec = digest_on_disk(s.function(), &base, &names).unwrap();
    assert_ne!(plain, exec);
    // Other mode bits (group write) do not matter for `run` outputs.
    fs::set_permissions(base.join("tool"), fs::Permissions::from_mode(0o775)).unwrap();
    assert_eq!(digest_on_disk(s.function(), &base, &names).unwrap(), exec);
}

#[test]
fn materialize_round_trips_a_tree() {
    let (d, s) = store();
    let base = d.path().join("t");
    write(&base, "a/b.txt", "b");
    fs::create_dir_all(base.join("a/empty")).unwrap();
    symlink("b.txt", base.join("a/link")).unwrap();
    let root = capture(s.cas(), &base, &["a".to_string()]).unwrap();
    let dest = d.path().join("m");
    fs::create_dir(&dest).unwrap();
    materialize(s.cas(), &root, &dest, Placement::HardLink).unwrap();
    assert_eq!(fs::read_to_string(dest.join("a/b.txt")).unwrap(), "b");
    assert!(dest.join("a/empty").is_dir());
    assert_eq!(
        digest_on_disk(s.function(), &dest, &["a".to_string()]).unwrap(),
        root
    );
}

#[test]
fn malformed_directory_records_are_refused() {
    let (_d, s) = store();
    let evil = reapi::Directory {
        files: vec![reapi::FileNode {
            name: "../escape".into(),
            digest: Some(s.function().of_bytes(b"").to_proto()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let digest = s.cas().put_message(&evil).unwrap();
    assert!(matches!(
        walk(s.cas(), &digest),
        Err(StoreError::Decode { .. })
    ));
    let unsorted = reapi::Directory {
        symlinks: vec![
            reapi::SymlinkNode {
                name: "b".into(),
                target: "x".into(),
                node_properties: None,
            },
            reapi::SymlinkNode {
                name: "a".into(),
                target: "x".into(),
                node_properties: None,
            },
        ],
        ..Default::default()
    };
    let digest = s.cas().put_message(&unsorted).unwrap();
    assert!(matches!(
        walk(s.cas(), &digest),
        Err(StoreError::Decode { .. })
    ));
}

#[test]
fn a_flipped_byte_is_detected_on_read_and_by_verify() {
    let (_d, s) = store();
    let digest = s.cas().put_bytes(b"precious").unwrap();
    let path = s.cas().path(&digest);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&path, b"pRecious").unwrap();
    assert_eq!(s.verify().corrupt.len(), 1);
    assert!(matches!(
        s.cas().read(&digest),
        Err(StoreError::Corrupt { .. })
    ));
    // The read dropped it, to be made again.
    assert!(!path.exists());
    assert!(s.verify().corrupt.is_empty());
}

fn meta(mode: u32, uid: u32, gid: u32) -> Option<Meta> {
    Some(Meta { mode, uid, gid })
}

#[test]
fn rootfs_metadata_and_devices_round_trip_through_the_store() {
    let (_d, s) = store();
    let cas = s.cas();
    let blob = cas.put_bytes(b"#!/bin/sh\n").unwrap();
    let mut b = TreeBuilder::new();
    b.set_meta(meta(0o755, 0, 0));
    b.insert(
        "usr/bin/sudo",
        Node::File {
            digest: blob,
            executable: true,
            meta: meta(0o4755, 0, 0),
        },
    )
    .unwrap();
    b.insert(
        "dev/console",
        Node::Device {
            kind: DeviceKind::Char,
            major: 5,
            minor: 1,
            meta: meta(0o600, 0, 5),
        },
    )
    .unwrap();
    b.insert(
        "tmp",
        Node::Dir({
            let mut t = TreeBuilder::new();
            t.set_meta(meta(0o1777, 0, 0));
            t
        }),
    )
    .unwrap();
    b.insert(
        "home/user/link",
        Node::Symlink {
            target: "../../tmp".into(),
            meta: meta(0o777, 1000, 1000),
        },
    )
    .unwrap();
    let root = b.store(cas).unwrap();
    let entries: std::collections::BTreeMap<String, Entry> =
        walk(cas, &root).unwrap().into_iter().collect();
    assert_eq!(
        entries["usr/bin/sudo"],
        Entry::File {
            digest: blob,
            executable: true,
            meta: meta(0o4755, 0, 0)
        }
    );
    assert_eq!(
        entries["dev/console"],
        Entry::Device {
            kind: DeviceKind::Char,
            major: 5,
            minor: 1,
            meta: meta(0o600, 0, 5)
        }
    );
    assert!(matches!(
        entries["tmp"],
        Entry::Dir {
            meta: Some(Meta { mode: 0o1777, .. }),
            ..
        }
    ));
    assert!(matches!(
        entries["home/user/link"],
        Entry::Symlink {
            meta: Some(Meta { uid: 1000, .. }),
            ..
        }
    ));
    // Metadata is part of the digest.
    let mut other = TreeBuilder::new();
    other.set_meta(meta(0o755, 0, 0));
    other
        .insert(
            "usr/bin/sudo",
            Node::File {
                digest: blob,
                executable: true,
                meta: meta(0o755, 0, 0),
            },
        )
        .unwrap();
    assert_ne!(other.store(cas).unwrap(), root);
    // Materializing keeps files and links and skips device nodes.
    let dest = _d.path().join("m");
    fs::create_dir(&dest).unwrap();
    materialize(cas, &root, &dest, Placement::Copy).unwrap();
    assert!(dest.join("usr/bin/sudo").is_file());
    assert!(!dest.join("dev/console").exists());
}

#[test]
fn overlays_merge_folders_and_edits_never_pass_through_symlinks() {
    let (_d, s) = store();
    let cas = s.cas();
    let a = cas.put_bytes(b"a").unwrap();
    let b_blob = cas.put_bytes(b"b").unwrap();
    let mut lower = TreeBuilder::new();
    lower.insert("etc/a.conf", Node::file(a, false)).unwrap();
    lower.insert("etc/shared", Node::file(a, false)).unwrap();
    lower
        .insert(
            "evil",
            Node::Symlink {
                target: "/etc".into(),
                meta: None,
            },
        )
        .unwrap();
    let lower = lower.store(cas).unwrap();
    let mut upper = TreeBuilder::new();
    upper
        .insert("etc/b.conf", Node::file(b_blob, false))
        .unwrap();
    upper
        .insert("etc/shared", Node::file(b_blob, false))
        .unwrap();
    let upper = upper.store(cas).unwrap();

    let mut t = TreeBuilder::new();
    t.overlay(cas, "", &lower).unwrap();
    t.overlay(cas, "", &upper).unwrap();
    t.overlay(cas, "opt/app", &upper).unwrap();
    let root = t.store(cas).unwrap();
    let files: Vec<(String, Entry)> = walk(cas, &root)
        .unwrap()
        .into_iter()
        .filter(|(_, e)| matches!(e, Entry::File { .. }))
        .collect();
    let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "etc/a.conf",
            "etc/b.conf",
            "etc/shared",
            "opt/app/etc/b.conf",
            "opt/app/etc/shared"
        ]
    );
    assert!(matches!(files[2].1, Entry::File { digest, .. } if digest == b_blob));

    let mut t = TreeBuilder::load(cas, &root).unwrap();
    let err = t
        .insert_at(cas, "evil/passwd", Node::file(a, false), None)
        .unwrap_err();
    assert!(matches!(err, EditError::ThroughSymlink { .. }), "{err}");
    let err = t
        .insert_at(cas, "etc/a.conf/x", Node::file(a, false), None)
        .unwrap_err();
    assert!(matches!(err, EditError::NotADirectory { .. }), "{err}");
    assert!(t.remove(cas, "etc/a.conf").unwrap());
    assert!(!t.remove(cas, "etc/missing").unwrap());
    assert!(t.get(cas, "etc/a.conf").unwrap().is_none());
}

#[test]
fn a_deep_tree_walks_without_exhausting_the_stack() {
    let (_d, s) = store();
    let cas = s.cas();
    // 3,000 levels: far beyond what a recursive walk survives on a 2 MiB stack.
    let mut digest = TreeBuilder::new().store(cas).unwrap();
    for _ in 0..3000 {
        let mut b = TreeBuilder::new();
        b.insert("d", Node::Stored(digest)).unwrap();
        digest = b.store(cas).unwrap();
    }
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn({
            let cas = cas.clone();
            move || walk(&cas, &digest).map(|e| e.len())
        })
        .unwrap();
    assert_eq!(handle.join().unwrap().unwrap(), 3000);
}

#[test]
fn a_deep_assembled_tree_encodes_on_a_small_stack_as_stored_levels_do() {
    // 5,000 levels (beyond what `insert` accepts in one path, but nesting
    // builders has no limit): encoding and dropping must not recurse once
    // per level.
    const LEVELS: usize = 5000;
    let (_d, s) = store();
    let cas = s.cas();
    let file = cas.put_bytes(b"leaf").unwrap();
    let mut leaf = TreeBuilder::new();
    leaf.insert("f", Node::file(file, false)).unwrap();
    let mut expected = leaf.store(cas).unwrap();
    for _ in 0..LEVELS {
        let mut b = TreeBuilder::new();
        b.insert("d", Node::Stored(expected)).unwrap();
        expected = b.store(cas).unwrap();
    }
    let encoded = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let mut deep = TreeBuilder::new();
            deep.insert("f", Node::file(file, false)).unwrap();
            for _ in 0..LEVELS {
                let mut parent = TreeBuilder::new();
                parent.insert("d", Node::Dir(deep)).unwrap();
                deep = parent;
            }
            let encoded = deep.encode(crate::DigestFunction::Blake3);
            (encoded.root, encoded.directories.len())
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(encoded, (expected, LEVELS + 1));
}

#[test]
fn folders_deeper_than_max_depth_are_refused_by_capture_naming_the_path() {
    let (_d, s) = store();
    let cas = s.cas();
    let base = tempfile::tempdir_in(s.tmp_dir()).unwrap();
    // `out` is level 1; MAX_DEPTH - 1 more levels below it is the limit.
    let at_limit = format!("out/{}", "d/".repeat(MAX_DEPTH - 1));
    fs::create_dir_all(base.path().join(&at_limit)).unwrap();
    write(base.path(), &format!("{at_limit}f"), "x");
    let digest = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn({
            let (cas, base) = (cas.clone(), base.path().to_path_buf());
            move || capture(&cas, &base, &["out".to_string()])
        })
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(walk(cas, &digest).unwrap().len(), MAX_DEPTH + 1);

    let too_deep = format!("out/{}", "d/".repeat(MAX_DEPTH));
    fs::create_dir_all(base.path().join(&too_deep)).unwrap();
    let err = capture(cas, base.path(), &["out".to_string()]).unwrap_err();
    assert!(
        matches!(&err, StoreError::TooDeep { path, limit: MAX_DEPTH } if path.starts_with("out/d/d/") && path.ends_with("/…")),
        "{err}"
    );
}

#[test]
fn insert_refuses_paths_deeper_than_max_depth() {
    let (_d, s) = store();
    let file = s.cas().put_bytes(b"x").unwrap();
    let mut b = TreeBuilder::new();
    let at_limit = format!("{}f", "d/".repeat(MAX_DEPTH - 1));
    b.insert(&at_limit, Node::file(file, false)).unwrap();
    let err = b
        .insert(&format!("d/{at_limit}"), Node::file(file, false))
        .unwrap_err();
    assert!(err.contains("more than 1024 levels deep"), "{err}");
    assert!(err.starts_with("`d/d/d/"), "{err}");
}
