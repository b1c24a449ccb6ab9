//! Garbage collection: which objects are still needed, and evicting the rest
//! least recently used first.
//!
//! The store knows nothing of builds. The caller names what must stay
//! (actions by key, trees by root digest); an action keeps its action
//! message, command, input root, action-cache entry, output trees and logs.
//!
//! Last use: an action-cache entry's modification time is refreshed on every
//! cache hit ([`crate::ActionCache::touch`]) and stands for the last use of
//! everything the action reaches; a blob no entry reaches has only its own
//! modification time.
//!
//! Eviction order keeps the store consistent whenever it stops: an entry is
//! evicted before any blob it reaches (a blob's last use is never older than
//! an entry that reaches it, and at equal times entries go first), and
//! [`Collector::sweep`] removes every chosen entry, syncs their folders, and
//! only then removes blobs. A crash at any instant leaves no entry pointing
//! at a removed blob.
//!
//! The caller must make sure nobody writes to the store meanwhile (the
//! engine's builds hold a shared lock that `gc` takes exclusively): objects a
//! running build wrote but has not recorded yet are reachable from nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::reapi;
use crate::tree::read_directory;
use crate::{Digest, DigestFunction, Store};

/// An object's identity across digest functions: blobs and action-cache
/// entries are each named by their function and hash (an action's blob and
/// its entry share one).
type Id = (DigestFunction, [u8; 32]);

struct Blob {
    digest: Digest,
    path: PathBuf,
    bytes: u64,
    mtime: SystemTime,
}

struct Entry {
    path: PathBuf,
    bytes: u64,
    /// Its last use: the newer of its file's time and its logged uses.
    mtime: SystemTime,
    /// Set when a use log holds a use newer than the file's time.
    logged: bool,
}

/// Object counts and bytes (apparent sizes, as `ls` shows them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub blobs: u64,
    pub blob_bytes: u64,
    pub action_results: u64,
    pub action_result_bytes: u64,
}

impl Usage {
    pub fn bytes(&self) -> u64 {
        self.blob_bytes + self.action_result_bytes
    }

    fn minus(self, other: Usage) -> Usage {
        Usage {
            blobs: self.blobs - other.blobs,
            blob_bytes: self.blob_bytes - other.blob_bytes,
            action_results: self.action_results - other.action_results,
            action_result_bytes: self.action_result_bytes - other.action_result_bytes,
        }
    }
}

/// The digest functions that have objects in the store folder `root`.
pub fn functions_on_disk(root: &Path) -> Vec<DigestFunction> {
    let mut found = BTreeSet::new();
    for sub in ["cas", "ac"] {
        let Ok(entries) = fs::read_dir(root.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            if let Some(f) = e.file_name().to_str().and_then(|n| n.parse().ok()) {
                found.insert(f);
            }
        }
    }
    found.into_iter().collect()
}

/// Every object of one store folder (one [`Store`] per digest function),
/// with what must stay.
pub struct Collector {
    stores: Vec<Store>,
    blobs: HashMap<Id, Blob>,
    entries: HashMap<Id, Entry>,
    /// Blobs reached from what must stay (found or not).
    kept_blobs: HashSet<Id>,
    kept_entries: HashSet<Id>,
    /// The use logs folded into `entries`, removed by a sweep.
    use_logs: Vec<PathBuf>,
}

/// What [`Collector::plan`] chose to evict.
#[derive(Debug, Default)]
pub struct Plan {
    entries: Vec<Id>,
    blobs: Vec<Id>,
    evicted: HashSet<Id>,
    /// What goes.
    pub removed: Usage,
    /// What stays.
    pub after: Usage,
}

/// What [`Collector::sweep`] removed, and what it could not.
#[derive(Debug, Default)]
pub struct Swept {
    pub removed: Usage,
    pub errors: Vec<String>,
}

