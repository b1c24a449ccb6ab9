//! Incremental builds are equivalent to clean builds, and minimal.
//!
//! A search for counter-examples rather than hand-picked cases: each round
//! generates a random layered DAG of `run` targets (sources through globs,
//! folders and plain files, dependencies, `env:`, `vars:`, commands that
//! sometimes map different inputs to identical outputs so early cutoff is
//! exercised), then applies a random sequence of edits, each followed by an
//! incremental build. After every build:
//!
//! (a) a clean build of a copy of the workspace in a fresh store gives every
//!     target the same key and output digest, and the same bytes under
//!     `out/`;
//! (b) the executed targets are exactly those whose key this store has never
//!     built before, and every other target is `cached`;
//! (c) after touching a source without changing it, or deleting `out/` (or
//!     one target's folder in it), nothing executes, every key is unchanged
//!     and `out/` is restored.
//!
//! `STRATA_EQUIV_ROUNDS` (default 25) sets the number of rounds,
//! `STRATA_EQUIV_SEED` the seed (default: from the clock, printed), and
//! `STRATA_EQUIV_ROUND` replays a single round of a seed. A failure prints
//! the seed, the round, the edits, the BUILD.yaml and both JSON documents.
//! `benches/equivalence.sh` runs 1000 rounds.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Run, Ws};
use serde_json::Value;

