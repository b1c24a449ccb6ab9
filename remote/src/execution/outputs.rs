//! A remote step's `ActionResult` made into what a local step returns: the
//! declared outputs picked from the `out` folder the service sent back,
//! checked as a local step's are (present, of their declared kind, not
//! behind a symlink), their folder records and the logs fetched into the
//! local store. Their files stay on the service ("build without the
//! bytes"): the result says so (`Fetched::held`), and they are fetched, in
//! batches, only when something reads them (`strata_exec::held`). Nothing
//! of a result that fails a check is used, so `out/` never sees a partial
//! or wrong output.

use strata_exec::Failure;
use strata_rules::layout;
use strata_rules::run::RunStep;
use strata_store::tree::{self, Node, TreeBuilder};
use strata_store::{Cas, Digest, reapi};

use crate::client::{Remote, RemoteError};

/// Why a result cannot be used.
pub enum Unusable {
    /// The step's own failure (a declared output missing or of the wrong
    /// kind), as a local run would report it.
    Step(Failure),
    /// The result does not follow the protocol, or cannot be fetched.
    Remote(String),
}

impl From<RemoteError> for Unusable {
    fn from(e: RemoteError) -> Unusable {
        Unusable::Remote(e.to_string())
    }
}

/// What was fetched for a result, and how much.
pub struct Fetched {
    pub output: Digest,
    pub stdout: Digest,
    pub stderr: Digest,
    pub bytes: u64,
    /// Files of the output the store lacks, left on the service, and
    /// their size.
    pub held: Vec<Digest>,
}

/// Fetches the logs of `result` into `cas` (missing logs are empty).
pub async fn logs(
    remote: &Remote,
    cas: &Cas,
    result: &pb::ActionResult,
) -> Result<(Digest, Digest, u64), Unusable> {
    let function = cas.function();
    let mut bytes = 0;
    let mut got = Vec::new();
    for d in [&result.stdout_digest, &result.stderr_digest] {
        let digest = match d {
            Some(d) => crate::client::names::parse_digest(d)
                .ok_or_else(|| Unusable::Remote("a log's digest is malformed".into()))?,
            None => function.of_bytes(b""),
        };
        if !cas.contains(&digest) {
            remote.download(function, &digest, cas).await?;
            bytes += digest.size_bytes;
        }
        got.push(digest);
    }
    Ok((got[0], got[1], bytes))
}

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;

/// The declared outputs of `step` from `result` (which exited 0), their
/// folder records fetched into `cas`, their files left on the service
/// (`Fetched::held`, those `cas` lacks). With `confirm` (a result from the
/// service's action cache, whose blobs may have been evicted since), the
/// service is asked whether it still holds every one of them, and a result
/// it does not is unusable.
pub async fn fetch(
    remote: &Remote,
    cas: &Cas,
    step: &RunStep,
    result: &pb::ActionResult,
    confirm: bool,
) -> Result<Fetched, Unusable> {
    let function = cas.function();
    let out = result
        .output_directories
        .iter()
        .find(|d| d.path == layout::OUT);
    let Some(out) = out else {
        // The step removed `$OUT` itself: nothing it declared is there.
        let first = step.outs.first().cloned().unwrap_or_default();
        return Err(Unusable::Step(Failure::MissingOutput { out: first }));
    };
    let tree_digest = out
        .tree_digest
        .as_ref()
        .and_then(crate::client::names::parse_digest)
        .ok_or_else(|| Unusable::Remote("the `out` folder names no tree".into()))?;
    let mut bytes = 0;
    if !cas.contains(&tree_digest) {
        remote.download(function, &tree_digest, cas).await?;
        bytes += tree_digest.size_bytes;
    }
    let root = store_tree(cas, &tree_digest).map_err(Unusable::Remote)?;
    if let Some(named) = out
        .root_directory_digest
        .as_ref()
        .and_then(crate::client::names::parse_digest)
        && named != root
    {
        return Err(Unusable::Remote(
            "the `out` folder's tree and root directory disagree".into(),
        ));
    }
    let output = pick(cas, root, step).map_err(|e| match e {
        Picked::Step(f) => Unusable::Step(f),
        Picked::Store(e) => Unusable::Remote(e),
    })?;
    let held = strata_exec::held::missing_files(cas, &output).map_err(Unusable::Remote)?;
    if confirm && !held.is_empty() {
        let lost = remote.find_missing(function, &held).await?;
        if let Some(d) = lost.first() {
            return Err(Unusable::Remote(format!(
                "the service no longer holds blob {d} of the cached result"
            )));
        }
    }
    let (stdout, stderr, log_bytes) = logs(remote, cas, result).await?;
    Ok(Fetched {
        output,
        stdout,
        stderr,
        bytes: bytes + log_bytes,
        held,
    })
}

/// Stores the folder records of a `Tree` message and returns its root's
/// digest: every record is re-encoded and named by what it hashes to, so a
/// parent naming a record the tree does not hold finds it missing.
fn store_tree(cas: &Cas, tree_digest: &Digest) -> Result<Digest, String> {
    let tree: reapi::Tree = cas
        .get_message(tree_digest, "output tree")
        .map_err(|e| format!("the `out` tree does not decode: {e}"))?;
    let root = tree
        .root
        .ok_or_else(|| "the `out` tree has no root".to_string())?;
    for child in &tree.children {
        cas.put_message(child).map_err(|e| e.to_string())?;
    }
    let root = cas.put_message(&root).map_err(|e| e.to_string())?;
    // Reads every record back through the checks a stored tree gets.
    tree::walk(cas, &root).map_err(|e| format!("the `out` tree is malformed: {e}"))?;
    Ok(root)
}

