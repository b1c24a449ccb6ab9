//! What a command left at its output paths, as an `ActionResult`: files by
//! digest (with the executable bit), folders as `Tree` messages (and their
//! root `Directory`), symlinks by target; stdout and stderr by digest. All
//! are moved into the worker's CAS, from where they are uploaded.
//!
//! Outputs are read without following symlinks: an output behind one (its
//! own path goes through a symlink the command made) is refused, since
//! reading through it could reach files of this machine.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;
use strata_exec::remote_step::{self, RemoteCommand, Staged};
use strata_store::tree::{self, Entry};
use strata_store::{Cas, Digest, reapi};

/// An action result and every blob it names, to upload.
pub(crate) struct Collected {
    pub result: pb::ActionResult,
    pub blobs: Vec<Digest>,
}

/// What kind of entry an output path was declared as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Declared {
    File,
    Folder,
    /// REAPI 2.1's `output_paths`: whatever is there.
    Any,
}

/// Reads the outputs `command` declares and the logs from `staged`: those
/// of `output_paths`, or for a REAPI 2.0 client (Bazel 4) those of the
/// fields 2.1 deprecated for it, answered in the 2.0 fields. Blocking. `Err` names an output read through a symlink, or what could
/// not be stored.
#[allow(deprecated)]
pub(crate) fn collect(
    cas: &Cas,
    staged: &Staged,
    step: &RemoteCommand,
    command: &pb::Command,
) -> Result<Collected, String> {
    let mut declared: Vec<(&str, Declared)> = Vec::new();
    if command.output_paths.is_empty() {
        declared.extend(
            command
                .output_files
                .iter()
                .map(|p| (p.as_str(), Declared::File)),
        );
        declared.extend(
            command
                .output_directories
                .iter()
                .map(|p| (p.as_str(), Declared::Folder)),
        );
    } else {
        declared.extend(
            command
                .output_paths
                .iter()
                .map(|p| (p.as_str(), Declared::Any)),
        );
    }
    let root = staged.input_root();
    let work = staged.working_directory(step);
    let mut result = pb::ActionResult::default();
    let mut blobs = Vec::new();
    for (path, kind) in declared {
        let full = remote_step::join(&step.working_directory, path);
        if let Some(link) = remote_step::symlink_on_the_way(&root, &full) {
            return Err(format!(
                "output `{path}` lies behind the symlink `{link}`; outputs are read without following symlinks"
            ));
        }
        let abs = tree::rel_join(&work, path);
        // Not made: REAPI leaves it out of the result.
        let Ok(meta) = fs::symlink_metadata(&abs) else {
            continue;
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&abs)
                .map_err(|e| format!("cannot read the symlink `{path}`: {e}"))?
                .into_os_string()
                .into_string()
                .map_err(|_| format!("the target of symlink `{path}` is not UTF-8"))?;
            let link = pb::OutputSymlink {
                path: path.to_string(),
                target,
                node_properties: None,
            };
            match kind {
                Declared::File => result.output_file_symlinks.push(link),
                Declared::Folder => result.output_directory_symlinks.push(link),
                Declared::Any => result.output_symlinks.push(link),
            }
        } else if ft.is_file() && kind != Declared::Folder {
            let digest = cas
                .put_file_move(&abs)
                .map_err(|e| format!("cannot store output `{path}`: {e}"))?;
            blobs.push(digest);
            result.output_files.push(pb::OutputFile {
                path: path.to_string(),
                digest: Some(proto(&digest)),
                is_executable: meta.mode() & 0o111 != 0,
                contents: Vec::new(),
                node_properties: None,
            });
        } else if ft.is_dir() && kind != Declared::File {
            let (tree_digest, root) = folder(cas, &abs, &mut blobs)
                .map_err(|e| format!("cannot store output folder `{path}`: {e}"))?;
            result.output_directories.push(pb::OutputDirectory {
                path: path.to_string(),
                tree_digest: Some(proto(&tree_digest)),
                is_topologically_sorted: false,
                root_directory_digest: Some(proto(&root)),
            });
        }
        // Anything else (a folder where a file was declared, a device) is
        // not an output of that kind: left out, as if not made.
    }
    for (log, slot) in [
        (staged.stdout(), &mut result.stdout_digest),
        (staged.stderr(), &mut result.stderr_digest),
    ] {
        let digest = if log.exists() {
            cas.put_file_move(&log)
                .map_err(|e| format!("cannot store {}: {e}", log.display()))?
        } else {
            cas.put_bytes(b"").map_err(|e| e.to_string())?
        };
        blobs.push(digest);
        *slot = Some(proto(&digest));
    }
    blobs.sort();
    blobs.dedup();
    Ok(Collected { result, blobs })
}

/// Stores the folder `abs` and returns the digests of its `Tree` message
/// and its root `Directory`; every blob they name joins `blobs`.
fn folder(cas: &Cas, abs: &Path, blobs: &mut Vec<Digest>) -> Result<(Digest, Digest), String> {
    let mut names = Vec::new();
    for entry in fs::read_dir(abs).map_err(|e| e.to_string())? {
        let name = entry.map_err(|e| e.to_string())?.file_name();
        names.push(
            name.into_string()
                .map_err(|n| format!("the name {n:?} is not UTF-8"))?,
        );
    }
    let root = tree::capture(cas, abs, &names).map_err(|e| e.to_string())?;
    let mut children = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (_, entry) in tree::walk(cas, &root).map_err(|e| e.to_string())? {
        match entry {
            Entry::File { digest, .. } => blobs.push(digest),
            Entry::Dir { digest, .. } if seen.insert(digest) => {
                children.push(tree::read_directory(cas, &digest).map_err(|e| e.to_string())?);
                blobs.push(digest);
            }
            _ => {}
        }
    }
    let tree = reapi::Tree {
        root: Some(tree::read_directory(cas, &root).map_err(|e| e.to_string())?),
        children,
    };
    let tree_digest = cas.put_message(&tree).map_err(|e| e.to_string())?;
    blobs.push(root);
    blobs.push(tree_digest);
    Ok((tree_digest, root))
}

