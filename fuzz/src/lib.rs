//! The harnesses behind Strata's fuzz targets (`fuzz_targets/*.rs` are one
//! line each). Every harness must return normally for every input: errors
//! are expected and ignored, a panic (or an abort, a hang, an out-of-memory)
//! is a finding.
//!
//! State that is costly to set up (a scratch folder, a store) is made once
//! per process and reused; the store is wiped every [`STORE_RUNS`] inputs
//! so a long run does not fill the disk.

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};

use strata_store::{DigestFunction, Store};

pub mod extract;
pub mod load;
pub mod store;

/// Inputs a store serves before it is wiped and opened anew.
const STORE_RUNS: u32 = 256;

/// The folder this process works in: under `$STRATA_FUZZ_TMPDIR` if set,
/// else `/dev/shm` (fsync is free there, and the store fsyncs every blob),
/// else the system temporary folder. Removed when the process exits.
pub fn scratch() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("STRATA_FUZZ_TMPDIR")
            .map(PathBuf::from)
            .or_else(|| {
                let shm = Path::new("/dev/shm");
                let usable = tempfile::tempdir_in(shm).is_ok();
                usable.then(|| shm.to_path_buf())
            })
            .unwrap_or_else(std::env::temp_dir);
        fs::create_dir_all(&base).expect("create the fuzz scratch base");
        let dir = tempfile::Builder::new()
            .prefix("strata-fuzz-")
            .tempdir_in(&base)
            .expect("create a scratch folder")
            .keep();
        // libFuzzer ends with exit(): statics are never dropped, so clean
        // up from an atexit handler instead (a crash leaves the folder).
        extern "C" fn remove_scratch() {
            if let Some(dir) = DIR.get() {
                let _ = fs::remove_dir_all(dir);
            }
        }
        // SAFETY: registers a plain extern "C" function with no arguments.
        unsafe {
            libc::atexit(remove_scratch);
        }
        dir
    })
}

struct StoreState {
    store: Store,
    runs: u32,
}

thread_local! {
    static STORE: RefCell<Option<StoreState>> = const { RefCell::new(None) };
}

/// Runs `f` with this process's store (BLAKE3, as builds use), wiping it
/// every [`STORE_RUNS`] calls.
pub fn with_store<T>(f: impl FnOnce(&Store) -> T) -> T {
    STORE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let stale = slot.as_ref().is_none_or(|s| s.runs >= STORE_RUNS);
        if stale {
            let root = scratch().join("store");
            *slot = None;
            let _ = fs::remove_dir_all(&root);
            let store = Store::open(&root, DigestFunction::Blake3).expect("open the fuzz store");
            *slot = Some(StoreState { store, runs: 0 });
        }
        let state = slot.as_mut().expect("a store");
        state.runs += 1;
        f(&state.store)
    })
}
