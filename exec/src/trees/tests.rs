use std::os::unix::fs::{MetadataExt, PermissionsExt};

use strata_store::DigestFunction;

use super::*;
use crate::source::Stat;

fn store() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), DigestFunction::Blake3).unwrap();
    (d, s)
}

/// An output tree `a.txt`, `bin/tool` (executable), `link -> a.txt`.
fn output(store: &Store) -> Digest {
    let cas = store.cas();
    let mut b = TreeBuilder::new();
    b.insert("a.txt", Node::file(cas.put_bytes(b"a\n").unwrap(), false))
        .unwrap();
    b.insert(
        "bin/tool",
        Node::file(cas.put_bytes(b"#!/bin/sh\n").unwrap(), true),
    )
    .unwrap();
    b.insert(
        "link",
        Node::Symlink {
            target: "a.txt".into(),
            meta: None,
        },
    )
    .unwrap();
    b.store(cas).unwrap()
}

fn source(store: &Store, root: &Path, rel: &str, bytes: &str, executable: bool) -> SourceFile {
    let abs = root.join(rel);
    fs::create_dir_all(abs.parent().unwrap()).unwrap();
    fs::write(&abs, bytes).unwrap();
    SourceFile {
        rel: rel.into(),
        digest: store.function().of_bytes(bytes.as_bytes()),
        executable,
        fingerprint: Stat::of(&fs::metadata(&abs).unwrap()),
        abs,
    }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn a_dependency_tree_is_made_once_of_links_into_the_store_and_reused() {
    let (_d, store) = store();
    let out = output(&store);
    let trees = Trees::open(&store).unwrap();
    let reached = trees.dependency(&out).unwrap();
    assert!(reached.starts_with("../../trees"), "{}", reached.display());
    let dir = trees.on_host(&reached);
    assert!(dir.starts_with(store.root().join(TREES)));
    assert_eq!(
        dir,
        store
            .scratch_dir()
            .join("x")
            .join(&reached)
            .components()
            .fold(PathBuf::new(), |mut p, c| {
                match c {
                    std::path::Component::ParentDir => {
                        p.pop();
                    }
                    c => p.push(c),
                }
                p
            }),
        "the helper reaches it from a scratch folder"
    );
    assert_eq!(fs::read_to_string(dir.join("a.txt")).unwrap(), "a\n");
    let blob = store.cas().path(&store.function().of_bytes(b"a\n"));
    assert_eq!(
        fs::metadata(dir.join("a.txt")).unwrap().ino(),
        fs::metadata(&blob).unwrap().ino(),
        "a hard link to the stored blob"
    );
    assert_eq!(mode(&dir.join("bin/tool")), 0o555);
    assert_eq!(fs::read_link(dir.join("link")).unwrap(), Path::new("a.txt"));

    // Another step, and another build of the same boot, find it as it is.
    let folder = fs::metadata(&dir).unwrap().ino();
    assert_eq!(trees.dependency(&out).unwrap(), reached);
    let again = Trees::open(&store).unwrap();
    assert_eq!(again.dependency(&out).unwrap(), reached);
    assert_eq!(fs::metadata(&dir).unwrap().ino(), folder, "not made again");
    let listed = list(&store);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].this_boot && !listed[0].temporary);
    assert_eq!(listed[0].digest, Some(out));
}

#[test]
fn a_leftover_of_a_killed_build_and_the_trees_of_another_boot_are_never_used() {
    let (_d, store) = store();
    let out = output(&store);
    let trees = Trees::open(&store).unwrap();
    let name = format!("{}-{}", out.hex(), out.size_bytes);
    // A build killed while it filled the tree, and a tree of an earlier
    // boot that a power cut left without its files.
    let leftover = trees.dir.join(".tmp-00000000000000aa");
    fs::create_dir_all(&leftover).unwrap();
    fs::write(leftover.join("a.txt"), "half").unwrap();
    let other_boot = store
        .root()
        .join(TREES)
        .join("00000000-0000-0000-0000-000000000000")
        .join("blake3")
        .join(&name);
    fs::create_dir_all(&other_boot).unwrap();

    let dir = trees.on_host(&trees.dependency(&out).unwrap());
    assert_ne!(dir, other_boot);
    assert_eq!(fs::read_to_string(dir.join("a.txt")).unwrap(), "a\n");
    assert_eq!(fs::read_to_string(leftover.join("a.txt")).unwrap(), "half");
    let listed = list(&store);
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed.iter().filter(|t| t.temporary).count(), 1);
    assert_eq!(listed.iter().filter(|t| !t.this_boot).count(), 1);
    for t in &listed {
        assert!(remove(&store, t), "{t:?}");
    }
    assert_eq!(
        fs::read_dir(store.root().join(TREES)).unwrap().count(),
        0,
        "the boot and function folders went with their last tree"
    );
}

