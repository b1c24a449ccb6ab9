//! What a target declares its output tree holds, and the check a cached
//! result (a local action-cache entry or a remote one) passes before it is
//! used in place of running the step.
//!
//! A step's tree is captured from exactly its declared outputs, so a tree
//! that lacks one, has one of the wrong kind, or holds anything else is not
//! this target's result: another target's entry planted at its key, or one
//! an older version accepted from a remote without checking.

use std::collections::{BTreeMap, BTreeSet};

use strata_store::remote_cache::OutputCheck;
use strata_store::tree::{Entry, list};
use strata_store::{Cas, Digest};

use strata_rules::Work;

/// The kind a declared output must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `outs: [dir/]`: a folder, whatever it holds.
    Folder,
    /// `outs: [file]`: a file or a symlink (kept verbatim).
    FileOrSymlink,
    /// The one file a built-in rule writes.
    File,
}

/// A declared output, or a folder on the way to one (`kind: None`).
#[derive(Debug, Default)]
struct Node {
    kind: Option<Kind>,
    children: BTreeMap<String, Node>,
}

/// The outputs a target declares, as a tree of names.
#[derive(Debug)]
pub struct DeclaredOutputs {
    root: Node,
}

impl DeclaredOutputs {
    /// What `work` declares; `None` when its output is a tree of the
    /// step's own making (stages, image pulls, data roots, `extract`,
    /// `rootfs`, ...), which nothing here can check.
    pub fn of(work: &Work) -> Option<DeclaredOutputs> {
        let mut declared = DeclaredOutputs {
            root: Node::default(),
        };
        match work {
            Work::Run(step) => {
                for (out, &is_dir) in step.outs.iter().zip(&step.declared_dirs) {
                    let kind = if is_dir {
                        Kind::Folder
                    } else {
                        Kind::FileOrSymlink
                    };
                    declared.insert(out, kind);
                }
            }
            Work::Builtin { rule, .. } => declared.insert(&rule.single_output_file()?, Kind::File),
            _ => return None,
        }
        Some(declared)
    }

    fn insert(&mut self, path: &str, kind: Kind) {
        let mut node = &mut self.root;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            node = node.children.entry(part.to_string()).or_default();
        }
        node.kind = Some(kind);
    }

    /// A digest of the declared names and kinds: equal for equal
    /// declarations, so a check passed once is known to hold for another
    /// lookup declaring the same.
    pub fn fingerprint(declared: Option<&DeclaredOutputs>) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        let Some(declared) = declared else {
            return *h.update(b"undeclared").finalize().as_bytes();
        };
        // Depth first, in name order; each node's children counted so the
        // shape is unambiguous.
        let mut stack: Vec<(&str, &Node)> = vec![("", &declared.root)];
        while let Some((name, node)) = stack.pop() {
            h.update(&(name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update(&[match node.kind {
                None => 0,
                Some(Kind::Folder) => 1,
                Some(Kind::FileOrSymlink) => 2,
                Some(Kind::File) => 3,
            }]);
            h.update(&(node.children.len() as u64).to_le_bytes());
            stack.extend(node.children.iter().rev().map(|(n, c)| (n.as_str(), c)));
        }
        *h.finalize().as_bytes()
    }

    /// Whether the stored tree `root` holds every declared output with its
    /// kind and nothing undeclared; `Err` says what is wrong. Reads only the
    /// folder records on the way to the declared outputs, which must be
    /// stored.
    pub fn check(&self, cas: &Cas, root: &Digest) -> Result<(), String> {
        check_folder(cas, root, "", &self.root.children, false)
    }
}

/// Checks one stored folder against the declared names in it. In a
/// declared folder (`open`), undeclared entries are the step's own.
fn check_folder(
    cas: &Cas,
    folder: &Digest,
    prefix: &str,
    declared: &BTreeMap<String, Node>,
    open: bool,
) -> Result<(), String> {
    let entries = list(cas, folder).map_err(|e| format!("cannot read its tree: {e}"))?;
    let mut found = BTreeSet::new();
    for (name, entry) in entries {
        let path = format!("{prefix}{name}");
        let Some(node) = declared.get(&name) else {
            if open {
                continue;
            }
            return Err(format!("it holds `{path}`, which is not declared"));
        };
        let kind_ok = matches!(
            (node.kind, &entry),
            (None | Some(Kind::Folder), Entry::Dir { .. })
                | (
                    Some(Kind::FileOrSymlink),
                    Entry::File { .. } | Entry::Symlink { .. }
                )
                | (Some(Kind::File), Entry::File { .. })
        );
        if !kind_ok {
            let expected = match node.kind {
                None | Some(Kind::Folder) => "a folder",
                Some(Kind::FileOrSymlink) => "a file or a symlink",
                Some(Kind::File) => "a file",
            };
            return Err(format!("`{path}` is not {expected}"));
        }
        if let Entry::Dir { digest, .. } = entry
            && !node.children.is_empty()
        {
            let inner_open = node.kind == Some(Kind::Folder);
            check_folder(
                cas,
                &digest,
                &format!("{path}/"),
                &node.children,
                inner_open,
            )?;
        }
        found.insert(name);
    }
    match declared.iter().find(|(name, _)| !found.contains(*name)) {
        Some((name, node)) => Err(format!("it lacks `{prefix}{}`", first_declared(name, node))),
        None => Ok(()),
    }
}

