//! A container's file system back into the store, as a tree, without what
//! the engine added to it.

use bytes::Bytes;
use futures_util::StreamExt;
use strata_formats::unpack;
use strata_store::tree::{Node, TreeBuilder};
use strata_store::{Cas, Digest};
use tokio::sync::mpsc;

use super::{ContainerHandle, DockerError};

/// What the engine puts in every container's file system (its init layer):
/// an empty `/.dockerenv`, the mount points of `/dev`, `/proc` and `/sys`
/// (with `dev/console`, `dev/pts`, `dev/shm`), and placeholders for the files
/// it mounts over `/etc` (`hostname`, `hosts`, `resolv.conf`, the `mtab`
/// link). Writes to those paths at run time go elsewhere, so an export shows
/// only the engine's placeholders.
pub const INJECTED: &[&str] = &[
    ".dockerenv",
    "dev",
    "etc/hostname",
    "etc/hosts",
    "etc/mtab",
    "etc/resolv.conf",
    "proc",
    "sys",
];

/// Chunks of an export in flight to the blob writer.
const DEPTH: usize = 8;

enum Piece {
    Data(Bytes),
    /// The export ended normally; without it the blob is discarded.
    End,
}

impl ContainerHandle {
    /// Exports the container's file system into the store and returns it as
    /// a tree, read with the same safety and limits as the `extract` rule
    /// (the container ran untrusted commands). Call
    /// [`restore_injected`] on the result to drop what the engine added.
    pub async fn export_tree(&self, cas: &Cas) -> Result<Digest, DockerError> {
        let what = format!("exporting container {}", self.name());
        let (tx, rx) = mpsc::channel::<Piece>(DEPTH);
        let cas = cas.clone();
        let reader_what = what.clone();
        // The export is unpacked as it streams in, with the same checks and
        // limits as any archive; it is never stored whole.
        let reader = tokio::task::spawn_blocking(move || -> Result<Digest, DockerError> {
            let limits = unpack::Limits {
                max_size: u64::MAX / 2,
                ..unpack::Limits::default()
            };
            let input = std::io::BufReader::new(ChannelReader {
                rx,
                current: Bytes::new(),
            });
            unpack::tar_to_tree(&cas, input, limits)
                .map_err(|e| DockerError::refused(reader_what, e.to_string()))
        });
        let mut stream = self.engine.long().export_container(self.name());
        let mut sent = Ok(());
        while let Some(chunk) = stream.next().await {
            let piece = match chunk {
                Ok(bytes) => Piece::Data(bytes),
                Err(e) => {
                    sent = Err(DockerError::api(what.as_str())(e));
                    break;
                }
            };
            if tx.send(piece).await.is_err() {
                // The reader stopped: its own error says why.
                break;
            }
        }
        if sent.is_ok() {
            let _ = tx.send(Piece::End).await;
        }
        drop(tx);
        let tree = reader
            .await
            .map_err(|e| DockerError::refused(what.as_str(), e.to_string()))?;
        sent?;
        tree
    }
}

/// The export stream as a blocking reader; a stream cut short is an error,
/// never a shorter archive.
struct ChannelReader {
    rx: mpsc::Receiver<Piece>,
    current: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Piece::Data(b)) => self.current = b,
                Some(Piece::End) => return Ok(0),
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the export was cut short",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// The exported tree `exported` of a container of the image whose root file
/// system is `parent`, with the engine's additions undone, so that a
/// container that changed nothing gives back exactly `parent`:
///
/// - at each path of [`INJECTED`] the parent's entry is put back, or the path
///   removed if the parent had none;
/// - each path of `created` (mount targets and the working directory:
///   [`ContainerHandle::injected_paths`]) that the parent did not have is
///   removed if it is an empty folder or file, as the engine creates it (a
///   mount point's content is never exported; a working directory the step
///   wrote into is kept).
///
/// Folders above a removed path that the parent did not have and that are
/// left empty are removed too. Where the step replaced a folder above such a
/// path (say `/etc` by a symlink), the engine's entry is not in the export
/// and nothing is put back.
pub fn restore_injected(
    cas: &Cas,
    parent: &Digest,
    exported: &Digest,
    created: &[String],
) -> Result<Digest, DockerError> {
    let mut r = Restorer {
        cas,
        out: TreeBuilder::load(cas, exported).map_err(DockerError::store(WHAT))?,
        before: TreeBuilder::load(cas, parent).map_err(DockerError::store(WHAT))?,
    };
    for path in INJECTED {
        r.put_back(path)?;
    }
    for path in created {
        r.remove_if_created(path)?;
    }
    r.out.store(cas).map_err(DockerError::store(WHAT))
}

