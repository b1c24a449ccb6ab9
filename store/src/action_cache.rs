//! The action cache: action key -> `ActionResult`.

use std::fs;
use std::io;
use std::path::PathBuf;

use crate::atomic;
use crate::error::{Result, StoreError};
use crate::reapi::ActionResult;
use crate::{Digest, DigestFunction};

/// Entries live at `<root>/<function>/<two hex digits>/<hex>`.
///
/// Guarantees: an entry is published atomically (whole or absent); writers
/// racing on one key each publish a whole entry and the last rename wins,
/// which is harmless because an action's result is a pure function of its key.
/// Only successful results are ever written (callers' contract, asserted).
#[derive(Clone, Debug)]
pub struct ActionCache {
    root: PathBuf,
    tmp: PathBuf,
}

impl ActionCache {
    pub(crate) fn new(root: PathBuf, tmp: PathBuf, function: DigestFunction) -> Self {
        ActionCache {
            root: root.join(function.name()),
            tmp,
        }
    }

    fn path(&self, key: &Digest) -> PathBuf {
        self.path_of(&key.hash)
    }

    /// Entries are named by the key's hash alone (an action's size adds
    /// nothing to its identity).
    pub(crate) fn path_of(&self, hash: &[u8; 32]) -> PathBuf {
        let hex = hex::encode(hash);
        self.root.join(&hex[..2]).join(hex)
    }

    /// The stored result for `key`, if any. An entry that does not decode is
    /// treated as absent (and reported by `verify`), never as an error.
    pub fn get(&self, key: &Digest) -> Result<Option<ActionResult>> {
        let path = self.path(key);
        match fs::read(&path) {
            Ok(bytes) => Ok(prost::Message::decode(bytes.as_slice()).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("cannot read action cache entry", path, e)),
        }
    }

    /// Records a successful result for `key`.
    pub fn put(&self, key: &Digest, result: &ActionResult) -> Result<()> {
        assert_eq!(
            result.exit_code, 0,
            "failed actions never enter the action cache"
        );
        let bytes = prost::Message::encode_to_vec(result);
        atomic::write_atomic(&self.tmp, &self.path(key), &bytes, 0o444)
    }

    /// Drops the entry for `key`, if any: for an entry that reaches a blob
    /// the store no longer holds whole, or found not to be the result it
    /// claims, so a later build runs the action again. Atomic (one unlink);
    /// an entry a racing writer publishes afterwards stays.
    pub fn remove(&self, key: &Digest) -> Result<()> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("cannot remove action cache entry", path, e)),
        }
    }

    /// [`ActionCache::get`] for a use of the entry: its modification time is
    /// the last use of everything its result references, which `gc` evicts
    /// least recently used first. The file is opened once for both. Best
    /// effort: a store shared between users may not let us set the time,
    /// which only makes the entry look older.
    pub fn get_used(&self, key: &Digest) -> Result<Option<ActionResult>> {
        use std::io::Read;
        let path = self.path(key);
        let mut file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("cannot read action cache entry", path, e)),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| StoreError::io("cannot read action cache entry", path.clone(), e))?;
        let Ok(result) = prost::Message::decode(bytes.as_slice()) else {
            return Ok(None);
        };
        let _ = file.set_modified(std::time::SystemTime::now());
        Ok(Some(result))
    }

    /// Every entry named like one: its key's hash and its path.
    pub(crate) fn list(&self) -> impl Iterator<Item = ([u8; 32], PathBuf)> + '_ {
        walkdir::WalkDir::new(&self.root)
            .min_depth(2)
            .max_depth(2)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let digest = Digest::from_hex(e.file_name().to_str()?, 0)?;
                Some((digest.hash, e.into_path()))
            })
    }

    /// Entries that do not decode as an `ActionResult` or are misnamed.
    pub fn check_entries(&self) -> Vec<(PathBuf, String)> {
        let mut bad = Vec::new();
        for e in walkdir::WalkDir::new(&self.root)
            .min_depth(2)
            .max_depth(2)
            .into_iter()
            .filter_map(|e| e.ok())
        {
            let named_ok = e
                .file_name()
                .to_str()
                .is_some_and(|n| Digest::from_hex(n, 0).is_some());
            if !named_ok {
                bad.push((e.into_path(), "not named by a key".into()));
                continue;
            }
            match fs::read(e.path()) {
                Ok(bytes) => {
                    if let Err(err) = <ActionResult as prost::Message>::decode(bytes.as_slice()) {
                        bad.push((e.into_path(), format!("does not decode: {err}")));
                    }
                }
                Err(err) => bad.push((e.into_path(), err.to_string())),
            }
        }
        bad
    }

    /// How many entries there are.
    pub fn count(&self) -> usize {
        walkdir::WalkDir::new(&self.root)
            .min_depth(2)
            .max_depth(2)
            .into_iter()
            .filter_map(|e| e.ok())
            .count()
    }
}
