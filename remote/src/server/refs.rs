//! What an action result names: every blob a client will fetch after an
//! action-cache hit. An entry is accepted only when all of them are stored,
//! and it is evicted with any of them, so a hit is never a dead end.
//!
//! Digests are the store's ([`Digest`], parsed by `Digest::from_proto`).
//! The walk itself is not `strata_store::tree::walk`, and must not be: the
//! store walks its own Merkle trees in a [`strata_store::Cas`] and trusts
//! them, while this walk reads a folder any client fills (not a `Cas`),
//! follows what Bazel writes and Strata never does (`output_files`, REAPI
//! `Tree` messages), bounds each message it reads, and names the first
//! absent blob so the client is told (409) what to upload.

use std::collections::HashSet;

use strata_store::{Digest, reapi};

use crate::layout::Hash;

/// Largest directory or `Tree` message read to check an action result; a
/// directory of a million entries is well below it.
pub const MESSAGE_LIMIT: u64 = 64 * 1024 * 1024;

/// `OutputFile` of REAPI, which Strata itself never writes but Bazel does.
#[derive(Clone, PartialEq, prost::Message)]
struct OutputFile {
    #[prost(string, tag = "1")]
    path: String,
    #[prost(message, optional, tag = "2")]
    digest: Option<reapi::Digest>,
}

/// The fields of a REAPI `ActionResult` that name blobs (upstream numbers).
#[derive(Clone, PartialEq, prost::Message)]
struct ResultRefs {
    #[prost(message, repeated, tag = "2")]
    output_files: Vec<OutputFile>,
    #[prost(message, repeated, tag = "3")]
    output_directories: Vec<reapi::OutputDirectory>,
    #[prost(message, optional, tag = "6")]
    stdout_digest: Option<reapi::Digest>,
    #[prost(message, optional, tag = "8")]
    stderr_digest: Option<reapi::Digest>,
}

/// Why an action result is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not an action result, or it names a blob that is not a directory
    /// where one is expected: 400.
    Invalid(String),
    /// It names a blob the cache does not hold (yet): 409.
    Missing(Digest),
}

/// How the walk reads a stored blob: `None` if it is absent or its size is
/// not `size`.
pub trait Blobs {
    fn read(&self, blob: &Digest, limit: u64) -> std::io::Result<Option<Vec<u8>>>;
}

/// Every blob `action_result` names, directly or through the directories
/// of its output trees (which are read with `blobs`), each once. The empty
/// blob is left out: every cache has it.
pub fn references(
    action_result: &[u8],
    empty: &Hash,
    blobs: &impl Blobs,
) -> Result<Vec<Digest>, Refusal> {
    let result = <ResultRefs as prost::Message>::decode(action_result)
        .map_err(|e| Refusal::Invalid(format!("not an ActionResult: {e}")))?;
    // The same decoding as clients use, so what is stored can be read back.
    if let Err(e) = <reapi::ActionResult as prost::Message>::decode(action_result) {
        return Err(Refusal::Invalid(format!("not an ActionResult: {e}")));
    }
    let mut refs = Refs::new(*empty);
    for file in &result.output_files {
        refs.add(
            file.digest.as_ref(),
            &format!("output file {:?}", file.path),
        )?;
    }
    for log in [&result.stdout_digest, &result.stderr_digest]
        .into_iter()
        .flatten()
    {
        refs.add(Some(log), "log")?;
    }
    for dir in &result.output_directories {
        let what = format!("output directory {:?}", dir.path);
        if dir.tree_digest.is_none() && dir.root_directory_digest.is_none() {
            return Err(Refusal::Invalid(format!("{what} names no tree")));
        }
        if let Some(tree) = refs.add(dir.tree_digest.as_ref(), &what)? {
            refs.tree(tree, blobs)?;
        }
        if let Some(root) = refs.add(dir.root_directory_digest.as_ref(), &what)? {
            refs.directories(root, blobs)?;
        }
    }
    Ok(refs.list)
}

struct Refs {
    empty: Hash,
    seen: HashSet<Digest>,
    list: Vec<Digest>,
}

impl Refs {
    fn new(empty: Hash) -> Refs {
        Refs {
            empty,
            seen: HashSet::new(),
            list: Vec::new(),
        }
    }

    /// Records a named blob; `Some` if it was not seen before (so a shared
    /// subtree is read once).
    fn add(
        &mut self,
        digest: Option<&reapi::Digest>,
        what: &str,
    ) -> Result<Option<Digest>, Refusal> {
        let Some(d) = digest else { return Ok(None) };
        let blob = Digest::from_proto(d).ok_or_else(|| {
            Refusal::Invalid(format!("{what} has a malformed digest {:?}", d.hash))
        })?;
        if blob.size_bytes == 0 && blob.hash == self.empty {
            return Ok(None);
        }
        if !self.seen.insert(blob) {
            return Ok(None);
        }
        self.list.push(blob);
        Ok(Some(blob))
    }

    /// A REAPI `Tree`: one blob holding a root and all its directories.
    fn tree(&mut self, tree: Digest, blobs: &impl Blobs) -> Result<(), Refusal> {
        let bytes = read(blobs, &tree)?;
        let tree: reapi::Tree = prost::Message::decode(bytes.as_slice())
            .map_err(|e| Refusal::Invalid(format!("tree {} is not a Tree: {e}", tree.hex())))?;
        for dir in tree.root.iter().chain(&tree.children) {
            for file in &dir.files {
                self.add(file.digest.as_ref(), &format!("file {:?}", file.name))?;
            }
        }
        Ok(())
    }

