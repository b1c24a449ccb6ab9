//! `store_tree`: the input is a protobuf record, as a store or a remote
//! cache could hand it over. It goes through:
//!
//! 1. `prost::Message::decode` as a `Directory` and as an `ActionResult`;
//! 2. the action cache: written as the entry of a key (at the documented
//!    `<store>/ac/<function>/<xx>/<hex>`), read back with
//!    `ActionCache::get`, its output tree looked up like a cache hit;
//! 3. the tree readers with the input stored as a directory blob:
//!    `read_directory`, `list`, `walk`, `first_missing`, `TreeBuilder::load`;
//! 4. the same with the input as a child of a clean tree, and edits on top:
//!    `overlay` (at the root, onto the hostile child, under a new folder),
//!    `get`, `insert_at` and `remove` through the hostile entries' names,
//!    then `store` and `walk` of the result;
//! 5. when the input decodes as a `Directory`: the record repeated three
//!    levels deep with its subfolder digests pointing at the level below and
//!    its file digests at a stored blob, so validation meets hostile names,
//!    properties and symlinks at every level of a tree whose objects all
//!    exist; a small such tree is also materialized, and it is checked that
//!    nothing was written outside the destination and that every entry the
//!    walk lists is on disk with the right type.

use std::fs;

use prost::Message;
use strata_store::reapi::{ActionResult, Directory};
use strata_store::tree::{
    Entry, Node, Placement, TreeBuilder, first_missing, list, materialize, read_directory, walk,
};
use strata_store::{Cas, Digest, Store};

/// Levels of the hostile tree of step 5.
const LEVELS: usize = 3;
/// Subfolders kept per level in step 5 (the tree grows as their power).
const FANOUT: usize = 3;
/// Entries at most for a tree to be materialized.
const MATERIALIZE_MAX: usize = 256;

/// Feeds `data` through the store's decoders and tree code; never panics.
pub fn run(data: &[u8]) {
    let directory = Directory::decode(data).ok();
    let _ = ActionResult::decode(data);
    crate::with_store(|store| {
        action_cache(store, data);
        let cas = store.cas();
        let file = cas.put_bytes(b"strata fuzz file\n").expect("store a blob");
        let d = cas.put_bytes(data).expect("store the input");
        let _ = read_directory(cas, &d);
        let _ = list(cas, &d);
        let _ = walk(cas, &d);
        let _ = first_missing(cas, &d);
        let _ = TreeBuilder::load(cas, &d);

        let names: Vec<String> = directory
            .as_ref()
            .map(|dir| {
                let files = dir.files.iter().map(|f| f.name.clone());
                let dirs = dir.directories.iter().map(|f| f.name.clone());
                let links = dir.symlinks.iter().map(|f| f.name.clone());
                files.chain(dirs).chain(links).take(4).collect()
            })
            .unwrap_or_default();

        let mut parent = TreeBuilder::new();
        parent.insert("child", Node::Stored(d)).expect("clean");
        parent.insert("sub/child", Node::Stored(d)).expect("clean");
        parent
            .insert("sub/file", Node::file(file, false))
            .expect("clean");
        let p = parent.store(cas).expect("store the parent");
        let _ = walk(cas, &p);
        let _ = list(cas, &p);
        let _ = first_missing(cas, &p);
        edit(cas, &p, &d, &names, file);

        if let Some(dir) = directory {
            let empty = cas
                .put_message(&Directory::default())
                .expect("store the empty folder");
            let mut below = empty;
            for _ in 0..LEVELS {
                let level = repoint(&dir, below, file);
                below = cas.put_message(&level).expect("store a level");
            }
            let top = below;
            let walked = walk(cas, &top);
            let _ = first_missing(cas, &top);
            edit(cas, &p, &top, &names, file);
            if let Ok(entries) = walked
                && entries.len() <= MATERIALIZE_MAX
            {
                let placement = if data.len().is_multiple_of(2) {
                    Placement::Copy
                } else {
                    Placement::HardLink
                };
                check_materialize(store, &top, &entries, placement);
            }
        }
    })
}

/// Step 2: the input as an action-cache entry.
fn action_cache(store: &Store, data: &[u8]) {
    let function = store.function();
    let key = function.of_bytes(b"strata fuzz action key");
    let hex = key.hex();
    let path = store
        .root()
        .join("ac")
        .join(function.name())
        .join(&hex[..2])
        .join(&hex);
    fs::create_dir_all(path.parent().expect("has a parent")).expect("create ac folder");
    let _ = fs::remove_file(&path);
    fs::write(&path, data).expect("write the ac entry");
    if let Ok(Some(result)) = store.action_cache().get(&key) {
        for out in &result.output_directories {
            if let Some(root) = out
                .root_directory_digest
                .as_ref()
                .and_then(Digest::from_proto)
            {
                let _ = first_missing(store.cas(), &root);
            }
        }
    }
}

/// Step 4: edits of the clean tree `base` with the stored tree `layer`.
fn edit(cas: &Cas, base: &Digest, layer: &Digest, names: &[String], file: Digest) {
    let Ok(mut b) = TreeBuilder::load(cas, base) else {
        return;
    };
    let _ = b.overlay(cas, "", layer);
    let _ = b.overlay(cas, "child", layer);
    let _ = b.overlay(cas, "new/place", layer);
    for name in names {
        let _ = b.get(cas, &format!("child/{name}"));
        let _ = b.get(cas, &format!("child/{name}/below"));
        let _ = b.insert_at(
            cas,
            &format!("child/{name}/x"),
            Node::file(file, false),
            None,
        );
        let _ = b.remove(cas, &format!("sub/child/{name}"));
    }
    if let Ok(out) = b.store(cas) {
        let _ = walk(cas, &out);
    }
}

/// `dir` with its first [`FANOUT`] subfolders pointing at `child` and every
/// file at `file`.
fn repoint(dir: &Directory, child: Digest, file: Digest) -> Directory {
    let mut d = dir.clone();
    d.directories.truncate(FANOUT);
    for n in &mut d.directories {
        n.digest = Some(child.to_proto());
    }
    for f in &mut d.files {
        f.digest = Some(file.to_proto());
    }
    d
}

/// Step 5: materializes `root` and checks the result against `entries`.
fn check_materialize(store: &Store, root: &Digest, entries: &[(String, Entry)], how: Placement) {
    let outer = tempfile::Builder::new()
        .prefix("mat-")
        .tempdir_in(crate::scratch())
        .expect("create a materialize folder");
    let dest = outer.path().join("out");
    fs::create_dir(&dest).expect("create the destination");
    let result = materialize(store.cas(), root, &dest, how);
    let around: Vec<_> = fs::read_dir(outer.path())
        .expect("list the materialize folder")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(
        around,
        [std::ffi::OsString::from("out")],
        "materialize wrote beside its destination"
    );
    if let Err(e) = result {
        let _ = e.to_string();
        return;
    }
    for (path, entry) in entries {
        let on_disk = dest.join(path);
        let meta = match fs::symlink_metadata(&on_disk) {
            Ok(m) => m,
            Err(_) if matches!(entry, Entry::Device { .. }) => continue,
            Err(e) => panic!("materialize succeeded but `{path}` is missing: {e}"),
        };
        let kind = meta.file_type();
        let right = match entry {
            Entry::Dir { .. } => kind.is_dir(),
            Entry::File { .. } => kind.is_file(),
            Entry::Symlink { .. } => kind.is_symlink(),
            Entry::Device { .. } => false,
        };
        assert!(
            right,
            "materialize wrote `{path}` as {kind:?} for {entry:?}"
        );
    }
}
