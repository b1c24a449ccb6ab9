//! The digest function a store holds its results in, remembered per store
//! in `<store>/meta/digest-function` once a remote cache has chosen it. A
//! build whose remote cannot be asked (down, or not speaking gRPC) goes on
//! in that function and finds its local results, instead of falling back
//! to BLAKE3 and running everything again.

use std::fs;
use std::path::{Path, PathBuf};

use strata_store::{DigestFunction, Store, write_atomic};

fn file(store_dir: &Path) -> PathBuf {
    store_dir.join("meta").join("digest-function")
}

/// The function the store at `store_dir` holds its results in: the one
/// remembered, else the only one its action cache has entries of (a store
/// filled by a version that did not remember), else `None`.
pub fn held(store_dir: &Path) -> Option<DigestFunction> {
    if let Some(f) = fs::read_to_string(file(store_dir))
        .ok()
        .and_then(|text| text.trim().parse::<DigestFunction>().ok())
    {
        return Some(f);
    }
    let with_entries: Vec<DigestFunction> = [DigestFunction::Blake3, DigestFunction::Sha256]
        .into_iter()
        .filter(|f| has_entries(&store_dir.join("ac").join(f.name())))
        .collect();
    match with_entries[..] {
        [only] => Some(only),
        _ => None,
    }
}

/// Whether an action-cache folder (`ac/<function>/xx/<hex>`) has an entry.
fn has_entries(dir: &Path) -> bool {
    let Ok(shards) = fs::read_dir(dir) else {
        return false;
    };
    shards
        .flatten()
        .any(|shard| fs::read_dir(shard.path()).is_ok_and(|mut entries| entries.next().is_some()))
}

/// Remembers `store`'s function for builds whose remote cannot say; written
/// only when it changes.
pub fn remember(store: &Store) -> std::io::Result<()> {
    let path = file(store.root());
    let name = store.function().name();
    if fs::read_to_string(&path).is_ok_and(|text| text.trim() == name) {
        return Ok(());
    }
    write_atomic(
        &store.tmp_dir(),
        &path,
        format!("{name}\n").as_bytes(),
        0o644,
    )
    .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_function_is_remembered_or_read_from_the_entries() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        assert_eq!(held(&root), None, "no store yet");
        let store = Store::open(&root, DigestFunction::Sha256).unwrap();
        assert_eq!(held(&root), None, "an empty store holds nothing");
        remember(&store).unwrap();
        assert_eq!(held(&root), Some(DigestFunction::Sha256));

        // A store an older version filled: its entries say.
        fs::remove_file(file(&root)).unwrap();
        let key = DigestFunction::Sha256.of_bytes(b"an action");
        let result = strata_store::reapi::ActionResult::default();
        store.action_cache().put(&key, &result).unwrap();
        assert_eq!(held(&root), Some(DigestFunction::Sha256));
        // Entries of both functions: nothing to go by.
        let b3 = Store::open(&root, DigestFunction::Blake3).unwrap();
        b3.action_cache()
            .put(&DigestFunction::Blake3.of_bytes(b"an action"), &result)
            .unwrap();
        assert_eq!(held(&root), None);
        // What was remembered wins.
        remember(&b3).unwrap();
        assert_eq!(held(&root), Some(DigestFunction::Blake3));
    }
}