    /// A Merkle tree of `Directory` blobs, as Strata stores its outputs.
    fn directories(&mut self, root: Digest, blobs: &impl Blobs) -> Result<(), Refusal> {
        // Iterative: a deep tree must not exhaust the stack.
        let mut pending = vec![root];
        while let Some(digest) = pending.pop() {
            let bytes = read(blobs, &digest)?;
            let dir: reapi::Directory = prost::Message::decode(bytes.as_slice()).map_err(|e| {
                Refusal::Invalid(format!("{} is not a Directory: {e}", digest.hex()))
            })?;
            for file in &dir.files {
                self.add(file.digest.as_ref(), &format!("file {:?}", file.name))?;
            }
            for sub in &dir.directories {
                let what = format!("directory {:?}", sub.name);
                if sub.digest.is_none() {
                    return Err(Refusal::Invalid(format!("{what} has no digest")));
                }
                if let Some(child) = self.add(sub.digest.as_ref(), &what)? {
                    pending.push(child);
                }
            }
        }
        Ok(())
    }
}

fn read(blobs: &impl Blobs, blob: &Digest) -> Result<Vec<u8>, Refusal> {
    if blob.size_bytes > MESSAGE_LIMIT {
        return Err(Refusal::Invalid(format!(
            "{} is too large to be checked ({} bytes)",
            blob.hex(),
            blob.size_bytes
        )));
    }
    match blobs.read(blob, MESSAGE_LIMIT) {
        Ok(Some(bytes)) => Ok(bytes),
        // Unreadable counts as absent: the client can upload it again.
        Ok(None) | Err(_) => Err(Refusal::Missing(*blob)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use prost::Message;
    use strata_store::DigestFunction;

    use super::*;

    const F: DigestFunction = DigestFunction::Sha256;

    #[derive(Default)]
    struct Mem(HashMap<Hash, Vec<u8>>);

    impl Mem {
        fn put(&mut self, bytes: &[u8]) -> reapi::Digest {
            let d = F.of_bytes(bytes);
            self.0.insert(d.hash, bytes.to_vec());
            d.to_proto()
        }
    }

    impl Blobs for Mem {
        fn read(&self, blob: &Digest, _limit: u64) -> std::io::Result<Option<Vec<u8>>> {
            Ok(self
                .0
                .get(&blob.hash)
                .filter(|b| b.len() as u64 == blob.size_bytes)
                .cloned())
        }
    }

    fn empty() -> Hash {
        F.of_bytes(b"").hash
    }

    fn file(name: &str, d: reapi::Digest) -> reapi::FileNode {
        reapi::FileNode {
            name: name.into(),
            digest: Some(d),
            ..Default::default()
        }
    }

    #[test]
    fn every_blob_of_a_directory_tree_and_the_logs_is_named_once() {
        let mut mem = Mem::default();
        let a = mem.put(b"a");
        let log = mem.put(b"log");
        let sub = mem.put(
            &reapi::Directory {
                files: vec![file("a", a.clone())],
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let root = reapi::Directory {
            files: vec![file("a", a.clone()), file("e", F.of_bytes(b"").to_proto())],
            directories: vec![
                reapi::DirectoryNode {
                    name: "s".into(),
                    digest: Some(sub.clone()),
                },
                reapi::DirectoryNode {
                    name: "t".into(),
                    digest: Some(sub.clone()),
                },
            ],
            ..Default::default()
        };
        let root = mem.put(&root.encode_to_vec());
        let result = reapi::ActionResult {
            output_directories: vec![reapi::OutputDirectory {
                path: "out".into(),
                root_directory_digest: Some(root.clone()),
                ..Default::default()
            }],
            stdout_digest: Some(log.clone()),
            stderr_digest: Some(log.clone()),
            ..Default::default()
        };
        let mut refs: Vec<String> = references(&result.encode_to_vec(), &empty(), &mem)
            .unwrap()
            .iter()
            .map(Digest::hex)
            .collect();
        refs.sort();
        let mut want: Vec<String> = [a, log, sub, root].iter().map(|d| d.hash.clone()).collect();
        want.sort();
        assert_eq!(refs, want);
    }

    #[test]
    fn a_missing_subdirectory_is_reported() {
        let mut mem = Mem::default();
        let gone = F.of_bytes(b"not stored").to_proto();
        let root = mem.put(
            &reapi::Directory {
                directories: vec![reapi::DirectoryNode {
                    name: "s".into(),
                    digest: Some(gone.clone()),
                }],
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let result = reapi::ActionResult {
            output_directories: vec![reapi::OutputDirectory {
                path: "out".into(),
                root_directory_digest: Some(root),
                ..Default::default()
            }],
            ..Default::default()
        };
        match references(&result.encode_to_vec(), &empty(), &mem) {
            Err(Refusal::Missing(b)) => assert_eq!(hex::encode(b.hash), gone.hash),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_and_malformed_digests_are_invalid() {
        let mem = Mem::default();
        assert!(matches!(
            references(b"\xff\xff\xff", &empty(), &mem),
            Err(Refusal::Invalid(_))
        ));
        let result = reapi::ActionResult {
            stdout_digest: Some(reapi::Digest {
                hash: "zz".into(),
                size_bytes: 1,
            }),
            ..Default::default()
        };
        assert!(matches!(
            references(&result.encode_to_vec(), &empty(), &mem),
            Err(Refusal::Invalid(_))
        ));
    }
}
