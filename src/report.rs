//! What the user sees after a build: the summary, the JSON document, and
//! failures with their logs and diagnostics.

use std::process::ExitCode;

use strata_engine::audit::archive::EntryDiff;
use strata_engine::audit::compare::FileDiff;
use strata_engine::audit::{AuditReport, Cause, Verdict};
use strata_engine::build::{BuildReport, Status};
use strata_load::ConfigError;
use strata_remote::ExecutionStats;

use crate::exit;

/// `execution`: what the remote executor did, when the build had one.
pub fn build_report(r: &BuildReport, execution: Option<&ExecutionStats>, json: bool) -> ExitCode {
    for t in r.targets.iter().filter(|t| t.status == Status::Failed) {
        let Some(f) = &t.failure else { continue };
        match &t.diagnostic {
            Some(d) => eprintln!("{:?}", miette::Report::new(d.clone())),
            None => eprintln!("error: target `{}` failed: {}", t.name, f.failure),
        }
        for (name, text) in [("stdout", &f.stdout), ("stderr", &f.stderr)] {
            if !text.trim().is_empty() {
                eprintln!("--- {name} of {} ---\n{}", t.name, text.trim_end());
            }
        }
        if let Some(s) = &f.scratch {
            eprintln!("scratch folder kept for inspection: {}", s.display());
        }
    }
    let (executed, cached, failed, skipped) = (
        r.count(Status::Executed),
        r.count(Status::Cached),
        r.count(Status::Failed),
        r.count(Status::Skipped),
    );
    if json {
        let targets: serde_json::Map<String, serde_json::Value> = r
            .targets
            .iter()
            .map(|t| {
                let mut v = serde_json::json!({
                    "status": t.status.as_str(),
                    "key": t.key.map(|k| k.hex()),
                    "output": t.output.map(|o| r.digest_string(&o)),
                });
                if !r.configurations.is_empty() {
                    v["configurations"] = t.configurations.clone().into();
                }
                (t.name.clone(), v)
            })
            .collect();
        let mut doc = serde_json::json!({
            "targets": targets,
            "executed": executed,
            "cached": cached,
            "failed": failed,
            "skipped": skipped,
        });
        if !r.configurations.is_empty() {
            doc["configurations"] = r.configurations.clone().into();
            doc["shared"] = r.shared.into();
        }
        if let Some(remote) = &r.remote {
            doc["remote"] = serde_json::to_value(remote).expect("stats serialize");
        }
        if let Some(e) = execution {
            doc["remote_executed"] = e.executed.into();
            doc["remote_execution"] = serde_json::json!({
                "executed": e.executed,
                "cached": e.cached,
                "fell_back": e.fell_back,
                "uploaded_blobs": e.uploaded_blobs,
                "uploaded_bytes": e.uploaded_bytes,
                "downloaded_bytes": e.downloaded_bytes,
            });
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("JSON values serialize")
        );
    }
    let remotely = match execution {
        Some(e) if e.cached > 0 => format!(
            " ({} ran remotely, {} from the remote executor's cache)",
            e.executed, e.cached
        ),
        Some(e) => format!(" ({} ran remotely)", e.executed),
        None => String::new(),
    };
    let summary = format!(
        "{executed} executed{remotely}, {cached} cached, {failed} failed in {:.2} s",
        r.elapsed.as_secs_f64()
    );
    let mut extra = if skipped > 0 {
        format!(" ({skipped} skipped)")
    } else {
        String::new()
    };
    match r.configurations.len() {
        0 => {}
        1 => extra.push_str(&format!("; 1 configuration ({})", r.configurations[0])),
        n => extra.push_str(&format!(
            "; {n} configurations ({}), {} {} shared by them, built once",
            r.configurations.join(", "),
            r.shared,
            if r.shared == 1 { "target" } else { "targets" },
        )),
    }
    if json {
        eprintln!("{summary}{extra}");
    } else {
        println!("{summary}{extra}");
    }
    if let Some(s) = &r.remote {
        let line = format!(
            "remote cache ({}): {}, {}, {} downloaded, {} uploaded in {}{}{}{}{}",
            s.digest_function,
            count(s.hits, "hit", "hits"),
            count(s.misses, "miss", "misses"),
            human_bytes(s.downloaded_bytes),
            human_bytes(s.uploaded_bytes),
            count(s.uploads, "result", "results"),
            if s.untrusted > 0 {
                format!(", {} untrusted", s.untrusted)
            } else {
                String::new()
            },
            if s.refused_blobs > 0 {
                format!(
                    ", {} refused",
                    count(s.refused_blobs, "tampered blob", "tampered blobs")
                )
            } else {
                String::new()
            },
            if s.rejected_entries > 0 {
                format!(
                    ", {} rejected",
                    count(s.rejected_entries, "entry", "entries")
                )
            } else {
                String::new()
            },
            if s.switched_off {
                ", switched off after errors"
            } else {
                ""
            },
        );
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    if r.interrupted {
        eprintln!(
            "interrupted: running steps were killed; the store is consistent and the next build resumes"
        );
        return exit::interrupted();
    }
    if failed > 0 || skipped > 0 {
        exit::failed()
    } else {
        ExitCode::SUCCESS
    }
}

pub fn config_errors(errors: Vec<ConfigError>) -> ExitCode {
    for e in errors {
        eprintln!("{:?}", miette::Report::new(e));
    }
    exit::usage()
}

pub fn usage_error(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    exit::usage()
}

pub fn failure(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    exit::failed()
}

/// `strata clean`: what went, and why the folder stays if it does.
pub fn cleaned(out_dir: &std::path::Path, c: &strata_engine::materialize::Cleaned) {
    let dir = out_dir.display();
    if c.folder_removed {
        println!("removed {dir}");
    } else {
        let why = if out_dir.is_symlink() {
            "a symlink Strata did not make"
        } else {
            "it holds entries Strata did not place"
        };
        println!(
            "removed {} from {dir}; kept {dir}: {why}",
            count(c.removed.len(), "output", "outputs")
        );
    }
}

/// `strata store verify --repair`: what was removed, before the store is
/// verified again.
pub fn repair_report(r: &strata_engine::RepairReport) {
    for (_, path) in &r.blobs {
        println!("removed corrupt object {}", path.display());
    }
    for (path, why) in &r.action_results {
        println!("removed action-cache entry {}: {why}", path.display());
    }
    for (path, why) in &r.failed {
        eprintln!("error: cannot remove {}: {why}", path.display());
    }
}

pub fn verify_report(r: &strata_engine::VerifyReport) -> ExitCode {
    for (digest, path, problem) in &r.corrupt {
        println!("corrupt object {digest} ({}): {problem}", path.display());
    }
    for (path, problem) in &r.bad_action_results {
        println!("bad action-cache entry {}: {problem}", path.display());
    }
    for (path, problem) in &r.incomplete_action_results {
        println!(
            "incomplete action-cache entry {}: {problem}",
            path.display()
        );
    }
    for path in &r.stray {
        println!("stray file {}", path.display());
    }
    let functions: Vec<&str> = r.functions.iter().map(|f| f.name()).collect();
    println!(
        "{}, {} checked ({}): {}",
        count(r.objects, "object", "objects"),
        count(r.action_results, "action result", "action results"),
        if functions.is_empty() {
            "empty store".to_string()
        } else {
            functions.join(", ")
        },
        if r.is_clean() {
            "no corruption"
        } else {
            "CORRUPTION FOUND"
        }
    );
    if r.temporaries > 0 {
        println!(
            "{} left by interrupted writes (harmless)",
            count(r.temporaries, "temporary file", "temporary files")
        );
    }
    if r.is_clean() {
        ExitCode::SUCCESS
    } else {
        exit::failed()
    }
}

/// `strata explain`: the explanation as an indented tree (or JSON).
/// One explanation, or (a matrix build) one per configuration: a JSON
/// array then, explanations one after another for people.
pub fn explanations(
    list: &[strata_engine::explain::Explanation],
    matrix: bool,
    json: bool,
) -> ExitCode {
    if json {
        let doc = match (matrix, list) {
            (false, [one]) => serde_json::to_value(one),
            _ => serde_json::to_value(list),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&doc.expect("explanations serialize"))
                .expect("JSON values serialize")
        );
        return ExitCode::SUCCESS;
    }
    for (i, e) in list.iter().enumerate() {
        if i > 0 {
            println!();
        }
        explanation(e);
    }
    ExitCode::SUCCESS
}