impl Collector {
    /// Lists the objects of `stores` (the same folder opened once per digest
    /// function). Objects that vanish or cannot be read while listing are
    /// left out: they are not ours to count.
    pub fn scan(stores: Vec<Store>) -> Collector {
        let mut blobs = HashMap::new();
        let mut entries = HashMap::new();
        let mut use_logs = Vec::new();
        for store in &stores {
            let f = store.function();
            let (used, logs) = store.action_cache().logged_uses();
            use_logs.extend(logs);
            for (digest, path) in store.cas().list() {
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    continue;
                };
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                let bytes = meta.len();
                blobs.insert(
                    (f, digest.hash),
                    Blob {
                        digest,
                        path,
                        bytes,
                        mtime,
                    },
                );
            }
            for (hash, path) in store.action_cache().list() {
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    continue;
                };
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                let last_use = used.get(&hash).copied().filter(|&t| t > mtime);
                let bytes = meta.len();
                entries.insert(
                    (f, hash),
                    Entry {
                        path,
                        bytes,
                        mtime: last_use.unwrap_or(mtime),
                        logged: last_use.is_some(),
                    },
                );
            }
        }
        Collector {
            stores,
            blobs,
            entries,
            kept_blobs: HashSet::new(),
            kept_entries: HashSet::new(),
            use_logs,
        }
    }

    /// Keeps the action `key` and everything it reaches.
    pub fn keep_action(&mut self, function: DigestFunction, key: &[u8; 32]) {
        let mut seen = std::mem::take(&mut self.kept_blobs);
        self.reach_action((function, *key), &mut seen, &mut Vec::new());
        self.kept_blobs = seen;
        self.kept_entries.insert((function, *key));
    }

    /// Keeps the stored tree `root` and everything below it.
    pub fn keep_tree(&mut self, function: DigestFunction, root: &[u8; 32]) {
        let mut seen = std::mem::take(&mut self.kept_blobs);
        self.reach_tree((function, *root), &mut seen, &mut Vec::new());
        self.kept_blobs = seen;
    }

    /// The digest of the stored blob with this hash, if there is one (build
    /// records of older versions name objects by hash alone).
    pub fn blob_digest(&self, function: DigestFunction, hash: &[u8; 32]) -> Option<Digest> {
        self.blobs.get(&(function, *hash)).map(|b| b.digest)
    }

    /// Whether the blob with this hash (under any digest function, such as
    /// a tree's root named by its hash alone) is still stored once `plan`
    /// is swept.
    pub fn holds_after(&self, plan: &Plan, hash: &[u8; 32]) -> bool {
        self.stores.iter().any(|s| {
            let id = (s.function(), *hash);
            self.blobs.contains_key(&id) && !plan.evicted.contains(&id)
        })
    }

    /// Everything in the store, per digest function.
    pub fn usage_by_function(&self) -> BTreeMap<DigestFunction, Usage> {
        let mut usage: BTreeMap<DigestFunction, Usage> = BTreeMap::new();
        for s in &self.stores {
            usage.insert(s.function(), Usage::default());
        }
        for ((f, _), b) in &self.blobs {
            let u = usage.entry(*f).or_default();
            u.blobs += 1;
            u.blob_bytes += b.bytes;
        }
        for ((f, _), e) in &self.entries {
            let u = usage.entry(*f).or_default();
            u.action_results += 1;
            u.action_result_bytes += e.bytes;
        }
        usage
    }

    /// Everything in the store.
    pub fn usage(&self) -> Usage {
        self.usage_by_function()
            .values()
            .fold(Usage::default(), |a, u| Usage {
                blobs: a.blobs + u.blobs,
                blob_bytes: a.blob_bytes + u.blob_bytes,
                action_results: a.action_results + u.action_results,
                action_result_bytes: a.action_result_bytes + u.action_result_bytes,
            })
    }

    /// What is stored of what must stay.
    pub fn kept(&self) -> Usage {
        let mut u = Usage::default();
        for id in &self.kept_blobs {
            if let Some(b) = self.blobs.get(id) {
                u.blobs += 1;
                u.blob_bytes += b.bytes;
            }
        }
        for id in &self.kept_entries {
            if let Some(e) = self.entries.get(id) {
                u.action_results += 1;
                u.action_result_bytes += e.bytes;
            }
        }
        u
    }

    /// Chooses what to evict, least recently used first, until the objects
    /// left take at most `max_bytes`; what must stay is never chosen (so
    /// the result may stay above `max_bytes`).
    pub fn plan(&self, max_bytes: u64) -> Plan {
        // Newest entries first: the first entry to reach a blob is the
        // newest that does, and an entry reaching a folder already seen
        // would only propagate an older time below it.
        let mut last_use: HashMap<Id, SystemTime> =
            self.blobs.iter().map(|(id, b)| (*id, b.mtime)).collect();
        let mut newest_first: Vec<(&Id, &Entry)> = self.entries.iter().collect();
        newest_first.sort_by(|a, b| b.1.mtime.cmp(&a.1.mtime).then(a.0.cmp(b.0)));
        let mut seen = HashSet::new();
        for (id, entry) in newest_first {
            let mut reached = Vec::new();
            self.reach_action(*id, &mut seen, &mut reached);
            for b in reached {
                if let Some(t) = last_use.get_mut(&b) {
                    *t = (*t).max(entry.mtime);
                }
            }
        }

        // (last use, entries before blobs, id): an entry is always
        // considered before the blobs it reaches.
        let mut candidates: Vec<(SystemTime, u8, Id)> = Vec::new();
        for (id, e) in &self.entries {
            if !self.kept_entries.contains(id) {
                candidates.push((e.mtime, 0, *id));
            }
        }
        for id in self.blobs.keys() {
            if !self.kept_blobs.contains(id) {
                candidates.push((last_use[id], 1, *id));
            }
        }
        candidates.sort();

        let before = self.usage();
        let mut plan = Plan::default();
        let mut total = before.bytes();
        for (_, kind, id) in candidates {
            if total <= max_bytes {
                break;
            }
            if kind == 0 {
                let bytes = self.entries[&id].bytes;
                plan.entries.push(id);
                plan.removed.action_results += 1;
                plan.removed.action_result_bytes += bytes;
                total -= bytes;
            } else {
                let bytes = self.blobs[&id].bytes;
                plan.blobs.push(id);
                plan.evicted.insert(id);
                plan.removed.blobs += 1;
                plan.removed.blob_bytes += bytes;
                total -= bytes;
            }
        }
        plan.after = before.minus(plan.removed);
        plan
    }

    /// Removes what `plan` chose: every entry first, then (once their
    /// removal is on disk) the blobs. If an entry cannot be removed, no blob
    /// is: that entry may reach any of them.
    pub fn sweep(&self, plan: &Plan) -> Swept {
        let mut swept = Swept::default();
        let mut folders = BTreeSet::new();
        for id in &plan.entries {
            let e = &self.entries[id];
            match remove(&e.path) {
                Ok(()) => {
                    swept.removed.action_results += 1;
                    swept.removed.action_result_bytes += e.bytes;
                    if let Some(p) = e.path.parent() {
                        folders.insert(p.to_path_buf());
                    }
                }
                Err(err) => swept.errors.push(format!(
                    "cannot remove action-cache entry {}: {err}",
                    e.path.display()
                )),
            }
        }
        for folder in &folders {
            if let Err(err) = fs::File::open(folder).and_then(|d| d.sync_all()) {
                swept
                    .errors
                    .push(format!("cannot sync {}: {err}", folder.display()));
            }
        }
        if !swept.errors.is_empty() {
            return swept;
        }
        for id in &plan.blobs {
            let b = &self.blobs[id];
            match remove(&b.path) {
                Ok(()) => {
                    swept.removed.blobs += 1;
                    swept.removed.blob_bytes += b.bytes;
                }
                Err(err) => swept
                    .errors
                    .push(format!("cannot remove blob {}: {err}", b.path.display())),
            }
        }
        self.fold_use_logs(plan);
        swept
    }

    /// Writes the logged last uses of the entries that stay into their
    /// times, then removes the logs. A log stays if a time cannot be set (a
    /// store shared between users), so the use is not forgotten.
    fn fold_use_logs(&self, plan: &Plan) {
        let evicted: HashSet<&Id> = plan.entries.iter().collect();
        let mut all_set = true;
        for (id, e) in &self.entries {
            if e.logged && !evicted.contains(id) {
                let set = fs::File::open(&e.path).and_then(|f| f.set_modified(e.mtime));
                all_set &= set.is_ok() || !e.path.exists();
            }
        }
        if all_set {
            crate::action_cache::remove_logs(&self.use_logs);
        }
    }

    fn store(&self, function: DigestFunction) -> Option<&Store> {
        self.stores.iter().find(|s| s.function() == function)
    }

    /// Adds to `out` each blob reachable from action `key` that `seen` did
    /// not hold yet (blobs missing from the store included). Whatever does
    /// not decode ends its branch: it reaches nothing we could read.
    fn reach_action(&self, key: Id, seen: &mut HashSet<Id>, out: &mut Vec<Id>) {
        let (f, hash) = key;
        let Some(store) = self.store(f) else { return };
        if seen.insert(key) {
            out.push(key);
            if let Some(action) = self.blobs.get(&key).and_then(|b| {
                store
                    .cas()
                    .get_message::<reapi::Action>(&b.digest, "an action")
                    .ok()
            }) {
                if let Some(d) = proto_id(f, action.command_digest.as_ref()) {
                    leaf(d, seen, out);
                }
                if let Some(d) = proto_id(f, action.input_root_digest.as_ref()) {
                    self.reach_tree(d, seen, out);
                }
            }
        }
        let Ok(Some(result)) = store.action_cache().get(&Digest::new(hash, 0)) else {
            return;
        };
        for dir in &result.output_directories {
            if let Some(d) = proto_id(f, dir.root_directory_digest.as_ref()) {
                self.reach_tree(d, seen, out);
            }
            if let Some(d) = proto_id(f, dir.tree_digest.as_ref()) {
                self.reach_tree_message(d, seen, out);
            }
        }
        for log in [&result.stdout_digest, &result.stderr_digest] {
            if let Some(d) = proto_id(f, log.as_ref()) {
                leaf(d, seen, out);
            }
        }
    }

    /// Like [`Self::reach_action`] for a stored tree of `Directory` records.
    /// Iterative and memoized through `seen`, so shared and deep trees cost
    /// one read per folder.
    fn reach_tree(&self, root: Id, seen: &mut HashSet<Id>, out: &mut Vec<Id>) {
        let f = root.0;
        let Some(store) = self.store(f) else { return };
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            out.push(id);
            let Some(dir) = self
                .blobs
                .get(&id)
                .and_then(|b| read_directory(store.cas(), &b.digest).ok())
            else {
                continue;
            };
            for file in &dir.files {
                if let Some(d) = proto_id(f, file.digest.as_ref()) {
                    leaf(d, seen, out);
                }
            }
            for sub in &dir.directories {
                if let Some(d) = proto_id(f, sub.digest.as_ref()) {
                    stack.push(d);
                }
            }
        }
    }

    /// A REAPI `Tree` message (the whole tree in one blob, as remote
    /// executors return it): its files are blobs of their own.
    fn reach_tree_message(&self, id: Id, seen: &mut HashSet<Id>, out: &mut Vec<Id>) {
        if !seen.insert(id) {
            return;
        }
        out.push(id);
        let Some(tree) = self.store(id.0).and_then(|s| {
            let b = self.blobs.get(&id)?;
            s.cas().get_message::<reapi::Tree>(&b.digest, "a tree").ok()
        }) else {
            return;
        };
        for dir in tree.root.iter().chain(&tree.children) {
            for file in &dir.files {
                if let Some(d) = proto_id(id.0, file.digest.as_ref()) {
                    leaf(d, seen, out);
                }
            }
        }
    }
}