enum Picked {
    Step(Failure),
    Store(String),
}

/// The tree holding exactly the declared outputs of `step` from the `out`
/// folder `root` (its records stored), as `tree::capture` makes it from a
/// local step's `$OUT`; a missing output, one of the wrong kind or one
/// behind a symlink fails as it would locally.
fn pick(cas: &Cas, root: Digest, step: &RunStep) -> Result<Digest, Picked> {
    let store = |e: String| Picked::Store(e);
    let mut all = TreeBuilder::load(cas, &root).map_err(|e| store(e.to_string()))?;
    let mut picked = TreeBuilder::new();
    for (out, &is_dir) in step.outs.iter().zip(&step.declared_dirs) {
        let parts: Vec<&str> = out.split('/').collect();
        for n in 1..parts.len() {
            let parent = parts[..n].join("/");
            match all.get(cas, &parent).map_err(|e| store(e.to_string()))? {
                Some(Node::Symlink { .. }) => {
                    return Err(Picked::Step(Failure::OutputThroughSymlink {
                        out: out.clone(),
                        link: format!("$OUT/{parent}"),
                    }));
                }
                Some(Node::Dir(_) | Node::Stored(_)) => {}
                _ => {
                    return Err(Picked::Step(Failure::MissingOutput { out: out.clone() }));
                }
            }
        }
        let node = all
            .get(cas, out)
            .map_err(|e| store(e.to_string()))?
            .cloned()
            .ok_or_else(|| Picked::Step(Failure::MissingOutput { out: out.clone() }))?;
        let folder = matches!(node, Node::Dir(_) | Node::Stored(_));
        if is_dir && !folder {
            return Err(Picked::Step(Failure::OutputKind {
                out: format!("{out}/"),
                expected: "a folder",
            }));
        }
        if !is_dir && folder {
            return Err(Picked::Step(Failure::OutputKind {
                out: out.clone(),
                expected: "a file (declare a folder with a trailing `/`)",
            }));
        }
        picked.insert(out, node).map_err(store)?;
    }
    picked.store(cas).map_err(|e| store(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use strata_rules::run::RunParams;
    use strata_store::{DigestFunction, Store};

    fn step(outs: &[&str]) -> RunStep {
        RunParams::shell("true", outs).step()
    }

    /// A `$OUT` as a step leaves it, with more than it declares.
    fn out_dir(dir: &std::path::Path) {
        fs::create_dir_all(dir.join("share/doc")).unwrap();
        fs::create_dir_all(dir.join("scratch")).unwrap();
        fs::write(dir.join("a.txt"), "a").unwrap();
        fs::write(dir.join("share/doc/README"), "doc").unwrap();
        fs::write(dir.join("share/tool"), "#!/bin/sh\n").unwrap();
        fs::write(dir.join("scratch/big"), "not declared").unwrap();
        std::os::unix::fs::symlink("share", dir.join("link")).unwrap();
    }

    /// The whole `$OUT`, stored as a worker sends it, and a store.
    fn whole() -> (tempfile::TempDir, Store, Digest) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store"), DigestFunction::Sha256).unwrap();
        let out = tmp.path().join("out");
        out_dir(&out);
        let names = ["a.txt", "share", "scratch", "link"].map(String::from);
        let root = tree::capture(store.cas(), &out, &names).unwrap();
        (tmp, store, root)
    }

    #[test]
    fn remote_outputs_picked_are_the_tree_a_local_capture_makes() {
        let (tmp, store, root) = whole();
        let s = step(&["a.txt", "share/doc/"]);
        let picked = pick(store.cas(), root, &s).ok().unwrap();
        let again = tmp.path().join("again");
        out_dir(&again);
        let local = tree::capture(store.cas(), &again, &s.outs).unwrap();
        assert_eq!(picked, local);
        let paths: Vec<String> = tree::walk(store.cas(), &picked)
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert!(!paths.iter().any(|p| p.contains("scratch")), "{paths:?}");
    }

    fn failure(outs: &[&str]) -> String {
        let (_tmp, store, root) = whole();
        match pick(store.cas(), root, &step(outs)) {
            Err(Picked::Step(f)) => f.to_string(),
            Err(Picked::Store(e)) => panic!("not the step's failure: {e}"),
            Ok(_) => panic!("{outs:?} must fail"),
        }
    }

    #[test]
    fn remote_outputs_missing_of_the_wrong_kind_or_behind_a_symlink_fail_as_locally() {
        assert!(failure(&["nope.txt"]).contains("`nope.txt` was not created"));
        assert!(failure(&["a.txt/"]).contains("`a.txt/` is not a folder"));
        assert!(failure(&["share"]).contains("`share` is not a file"));
        let through = failure(&["link/tool"]);
        assert!(
            through.contains("behind the symlink `$OUT/link`"),
            "{through}"
        );
    }
}