fn explanation(e: &strata_engine::explain::Explanation) {
    print_explanation(e, 0);
    let c = &e.components;
    if let Some(how) = c.execution() {
        println!("`{}` runs {how}", e.target);
    }
    println!("key parts of `{}`:", e.target);
    println!("  rule version: {}", c.salt);
    for (k, v) in &c.properties {
        println!("  {k}: {v}");
    }
    if !c.arguments.is_empty() {
        println!("  command: {:?}", c.arguments.join(" "));
    }
    for (k, v) in &c.env {
        println!("  env {k}={v:?}");
    }
    for (path, d) in &c.sources {
        println!("  source {path}  {d}");
    }
    for (name, d) in &c.deps {
        println!("  dependency {name}  {d}");
    }
}

fn print_explanation(e: &strata_engine::explain::Explanation, depth: usize) {
    let pad = "  ".repeat(depth);
    let state = match e.state {
        "cached" => "cached (a build would not run it)",
        "pending" => {
            "waits for a dependency that would run (cached if that one reproduces its last output)"
        }
        _ => "would run",
    };
    println!(
        "{pad}`{}` ({}): {state}, key {}..",
        e.target,
        e.rule,
        &e.key[..12]
    );
    match &e.last_build {
        None => println!("{pad}  never built before in this workspace"),
        Some(last) if last.key == e.key => println!(
            "{pad}  its own inputs are unchanged since its last build ({}, {})",
            last.when, last.status
        ),
        Some(last) => {
            println!(
                "{pad}  changed since its last build ({}, {}, key {}..):",
                last.when,
                last.status,
                last.key.get(..12).unwrap_or(&last.key)
            );
            for c in &e.changes {
                println!("{pad}    {c}");
            }
            if e.changes.is_empty() {
                println!("{pad}    (the last key's parts are no longer in the store)");
            }
        }
    }
    for b in &e.because {
        print_explanation(b, depth + 1);
    }
}