const WHAT: &str = "undoing the engine's additions to an exported container";

struct Restorer<'a> {
    cas: &'a Cas,
    out: TreeBuilder,
    before: TreeBuilder,
}

impl Restorer<'_> {
    fn put_back(&mut self, path: &str) -> Result<(), DockerError> {
        let Some((path, ancestors)) = self.reachable(path)? else {
            return Ok(());
        };
        match self
            .before
            .get(self.cas, &path)
            .map_err(DockerError::tree(WHAT))?
        {
            Some(node) => {
                // A folder as one stored entry, so it replaces what the
                // export has there rather than merging into it.
                let node = match node {
                    Node::Dir(b) => {
                        Node::Stored(b.store(self.cas).map_err(DockerError::store(WHAT))?)
                    }
                    other => other.clone(),
                };
                self.out
                    .insert_at(self.cas, &path, node, None)
                    .map_err(DockerError::tree(WHAT))?;
                Ok(())
            }
            None => self.remove(&path, &ancestors),
        }
    }

    fn remove_if_created(&mut self, path: &str) -> Result<(), DockerError> {
        let Some((path, ancestors)) = self.reachable(path)? else {
            return Ok(());
        };
        if self.had(&path)? {
            return Ok(());
        }
        let created = match self
            .out
            .get(self.cas, &path)
            .map_err(DockerError::tree(WHAT))?
        {
            Some(Node::File { digest, .. }) => digest.size_bytes == 0,
            Some(node) => is_empty_dir(self.cas, node),
            None => false,
        };
        if created {
            self.remove(&path, &ancestors)?;
        }
        Ok(())
    }

    /// `path` made clean, and the folders above it, if they are all
    /// folders in the export.
    fn reachable(&mut self, path: &str) -> Result<Option<(String, Vec<String>)>, DockerError> {
        let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        if parts.is_empty()
            || parts
                .iter()
                .any(|c| *c == "." || *c == ".." || c.contains('\0'))
        {
            return Err(DockerError::refused(
                WHAT,
                format!("`{path}` is not a clean relative path"),
            ));
        }
        let ancestors: Vec<String> = (1..parts.len()).map(|n| parts[..n].join("/")).collect();
        for a in &ancestors {
            let node = self.out.get(self.cas, a).map_err(DockerError::tree(WHAT))?;
            if !matches!(node, Some(Node::Dir(_) | Node::Stored(_))) {
                return Ok(None);
            }
        }
        Ok(Some((parts.join("/"), ancestors)))
    }

    fn had(&mut self, path: &str) -> Result<bool, DockerError> {
        Ok(self
            .before
            .get(self.cas, path)
            .map_err(DockerError::tree(WHAT))?
            .is_some())
    }

    /// Removes `path`, then the folders above it that the parent did not
    /// have and that are left empty.
    fn remove(&mut self, path: &str, ancestors: &[String]) -> Result<(), DockerError> {
        self.out
            .remove(self.cas, path)
            .map_err(DockerError::tree(WHAT))?;
        for a in ancestors.iter().rev() {
            if self.had(a)? {
                break;
            }
            let node = self.out.get(self.cas, a).map_err(DockerError::tree(WHAT))?;
            if !node.is_some_and(|n| is_empty_dir(self.cas, n)) {
                break;
            }
            self.out
                .remove(self.cas, a)
                .map_err(DockerError::tree(WHAT))?;
        }
        Ok(())
    }
}