#[test]
fn files_are_copied_where_the_file_system_refuses_links() {
    // `<store>/trees` on another file system (tmpfs) than the CAS: every
    // link fails (EXDEV), as it does past a blob's link limit (EMLINK).
    let shm = Path::new("/dev/shm");
    let (d, store) = store();
    let elsewhere = tempfile::tempdir_in(shm).expect("a tmpfs at /dev/shm");
    assert_ne!(
        fs::metadata(elsewhere.path()).unwrap().dev(),
        fs::metadata(d.path()).unwrap().dev(),
        "/dev/shm is another file system than the temporary folder"
    );
    std::os::unix::fs::symlink(elsewhere.path(), store.root().join(TREES)).unwrap();
    let out = output(&store);
    let trees = Trees::open(&store).unwrap();
    let dir = trees.on_host(&trees.dependency(&out).unwrap());
    let file = dir.join("a.txt");
    assert_eq!(fs::read_to_string(&file).unwrap(), "a\n");
    assert_eq!(fs::metadata(&file).unwrap().nlink(), 1, "a copy");
    assert_eq!(mode(&file), 0o444);
    assert_eq!(mode(&dir.join("bin/tool")), 0o555);
    let usage = usage(&store);
    assert_eq!(usage.trees, 1);
    assert_eq!(usage.bytes, 2 + 10, "copies count; the link does not");
}

#[test]
fn a_source_tree_holds_read_only_copies_named_by_the_keyed_tree() {
    let (d, store) = store();
    let ws = d.path().join("ws");
    let sources = vec![
        source(&store, &ws, "src/a.c", "int a;\n", false),
        source(&store, &ws, "run.sh", "#!/bin/sh\n", true),
    ];
    let trees = Trees::open(&store).unwrap();
    let reached = trees.sources(&sources).unwrap().unwrap();
    let dir = trees.on_host(&reached);
    assert_eq!(fs::read_to_string(dir.join("src/a.c")).unwrap(), "int a;\n");
    assert_eq!(mode(&dir.join("src/a.c")), 0o444);
    assert_eq!(mode(&dir.join("run.sh")), 0o555);
    // The name is the tree the key holds as `work/`.
    let mut keyed = TreeBuilder::new();
    for s in &sources {
        keyed
            .insert(
                &format!("work/{}", s.rel),
                Node::file(s.digest, s.executable),
            )
            .unwrap();
    }
    keyed.store(store.cas()).unwrap();
    let work = tree::list(store.cas(), &keyed.encode(store.function()).root)
        .unwrap()
        .into_iter()
        .find_map(|(name, e)| match e {
            tree::Entry::Dir { digest, .. } if name == "work" => Some(digest),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        dir.file_name().unwrap().to_str().unwrap(),
        format!("{}-{}", work.hex(), work.size_bytes)
    );
    assert!(trees.sources(&[]).unwrap().is_none(), "no sources, no tree");
    // A source edited after it was copied: the copy may not be what was
    // hashed, so a fresh tree of it is refused and nothing is published.
    fs::write(&sources[1].abs, "#!/bin/sh\necho edited\n").unwrap();
    let other = vec![
        source(&store, &ws, "src/b.c", "int b;\n", false),
        sources[1].clone(),
    ];
    let fresh = Trees::open(&store).unwrap();
    assert!(matches!(
        fresh.sources(&other),
        Err(Failure::SourceChanged { .. })
    ));
    let listed = list(&store);
    assert_eq!(listed.len(), 1, "only the first tree: {listed:?}");
}

#[test]
fn a_tree_whose_blob_was_written_through_a_link_is_made_again() {
    let (_d, store) = store();
    let out = output(&store);
    let dir = {
        let trees = Trees::open(&store).unwrap();
        trees.on_host(&trees.dependency(&out).unwrap())
    };
    // Written to through a link (the blob and the tree's file are one),
    // then replaced in the store by the next writer of the blob.
    let blob = store.cas().path(&store.function().of_bytes(b"a\n"));
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&blob, "a\nedited\n").unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("a.txt")).unwrap(),
        "a\nedited\n"
    );
    store.cas().put_bytes(b"a\n").unwrap();

    // The next build finds the tree changed, sets it aside and makes it again.
    let trees = Trees::open(&store).unwrap();
    let again = trees.on_host(&trees.dependency(&out).unwrap());
    assert_eq!(again, dir);
    assert_eq!(fs::read_to_string(again.join("a.txt")).unwrap(), "a\n");
    let listed = list(&store);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let aside = listed.iter().find(|t| t.temporary).unwrap();
    assert!(
        aside
            .path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".stale-"),
        "{aside:?}"
    );
}