/// `build --explain`: one line per executed target (on stderr, beside the
/// progress).
pub fn executed_causes(store_dir: &std::path::Path, workspace_tag: &str) {
    let Ok(store) = strata_engine::open_store(store_dir) else {
        return;
    };
    for (name, cause) in strata_engine::explain::executed_causes(&store, workspace_tag) {
        eprintln!("explain: `{name}`: {cause}");
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `strata log`: a one-line heading on stderr, then the step's stdout and
/// stderr on ours, byte for byte.
pub fn step_log(log: Result<strata_engine::logs::StepLog, strata_engine::logs::Error>) -> ExitCode {
    use std::io::Write;
    let log = match log {
        Ok(log) => log,
        Err(strata_engine::logs::Error::Usage(msg)) => return usage_error(&msg),
        Err(strata_engine::logs::Error::Gone(msg)) => return failure(&msg),
    };
    let when = &log.when;
    let how = match log.status.as_str() {
        "cached" => {
            format!("cached in the build of {when}: the log of the run that made its result")
        }
        status => format!("{status} in the build of {when}"),
    };
    eprintln!("log of `{}` ({}), {how}", log.target, log.rule);
    let Some(streams) = log.streams else {
        eprintln!(
            "(`{}` targets keep no log: Strata does their work itself)",
            log.rule
        );
        return ExitCode::SUCCESS;
    };
    if streams.stdout.is_empty() && streams.stderr.is_empty() {
        eprintln!("(it printed nothing)");
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&streams.stdout).and_then(|()| out.flush());
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(&streams.stderr).and_then(|()| err.flush());
    ExitCode::SUCCESS
}

/// `n` and the noun that goes with it: "1 workspace", "2 workspaces".
pub fn count<N: std::fmt::Display + PartialEq + From<u8>>(n: N, one: &str, many: &str) -> String {
    let noun = if n == N::from(1) { one } else { many };
    format!("{n} {noun}")
}

/// A failed step's logs and kept scratch folder.
fn step_logs(name: &str, f: &strata_exec::StepFailure) {
    for (stream, text) in [("stdout", &f.stdout), ("stderr", &f.stderr)] {
        if !text.trim().is_empty() {
            eprintln!("--- {stream} of {name} ---\n{}", text.trim_end());
        }
    }
    if let Some(s) = &f.scratch {
        eprintln!("scratch folder kept for inspection: {}", s.display());
    }
}

/// `strata audit`'s report: exit 0 when everything that promises to be
/// reproducible is, 1 otherwise, 130 when interrupted.
pub fn audit_report(r: &AuditReport, json: bool) -> ExitCode {
    for (name, t) in &r.targets {
        if let (Some(f), Some(e)) = (&t.failure, &t.error) {
            eprintln!("error: target `{name}` failed in the audit: {e}");
            step_logs(name, f);
        }
    }
    let c = &r.counts;
    let skipped = if c.skipped > 0 {
        format!(" ({} skipped)", c.skipped)
    } else {
        String::new()
    };
    let summary = format!(
        "{} reproducible, {} not reproducible, {} declared non-reproducible, {} failed in {:.2} s{skipped}",
        c.reproducible,
        c.not_reproducible,
        c.declared_non_reproducible,
        c.failed,
        r.elapsed.as_secs_f64()
    );
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(r).expect("JSON values serialize")
        );
        eprintln!("{summary}");
    } else {
        print!("{}", audit_text(r));
        println!("{summary}");
    }
    if r.interrupted {
        eprintln!("interrupted: the audit is incomplete");
        return exit::interrupted();
    }
    if r.reproducible {
        ExitCode::SUCCESS
    } else {
        exit::failed()
    }
}