pub(crate) fn proto(d: &Digest) -> pb::Digest {
    pb::Digest {
        hash: d.hex(),
        size_bytes: d.size_bytes as i64,
    }
}

#[cfg(test)]
#[allow(deprecated)]
mod tests {
    use super::*;
    use prost::Message;
    use std::os::unix::fs::PermissionsExt;
    use strata_store::tree::{Node, TreeBuilder};
    use strata_store::{DigestFunction, Store};

    /// An input root with one file, staged for a command working in `wd`.
    fn staged(store: &Store, outputs: &[&str]) -> (Staged, RemoteCommand) {
        let cas = store.cas();
        let mut root = TreeBuilder::new();
        let input = cas.put_bytes(b"input\n").unwrap();
        root.insert("wd/in.txt", Node::file(input, false)).unwrap();
        let root = root.store(cas).unwrap();
        let step = RemoteCommand {
            arguments: vec!["true".into()],
            working_directory: "wd".into(),
            output_paths: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let staged = remote_step::stage(store, "t-", &root, &step).unwrap();
        (staged, step)
    }

    #[test]
    fn worker_outputs_are_read_as_the_command_declares_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), DigestFunction::Sha256).unwrap();
        let cas = store.cas();
        let (staged, step) = staged(
            &store,
            &["out/f.txt", "bin/tool", "link", "absent.txt", "d", "in.txt"],
        );
        let work = staged.working_directory(&step);
        // The parents of declared outputs exist before the command runs.
        assert!(work.join("out").is_dir() && work.join("bin").is_dir());
        fs::write(work.join("out/f.txt"), "made\n").unwrap();
        fs::write(work.join("bin/tool"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(work.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("out/f.txt", work.join("link")).unwrap();
        fs::create_dir_all(work.join("d/e")).unwrap();
        fs::write(work.join("d/e/deep.txt"), "deep\n").unwrap();
        let command = pb::Command {
            output_files: vec![
                "out/f.txt".into(),
                "bin/tool".into(),
                "link".into(),
                "absent.txt".into(),
                // A folder where a file is declared: not that output.
                "d".into(),
            ],
            output_directories: vec!["d".into()],
            ..Default::default()
        };
        let got = collect(cas, &staged, &step, &command).unwrap();
        let r = &got.result;
        let files: Vec<(&str, bool)> = r
            .output_files
            .iter()
            .map(|f| (f.path.as_str(), f.is_executable))
            .collect();
        assert_eq!(files, vec![("out/f.txt", false), ("bin/tool", true)]);
        let made = DigestFunction::Sha256.of_bytes(b"made\n");
        assert_eq!(r.output_files[0].digest, Some(proto(&made)));
        assert_eq!(r.output_file_symlinks.len(), 1);
        assert_eq!(r.output_file_symlinks[0].target, "out/f.txt");
        assert_eq!(r.output_directories.len(), 1);
        let d = &r.output_directories[0];
        assert_eq!(d.path, "d");
        // The Tree holds the folder's root and its one child folder, and
        // the root matches the root Directory named beside it.
        let tree_digest = Digest::from_hex(
            &d.tree_digest.as_ref().unwrap().hash,
            d.tree_digest.as_ref().unwrap().size_bytes as u64,
        )
        .unwrap();
        let tree = reapi::Tree::decode(cas.read(&tree_digest).unwrap().as_slice()).unwrap();
        assert_eq!(tree.children.len(), 1);
        assert_eq!(tree.children[0].files[0].name, "deep.txt");
        let root = tree.root.unwrap();
        assert_eq!(root.directories[0].name, "e");
        assert_eq!(
            DigestFunction::Sha256.of_bytes(&root.encode_to_vec()).hex(),
            d.root_directory_digest.as_ref().unwrap().hash
        );
        // Everything named is stored, to upload.
        let deep = DigestFunction::Sha256.of_bytes(b"deep\n");
        for digest in [made, deep, tree_digest] {
            assert!(got.blobs.contains(&digest) && cas.contains(&digest));
        }
        // Logs the command did not write are empty blobs.
        assert_eq!(
            r.stdout_digest,
            Some(proto(&DigestFunction::Sha256.of_bytes(b"")))
        );
    }

    #[test]
    fn worker_outputs_are_never_read_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), DigestFunction::Sha256).unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "host file\n").unwrap();
        let (staged, step) = staged(&store, &[]);
        // What a command could leave: a folder of its outputs replaced by a
        // link to this machine's files.
        let work = staged.working_directory(&step);
        std::os::unix::fs::symlink(outside.path(), work.join("escape")).unwrap();
        let command = pb::Command {
            output_files: vec!["escape/secret".into()],
            ..Default::default()
        };
        let err = collect(store.cas(), &staged, &step, &command)
            .err()
            .expect("refused");
        assert!(err.contains("lies behind the symlink `wd/escape`"), "{err}");
        let host = DigestFunction::Sha256.of_bytes(b"host file\n");
        assert!(!store.cas().contains(&host));
    }
}