fn leaf(id: Id, seen: &mut HashSet<Id>, out: &mut Vec<Id>) {
    if seen.insert(id) {
        out.push(id);
    }
}

fn proto_id(f: DigestFunction, d: Option<&reapi::Digest>) -> Option<Id> {
    Digest::from_proto(d?).map(|d| (f, d.hash))
}

/// Removes a file; one already gone counts as removed.
fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Files and folders in the store's `tmp/` with their sizes: what
/// interrupted writers left (or what running writers are writing).
pub fn temporaries(store: &Store) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = fs::read_dir(store.tmp_dir()) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, u64)> = entries
        .flatten()
        .map(|e| {
            let path = e.path();
            let bytes = tree_bytes(&path);
            (path, bytes)
        })
        .collect();
    found.sort();
    found
}

/// Bytes of the regular files at or below `path` (symlinks not followed).
pub fn tree_bytes(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Node, TreeBuilder};
    use std::time::Duration;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s"), DigestFunction::Blake3).unwrap();
        (d, s)
    }

    /// Stores action `name` whose output is a folder holding one file with
    /// `content`; returns (key, output tree, file).
    fn action(s: &Store, name: &str, content: &str) -> (Digest, Digest, Digest) {
        let cas = s.cas();
        let file = cas.put_bytes(content.as_bytes()).unwrap();
        let mut out = TreeBuilder::new();
        out.insert("sub/f", Node::file(file, false)).unwrap();
        let output = out.store(cas).unwrap();
        let command = cas
            .put_message(&reapi::Command {
                arguments: vec![format!("make {name}")],
                ..Default::default()
            })
            .unwrap();
        let input = TreeBuilder::new().store(cas).unwrap();
        let key = cas
            .put_message(&reapi::Action {
                command_digest: Some(command.to_proto()),
                input_root_digest: Some(input.to_proto()),
                ..Default::default()
            })
            .unwrap();
        let result = reapi::ActionResult {
            output_directories: vec![reapi::OutputDirectory {
                path: "out".into(),
                root_directory_digest: Some(output.to_proto()),
                ..Default::default()
            }],
            ..Default::default()
        };
        s.action_cache().put(&key, &result).unwrap();
        (key, output, file)
    }

    fn age(s: &Store, path: &Path, secs_ago: u64) {
        let _ = s;
        let t = SystemTime::now() - Duration::from_secs(secs_ago);
        fs::File::open(path).unwrap().set_modified(t).unwrap();
    }

    fn age_all(s: &Store, secs_ago: u64) {
        for (_, p) in s.cas().list() {
            age(s, &p, secs_ago);
        }
        for (_, p) in s.action_cache().list() {
            age(s, &p, secs_ago);
        }
    }

    #[test]
    fn a_kept_action_keeps_its_whole_closure_and_nothing_else_is_kept() {
        let (_d, s) = store();
        let (key, output, file) = action(&s, "one", "one");
        let (other, other_out, other_file) = action(&s, "two", "two");
        let mut c = Collector::scan(vec![s.clone()]);
        c.keep_action(s.function(), &key.hash);
        let plan = c.plan(0);
        let swept = c.sweep(&plan);
        assert!(swept.errors.is_empty(), "{:?}", swept.errors);
        assert_eq!(swept.removed, plan.removed);
        assert!(crate::tree::first_missing(s.cas(), &output).is_none());
        assert!(s.cas().contains(&key) && s.cas().contains(&file));
        assert!(s.action_cache().get(&key).unwrap().is_some());
        assert!(s.action_cache().get(&other).unwrap().is_none());
        assert!(!s.cas().contains(&other) && !s.cas().contains(&other_file));
        assert!(!s.cas().contains(&other_out));
        // Only what the kept action reaches is left.
        let after = Collector::scan(vec![s.clone()]);
        assert_eq!(after.usage(), plan.after);
        assert_eq!(after.usage(), c.kept());
        assert!(s.verify().is_clean());
    }

    #[test]
    fn holds_after_tells_which_trees_a_plan_leaves() {
        let (_d, s) = store();
        let (key, output, _) = action(&s, "kept", "kept");
        let (_, gone, _) = action(&s, "gone", "gone");
        let mut c = Collector::scan(vec![s.clone()]);
        c.keep_action(s.function(), &key.hash);
        let nothing = c.plan(u64::MAX);
        assert!(c.holds_after(&nothing, &output.hash) && c.holds_after(&nothing, &gone.hash));
        let plan = c.plan(0);
        assert!(c.holds_after(&plan, &output.hash));
        assert!(!c.holds_after(&plan, &gone.hash));
        assert!(!c.holds_after(&plan, &[7; 32]), "a hash never stored");
        c.sweep(&plan);
        assert_eq!(
            s.cas().contains(&output),
            c.holds_after(&plan, &output.hash)
        );
        assert_eq!(s.cas().contains(&gone), c.holds_after(&plan, &gone.hash));
    }

    #[test]
    fn verify_reports_an_entry_whose_output_lost_a_blob() {
        let (_d, s) = store();
        let (_, _, file) = action(&s, "one", "one");
        assert!(s.verify().is_clean());
        fs::remove_file(s.cas().path(&file)).unwrap();
        let report = s.verify();
        assert_eq!(report.incomplete_action_results.len(), 1, "{report:?}");
        assert!(!report.is_clean());
    }

    #[test]
    fn the_least_recently_used_action_goes_first_with_its_blobs() {
        let (_d, s) = store();
        let big = "x".repeat(10_000);
        let (old, _, old_file) = action(&s, "old", &format!("old{big}"));
        let (new, _, new_file) = action(&s, "new", &format!("new{big}"));
        age_all(&s, 100);
        // A cache hit makes the older action the newer one.
        s.action_cache().get_used(&old).unwrap();
        let c = Collector::scan(vec![s.clone()]);
        let total = c.usage().bytes();
        let plan = c.plan(total - 5_000);
        c.sweep(&plan);
        assert!(s.action_cache().get(&new).unwrap().is_none());
        assert!(!s.cas().contains(&new_file));
        assert!(s.action_cache().get(&old).unwrap().is_some());
        assert!(s.cas().contains(&old_file));
        // The empty input root is shared: still reached by `old`.
        let left = Collector::scan(vec![s.clone()]);
        assert!(left.usage().bytes() <= total - 5_000);
    }

    #[test]
    fn a_use_another_process_logged_counts_and_is_folded_in_by_gc() {
        let (d, s) = store();
        let big = "x".repeat(10_000);
        let (old, _, old_file) = action(&s, "old", &format!("old{big}"));
        let (new, _, new_file) = action(&s, "new", &format!("new{big}"));
        age_all(&s, 100);
        // Another build (its own handle of the store) hits `old` and ends.
        let other = Store::open(&d.path().join("s"), DigestFunction::Blake3).unwrap();
        other.action_cache().get_used(&old).unwrap();
        drop(other);
        let logs = || {
            fs::read_dir(s.root().join("meta/uses/blake3"))
                .unwrap()
                .count()
        };
        assert_eq!(logs(), 1);
        let c = Collector::scan(vec![s.clone()]);
        let plan = c.plan(c.usage().bytes() - 5_000);
        c.sweep(&plan);
        assert!(s.action_cache().get(&new).unwrap().is_none());
        assert!(!s.cas().contains(&new_file));
        assert!(s.cas().contains(&old_file));
        // The use is now the entry's own time, and its log is gone.
        assert_eq!(logs(), 0);
        let t = fs::metadata(s.action_cache().path_of(&old.hash))
            .unwrap()
            .modified()
            .unwrap();
        assert!(t > SystemTime::now() - Duration::from_secs(50), "{t:?}");
    }

    #[test]
    fn an_unreferenced_blob_goes_by_its_own_time() {
        let (_d, s) = store();
        let (key, _, _) = action(&s, "a", "content");
        age_all(&s, 100);
        let orphan = s.cas().put_bytes(b"orphan").unwrap();
        age(&s, &s.cas().path(&orphan), 200);
        let c = Collector::scan(vec![s.clone()]);
        let plan = c.plan(c.usage().bytes() - 1);
        assert_eq!((plan.removed.blobs, plan.removed.action_results), (1, 0));
        c.sweep(&plan);
        assert!(!s.cas().contains(&orphan));
        // Younger than the action's last use, it would outlive the entry.
        let orphan = s.cas().put_bytes(b"orphan").unwrap();
        age(&s, &s.cas().path(&orphan), 50);
        let c = Collector::scan(vec![s.clone()]);
        let plan = c.plan(c.usage().bytes() - 1);
        assert_eq!((plan.removed.blobs, plan.removed.action_results), (0, 1));
        c.sweep(&plan);
        assert!(s.action_cache().get(&key).unwrap().is_none());
        assert!(s.cas().contains(&orphan));
    }

    #[test]
    fn a_blob_shared_with_a_newer_action_lives_as_long_as_it() {
        let (_d, s) = store();
        let (a, _, file) = action(&s, "a", "same");
        let (b, _, file_b) = action(&s, "b", "same");
        assert_eq!(file, file_b);
        age_all(&s, 200);
        age(&s, &s.action_cache().path_of(&a.hash), 100);
        age(&s, &s.action_cache().path_of(&b.hash), 10);
        let c = Collector::scan(vec![s.clone()]);
        // `a`'s entry, action and command are all that only `a` reaches.
        let command_a = s
            .cas()
            .get_message::<reapi::Action>(&a, "an action")
            .unwrap()
            .command_digest
            .unwrap();
        let only_a =
            c.entries[&(s.function(), a.hash)].bytes + a.size_bytes + command_a.size_bytes as u64;
        let plan = c.plan(c.usage().bytes() - only_a);
        assert_eq!((plan.removed.blobs, plan.removed.action_results), (2, 1));
        c.sweep(&plan);
        assert!(s.action_cache().get(&a).unwrap().is_none());
        assert!(s.action_cache().get(&b).unwrap().is_some());
        assert!(s.cas().contains(&file) && s.cas().contains(&b));
    }
}
