//! `strata store stats`, `gc` and `verify`: printing what the engine
//! counted, removed or repaired.

use std::path::PathBuf;
use std::process::ExitCode;

use strata_engine::gc::{self, Count, GcOptions, GcReport, Objects, Stats};

use crate::exit;
use crate::report::{self, count};

/// Opens an existing store (these commands never create one).
macro_rules! open_store {
    ($dir:expr) => {{
        if !$dir.exists() {
            return report::usage_error(&format!("no store at {}", $dir.display()));
        }
        match strata_engine::open_store(&$dir) {
            Ok(s) => s,
            Err(e) => return report::failure(&format!("cannot open the store: {e}")),
        }
    }};
}

fn print_json(value: Result<serde_json::Value, serde_json::Error>) {
    let text = value.and_then(|v| serde_json::to_string_pretty(&v));
    println!("{}", text.expect("reports serialize"));
}

pub fn stats(dir: PathBuf, keep_builds: usize, json: bool) -> ExitCode {
    let store = open_store!(dir);
    let stats = match gc::stats(&store, keep_builds) {
        Ok(s) => s,
        Err(e) => return report::failure(&e),
    };
    if json {
        print_json(serde_json::to_value(&stats));
    } else {
        print_stats(&stats);
    }
    ExitCode::SUCCESS
}

fn print_stats(s: &Stats) {
    println!("store {}", s.store.display());
    for (function, o) in &s.by_function {
        row(&format!("blobs ({function})"), o.blobs);
        row(&format!("action results ({function})"), o.action_results);
    }
    println!("{:<28} {:>10} {:>11}", "total", "", human(s.objects.bytes));
    row("temporaries", s.temporaries);
    println!(
        "{:<28} {:>10} {:>11}  ({} in use)",
        "scratch folders",
        s.scratch.folders,
        human(s.scratch.bytes),
        s.scratch.in_use
    );
    row("cache mounts", s.caches);
    row("input trees", s.trees);
    println!(
        "build records of {}:",
        count(s.workspaces.len(), "workspace", "workspaces")
    );
    for w in &s.workspaces {
        let builds = if w.builds == 1 { "build " } else { "builds" };
        println!("  {:>3} {builds}  {}", w.builds, w.build_file);
    }
    println!(
        "reachable from the newest {} of each workspace: {}",
        newest_builds(s.keep_builds),
        objects(&s.reachable)
    );
}

fn row(name: &str, c: Count) {
    println!("{name:<28} {:>10} {:>11}", c.count, human(c.bytes));
}

/// Takes gc's lock exclusively, so no build reads an object while it goes:
/// waiting for running builds (saying so), or with `wait` false failing at
/// once; `undone` says what was not done then ("nothing was collected").
fn exclusive(
    store: &strata_engine::Store,
    wait: bool,
    undone: &str,
) -> Result<gc::StoreLock, ExitCode> {
    let lock_path = gc::lock_path(store);
    let lock = gc::lock_exclusive(store, wait, || {
        eprintln!(
            "waiting for the running builds to finish (they hold {})",
            lock_path.display()
        )
    });
    match lock {
        Ok(Some(l)) => Ok(l),
        Ok(None) => Err(report::failure(&format!(
            "a build is running on this store (it holds {}); {undone}",
            lock_path.display()
        ))),
        Err(e) => Err(report::failure(&format!(
            "cannot lock {}: {e}",
            lock_path.display()
        ))),
    }
}

/// `strata store verify [--repair]`.
pub fn verify(dir: PathBuf, repair: bool) -> ExitCode {
    let store = open_store!(dir);
    if !repair {
        return report::verify_report(&store.verify());
    }
    let _lock = match exclusive(&store, true, "nothing was repaired") {
        Ok(l) => l,
        Err(code) => return code,
    };
    let found = store.verify();
    let repaired = store.repair(&found);
    report::repair_report(&repaired);
    report::verify_report(&store.verify())
}

pub fn gc(dir: PathBuf, opts: &GcOptions, wait: bool, json: bool) -> ExitCode {
    let store = open_store!(dir);
    let lock = match exclusive(&store, wait, "nothing was collected") {
        Ok(l) => l,
        Err(code) => return code,
    };
    // `--docker`: the engine says which trees stay, strata-docker prunes.
    let images = crate::executors::DockerTreeImages;
    let r = match gc::collect(&store, opts, &lock, Some(&images)) {
        Ok(r) => r,
        Err(e) => return report::failure(&e),
    };
    drop(lock);
    if json {
        print_json(serde_json::to_value(&r));
    } else {
        print_gc(&r);
    }
    for e in &r.errors {
        eprintln!("error: {e}");
    }
    if r.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        exit::failed()
    }
}

fn print_gc(r: &GcReport) {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {} ({}) and {} ({}); {} ({}) and {} ({})",
        count(
            r.removed.action_results.count,
            "action result",
            "action results"
        ),
        human(r.removed.action_results.bytes),
        count(r.removed.blobs.count, "blob", "blobs"),
        human(r.removed.blobs.bytes),
        count(r.removed.temporaries.count, "temporary", "temporaries"),
        human(r.removed.temporaries.bytes),
        count(r.removed.scratch.count, "scratch folder", "scratch folders"),
        human(r.removed.scratch.bytes),
    );
    if r.removed.trees.count > 0 {
        println!(
            "{verb} {} ({}) steps no longer mount",
            count(r.removed.trees.count, "input tree", "input trees"),
            human(r.removed.trees.bytes),
        );
    }
    if r.removed.cgroups > 0 {
        println!(
            "{verb} {} that steps of killed builds left",
            count(r.removed.cgroups, "memory cgroup", "memory cgroups")
        );
    }
    println!(
        "store {}: {} (limit {}); the newest {} of each workspace reach {}",
        if r.dry_run { "would hold" } else { "holds" },
        objects(&r.after),
        human(r.max_bytes),
        newest_builds(r.keep_builds),
        human(r.reachable.bytes),
    );
    if let Some(t) = &r.tree_images {
        let in_use = if t.in_use > 0 {
            format!(", {} left because containers use them", t.in_use)
        } else {
            String::new()
        };
        println!(
            "Docker Engine at {}: {verb} {} whose tree is no longer stored; {} kept{in_use}",
            t.host,
            count(t.removed, "tree image", "tree images"),
            t.kept
        );
    }
    if r.over_limit {
        println!(
            "note: still above the limit: what the newest {} reach is never removed (lower --keep-builds to free more)",
            newest_builds(r.keep_builds)
        );
    }
}

fn objects(o: &Objects) -> String {
    format!(
        "{} in {} and {}",
        human(o.bytes),
        count(o.blobs.count, "blob", "blobs"),
        count(o.action_results.count, "action result", "action results")
    )
}

/// "the newest build" or "the newest 5 builds".
fn newest_builds(n: usize) -> String {
    if n == 1 {
        "build".into()
    } else {
        format!("{n} builds")
    }
}

/// Bytes in binary units, as `--max-size` reads them.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