// ---------------------------------------------------------------------------
// A small seeded PRNG (splitmix64): no crate, same sequence everywhere.

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(splitmix(seed))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num/den`.
    fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

// ---------------------------------------------------------------------------
// The model of a workspace: the test's own idea of what is on disk.

/// Folders `src/d0` .. `src/d3` hold the sources.
const DIRS: usize = 4;
const VARS: usize = 3;
const MAX_TARGETS: usize = 12;
const MIN_TARGETS: usize = 3;

/// Lines of source files. Several differ only by spaces, order or
/// repetition, which some transformations erase.
const LINES: &[&str] = &["a b", "ab", "a", "b a", "ba", "c", "a  b", "c c", ""];
const VAR_VALUES: &[&str] = &["hello", "hello ", "world", "a b", "ab", "x"];
const ENV_VALUES: &[&str] = &["x", "x ", "y", "", "${v0}", "${v1}-e", "${v2}"];
/// What a command pipes its inputs through. Some map different inputs to
/// the same output (early cutoff), some keep everything.
const TRANSFORMS: &[&str] = &[
    "cat",
    "sha256sum",
    "tr -d ' '",
    "sort -u",
    "wc -l",
    "tr a-z A-Z",
    "cut -c1-2",
    "tr -d ' ' | sort -u",
];
/// Names targets may be renamed to (reusing names of removed targets too).
const NAMES: &[&str] = &[
    "t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9", "t10", "t11", "n0", "n1", "n2",
    "n3", "n4", "x_y", "a-b", "z9",
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Dir {
    Fixed(usize),
    /// `src/${dir}`: follows the `dir` variable.
    Var,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    /// One file, by its path.
    File(String),
    /// `src/dK/*.ext`: files directly in the folder.
    Glob(Dir, &'static str),
    /// `src/dK/**/*.ext`: files at any depth.
    Tree(Dir, &'static str),
    /// `src/dK`: every file below the folder.
    Folder(Dir),
}

#[derive(Clone, Debug)]
struct Target {
    /// Never changes; a comment in the command, so every target's key is
    /// unique even when two targets would otherwise be identical.
    id: usize,
    name: String,
    srcs: Vec<Pattern>,
    /// Ids of targets earlier in `Model::targets` (so the graph is acyclic).
    deps: Vec<usize>,
    transform: usize,
    env: Option<&'static str>,
    echo_env: bool,
    var: Option<usize>,
    extra: usize,
}

#[derive(Clone, Debug)]
struct Model {
    /// Regular source files and their contents.
    files: BTreeMap<String, String>,
    /// Sources that are relative symlinks to regular files, by target path.
    links: BTreeMap<String, String>,
    vars: [&'static str; VARS],
    dir_var: usize,
    /// In dependency order: a target depends only on targets before it.
    targets: Vec<Target>,
    next_id: usize,
    next_file: usize,
}

fn dir_path(k: usize) -> String {
    format!("src/d{k}")
}

fn random_content(rng: &mut Rng) -> String {
    let n = rng.range(1, 3);
    (0..n).map(|_| format!("{}\n", rng.pick(LINES))).collect()
}

impl Pattern {
    fn dir(&self, m: &Model) -> Option<usize> {
        match self {
            Pattern::File(_) => None,
            Pattern::Glob(d, _) | Pattern::Tree(d, _) | Pattern::Folder(d) => Some(match d {
                Dir::Fixed(k) => *k,
                Dir::Var => m.dir_var,
            }),
        }
    }

    fn yaml(&self) -> String {
        let d = |d: &Dir| match d {
            Dir::Fixed(k) => dir_path(*k),
            Dir::Var => "src/${dir}".to_string(),
        };
        match self {
            Pattern::File(p) => p.clone(),
            Pattern::Glob(dir, ext) => format!("{}/*.{ext}", d(dir)),
            Pattern::Tree(dir, ext) => format!("{}/**/*.{ext}", d(dir)),
            Pattern::Folder(dir) => d(dir),
        }
    }

    /// Whether the pattern matches `path`, with the model's `dir` variable.
    fn matches(&self, m: &Model, path: &str) -> bool {
        if let Pattern::File(p) = self {
            return p == path;
        }
        let prefix = format!("{}/", dir_path(self.dir(m).expect("a folder pattern")));
        let Some(rest) = path.strip_prefix(&prefix) else {
            return false;
        };
        match self {
            Pattern::Glob(_, ext) => !rest.contains('/') && rest.ends_with(&format!(".{ext}")),
            Pattern::Tree(_, ext) => rest.ends_with(&format!(".{ext}")),
            _ => true,
        }
    }

    fn count(&self, m: &Model, except: Option<&str>) -> usize {
        m.paths()
            .filter(|p| Some(p.as_str()) != except && self.matches(m, p))
            .count()
    }

    /// Whether it uses the `dir` variable.
    fn uses_var(&self) -> bool {
        matches!(
            self,
            Pattern::Glob(Dir::Var, _) | Pattern::Tree(Dir::Var, _) | Pattern::Folder(Dir::Var)
        )
    }
}

fn yaml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Model {
    fn generate(rng: &mut Rng) -> Model {
        let mut m = Model {
            files: BTreeMap::new(),
            links: BTreeMap::new(),
            vars: [
                *rng.pick(VAR_VALUES),
                *rng.pick(VAR_VALUES),
                *rng.pick(VAR_VALUES),
            ],
            dir_var: rng.below(DIRS),
            targets: Vec::new(),
            next_id: 0,
            next_file: 0,
        };
        for k in 0..DIRS {
            // At least one `.txt` directly in each folder, so every folder
            // pattern matches something.
            let path = format!("{}/f{}.txt", dir_path(k), m.next_file);
            m.next_file += 1;
            let content = random_content(rng);
            m.files.insert(path, content);
            for _ in 0..rng.below(3) {
                let path = m.new_file_path(rng, k);
                let content = random_content(rng);
                m.files.insert(path, content);
            }
        }
        let n = rng.range(MIN_TARGETS, MAX_TARGETS);
        let layers = rng.range(1, 4.min(n));
        // Layer of each target, non-decreasing, each layer non-empty.
        let mut cuts: BTreeSet<usize> = BTreeSet::new();
        while cuts.len() < layers - 1 {
            cuts.insert(rng.range(1, n - 1));
        }
        let mut layer_of = Vec::with_capacity(n);
        let mut layer = 0;
        for i in 0..n {
            if cuts.contains(&i) {
                layer += 1;
            }
            layer_of.push(layer);
        }
        for i in 0..n {
            let earlier: Vec<usize> = (0..i).filter(|&j| layer_of[j] < layer_of[i]).collect();
            let mut t = m.new_target(rng, &earlier);
            if layer_of[i] > 0 && t.deps.is_empty() && !earlier.is_empty() {
                t.deps.push(m.targets[*rng.pick(&earlier)].id);
            }
            m.targets.push(t);
        }
        m
    }

    fn new_file_path(&mut self, rng: &mut Rng, k: usize) -> String {
        let sub = if rng.chance(1, 3) { "/s" } else { "" };
        let ext = if rng.chance(1, 4) { "md" } else { "txt" };
        let p = format!("{}{sub}/f{}.{ext}", dir_path(k), self.next_file);
        self.next_file += 1;
        p
    }

    fn unused_name(&self, rng: &mut Rng) -> String {
        let free: Vec<&str> = NAMES
            .iter()
            .copied()
            .filter(|n| !self.targets.iter().any(|t| t.name == *n))
            .collect();
        rng.pick(&free).to_string()
    }

    /// A target that may depend on the targets at indices `earlier`.
    fn new_target(&mut self, rng: &mut Rng, earlier: &[usize]) -> Target {
        let id = self.next_id;
        self.next_id += 1;
        let mut srcs = Vec::new();
        for _ in 0..rng.range(0, 3) {
            let p = self.random_pattern(rng);
            if !srcs.contains(&p) {
                srcs.push(p);
            }
        }
        let mut deps = Vec::new();
        if !earlier.is_empty() {
            for _ in 0..rng.range(0, 3) {
                let d = self.targets[*rng.pick(earlier)].id;
                if !deps.contains(&d) {
                    deps.push(d);
                }
            }
        }
        Target {
            id,
            name: self.unused_name(rng),
            srcs,
            deps,
            transform: rng.below(TRANSFORMS.len()),
            env: rng.chance(1, 3).then(|| *rng.pick(ENV_VALUES)),
            echo_env: rng.chance(1, 2),
            var: rng.chance(1, 2).then(|| rng.below(VARS)),
            extra: 0,
        }
    }

    /// A pattern matching at least one file.
    fn random_pattern(&self, rng: &mut Rng) -> Pattern {
        loop {
            let dir = if rng.chance(1, 4) {
                Dir::Var
            } else {
                Dir::Fixed(rng.below(DIRS))
            };
            let ext = if rng.chance(1, 4) { "md" } else { "txt" };
            let p = match rng.below(4) {
                0 => {
                    let files: Vec<&String> = self.paths().collect();
                    Pattern::File(rng.pick(&files).to_string())
                }
                1 => Pattern::Glob(dir, ext),
                2 => Pattern::Tree(dir, ext),
                _ => Pattern::Folder(dir),
            };
            if p.count(self, None) > 0 {
                return p;
            }
        }
    }

    fn index_of(&self, id: usize) -> usize {
        self.targets
            .iter()
            .position(|t| t.id == id)
            .expect("known target id")
    }

    fn name_of(&self, id: usize) -> &str {
        &self.targets[self.index_of(id)].name
    }

    fn cmd(&self, t: &Target) -> String {
        let mut parts = vec![
            r#"find . -type f | sort | while read -r f; do echo "== $f"; cat "$f"; done"#
                .to_string(),
        ];
        for d in &t.deps {
            parts.push(format!("cat $DEPS/{}/o", self.name_of(*d)));
        }
        if let Some(v) = t.var {
            parts.push(format!("echo ${{v{v}}}"));
        }
        if t.echo_env {
            parts.push(r#"echo "E=$E""#.to_string());
        }
        if t.extra > 0 {
            parts.push(format!("echo extra{}", t.extra));
        }
        format!(
            "{{ {}; }} | {} > $OUT/o # id{}",
            parts.join("; "),
            TRANSFORMS[t.transform],
            t.id
        )
    }

    fn yaml(&self) -> String {
        let mut y = String::from("vars:\n");
        for (i, v) in self.vars.iter().enumerate() {
            writeln!(y, "  v{i}: {}", yaml_str(v)).unwrap();
        }
        writeln!(y, "  dir: d{}", self.dir_var).unwrap();
        y.push_str("targets:\n");
        for t in &self.targets {
            writeln!(y, "  {}:\n    rule: run", t.name).unwrap();
            if !t.srcs.is_empty() {
                let s: Vec<String> = t.srcs.iter().map(|p| yaml_str(&p.yaml())).collect();
                writeln!(y, "    srcs: [{}]", s.join(", ")).unwrap();
            }
            if !t.deps.is_empty() {
                let d: Vec<&str> = t.deps.iter().map(|d| self.name_of(*d)).collect();
                writeln!(y, "    deps: [{}]", d.join(", ")).unwrap();
            }
            if let Some(e) = t.env {
                writeln!(y, "    env: {{E: {}}}", yaml_str(e)).unwrap();
            }
            writeln!(y, "    cmd: {}\n    outs: [o]", yaml_str(&self.cmd(t))).unwrap();
        }
        y
    }

    /// Whether `path` can be deleted without leaving a pattern (or a
    /// plain-file source) matching nothing.
    fn removable(&self, path: &str) -> bool {
        self.targets.iter().all(|t| {
            t.srcs
                .iter()
                .all(|p| !p.matches(self, path) || p.count(self, Some(path)) > 0)
        })
    }

    /// Every source path: regular files and symlinks.
    fn paths(&self) -> impl Iterator<Item = &String> {
        self.files.keys().chain(self.links.keys())
    }

    fn is_link_target(&self, path: &str) -> bool {
        self.links.values().any(|t| t == path)
    }

    fn dependents(&self, id: usize) -> usize {
        self.targets.iter().filter(|t| t.deps.contains(&id)).count()
    }
}

// ---------------------------------------------------------------------------
// Edits.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Initial,
    ChangeSource,
    ChangeSourceKeepMtime,
    Touch,
    Chmod,
    AddSource,
    RemoveSource,
    MoveSource,
    LinkSource,
    AddDep,
    RemoveDep,
    ChangeCmd,
    ChangeEnv,
    ChangeVar,
    ChangeDirVar,
    Rename,
    AddTarget,
    RemoveTarget,
    DeleteOut,
    DeleteOutTarget,
}

fn write_file(ws: &Ws, rel: &str, content: &str) {
    let p = ws.path().join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

fn set_mtime(ws: &Ws, rel: &str, t: SystemTime) {
    fs::File::options()
        .write(true)
        .open(ws.path().join(rel))
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// A small edit of `s` that keeps its size.
fn same_size_edit(rng: &mut Rng, s: &str) -> Option<String> {
    let positions: Vec<usize> = s
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b != b'\n')
        .map(|(i, _)| i)
        .collect();
    if positions.is_empty() {
        return None;
    }
    let i = *rng.pick(&positions);
    let mut bytes = s.as_bytes().to_vec();
    let choices: Vec<u8> = b"abc ".iter().copied().filter(|c| *c != bytes[i]).collect();
    bytes[i] = *rng.pick(&choices);
    Some(String::from_utf8(bytes).unwrap())
}

/// An edit some transformations erase: a space added or removed, a line
/// repeated, or lines swapped.
fn subtle_edit(rng: &mut Rng, s: &str) -> String {
    let mut lines: Vec<String> = s.lines().map(String::from).collect();
    let i = rng.below(lines.len());
    match rng.below(4) {
        0 => {
            let at = rng.range(0, lines[i].len());
            lines[i].insert(at, ' ');
        }
        1 if lines[i].contains(' ') => {
            let at = lines[i].find(' ').unwrap();
            lines[i].remove(at);
        }
        2 if lines.len() > 1 => {
            let j = rng.below(lines.len());
            lines.swap(i, j);
        }
        _ => {
            let l = lines[i].clone();
            lines.push(l);
        }
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Applies one random edit to the model and the workspace; returns its kind
/// and a description.
fn random_edit(rng: &mut Rng, m: &mut Model, ws: &Ws) -> (Kind, String) {
    loop {
        if let Some(e) = try_edit(rng, m, ws) {
            return e;
        }
    }
}

fn try_edit(rng: &mut Rng, m: &mut Model, ws: &Ws) -> Option<(Kind, String)> {
    let files: Vec<String> = m.files.keys().cloned().collect();
    let paths: Vec<String> = m.paths().cloned().collect();
    let weights: &[(Kind, usize)] = &[
        (Kind::ChangeSource, 6),
        (Kind::ChangeSourceKeepMtime, 2),
        (Kind::Touch, 2),
        (Kind::Chmod, 1),
        (Kind::AddSource, 3),
        (Kind::RemoveSource, 3),
        (Kind::MoveSource, 2),
        (Kind::LinkSource, 2),
        (Kind::AddDep, 3),
        (Kind::RemoveDep, 3),
        (Kind::ChangeCmd, 3),
        (Kind::ChangeEnv, 2),
        (Kind::ChangeVar, 2),
        (Kind::ChangeDirVar, 1),
        (Kind::Rename, 3),
        (Kind::AddTarget, 1),
        (Kind::RemoveTarget, 1),
        (Kind::DeleteOut, 2),
        (Kind::DeleteOutTarget, 1),
    ];
    let total: usize = weights.iter().map(|w| w.1).sum();
    let mut r = rng.below(total);
    let kind = weights
        .iter()
        .find(|(_, w)| {
            if r < *w {
                true
            } else {
                r -= w;
                false
            }
        })
        .unwrap()
        .0;
    let n = m.targets.len();
    let desc = match kind {
        Kind::Initial => unreachable!(),
        Kind::ChangeSource => {
            let f = rng.pick(&paths).clone();
            if let Some(to) = m.links.remove(&f) {
                let new = random_content(rng);
                fs::remove_file(ws.path().join(&f)).unwrap();
                write_file(ws, &f, &new);
                m.files.insert(f.clone(), new.clone());
                return Some((kind, format!("replace symlink {f} -> {to} by {new:?}")));
            }
            let old = m.files[&f].clone();
            let new = if rng.chance(2, 3) {
                subtle_edit(rng, &old)
            } else {
                random_content(rng)
            };
            m.files.insert(f.clone(), new.clone());
            if rng.chance(1, 4) {
                // As editors save: a new file renamed over the old one.
                let tmp = format!("{f}.swp");
                write_file(ws, &tmp, &new);
                fs::rename(ws.path().join(&tmp), ws.path().join(&f)).unwrap();
                format!("change {f} by renaming a new file over it: {old:?} -> {new:?}")
            } else {
                write_file(ws, &f, &new);
                format!("change {f}: {old:?} -> {new:?}")
            }
        }
        Kind::ChangeSourceKeepMtime => {
            let f = rng.pick(&files).clone();
            let old = m.files[&f].clone();
            let new = same_size_edit(rng, &old)?;
            let mtime = fs::metadata(ws.path().join(&f))
                .unwrap()
                .modified()
                .unwrap();
            write_file(ws, &f, &new);
            set_mtime(ws, &f, mtime);
            m.files.insert(f.clone(), new.clone());
            format!("change {f} keeping its size and mtime: {old:?} -> {new:?}")
        }
        Kind::Touch => {
            let f = rng.pick(&paths).clone();
            let now = SystemTime::now();
            let t = match rng.below(3) {
                0 => now,
                1 => now - Duration::from_secs(rng.range(1, 1_000_000) as u64),
                _ => now + Duration::from_secs(rng.range(1, 100) as u64),
            };
            set_mtime(ws, &f, t);
            format!("touch {f}")
        }
        Kind::Chmod => {
            let f = rng.pick(&files).clone();
            let p = ws.path().join(&f);
            let mode = fs::metadata(&p).unwrap().permissions().mode() ^ 0o111;
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            format!("chmod {mode:o} {f}")
        }
        Kind::MoveSource => {
            let candidates: Vec<&String> = files
                .iter()
                .filter(|f| m.removable(f) && !m.is_link_target(f))
                .collect();
            if candidates.is_empty() {
                return None;
            }
            let f = rng.pick(&candidates).to_string();
            let k = rng.below(DIRS);
            let to = m.new_file_path(rng, k);
            let dest = ws.path().join(&to);
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            fs::rename(ws.path().join(&f), dest).unwrap();
            let content = m.files.remove(&f).unwrap();
            m.files.insert(to.clone(), content);
            format!("move {f} to {to}")
        }
        Kind::LinkSource => {
            // Replace a source by a relative symlink to a regular file.
            let f = rng.pick(&paths).clone();
            let targets: Vec<&String> = files.iter().filter(|g| **g != f).collect();
            if m.is_link_target(&f) || targets.is_empty() {
                return None;
            }
            let to = rng.pick(&targets).to_string();
            let rel = format!("{}{to}", "../".repeat(f.matches('/').count()));
            let p = ws.path().join(&f);
            fs::remove_file(&p).unwrap();
            std::os::unix::fs::symlink(&rel, &p).unwrap();
            m.files.remove(&f);
            m.links.insert(f.clone(), to.clone());
            format!("replace {f} by a symlink to {rel}")
        }
        Kind::AddSource => {
            let k = rng.below(DIRS);
            let f = m.new_file_path(rng, k);
            let content = random_content(rng);
            write_file(ws, &f, &content);
            m.files.insert(f.clone(), content.clone());
            format!("add {f}: {content:?}")
        }
        Kind::RemoveSource => {
            let candidates: Vec<&String> = paths
                .iter()
                .filter(|f| m.removable(f) && !m.is_link_target(f))
                .collect();
            if candidates.is_empty() {
                return None;
            }
            let f = rng.pick(&candidates).to_string();
            fs::remove_file(ws.path().join(&f)).unwrap();
            m.files.remove(&f);
            m.links.remove(&f);
            format!("remove {f}")
        }
        Kind::AddDep => {
            let i = rng.range(1, n - 1);
            let candidates: Vec<usize> = (0..i)
                .map(|j| m.targets[j].id)
                .filter(|id| !m.targets[i].deps.contains(id))
                .collect();
            if candidates.is_empty() || m.targets[i].deps.len() >= 4 {
                return None;
            }
            let d = *rng.pick(&candidates);
            let at = rng.range(0, m.targets[i].deps.len());
            m.targets[i].deps.insert(at, d);
            format!("{} now depends on {}", m.targets[i].name, m.name_of(d))
        }
        Kind::RemoveDep => {
            let with: Vec<usize> = (0..n).filter(|&i| !m.targets[i].deps.is_empty()).collect();
            if with.is_empty() {
                return None;
            }
            let i = *rng.pick(&with);
            let j = rng.below(m.targets[i].deps.len());
            let d = m.targets[i].deps.remove(j);
            format!(
                "{} no longer depends on {}",
                m.targets[i].name,
                m.name_of(d)
            )
        }
        Kind::ChangeCmd => {
            let i = rng.below(n);
            let t = &mut m.targets[i];
            if rng.chance(1, 2) {
                let old = t.transform;
                t.transform = rng.below(TRANSFORMS.len());
                format!(
                    "{}: pipe through `{}` instead of `{}`",
                    t.name, TRANSFORMS[t.transform], TRANSFORMS[old]
                )
            } else if rng.chance(1, 2) {
                t.extra = rng.range(0, 2);
                format!("{}: extra line {}", t.name, t.extra)
            } else {
                t.echo_env = !t.echo_env;
                format!("{}: echo $E {}", t.name, t.echo_env)
            }
        }
        Kind::ChangeEnv => {
            let i = rng.below(n);
            let t = &mut m.targets[i];
            t.env = rng.chance(3, 4).then(|| *rng.pick(ENV_VALUES));
            format!("{}: env {:?}", t.name, t.env)
        }
        Kind::ChangeVar => {
            let v = rng.below(VARS);
            m.vars[v] = *rng.pick(VAR_VALUES);
            format!("var v{v} = {:?}", m.vars[v])
        }
        Kind::ChangeDirVar => {
            let old = m.dir_var;
            let ok: Vec<usize> = (0..DIRS)
                .filter(|&k| {
                    m.dir_var = k;
                    m.targets
                        .iter()
                        .all(|t| t.srcs.iter().all(|p| !p.uses_var() || p.count(m, None) > 0))
                })
                .collect();
            m.dir_var = *rng.pick(&ok);
            format!("var dir = d{} (was d{old})", m.dir_var)
        }
        Kind::Rename => {
            let i = rng.below(n);
            let new = m.unused_name(rng);
            let old = std::mem::replace(&mut m.targets[i].name, new.clone());
            format!("rename {old} to {new}")
        }
        Kind::AddTarget => {
            if n >= MAX_TARGETS {
                return None;
            }
            let earlier: Vec<usize> = (0..n).collect();
            let t = m.new_target(rng, &earlier);
            let d = format!("add target {} ({})", t.name, yaml_line(m, &t));
            m.targets.push(t);
            d
        }
        Kind::RemoveTarget => {
            let leaves: Vec<usize> = (0..n)
                .filter(|&i| m.dependents(m.targets[i].id) == 0)
                .collect();
            if n <= MIN_TARGETS || leaves.is_empty() {
                return None;
            }
            let i = *rng.pick(&leaves);
            let t = m.targets.remove(i);
            format!("remove target {}", t.name)
        }
        Kind::DeleteOut => {
            let out = ws.path().join("out");
            if out.exists() {
                fs::remove_dir_all(out).unwrap();
            }
            "delete out/".to_string()
        }
        Kind::DeleteOutTarget => {
            let t = &m.targets[rng.below(n)].name;
            let dir = ws.path().join("out").join(t);
            if dir.exists() {
                fs::remove_dir_all(dir).unwrap();
            }
            format!("delete out/{t}/")
        }
    };
    Some((kind, desc))
}

fn yaml_line(m: &Model, t: &Target) -> String {
    let srcs: Vec<String> = t.srcs.iter().map(Pattern::yaml).collect();
    let deps: Vec<&str> = t.deps.iter().map(|d| m.name_of(*d)).collect();
    format!("srcs {srcs:?}, deps {deps:?}")
}

// ---------------------------------------------------------------------------
// Observing builds.

/// Every file, folder and symlink under a folder, by relative path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Entry {
    Dir,
    File { bytes: Vec<u8>, exec: bool },
    Symlink(String),
}

fn snapshot(root: &Path, skip: &[&str]) -> BTreeMap<String, Entry> {
    fn walk(root: &Path, rel: &str, skip: &[&str], into: &mut BTreeMap<String, Entry>) {
        let Ok(entries) = fs::read_dir(root.join(rel)) else {
            return;
        };
        for e in entries {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if skip.contains(&path.as_str()) {
                continue;
            }
            let meta = fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                into.insert(path.clone(), Entry::Dir);
                walk(root, &path, skip, into);
            } else if meta.is_symlink() {
                let to = fs::read_link(e.path()).unwrap();
                into.insert(path, Entry::Symlink(to.display().to_string()));
            } else {
                let bytes = fs::read(e.path()).unwrap();
                let exec = meta.permissions().mode() & 0o111 != 0;
                into.insert(path, Entry::File { bytes, exec });
            }
        }
    }
    let mut into = BTreeMap::new();
    walk(root, "", skip, &mut into);
    into
}

fn describe(tree: &BTreeMap<String, Entry>) -> String {
    let mut s = String::new();
    for (p, e) in tree {
        match e {
            Entry::Dir => writeln!(s, "  {p}/"),
            Entry::File { bytes, exec } => writeln!(
                s,
                "  {p}{}: {:?}",
                if *exec { " (x)" } else { "" },
                String::from_utf8_lossy(bytes)
            ),
            Entry::Symlink(to) => writeln!(s, "  {p} -> {to}"),
        }
        .unwrap();
    }
    s
}

/// `name -> (status, key, output)` of a `--json` document.
type Targets = BTreeMap<String, (String, String, String)>;

fn targets_of(doc: &Value) -> Option<Targets> {
    doc["targets"]
        .as_object()?
        .iter()
        .map(|(k, v)| {
            Some((
                k.clone(),
                (
                    v["status"].as_str()?.to_string(),
                    v["key"].as_str()?.to_string(),
                    v["output"].as_str()?.to_string(),
                ),
            ))
        })
        .collect()
}

struct Clean {
    stdout: String,
    stderr: String,
    targets: Targets,
    out: BTreeMap<String, Entry>,
}

#[derive(Default)]
struct Stats {
    rounds: usize,
    edits: usize,
    incremental_builds: usize,
    clean_builds: usize,
    executed: usize,
    cached: usize,
    clean_executed: usize,
    /// Cached targets with a dependency executed in the same build.
    cutoffs: usize,
    kinds: BTreeMap<String, usize>,
}

impl Stats {
    fn add(&mut self, o: Stats) {
        self.rounds += o.rounds;
        self.edits += o.edits;
        self.incremental_builds += o.incremental_builds;
        self.clean_builds += o.clean_builds;
        self.executed += o.executed;
        self.cached += o.cached;
        self.clean_executed += o.clean_executed;
        self.cutoffs += o.cutoffs;
        for (k, n) in o.kinds {
            *self.kinds.entry(k).or_default() += n;
        }
    }
}

struct Round {
    seed: u64,
    round: usize,
    ws: Ws,
    log: Vec<String>,
    yaml: String,
    /// Every key this store has built or found cached.
    seen: HashSet<String>,
    previous: Option<(Targets, BTreeMap<String, Entry>)>,
    /// Clean builds by workspace contents: after a touch or a deletion of
    /// `out/` the clean build is the same.
    clean_cache: HashMap<BTreeMap<String, Entry>, Rc<Clean>>,
    last: Option<(String, String)>,
    last_clean: Option<Rc<Clean>>,
}

impl Round {
    fn fail(&self, what: &str) -> ! {
        let mut msg = String::new();
        writeln!(
            msg,
            "\n=== equivalence counter-example: seed {} round {} ===\n{what}\n\nreplay: STRATA_EQUIV_SEED={} STRATA_EQUIV_ROUND={} cargo test --test equivalence\n\nedits:",
            self.seed, self.round, self.seed, self.round
        )
        .unwrap();
        for (i, e) in self.log.iter().enumerate() {
            writeln!(msg, "  {i}. {e}").unwrap();
        }
        writeln!(msg, "\nBUILD.yaml:\n{}", self.yaml).unwrap();
        if let Some((stdout, stderr)) = &self.last {
            writeln!(
                msg,
                "incremental build --json:\n{stdout}\nincremental stderr:\n{stderr}"
            )
            .unwrap();
        }
        if let Some(c) = &self.last_clean {
            writeln!(
                msg,
                "clean build --json:\n{}\nclean stderr:\n{}",
                c.stdout, c.stderr
            )
            .unwrap();
        }
        panic!("{msg}");
    }

    /// The workspace without `out/`: what a clean build starts from.
    fn sources(&self) -> BTreeMap<String, Entry> {
        snapshot(self.ws.path(), &["out"])
    }

    fn build(&self, ws: &Ws) -> Run {
        ws.run(&["build", "--json", "-j2"])
    }

    fn clean_build(&mut self, stats: &mut Stats) -> Rc<Clean> {
        let files = self.sources();
        if let Some(c) = self.clean_cache.get(&files) {
            return c.clone();
        }
        let fresh = Ws::new();
        for (p, e) in &files {
            let path = fresh.path().join(p);
            match e {
                Entry::Dir => fs::create_dir_all(path).unwrap(),
                Entry::File { bytes, exec } => {
                    fs::write(&path, bytes).unwrap();
                    let mode = if *exec { 0o755 } else { 0o644 };
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
                }
                Entry::Symlink(to) => std::os::unix::fs::symlink(to, &path).unwrap(),
            }
        }
        let r = self.build(&fresh);
        stats.clean_builds += 1;
        let targets = targets_of(&serde_json::from_str(&r.stdout).unwrap_or(Value::Null));
        let clean = Rc::new(Clean {
            stdout: r.stdout.clone(),
            stderr: r.stderr.clone(),
            targets: targets.clone().unwrap_or_default(),
            out: snapshot(&fresh.path().join("out"), &[".strata"]),
        });
        self.last_clean = Some(clean.clone());
        if r.code != 0 || targets.is_none() {
            self.fail(&format!("the clean build failed with exit code {}", r.code));
        }
        for (name, (status, _, _)) in &clean.targets {
            if status != "executed" {
                self.fail(&format!(
                    "clean build in a fresh store: `{name}` is {status}, not executed"
                ));
            }
        }
        stats.clean_executed += clean.targets.len();
        self.clean_cache.insert(files, clean.clone());
        clean
    }

    /// Builds after `kind`, and checks (a), (b) and (c).
    fn step(&mut self, m: &Model, kind: Kind, stats: &mut Stats) {
        let yaml = m.yaml();
        if yaml != self.yaml {
            write_file(&self.ws, "BUILD.yaml", &yaml);
            self.yaml = yaml;
        }
        *stats.kinds.entry(format!("{kind:?}")).or_default() += 1;
        let r = self.build(&self.ws);
        stats.incremental_builds += 1;
        self.last = Some((r.stdout.clone(), r.stderr.clone()));
        self.last_clean = None;
        if r.code != 0 {
            self.fail(&format!(
                "the incremental build failed with exit code {}",
                r.code
            ));
        }
        let doc: Value = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| self.fail(&format!("stdout is not JSON: {e}")));
        let Some(inc) = targets_of(&doc) else {
            self.fail("a target lacks status, key or output")
        };
        let out = snapshot(&self.ws.path().join("out"), &[".strata"]);

        // The build covers exactly the targets of the model.
        let names: BTreeSet<&str> = m.targets.iter().map(|t| t.name.as_str()).collect();
        let got: BTreeSet<&str> = inc.keys().map(String::as_str).collect();
        if names != got {
            self.fail(&format!("built targets {got:?}, expected {names:?}"));
        }

        // (a) Same keys, outputs and out/ as a clean build in a fresh store.
        let clean = if kind == Kind::Initial {
            // The first build is a clean build in a fresh store: it is the
            // reference for the edits that return to this state.
            let clean = Rc::new(Clean {
                stdout: r.stdout.clone(),
                stderr: r.stderr.clone(),
                targets: inc.clone(),
                out: out.clone(),
            });
            self.clean_cache.insert(self.sources(), clean.clone());
            clean
        } else {
            self.clean_build(stats)
        };
        self.last_clean = Some(clean.clone());
        for (name, (_, key, output)) in &inc {
            let Some((_, ckey, coutput)) = clean.targets.get(name) else {
                self.fail(&format!("`{name}` is missing from the clean build"));
            };
            if output != coutput {
                self.fail(&format!(
                    "(a) `{name}`: incremental output {output} != clean output {coutput}"
                ));
            }
            if key != ckey {
                self.fail(&format!(
                    "(a) `{name}`: incremental key {key} != clean key {ckey} (keys must not depend on history or paths)"
                ));
            }
        }
        if out != clean.out {
            self.fail(&format!(
                "(a) out/ differs from the clean build's\nincremental out/:\n{}clean out/:\n{}",
                describe(&out),
                describe(&clean.out)
            ));
        }

        // (b) Executed exactly when the key is new to this store.
        let expected: BTreeSet<&str> = inc
            .iter()
            .filter(|(_, (_, key, _))| !self.seen.contains(key))
            .map(|(name, _)| name.as_str())
            .collect();
        let executed: BTreeSet<&str> = inc
            .iter()
            .filter(|(_, (status, _, _))| status == "executed")
            .map(|(name, _)| name.as_str())
            .collect();
        let other: Vec<(&String, &String)> = inc
            .iter()
            .filter(|(_, (status, _, _))| status != "executed" && status != "cached")
            .map(|(name, (status, _, _))| (name, status))
            .collect();
        if executed != expected || !other.is_empty() {
            self.fail(&format!(
                "(b) executed {executed:?}, but the targets with keys new to this store are \
                 {expected:?}\n  executed needlessly: {:?}\n  stale (cached with a new key): {:?}\n  \
                 neither executed nor cached: {other:?}",
                executed.difference(&expected).collect::<Vec<_>>(),
                expected.difference(&executed).collect::<Vec<_>>(),
            ));
        }
        let n_exec = executed.len();
        let n_cached = inc.len() - n_exec;
        if doc["executed"] != n_exec || doc["cached"] != n_cached {
            self.fail(&format!(
                "the counts say {} executed and {} cached, the targets {n_exec} and {n_cached}",
                doc["executed"], doc["cached"]
            ));
        }
        for t in &m.targets {
            if !executed.contains(t.name.as_str())
                && t.deps.iter().any(|d| executed.contains(m.name_of(*d)))
            {
                stats.cutoffs += 1;
            }
        }
        stats.executed += n_exec;
        stats.cached += n_cached;

        // (c) A touch or a deleted out/ changes nothing and restores out/.
        if matches!(kind, Kind::Touch | Kind::DeleteOut | Kind::DeleteOutTarget) {
            if n_exec > 0 {
                self.fail(&format!("(c) after {kind:?}, executed {executed:?}"));
            }
            let (prev, prev_out) = self.previous.as_ref().expect("a previous build");
            let strip = |t: &Targets| -> BTreeMap<String, (String, String)> {
                t.iter()
                    .map(|(n, (_, k, o))| (n.clone(), (k.clone(), o.clone())))
                    .collect()
            };
            if strip(prev) != strip(&inc) {
                self.fail(&format!("(c) after {kind:?}, keys or outputs changed"));
            }
            if *prev_out != out {
                self.fail(&format!(
                    "(c) after {kind:?}, out/ is not restored\nbefore:\n{}after:\n{}",
                    describe(prev_out),
                    describe(&out)
                ));
            }
        }
        self.seen.extend(inc.values().map(|(_, k, _)| k.clone()));
        self.previous = Some((inc, out));
    }
}

fn run_round(seed: u64, round: usize, stats: &mut Stats) {
    let mut rng = Rng::new(seed ^ splitmix(round as u64));
    let mut m = Model::generate(&mut rng);
    let mut r = Round {
        seed,
        round,
        ws: Ws::new(),
        log: Vec::new(),
        yaml: String::new(),
        seen: HashSet::new(),
        previous: None,
        clean_cache: HashMap::new(),
        last: None,
        last_clean: None,
    };
    for (p, content) in &m.files {
        write_file(&r.ws, p, content);
    }
    r.log
        .push(format!("initial build of {} targets", m.targets.len()));
    r.step(&m, Kind::Initial, stats);
    for _ in 0..rng.range(4, 8) {
        let (kind, desc) = random_edit(&mut rng, &mut m, &r.ws);
        r.log.push(desc);
        stats.edits += 1;
        r.step(&m, kind, stats);
    }
    stats.rounds += 1;
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    Some(
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => v.parse(),
        }
        .unwrap_or_else(|e| panic!("{name}={v}: {e}")),
    )
}

#[test]
fn incremental_builds_equal_clean_builds_and_are_minimal() {
    let seed = env_u64("STRATA_EQUIV_SEED").unwrap_or_else(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        splitmix(t ^ u64::from(std::process::id()))
    });
    let rounds: Vec<usize> = match env_u64("STRATA_EQUIV_ROUND") {
        Some(r) => vec![r as usize],
        None => (0..env_u64("STRATA_EQUIV_ROUNDS").unwrap_or(25) as usize).collect(),
    };
    eprintln!(
        "equivalence: seed {seed}, {} round(s) (replay: STRATA_EQUIV_SEED={seed})",
        rounds.len()
    );
    // Rounds are independent: run a few at once, as most of a build's time
    // is spent waiting for fsync rather than computing.
    let jobs = env_u64("STRATA_EQUIV_JOBS").unwrap_or(3).max(1) as usize;
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let mut stats = Stats::default();
    let mut first_panic = None;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                s.spawn(|| {
                    let mut stats = Stats::default();
                    while !failed.load(Ordering::SeqCst) {
                        let Some(&round) = rounds.get(next.fetch_add(1, Ordering::SeqCst)) else {
                            break;
                        };
                        let r = panic::catch_unwind(AssertUnwindSafe(|| {
                            run_round(seed, round, &mut stats)
                        }));
                        if let Err(payload) = r {
                            failed.store(true, Ordering::SeqCst);
                            return Err(payload);
                        }
                    }
                    Ok(stats)
                })
            })
            .collect();
        for w in workers {
            match w.join().expect("workers catch their panics") {
                Ok(s) => stats.add(s),
                Err(payload) => {
                    first_panic.get_or_insert(payload);
                }
            }
        }
    });
    if let Some(payload) = first_panic {
        panic::resume_unwind(payload);
    }
    eprintln!(
        "equivalence: seed {seed}: {} rounds, {} edits, {} builds ({} incremental, {} clean), \
         {} executed targets, {} cached targets (incremental builds; {} early cutoffs), \
         {} executed in clean builds, {:.1} s",
        stats.rounds,
        stats.edits,
        stats.incremental_builds + stats.clean_builds,
        stats.incremental_builds,
        stats.clean_builds,
        stats.executed,
        stats.cached,
        stats.cutoffs,
        stats.clean_executed,
        start.elapsed().as_secs_f64()
    );
    eprintln!("equivalence: edits by kind: {:?}", stats.kinds);
}
