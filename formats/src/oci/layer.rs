//! Image layers as changesets on trees, with the OCI image spec's rules
//! ("Applying changesets"): a layer tree holds what was added or changed,
//! and deletions as whiteouts, empty files named `.wh.<name>`. A folder
//! holding `.wh..wh..opq` (an opaque whiteout) hides everything the lower
//! layers had in it.
//!
//! Trees are Merkle trees, so equal subtrees are recognised by digest and
//! skipped without being read.
//!
//! Folder metadata: a layer folder without metadata keeps the lower
//! folder's. So `apply(lower, diff(lower, upper)) == upper` holds whenever
//! every folder of `upper` that is also a folder in `lower` has metadata if
//! the lower one does (rootfs trees and unpacked archives always do).

use std::collections::BTreeMap;
use std::io::{self, Read};

use strata_store::tree::{Entry, Meta, Node, TreeBuilder, list, walk};
use strata_store::{Cas, Digest};

use super::blob::{Blob, HashingReader, open_stored};
use super::layout::{Image, parse, read_document};
use super::spec::media_type;
use crate::FormatError;
use crate::compress::decoder;
use crate::unpack::{Limits, MAX_DEPTH, unpack_tar};

/// Prefix of a whiteout: `.wh.<name>` deletes `<name>` of the lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// An opaque whiteout: the folder holding it hides the lower layers' content.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// Names reserved for whiteout metadata (the opaque marker, AUFS hard-link
/// folders); never entries of the image.
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";

/// Whiteouts are empty regular files, 0644 root:root.
const WHITEOUT_META: Meta = Meta {
    mode: 0o644,
    uid: 0,
    gid: 0,
};

/// Folders an unpacked layer creates without listing them, and the root.
const DEFAULT_DIR_META: Meta = Meta {
    mode: 0o755,
    uid: 0,
    gid: 0,
};

/// Bytes allowed after a layer's end-of-archive blocks (tar writers pad to
/// a record of 10 KiB; anything far beyond that is not a layer).
const MAX_TRAILING: u64 = 1 << 20;

/// The layer tree that turns `lower` into `upper`: added and changed
/// entries with their content and metadata (a changed folder's own entry
/// plus its changed children; a new or retyped folder whole), deleted ones
/// as whiteouts. Unchanged subtrees are skipped by digest.
///
/// An entry of `upper` named `.wh.*` is refused: in a layer it would be read
/// as a deletion.
pub fn diff(cas: &Cas, lower: &Digest, upper: &Digest) -> Result<Digest, FormatError> {
    let meta = TreeBuilder::load(cas, upper)?.meta();
    let whiteout = Node::File {
        digest: cas.put_bytes(b"")?,
        executable: false,
        meta: Some(WHITEOUT_META),
    };
    diff_dir(cas, lower, upper, meta, &whiteout, "", 0)
}

fn diff_dir(
    cas: &Cas,
    lower: &Digest,
    upper: &Digest,
    meta: Option<Meta>,
    whiteout: &Node,
    path: &str,
    depth: usize,
) -> Result<Digest, FormatError> {
    check_depth(path, depth)?;
    let below = entries(cas, lower)?;
    let above = entries(cas, upper)?;
    let mut out = TreeBuilder::new();
    out.set_meta(meta);
    for name in below.keys().filter(|n| !above.contains_key(*n)) {
        insert(
            &mut out,
            &format!("{WHITEOUT_PREFIX}{name}"),
            whiteout.clone(),
        )?;
    }
    for (name, now) in above {
        let child = join(path, &name);
        representable(&name, &child)?;
        match (below.get(&name), now) {
            (Some(before), now) if *before == now => {}
            (Some(Entry::Dir { digest: before, .. }), Entry::Dir { digest, meta }) => {
                let sub = diff_dir(cas, before, &digest, meta, whiteout, &child, depth + 1)?;
                insert(&mut out, &name, Node::Stored(sub))?;
            }
            (_, Entry::Dir { digest, .. }) => {
                for (p, _) in walk(cas, &digest)? {
                    let last = p.rsplit('/').next().unwrap_or(&p);
                    representable(last, &join(&child, &p))?;
                }
                insert(&mut out, &name, Node::Stored(digest))?;
            }
            (_, now) => insert(&mut out, &name, Node::from(now))?,
        }
    }
    Ok(out.store(cas)?)
}