fn audit_text(r: &AuditReport) -> String {
    use std::fmt::Write;
    let p = &r.perturbations;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rebuilt with: scratch folders {}, TZ={}, LANG={}, umask {}, environment order {}, \
         directory order {}, -j {} ({})",
        p.scratch,
        p.tz,
        p.lang,
        p.umask,
        p.environment_order,
        p.directory_order,
        p.jobs,
        p.isolation
    );
    let named = |v: Verdict| -> Vec<&str> {
        r.order
            .iter()
            .filter(|n| r.targets.get(*n).is_some_and(|t| t.status == v))
            .map(String::as_str)
            .collect()
    };
    let same = named(Verdict::Reproducible);
    if !same.is_empty() {
        let _ = writeln!(out, "reproducible: {}", same.join(", "));
    }
    for name in &r.order {
        let t = &r.targets[name];
        let heading = match t.status {
            Verdict::Reproducible => continue,
            Verdict::NotReproducible => format!(
                "NOT reproducible: {name} ({})",
                match t.cause {
                    Some(Cause::DependencyDiffered) =>
                        format!("dependency {} already differed", quoted(&t.differing_deps)),
                    _ => "its inputs were identical: this target is where reproducibility breaks"
                        .into(),
                }
            ),
            Verdict::DeclaredNonReproducible => format!(
                "declared non-reproducible: {name} ({}; not a failure)",
                if t.rebuilt.as_ref() == Some(&t.reference) {
                    "identical this time"
                } else {
                    "differs"
                }
            ),
            Verdict::Failed => format!(
                "failed: {name}: {}",
                t.error.as_deref().unwrap_or("unknown error")
            ),
            Verdict::Skipped => format!("skipped: {name} (a dependency failed)"),
        };
        let _ = writeln!(out, "{heading}");
        for f in &t.files {
            let _ = writeln!(out, "  {}", file_line(f));
            if let Some(a) = &f.archive {
                if let Some(at) = &a.order_differs_at {
                    let _ = writeln!(
                        out,
                        "    {} entries in another order, from `{at}`",
                        a.format
                    );
                }
                for e in &a.entries {
                    let _ = writeln!(out, "    entry `{}`: {}", e.name, entry_text(e));
                }
                if a.total > a.entries.len() {
                    let _ = writeln!(
                        out,
                        "    ... and {} more",
                        count(a.total - a.entries.len(), "entry", "entries")
                    );
                }
            }
        }
        if t.files_total > t.files.len() {
            let _ = writeln!(
                out,
                "  ... and {} more",
                count(t.files_total - t.files.len(), "path", "paths")
            );
        }
        for n in &t.notes {
            let _ = writeln!(out, "  note: {n}");
        }
    }
    out
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn file_line(f: &FileDiff) -> String {
    let size = |s: Option<u64>| s.map_or("-".to_string(), |s| count(s, "byte", "bytes"));
    match f.change {
        "content" => format!(
            "{}: content differs (reference {}, rebuilt {}), first difference at byte {}",
            f.path,
            size(f.reference_size),
            size(f.rebuilt_size),
            f.first_difference
                .map_or("?".to_string(), |o| o.to_string())
        ),
        "only-in-reference" => format!("{}: only in the reference", f.path),
        "only-in-rebuilt" => format!("{}: only in the rebuild", f.path),
        other => format!(
            "{}: {other} differs ({})",
            f.path,
            f.detail.as_deref().unwrap_or("")
        ),
    }
}

fn entry_text(e: &EntryDiff) -> String {
    match (e.change, &e.reference, &e.rebuilt) {
        ("changed", Some(a), Some(b)) => e
            .fields
            .iter()
            .map(|f| match *f {
                "size" => format!("size {} -> {}", a.size, b.size),
                "mode" => format!("mode {:04o} -> {:04o}", a.mode, b.mode),
                "mtime" => format!("mtime {} -> {}", a.mtime, b.mtime),
                "owner" => format!("owner {}:{} -> {}:{}", a.uid, a.gid, b.uid, b.gid),
                "kind" => format!("kind {} -> {}", a.kind, b.kind),
                "link" => format!(
                    "link {} -> {}",
                    a.link.as_deref().unwrap_or("-"),
                    b.link.as_deref().unwrap_or("-")
                ),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        ("only-in-reference", ..) => "only in the reference".into(),
        _ => "only in the rebuild".into(),
    }
}