/// A remote cache checks an entry's tree against what the target declares
/// before it fetches its files (the check is the engine's; the remote only
/// runs it).
impl OutputCheck for DeclaredOutputs {
    fn check(&self, cas: &Cas, tree: &Digest) -> Result<(), String> {
        DeclaredOutputs::check(self, cas, tree)
    }
}

/// `name`, extended down to the first declared output under it.
fn first_declared(name: &str, node: &Node) -> String {
    match (node.kind, node.children.iter().next()) {
        (None, Some((child, inner))) => format!("{name}/{}", first_declared(child, inner)),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use strata_store::tree::{Node as TreeNode, TreeBuilder};
    use strata_store::{DigestFunction, Store};

    use super::*;

    fn declared(outs: &[(&str, Kind)]) -> DeclaredOutputs {
        let mut d = DeclaredOutputs {
            root: Node::default(),
        };
        for (path, kind) in outs {
            d.insert(path, *kind);
        }
        d
    }

    /// A stored tree of files (`path`), symlinks (`path -> target`) and
    /// empty folders (`path/`).
    fn tree(store: &Store, entries: &[&str]) -> Digest {
        let mut b = TreeBuilder::new();
        for e in entries {
            let node = if let Some((_, target)) = e.split_once(" -> ") {
                TreeNode::Symlink {
                    target: target.into(),
                    meta: None,
                }
            } else if e.ends_with('/') {
                TreeNode::Dir(TreeBuilder::new())
            } else {
                TreeNode::file(store.cas().put_bytes(e.as_bytes()).unwrap(), false)
            };
            let path = e.split(" -> ").next().unwrap().trim_end_matches('/');
            b.insert(path, node).unwrap();
        }
        b.store(store.cas()).unwrap()
    }

    #[test]
    fn a_tree_of_exactly_the_declared_outputs_passes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), DigestFunction::Blake3).unwrap();
        let d = declared(&[
            ("bin/tool", Kind::FileOrSymlink),
            ("link", Kind::FileOrSymlink),
            ("share", Kind::Folder),
        ]);
        let t = tree(
            &store,
            &["bin/tool", "link -> bin/tool", "share/doc/x", "share/y/"],
        );
        assert_eq!(d.check(store.cas(), &t), Ok(()));
    }

    #[test]
    fn another_targets_tree_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), DigestFunction::Blake3).unwrap();
        let d = declared(&[("words.txt", Kind::FileOrSymlink)]);
        let other = tree(&store, &["count.txt"]);
        assert_eq!(
            d.check(store.cas(), &other),
            Err("it holds `count.txt`, which is not declared".into())
        );
        let both = tree(&store, &["count.txt", "words.txt"]);
        assert!(d.check(store.cas(), &both).is_err());
        let empty = tree(&store, &[]);
        assert_eq!(
            d.check(store.cas(), &empty),
            Err("it lacks `words.txt`".into())
        );
        let nested = declared(&[("a/b/c", Kind::FileOrSymlink)]);
        assert_eq!(
            nested.check(store.cas(), &empty),
            Err("it lacks `a/b/c`".into())
        );
        let half = tree(&store, &["a/b/"]);
        assert_eq!(
            nested.check(store.cas(), &half),
            Err("it lacks `a/b/c`".into())
        );
    }

    #[test]
    fn the_fingerprint_follows_names_kinds_and_nesting() {
        let fp = |outs: &[(&str, Kind)]| DeclaredOutputs::fingerprint(Some(&declared(outs)));
        let base = fp(&[("a", Kind::FileOrSymlink), ("b/c", Kind::Folder)]);
        assert_eq!(
            base,
            fp(&[("b/c", Kind::Folder), ("a", Kind::FileOrSymlink)])
        );
        for other in [
            fp(&[("a", Kind::Folder), ("b/c", Kind::Folder)]),
            fp(&[("a", Kind::FileOrSymlink), ("b/d", Kind::Folder)]),
            fp(&[("a", Kind::FileOrSymlink), ("b", Kind::Folder)]),
            fp(&[("a/b/c", Kind::FileOrSymlink)]),
            fp(&[("a", Kind::FileOrSymlink)]),
            DeclaredOutputs::fingerprint(None),
        ] {
            assert_ne!(other, base);
        }
    }

    #[test]
    fn an_output_of_the_wrong_kind_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), DigestFunction::Blake3).unwrap();
        let folder = tree(&store, &["out/"]);
        let file = tree(&store, &["out"]);
        let link = tree(&store, &["out -> elsewhere"]);
        let as_file = declared(&[("out", Kind::FileOrSymlink)]);
        let as_folder = declared(&[("out", Kind::Folder)]);
        let one_file = declared(&[("out", Kind::File)]);
        assert_eq!(
            as_file.check(store.cas(), &folder),
            Err("`out` is not a file or a symlink".into())
        );
        assert_eq!(as_file.check(store.cas(), &link), Ok(()));
        assert_eq!(
            as_folder.check(store.cas(), &file),
            Err("`out` is not a folder".into())
        );
        assert_eq!(one_file.check(store.cas(), &file), Ok(()));
        assert_eq!(
            one_file.check(store.cas(), &link),
            Err("`out` is not a file".into())
        );
    }
}
