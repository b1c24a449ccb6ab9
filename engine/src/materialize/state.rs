//! The record of what Strata placed in one output folder
//! (`<out>/.strata/state.json`): which entries it made, and which tree each
//! one holds. An entry the record does not list is never Strata's to
//! replace or remove, whoever else uses the folder.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::META;

const VERSION: u32 = 2;

/// What Strata placed in one output folder.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct OutState {
    version: u32,
    /// Every entry Strata made and has not removed, by target name (a
    /// matrix build's entries are `<config>/<target>`).
    placed: BTreeMap<String, Placed>,
    /// Folders Strata made to hold entries (a matrix build's `x86_64`),
    /// removed once they hold none.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    folders: BTreeSet<String>,
}

/// One entry Strata made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Placed {
    /// The tree the entry holds; `None` while it changes, so a build killed
    /// halfway leaves an entry that is Strata's but vouched for by nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The entry's [`super::fingerprint`] once placed: while it matches,
    /// nobody changed the entry since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// The versions of the file this build reads.
#[derive(Deserialize)]
#[serde(untagged)]
enum OnDisk {
    Current(OutState),
    /// Version 1 mapped each target to its output digest. Its entries are
    /// Strata's, but their files were hard links into the store: vouching
    /// for none of them places each again once.
    Legacy(BTreeMap<String, String>),
}

impl OutState {
    pub fn path(out_dir: &Path) -> PathBuf {
        out_dir.join(META).join("state.json")
    }

    /// The record of `out_dir`; empty if there is none (nothing in the
    /// folder is Strata's).
    pub fn read(out_dir: &Path) -> OutState {
        let Ok(bytes) = fs::read(Self::path(out_dir)) else {
            return OutState::default();
        };
        match serde_json::from_slice(&bytes) {
            Ok(OnDisk::Current(state)) => state,
            Ok(OnDisk::Legacy(map)) => OutState {
                version: VERSION,
                placed: map.into_keys().map(|k| (k, Placed::default())).collect(),
                folders: BTreeSet::new(),
            },
            Err(_) => OutState::default(),
        }
    }

    pub fn write(&mut self, out_dir: &Path) -> Result<(), String> {
        self.version = VERSION;
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        strata_store::write_atomic(&out_dir.join(META), &Self::path(out_dir), &bytes, 0o644)
            .map_err(|e| e.to_string())
    }

    /// Whether Strata made `out/<name>`.
    pub fn owns(&self, name: &str) -> bool {
        self.placed.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<&Placed> {
        self.placed.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.placed.keys()
    }

    /// Records `out/<name>` as Strata's, vouched for by nothing: written
    /// before the entry is created or changed.
    pub fn claim(&mut self, name: &str) {
        self.placed.insert(name.to_string(), Placed::default());
    }

    /// Records what `out/<name>` now holds.
    pub fn set(&mut self, name: &str, placed: Placed) {
        self.placed.insert(name.to_string(), placed);
    }

    /// Forgets `out/<name>`, once it is gone.
    pub fn release(&mut self, name: &str) {
        self.placed.remove(name);
    }

    /// Whether Strata made the folder `out/<folder>` to hold entries.
    pub fn owns_folder(&self, folder: &str) -> bool {
        self.folders.contains(folder)
    }

    /// Records the folder `out/<folder>` as Strata's: written before it is
    /// created.
    pub fn claim_folder(&mut self, folder: &str) {
        self.folders.insert(folder.to_string());
    }

    /// The folders Strata made, deepest first.
    pub fn folders(&self) -> Vec<String> {
        let mut v: Vec<String> = self.folders.iter().cloned().collect();
        v.sort_by_key(|f| std::cmp::Reverse(f.matches('/').count()));
        v
    }

    /// Forgets the folder `out/<folder>`, once it is gone.
    pub fn release_folder(&mut self, folder: &str) {
        self.folders.remove(folder);
    }

    /// Whether any entry lies inside `out/<folder>`.
    pub fn holds_entries(&self, folder: &str) -> bool {
        let prefix = format!("{folder}/");
        self.placed.keys().any(|k| k.starts_with(&prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_record_owns_its_entries_and_vouches_for_none() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join(META)).unwrap();
        fs::write(
            OutState::path(d.path()),
            r#"{"a": "blake3:00", "version": "x"}"#,
        )
        .unwrap();
        let state = OutState::read(d.path());
        assert!(state.owns("a") && state.owns("version") && !state.owns("b"));
        assert_eq!(state.get("a"), Some(&Placed::default()));
    }

    #[test]
    fn a_record_round_trips() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join(META)).unwrap();
        let mut state = OutState::default();
        state.claim("a");
        state.set(
            "b",
            Placed {
                output: Some("blake3:11".into()),
                fingerprint: Some("f".into()),
            },
        );
        state.write(d.path()).unwrap();
        let again = OutState::read(d.path());
        assert!(again.owns("a"));
        assert_eq!(again.get("b").unwrap().output.as_deref(), Some("blake3:11"));
    }

    #[test]
    fn folders_round_trip_and_list_deepest_first() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join(META)).unwrap();
        let mut state = OutState::default();
        state.claim_folder("x86_64");
        state.claim_folder("x86_64/debug");
        state.claim("x86_64/debug/t");
        state.write(d.path()).unwrap();
        let again = OutState::read(d.path());
        assert!(again.owns_folder("x86_64") && !again.owns("x86_64"));
        assert_eq!(again.folders(), ["x86_64/debug", "x86_64"]);
        assert!(again.holds_entries("x86_64") && !again.holds_entries("aarch64"));
        // A record without folders (written before matrix builds) reads.
        fs::write(
            OutState::path(d.path()),
            r#"{"version": 2, "placed": {"a": {}}}"#,
        )
        .unwrap();
        assert!(OutState::read(d.path()).owns("a"));
    }
}
