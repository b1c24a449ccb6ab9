//! Editing trees in memory: overlaying stored trees, inserting and removing
//! entries by path, with stored subtrees expanded only where edited.

use crate::Digest;
use crate::cas::Cas;
use crate::error::StoreError;

use super::walk::read_directory;
use super::{Node, TreeBuilder, clean_parts, parse_properties};

/// Why an edit was refused.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("`{path}` is not a clean relative path")]
    BadPath { path: String },
    #[error("`{path}` goes through `{blocker}`, which is not a folder")]
    NotADirectory { path: String, blocker: String },
    #[error("`{path}` goes through the symlink `{link}`")]
    ThroughSymlink { path: String, link: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TreeBuilder {
    /// One level of the stored tree `digest`, its subfolders left stored.
    pub fn load(cas: &Cas, digest: &Digest) -> Result<TreeBuilder, StoreError> {
        let dir = read_directory(cas, digest)?;
        let bad = |reason: String| StoreError::Decode {
            digest: *digest,
            what: "a directory",
            reason,
        };
        let mut b = TreeBuilder::new();
        b.meta = parse_properties(dir.node_properties.as_ref())
            .map_err(bad)?
            .0;
        for f in &dir.files {
            let d = Digest::from_proto(f.digest.as_ref().expect("validated")).expect("validated");
            let (meta, device) = parse_properties(f.node_properties.as_ref()).map_err(bad)?;
            let node = match device {
                Some((kind, major, minor)) => Node::Device {
                    kind,
                    major,
                    minor,
                    meta,
                },
                None => Node::File {
                    digest: d,
                    executable: f.is_executable,
                    meta,
                },
            };
            b.entries.insert(f.name.clone(), node);
        }
        for s in &dir.symlinks {
            let (meta, _) = parse_properties(s.node_properties.as_ref()).map_err(bad)?;
            b.entries.insert(
                s.name.clone(),
                Node::Symlink {
                    target: s.target.clone(),
                    meta,
                },
            );
        }
        for d in &dir.directories {
            let digest =
                Digest::from_proto(d.digest.as_ref().expect("validated")).expect("validated");
            b.entries.insert(d.name.clone(), Node::Stored(digest));
        }
        Ok(b)
    }

    /// Adds `node` as a direct child, replacing any entry of that name.
    pub(crate) fn insert_child(&mut self, name: String, node: Node) {
        self.entries.insert(name, node);
    }

    /// The folder at `parts`, created (with `dir_meta`) or expanded from the
    /// store as needed. Never passes through a symlink or a file.
    fn dir_mut(
        &mut self,
        cas: &Cas,
        path: &str,
        parts: &[&str],
        dir_meta: Option<super::Meta>,
    ) -> Result<&mut TreeBuilder, EditError> {
        let mut dir = self;
        for (i, part) in parts.iter().enumerate() {
            let shown = parts[..=i].join("/");
            let entry = dir.entries.entry((*part).to_string()).or_insert_with(|| {
                let mut d = TreeBuilder::new();
                d.meta = dir_meta;
                Node::Dir(d)
            });
            if let Node::Stored(digest) = entry {
                *entry = Node::Dir(TreeBuilder::load(cas, digest)?);
            }
            dir = match entry {
                Node::Dir(d) => d,
                Node::Symlink { .. } => {
                    return Err(EditError::ThroughSymlink {
                        path: path.into(),
                        link: shown,
                    });
                }
                _ => {
                    return Err(EditError::NotADirectory {
                        path: path.into(),
                        blocker: shown,
                    });
                }
            };
        }
        Ok(dir)
    }

    /// Inserts `node` at `path`, replacing what is there. Parent folders are
    /// created with `dir_meta`; stored parents are expanded. A parent that is
    /// a symlink is refused, so no entry is ever placed "through" a link.
    pub fn insert_at(
        &mut self,
        cas: &Cas,
        path: &str,
        node: Node,
        dir_meta: Option<super::Meta>,
    ) -> Result<(), EditError> {
        let parts = clean_parts(path).map_err(|_| EditError::BadPath { path: path.into() })?;
        let (last, parents) = parts.split_last().expect("non-empty");
        let dir = self.dir_mut(cas, path, parents, dir_meta)?;
        // Merging a folder onto a folder keeps what is below it (overlay);
        // anything else replaces the entry.
        match (dir.entries.get_mut(*last), node) {
            (Some(existing @ (Node::Dir(_) | Node::Stored(_))), Node::Dir(new))
                if new.is_empty() =>
            {
                if let Node::Stored(d) = existing {
                    *existing = Node::Dir(TreeBuilder::load(cas, d)?);
                }
                if let Node::Dir(e) = existing {
                    e.meta = new.meta.or(e.meta);
                }
            }
            (_, node) => {
                dir.entries.insert((*last).to_string(), node);
            }
        }
        Ok(())
    }

    /// The entry at `path`, if any (stored folders are expanded on the way).
    pub fn get(&mut self, cas: &Cas, path: &str) -> Result<Option<&Node>, EditError> {
        let parts = clean_parts(path).map_err(|_| EditError::BadPath { path: path.into() })?;
        let (last, parents) = parts.split_last().expect("non-empty");
        let mut dir = &mut *self;
        for part in parents {
            let Some(entry) = dir.entries.get_mut(*part) else {
                return Ok(None);
            };
            if let Node::Stored(digest) = entry {
                *entry = Node::Dir(TreeBuilder::load(cas, digest)?);
            }
            dir = match entry {
                Node::Dir(d) => d,
                _ => return Ok(None),
            };
        }
        Ok(dir.entries.get(*last))
    }

    /// Removes the entry at `path` (a whole folder, if it is one). Returns
    /// whether something was removed.
    pub fn remove(&mut self, cas: &Cas, path: &str) -> Result<bool, EditError> {
        let parts = clean_parts(path).map_err(|_| EditError::BadPath { path: path.into() })?;
        let (last, parents) = parts.split_last().expect("non-empty");
        let mut dir = &mut *self;
        for part in parents {
            let Some(entry) = dir.entries.get_mut(*part) else {
                return Ok(false);
            };
            if let Node::Stored(digest) = entry {
                *entry = Node::Dir(TreeBuilder::load(cas, digest)?);
            }
            dir = match entry {
                Node::Dir(d) => d,
                _ => return Ok(false),
            };
        }
        Ok(dir.entries.remove(*last).is_some())
    }

    /// Overlays the stored tree `layer` at `prefix` ("" for the root): its
    /// entries replace same-named files and merge into same-named folders,
    /// like a container image layer without whiteouts.
    pub fn overlay(&mut self, cas: &Cas, prefix: &str, layer: &Digest) -> Result<(), EditError> {
        let parts: Vec<&str> = if prefix.trim_matches('/').is_empty() {
            Vec::new()
        } else {
            clean_parts(prefix).map_err(|_| EditError::BadPath {
                path: prefix.into(),
            })?
        };
        let target = self.dir_mut(cas, prefix, &parts, None)?;
        let mut top = TreeBuilder::load(cas, layer)?;
        if top.meta.is_some() {
            target.meta = top.meta;
        }
        for (name, node) in std::mem::take(&mut top.entries) {
            match (target.entries.get_mut(&name), node) {
                (Some(existing @ (Node::Dir(_) | Node::Stored(_))), Node::Stored(sub)) => {
                    if let Node::Stored(d) = existing {
                        *existing = Node::Dir(TreeBuilder::load(cas, d)?);
                    }
                    if let Node::Dir(e) = existing {
                        e.overlay(cas, "", &sub)?;
                    }
                }
                (_, node) => {
                    target.entries.insert(name, node);
                }
            }
        }
        Ok(())
    }
}