/// Applies the layer tree `layer` to `lower`: whiteouts delete entries of
/// `lower` (an opaque whiteout all of a folder's), then the layer's entries
/// replace same-named ones, folders merging into folders. Whiteouts only
/// ever hide what `lower` had, never what the same layer adds.
///
/// A whiteout naming `.`, `..` or nothing is refused.
pub fn apply(cas: &Cas, lower: &Digest, layer: &Digest) -> Result<Digest, FormatError> {
    let lower_meta = TreeBuilder::load(cas, lower)?.meta();
    let layer_meta = TreeBuilder::load(cas, layer)?.meta();
    Applier {
        cas,
        unpacked: false,
    }
    .dir(Some((lower, lower_meta)), layer, layer_meta, "", 0)
}

struct Applier<'a> {
    cas: &'a Cas,
    /// The layer was unpacked from a tar: a folder without metadata is one
    /// the tar did not list, only created as a parent of what it holds.
    unpacked: bool,
}

impl Applier<'_> {
    fn dir(
        &self,
        lower: Option<(&Digest, Option<Meta>)>,
        layer: &Digest,
        layer_meta: Option<Meta>,
        path: &str,
        depth: usize,
    ) -> Result<Digest, FormatError> {
        check_depth(path, depth)?;
        let changes = entries(self.cas, layer)?;
        let mut kept = match lower {
            Some((d, _)) if !changes.contains_key(OPAQUE_WHITEOUT) => entries(self.cas, d)?,
            _ => BTreeMap::new(),
        };
        for name in changes.keys() {
            if name.starts_with(WHITEOUT_META_PREFIX) {
                continue;
            }
            if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
                if target.is_empty() || target == "." || target == ".." {
                    return Err(FormatError::Refused {
                        entry: join(path, name),
                        reason: format!(
                            "a whiteout of `{target}` names no entry of its folder (a layer may \
                             only delete entries inside it)"
                        ),
                    });
                }
                kept.remove(target);
            }
        }
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        for (name, change) in changes {
            if name.starts_with(WHITEOUT_PREFIX) {
                continue;
            }
            let child = join(path, &name);
            match change {
                Entry::Dir { digest, meta } => {
                    let below = match kept.remove(&name) {
                        Some(Entry::Dir { digest, meta }) => Some((digest, meta)),
                        Some(other) if self.unpacked && meta.is_none() => {
                            return Err(FormatError::Refused {
                                entry: child,
                                reason: format!(
                                    "the layer writes inside it, and a lower layer made it a {} \
                                     (writing through it is refused)",
                                    kind(&other)
                                ),
                            });
                        }
                        _ => None,
                    };
                    let sub = self.dir(
                        below.as_ref().map(|(d, m)| (d, *m)),
                        &digest,
                        meta,
                        &child,
                        depth + 1,
                    )?;
                    nodes.insert(name, Node::Stored(sub));
                }
                other => {
                    kept.remove(&name);
                    nodes.insert(name, Node::from(other));
                }
            }
        }
        let mut out = TreeBuilder::new();
        for (name, e) in kept {
            insert(&mut out, &name, Node::from(e))?;
        }
        for (name, n) in nodes {
            insert(&mut out, &name, n)?;
        }
        let lower_meta = lower.and_then(|(_, m)| m);
        out.set_meta(match layer_meta.or(lower_meta) {
            None if self.unpacked => Some(DEFAULT_DIR_META),
            m => m,
        });
        Ok(out.store(self.cas)?)
    }
}

