//! Strata's local store: a content-addressed blob store (CAS), Merkle trees of
//! REAPI `Directory` records, and an action cache.
//!
//! This crate knows nothing of rules, targets or YAML: it stores bytes, trees
//! and action results, named by digest, and links no network crate (the
//! remote cache is only a trait here, [`remote_cache`], which
//! `strata-remote` implements). Its on-disk layout:
//!
//! ```text
//! <root>/FORMAT            store format marker
//! <root>/cas/<fn>/xx/...   blobs (read-only files)
//! <root>/ac/<fn>/xx/...    action results
//! <root>/tmp/              temporary files, same file system as the rest
//! <root>/scratch/          step sandboxes (owned by strata-exec)
//! <root>/trees/            input trees sandboxed steps mount (strata-exec)
//! <root>/meta/             engine-owned metadata (records, stat caches)
//! <root>/meta/uses/<fn>/   action-cache use logs, folded in by gc
//! <root>/meta/unsynced/    markers of processes with blobs not yet synced
//! ```
//!
//! Every publication is atomic (write, rename), so a crash at any instant
//! leaves each object either absent or whole, and several processes may
//! share one store. Blobs are not synced one by one: an action-cache entry
//! waits for one `syncfs` covering what it names (group commit, see
//! `durability`), and a power cut is recovered from at the next open.

mod action_cache;
mod atomic;
mod cas;
mod digest;
mod durability;
mod error;
pub mod gc;
pub mod reapi;
pub mod remote_cache;
pub mod tree;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use action_cache::{ActionCache, StagedEntry};
pub use atomic::write_atomic;
pub use cas::{BLOB_MODE, BlobWriter, Cas, ScratchFile};
pub use digest::{Digest, DigestFunction, Hasher};
use durability::Durability;
pub use error::{Result, StoreError};

/// The kernel's id of this boot (a UUID), if it can be read: what is
/// trusted only until the machine restarts is labelled with it.
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    let clean = !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    clean.then(|| id.to_string())
}

const FORMAT: &str = "strata-store-1";
/// Where the action cache logs its uses (see [`ActionCache::get_used`]).
const USES: &str = "meta/uses";

/// A local store rooted at one folder.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    cas: Cas,
    action_cache: ActionCache,
    durability: Arc<Durability>,
}