fn is_empty_dir(cas: &Cas, node: &Node) -> bool {
    match node {
        Node::Dir(d) => d.is_empty(),
        Node::Stored(d) => TreeBuilder::load(cas, d).is_ok_and(|b| b.is_empty()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::tree::Meta;

    fn store() -> (tempfile::TempDir, strata_store::Store) {
        let d = tempfile::tempdir().unwrap();
        let s = strata_store::Store::open(d.path(), strata_store::DigestFunction::Blake3).unwrap();
        (d, s)
    }

    const ROOT: Meta = Meta {
        mode: 0o755,
        uid: 0,
        gid: 0,
    };

    fn dir(meta: Meta) -> Node {
        let mut b = TreeBuilder::new();
        b.set_meta(Some(meta));
        Node::Dir(b)
    }

    fn file(cas: &Cas, content: &[u8], meta: Meta) -> Node {
        Node::File {
            digest: cas.put_bytes(content).unwrap(),
            executable: meta.mode & 0o111 != 0,
            meta: Some(meta),
        }
    }

    /// The parent: a rootfs with its own /etc/hosts and /dev, no /proc.
    fn parent(cas: &Cas) -> TreeBuilder {
        let mut b = TreeBuilder::new();
        b.insert("bin", dir(ROOT)).unwrap();
        b.insert("bin/sh", file(cas, b"sh", ROOT)).unwrap();
        b.insert(
            "etc",
            dir(Meta {
                mode: 0o750,
                ..ROOT
            }),
        )
        .unwrap();
        b.insert(
            "etc/hosts",
            file(
                cas,
                b"127.0.0.1 parent\n",
                Meta {
                    mode: 0o644,
                    ..ROOT
                },
            ),
        )
        .unwrap();
        b.insert("dev", dir(ROOT)).unwrap();
        b.insert(
            "dev/null",
            Node::Device {
                kind: strata_store::tree::DeviceKind::Char,
                major: 1,
                minor: 3,
                meta: Some(Meta {
                    mode: 0o666,
                    ..ROOT
                }),
            },
        )
        .unwrap();
        b
    }

    /// What the engine adds on top of `parent`, with a mount at /strata/work.
    fn engine_additions(cas: &Cas, b: &mut TreeBuilder) {
        let empty = |m| file(cas, b"", Meta { mode: m, ..ROOT });
        b.insert_at(cas, ".dockerenv", empty(0o755), None).unwrap();
        b.insert_at(cas, "dev", dir(ROOT), None).unwrap();
        b.insert_at(cas, "dev/console", empty(0o755), None).unwrap();
        b.insert_at(cas, "dev/pts", dir(ROOT), None).unwrap();
        b.insert_at(cas, "etc/hosts", empty(0o755), None).unwrap();
        b.insert_at(cas, "etc/hostname", empty(0o755), None)
            .unwrap();
        b.insert_at(
            cas,
            "etc/mtab",
            Node::Symlink {
                target: "/proc/mounts".into(),
                meta: Some(Meta {
                    mode: 0o777,
                    ..ROOT
                }),
            },
            None,
        )
        .unwrap();
        b.insert_at(cas, "proc", dir(ROOT), None).unwrap();
        b.insert_at(cas, "sys", dir(ROOT), None).unwrap();
        b.insert_at(cas, "strata/work", dir(ROOT), Some(ROOT))
            .unwrap();
    }

    #[test]
    fn a_container_that_changed_nothing_gives_back_its_parent() {
        let (_d, s) = store();
        let cas = s.cas();
        let mut b = parent(cas);
        let parent_digest = b.store(cas).unwrap();
        engine_additions(cas, &mut b);
        let exported = b.store(cas).unwrap();
        assert_ne!(exported, parent_digest);
        let restored =
            restore_injected(cas, &parent_digest, &exported, &["strata/work".into()]).unwrap();
        assert_eq!(restored, parent_digest);
    }

    #[test]
    fn changes_of_the_step_are_kept_next_to_injected_paths() {
        let (_d, s) = store();
        let cas = s.cas();
        let mut b = parent(cas);
        let parent_digest = b.store(cas).unwrap();
        engine_additions(cas, &mut b);
        // The step wrote beside the mount point and in /etc, and removed /bin/sh.
        b.insert_at(cas, "strata/note", file(cas, b"n", ROOT), None)
            .unwrap();
        b.insert_at(cas, "etc/motd", file(cas, b"hi", ROOT), None)
            .unwrap();
        b.remove(cas, "bin/sh").unwrap();
        let exported = b.store(cas).unwrap();
        let restored =
            restore_injected(cas, &parent_digest, &exported, &["strata/work".into()]).unwrap();

        let mut expected = parent(cas);
        expected
            .insert_at(cas, "strata/note", file(cas, b"n", ROOT), Some(ROOT))
            .unwrap();
        expected
            .insert_at(cas, "etc/motd", file(cas, b"hi", ROOT), None)
            .unwrap();
        expected.remove(cas, "bin/sh").unwrap();
        assert_eq!(restored, expected.store(cas).unwrap());
    }

    #[test]
    fn a_working_directory_the_step_wrote_into_is_kept() {
        let (_d, s) = store();
        let cas = s.cas();
        let mut b = parent(cas);
        b.insert("src", dir(ROOT)).unwrap();
        b.insert("src/main.c", file(cas, b"int main;", ROOT))
            .unwrap();
        let parent_digest = b.store(cas).unwrap();
        engine_additions(cas, &mut b);
        // Created by the engine as the working directory, then written to.
        b.insert_at(cas, "build/out", file(cas, b"made", ROOT), Some(ROOT))
            .unwrap();
        // An existing working directory the step added a file to.
        b.insert_at(cas, "src/main.o", file(cas, b"obj", ROOT), None)
            .unwrap();
        let exported = b.store(cas).unwrap();
        let created = ["build".to_string(), "src".into(), "strata/work".into()];
        let restored = restore_injected(cas, &parent_digest, &exported, &created).unwrap();

        let mut expected = parent(cas);
        expected.insert("src", dir(ROOT)).unwrap();
        expected
            .insert("src/main.c", file(cas, b"int main;", ROOT))
            .unwrap();
        expected
            .insert("src/main.o", file(cas, b"obj", ROOT))
            .unwrap();
        expected.insert("build", dir(ROOT)).unwrap();
        expected
            .insert("build/out", file(cas, b"made", ROOT))
            .unwrap();
        assert_eq!(restored, expected.store(cas).unwrap());
    }

    #[test]
    fn a_folder_the_step_replaced_by_a_symlink_is_left_as_the_step_made_it() {
        let (_d, s) = store();
        let cas = s.cas();
        let mut b = parent(cas);
        let parent_digest = b.store(cas).unwrap();
        b.insert_at(
            cas,
            "etc",
            Node::Symlink {
                target: "/opt/etc".into(),
                meta: None,
            },
            None,
        )
        .unwrap();
        let exported = b.store(cas).unwrap();
        let restored = restore_injected(cas, &parent_digest, &exported, &[]).unwrap();
        let mut back = TreeBuilder::load(cas, &restored).unwrap();
        assert!(matches!(
            back.get(cas, "etc").unwrap(),
            Some(Node::Symlink { .. })
        ));
    }

    #[test]
    fn unclean_extra_paths_are_refused() {
        let (_d, s) = store();
        let cas = s.cas();
        let p = parent(cas).store(cas).unwrap();
        assert!(restore_injected(cas, &p, &p, &["a/../etc".into()]).is_err());
    }
}