/// The root file system of `image`: each layer blob unpacked (a tar, plain
/// or compressed with gzip or zstd, recognised by content) with the safety
/// rules and limits of the `extract` rule, checked against the config's
/// `rootfs.diff_ids`, and applied in order onto an empty root (0755
/// root:root).
///
/// Besides what `extract` refuses, a layer that writes below a path a lower
/// layer made a symlink or file, without replacing it, is refused, and so is
/// a whiteout of `..`. Hard links must point inside their own layer.
pub fn flatten(cas: &Cas, image: &Image) -> Result<Digest, FormatError> {
    let config: serde_json::Value = parse(
        &read_document(cas, &image.config.stored, &image.config.sha256)?,
        &image.config.sha256,
        "image config",
    )?;
    let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|ids| ids.iter().filter_map(|d| d.as_str()).collect())
        .unwrap_or_default();
    if diff_ids.len() != image.layers.len() {
        return Err(FormatError::Format(format!(
            "image config {}: {} diff_ids for {} layers",
            image.config.sha256,
            diff_ids.len(),
            image.layers.len()
        )));
    }
    let mut root = TreeBuilder::new();
    root.set_meta(Some(DEFAULT_DIR_META));
    let mut root = root.store(cas)?;
    let applier = Applier {
        cas,
        unpacked: true,
    };
    for (i, (layer, diff_id)) in image.layers.iter().zip(diff_ids).enumerate() {
        let in_layer = |e: FormatError| match e {
            FormatError::Refused { entry, reason } => FormatError::Refused {
                entry,
                reason: format!("{reason} (in layer {i}, {})", layer.sha256),
            },
            FormatError::Format(m) => {
                FormatError::Format(format!("layer {i} ({}): {m}", layer.sha256))
            }
            other => other,
        };
        let tree = unpack_layer(cas, layer, diff_id).map_err(in_layer)?;
        root = applier
            .dir(Some((&root, Some(DEFAULT_DIR_META))), &tree, None, "", 0)
            .map_err(in_layer)?;
    }
    Ok(root)
}

/// Unpacks one layer blob, checking its uncompressed stream against
/// `diff_id`. Folders the tar does not list are left without metadata.
fn unpack_layer(cas: &Cas, layer: &Blob, diff_id: &str) -> Result<Digest, FormatError> {
    if !media_type::is_layer(&layer.media_type) {
        return Err(FormatError::Format(format!(
            "media type {} is not a layer Strata can unpack",
            layer.media_type
        )));
    }
    let plain = decoder(open_stored(cas, &layer.stored)?)
        .map_err(|e| FormatError::Format(format!("cannot decompress: {e}")))?;
    let mut stream = HashingReader::new(plain);
    let tree = unpack_tar(cas, &mut stream, Limits::default(), None)?;
    // The diff ID covers the whole stream, past the end-of-archive blocks.
    let rest = io::copy(&mut (&mut stream).take(MAX_TRAILING + 1), &mut io::sink())
        .map_err(|e| FormatError::Format(format!("malformed archive: {e}")))?;
    if rest > MAX_TRAILING {
        return Err(FormatError::Format(format!(
            "more than {MAX_TRAILING} bytes follow the end of the archive"
        )));
    }
    let actual = stream.sha256();
    if actual != diff_id {
        return Err(FormatError::Format(format!(
            "its uncompressed content hashes to {actual}, the config's diff_id is {diff_id}"
        )));
    }
    Ok(tree)
}

/// The entries of one stored folder, by name.
fn entries(cas: &Cas, dir: &Digest) -> Result<BTreeMap<String, Entry>, FormatError> {
    Ok(list(cas, dir)?.into_iter().collect())
}

fn kind(e: &Entry) -> &'static str {
    match e {
        Entry::File { .. } => "file",
        Entry::Symlink { .. } => "symlink",
        Entry::Device { .. } => "device node",
        Entry::Dir { .. } => "folder",
    }
}

fn insert(out: &mut TreeBuilder, name: &str, node: Node) -> Result<(), FormatError> {
    out.insert(name, node).map_err(FormatError::Format)
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}/{name}")
    }
}

/// Refuses names a layer cannot carry: they would be read as whiteouts.
fn representable(name: &str, path: &str) -> Result<(), FormatError> {
    if name.starts_with(WHITEOUT_PREFIX) {
        return Err(FormatError::Format(format!(
            "`{path}` cannot be stored in an image layer: names starting with `{WHITEOUT_PREFIX}` \
             mark deletions"
        )));
    }
    Ok(())
}

fn check_depth(path: &str, depth: usize) -> Result<(), FormatError> {
    if depth > MAX_DEPTH {
        return Err(FormatError::Format(format!(
            "`{path}` is nested deeper than {MAX_DEPTH} folders"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
