//! Shared scaffolding for the rules' unit tests.

use strata_store::{DigestFunction, Store};

/// A store in a temporary folder, removed when dropped.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub store: Store,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), DigestFunction::Blake3).unwrap();
    Fixture { _dir: dir, store }
}
