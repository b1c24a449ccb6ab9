//! What the user sees after a build: the summary, the JSON document, and
//! failures with their logs and diagnostics.

use std::process::ExitCode;

use strata_engine::build::{BuildReport, Status};
use strata_engine::load::ConfigError;

use crate::cli::{EXIT_FAILED, EXIT_USAGE};

pub fn build_report(r: &BuildReport, json: bool) -> ExitCode {
    for t in r.targets.iter().filter(|t| t.status == Status::Failed) {
        let Some(f) = &t.failure else { continue };
        match &t.diagnostic {
            Some(d) => eprintln!("{:?}", miette::Report::new(clone_diag(d))),
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
                (
                    t.name.clone(),
                    serde_json::json!({
                        "status": t.status.as_str(),
                        "key": t.key.map(|k| k.hex()),
                        "output": t.output.map(|o| r.digest_string(&o)),
                    }),
                )
            })
            .collect();
        let mut doc = serde_json::json!({
            "targets": targets,
            "executed": executed,
            "cached": cached,
            "failed": failed,
            "skipped": skipped,
        });
        if let Some(remote) = &r.remote {
            doc["remote"] = serde_json::to_value(remote).expect("stats serialize");
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("JSON values serialize")
        );
    }
    let summary = format!(
        "{executed} executed, {cached} cached, {failed} failed in {:.2} s",
        r.elapsed.as_secs_f64()
    );
    let extra = if skipped > 0 {
        format!(" ({skipped} skipped)")
    } else {
        String::new()
    };
    if json {
        eprintln!("{summary}{extra}");
    } else {
        println!("{summary}{extra}");
    }
    if let Some(s) = &r.remote {
        let line = format!(
            "remote cache ({}): {} hits, {} misses, {} downloaded, {} uploaded in {} results{}{}{}",
            s.digest_function,
            s.hits,
            s.misses,
            human_bytes(s.downloaded_bytes),
            human_bytes(s.uploaded_bytes),
            s.uploads,
            if s.untrusted > 0 { format!(", {} untrusted", s.untrusted) } else { String::new() },
            if s.refused_blobs > 0 { format!(", {} tampered blobs refused", s.refused_blobs) } else { String::new() },
            if s.switched_off { ", switched off after errors" } else { "" },
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
        return ExitCode::from(130);
    }
    if failed > 0 || skipped > 0 {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// Diagnostics are reported by value; rebuild one from its parts.
fn clone_diag(d: &ConfigError) -> ConfigError {
    ConfigError {
        message: d.message.clone(),
        src: d.src.clone(),
        span: d.span,
        label: d.label.clone(),
        help: d.help.clone(),
        place: d.place.clone(),
    }
}

pub fn config_errors(errors: Vec<ConfigError>) -> ExitCode {
    for e in errors {
        eprintln!("{:?}", miette::Report::new(e));
    }
    ExitCode::from(EXIT_USAGE)
}

pub fn usage_error(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(EXIT_USAGE)
}

pub fn failure(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(EXIT_FAILED)
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
    println!(
        "{} objects, {} action results checked: {}",
        r.objects,
        r.action_results,
        if r.is_clean() {
            "no corruption"
        } else {
            "CORRUPTION FOUND"
        }
    );
    if r.temporaries > 0 {
        println!(
            "{} temporary files left by interrupted writes (harmless)",
            r.temporaries
        );
    }
    if r.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// `strata explain`: the explanation as an indented tree (or JSON).
pub fn explanation(e: &strata_engine::explain::Explanation, json: bool) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(e).expect("explanations serialize")
        );
        return ExitCode::SUCCESS;
    }
    print_explanation(e, 0);
    let c = &e.components;
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
    ExitCode::SUCCESS
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