impl Store {
    /// Opens (creating if needed) the store at `root` for `function`.
    pub fn open(root: &Path, function: DigestFunction) -> Result<Store> {
        for sub in ["cas", "ac", "tmp", "scratch", "meta"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir)
                .map_err(|e| StoreError::io("cannot create store folder", &dir, e))?;
        }
        let marker = root.join("FORMAT");
        match fs::read_to_string(&marker) {
            Ok(found) if found.trim() == FORMAT => {}
            Ok(found) => {
                return Err(StoreError::Version {
                    path: root.to_path_buf(),
                    found: found.trim().to_string(),
                    expected: FORMAT,
                });
            }
            Err(_) => write_atomic(
                &root.join("tmp"),
                &marker,
                format!("{FORMAT}\n").as_bytes(),
                0o644,
            )?,
        }
        // One spelling of the root, so callers can compare paths with it.
        let root = &fs::canonicalize(root)
            .map_err(|e| StoreError::io("cannot open the store", root, e))?;
        // A process that wrote unsynced blobs and is gone: after a power
        // cut, some may be torn.
        durability::recover(root, &root.join("cas"))?;
        let tmp = root.join("tmp");
        let durability = Arc::new(Durability::new(root)?);
        Ok(Store {
            root: root.to_path_buf(),
            cas: Cas::new(root.join("cas"), tmp.clone(), function, durability.clone()),
            action_cache: ActionCache::new(
                root.join("ac"),
                tmp,
                root.join(USES),
                function,
                durability.clone(),
            ),
            durability,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn function(&self) -> DigestFunction {
        self.cas.function()
    }

    pub fn cas(&self) -> &Cas {
        &self.cas
    }

    pub fn action_cache(&self) -> &ActionCache {
        &self.action_cache
    }

    /// Folder for temporary files on the store's file system.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Folder where the engine creates step sandboxes.
    pub fn scratch_dir(&self) -> PathBuf {
        self.root.join("scratch")
    }

    /// Folder for engine-owned metadata (build records, stat caches).
    pub fn meta_dir(&self) -> PathBuf {
        self.root.join("meta")
    }

    /// The same store folder seen through another digest function: the
    /// objects a remote of that function filled it with.
    pub(crate) fn with_function(&self, function: DigestFunction) -> Store {
        let tmp = self.tmp_dir();
        Store {
            root: self.root.clone(),
            cas: Cas::new(
                self.root.join("cas"),
                tmp.clone(),
                function,
                self.durability.clone(),
            ),
            action_cache: ActionCache::new(
                self.root.join("ac"),
                tmp,
                self.root.join(USES),
                function,
                self.durability.clone(),
            ),
            durability: self.durability.clone(),
        }
    }

    /// The digest functions whose object or action-cache folder exists,
    /// whichever the store was opened with (a store filled through an HTTP
    /// cache holds SHA-256 objects; a local build adds BLAKE3 ones).
    pub fn functions_present(&self) -> Vec<DigestFunction> {
        DigestFunction::ALL
            .into_iter()
            .filter(|f| {
                ["cas", "ac"]
                    .iter()
                    .any(|sub| self.root.join(sub).join(f.name()).is_dir())
            })
            .collect()
    }

    /// Folders under `cas/` and `ac/` that belong to no digest function.
    fn unknown_function_folders(&self) -> Vec<PathBuf> {
        ["cas", "ac"]
            .iter()
            .filter_map(|sub| fs::read_dir(self.root.join(sub)).ok())
            .flat_map(|dir| dir.flatten())
            .filter(|e| {
                let name = e.file_name();
                !DigestFunction::ALL
                    .iter()
                    .any(|f| name.to_str() == Some(f.name()))
            })
            .map(|e| e.path())
            .collect()
    }

    /// Re-hashes every blob and decodes every action-cache entry, of every
    /// digest function present. Blobs are hashed in parallel, one thread
    /// per core.
    pub fn verify(&self) -> VerifyReport {
        let mut report = VerifyReport::default();
        for function in self.functions_present() {
            self.with_function(function)
                .verify_own_function(&mut report);
            report.functions.push(function);
        }
        report.stray.extend(self.unknown_function_folders());
        report.temporaries = fs::read_dir(self.tmp_dir()).map(|d| d.count()).unwrap_or(0);
        report
    }

    /// [`Store::verify`] of the objects of the function the store was
    /// opened with, added to `report`.
    fn verify_own_function(&self, report: &mut VerifyReport) {
        let blobs: Vec<(Digest, PathBuf)> = self.cas.list().collect();
        report.objects += blobs.len();
        let function = self.function();
        let check = |(digest, path): &(Digest, PathBuf)| -> Option<(Digest, PathBuf, String)> {
            match fs::File::open(path).and_then(|f| function.of_reader(f)) {
                Ok(actual) if actual == *digest => None,
                Ok(actual) => Some((*digest, path.clone(), format!("content hashes to {actual}"))),
                Err(e) => Some((*digest, path.clone(), e.to_string())),
            }
        };
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let chunk = blobs.len().div_ceil(threads).max(1);
        report.corrupt.extend(std::thread::scope(|scope| {
            let handles: Vec<_> = blobs
                .chunks(chunk)
                .map(|c| scope.spawn(move || c.iter().filter_map(check).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("verification thread"))
                .collect::<Vec<_>>()
        }));
        report.stray.extend(self.cas.stray_files());
        report
            .bad_action_results
            .extend(self.action_cache.check_entries());
        // Blobs are written before the entries naming them and `gc` removes
        // entries before their blobs: an entry reaching a missing blob means
        // one of them broke its order.
        for (hash, path) in self.action_cache.list() {
            let Ok(Some(result)) = self.action_cache.get(&Digest::new(hash, 0)) else {
                continue;
            };
            if let Some(problem) = self.missing_from(&result) {
                report.incomplete_action_results.push((path, problem));
            }
        }
        report.action_results += self.action_cache.count();
    }
}

impl Store {
    /// Removes what `found` (a [`Store::verify`] report) shows corrupt: each
    /// blob that fails its digest, then every action-cache entry, of every
    /// digest function, that does not decode or now reaches a blob the
    /// store does not hold, so its step runs again (or a remote supplies
    /// it) instead of failing on it. The caller keeps builds out of the
    /// store meanwhile (`gc`'s exclusive lock). Stray files stay.
    pub fn repair(&self, found: &VerifyReport) -> RepairReport {
        let mut repaired = RepairReport::default();
        for (digest, path, _) in &found.corrupt {
            match fs::remove_file(path) {
                Ok(()) => repaired.blobs.push((*digest, path.clone())),
                Err(e) => repaired.failed.push((path.clone(), e.to_string())),
            }
        }
        for function in self.functions_present() {
            let view = self.with_function(function);
            let undecodable = view.action_cache.check_entries().into_iter();
            let incomplete = view.action_cache.list().filter_map(|(hash, path)| {
                let result = view.action_cache.get(&Digest::new(hash, 0)).ok()??;
                Some((path, view.missing_from(&result)?))
            });
            let doomed: Vec<(PathBuf, String)> = undecodable.chain(incomplete).collect();
            for (path, why) in doomed {
                match fs::remove_file(&path) {
                    Ok(()) => repaired.action_results.push((path, why)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => repaired.failed.push((path, e.to_string())),
                }
            }
        }
        repaired
    }

    /// Why an action result is incomplete: the first blob it names
    /// (outputs, logs) that is not stored, or a malformed digest.
    fn missing_from(&self, result: &reapi::ActionResult) -> Option<String> {
        let named = result
            .output_directories
            .iter()
            .map(|d| (d.root_directory_digest.as_ref(), true))
            .chain([(result.stdout_digest.as_ref(), false)])
            .chain([(result.stderr_digest.as_ref(), false)]);
        for (digest, is_tree) in named {
            let Some(proto) = digest else { continue };
            let Some(d) = Digest::from_proto(proto) else {
                return Some(format!("malformed digest {proto:?}"));
            };
            let missing = if is_tree {
                tree::first_missing(&self.cas, &d)
            } else {
                (!self.cas.contains(&d)).then_some(d)
            };
            if let Some(m) = missing {
                return Some(format!("object {m} is missing"));
            }
        }
        None
    }
}

/// What [`Store::verify`] found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// The digest functions whose objects were checked.
    pub functions: Vec<DigestFunction>,
    pub objects: usize,
    pub action_results: usize,
    /// Blobs whose content does not hash to their name.
    pub corrupt: Vec<(Digest, PathBuf, String)>,
    /// Action-cache entries that do not decode.
    pub bad_action_results: Vec<(PathBuf, String)>,
    /// Action-cache entries naming a blob the store does not hold.
    pub incomplete_action_results: Vec<(PathBuf, String)>,
    /// Files in the object folders that are not named like objects.
    pub stray: Vec<PathBuf>,
    /// Temporary files left by interrupted writers (harmless).
    pub temporaries: usize,
}

/// What [`Store::repair`] removed.
#[derive(Debug, Default)]
pub struct RepairReport {
    /// Blobs that failed their digest.
    pub blobs: Vec<(Digest, PathBuf)>,
    /// Action-cache entries that did not decode or reached a removed or
    /// missing blob, with why.
    pub action_results: Vec<(PathBuf, String)>,
    /// What could not be removed, with why.
    pub failed: Vec<(PathBuf, String)>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty()
            && self.bad_action_results.is_empty()
            && self.incomplete_action_results.is_empty()
            && self.stray.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_sha256_store_names_objects_by_sha256_apart_from_blake3() {
        let d = tempfile::tempdir().unwrap();
        let sha = Store::open(d.path(), DigestFunction::Sha256).unwrap();
        let digest = sha.cas().put_bytes(b"abc").unwrap();
        // The well-known SHA-256 of "abc".
        assert_eq!(
            digest.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(
            sha.cas()
                .path(&digest)
                .starts_with(d.path().canonicalize().unwrap().join("cas/sha256"))
        );
        let b3 = Store::open(d.path(), DigestFunction::Blake3).unwrap();
        assert!(!b3.cas().contains(&b3.function().of_bytes(b"abc")));
        assert_eq!(sha.cas().read(&digest).unwrap(), b"abc");
    }

    /// Flips the first byte of a stored blob, keeping its size.
    fn flip_first_byte(path: &Path) {
        let mut bytes = fs::read(path).unwrap();
        bytes[0] ^= 1;
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn verify_checks_every_digest_function_in_the_store() {
        let d = tempfile::tempdir().unwrap();
        let sha = Store::open(d.path(), DigestFunction::Sha256).unwrap();
        let sha_blob = sha
            .cas()
            .put_bytes(b"filled through an HTTP cache")
            .unwrap();
        let b3 = Store::open(d.path(), DigestFunction::Blake3).unwrap();
        let b3_blob = b3.cas().put_bytes(b"built here").unwrap();
        let report = b3.verify();
        assert_eq!(report.objects, 2, "{report:?}");
        assert!(report.is_clean(), "{report:?}");

        flip_first_byte(&sha.cas().path(&sha_blob));
        // Whichever function the store is opened with, both are checked.
        for store in [&b3, &sha] {
            let report = store.verify();
            let corrupt: Vec<Digest> = report.corrupt.iter().map(|c| c.0).collect();
            assert_eq!(corrupt, [sha_blob], "{report:?}");
        }
        flip_first_byte(&b3.cas().path(&b3_blob));
        assert_eq!(sha.verify().corrupt.len(), 2);
    }

    #[test]
    fn a_store_of_another_format_is_refused() {
        let d = tempfile::tempdir().unwrap();
        Store::open(d.path(), DigestFunction::Blake3).unwrap();
        fs::write(d.path().join("FORMAT"), "strata-store-999\n").unwrap();
        assert!(matches!(
            Store::open(d.path(), DigestFunction::Blake3),
            Err(StoreError::Version { .. })
        ));
    }
}
