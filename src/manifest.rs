//! `strata manifest` and `strata manifest diff`: arguments and printing;
//! the manifests themselves are made and compared by
//! `strata_engine::manifest`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use strata_engine::build;
use strata_engine::manifest::{self, Error, Manifest, ManifestDiff, TargetDiff, Verdict};

use crate::exit;
use crate::report;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ManifestArgs {
    #[command(subcommand)]
    command: Option<ManifestCommand>,
    /// Targets to list (default: every target of the last build). A target
    /// named `diff` is written after `--`.
    targets: Vec<String>,
    /// The BUILD file of the workspace (default: the nearest BUILD.yaml, in
    /// this folder or above).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// The store folder (default as for `build`).
    #[arg(long = "store")]
    store: Option<PathBuf>,
    /// Print the manifest as JSON (the form `manifest diff` compares).
    #[arg(long = "json")]
    json: bool,
}

#[derive(Subcommand)]
enum ManifestCommand {
    /// Compare two manifests saved with `strata manifest --json`; exit 0 when
    /// they are identical, 1 when anything differs (like `diff`).
    Diff {
        /// A manifest saved with `strata manifest --json` (the old side).
        a: PathBuf,
        /// Another (the new side).
        b: PathBuf,
        /// Print the differences as JSON.
        #[arg(long = "json")]
        json: bool,
    },
}

pub fn command(args: ManifestArgs) -> ExitCode {
    if let Some(ManifestCommand::Diff { a, b, json }) = args.command {
        return diff_command(&a, &b, json);
    }
    let store = args.store.unwrap_or_else(build::default_store_dir);
    let store = std::path::absolute(&store).unwrap_or(store);
    let file = match crate::build_file::resolve(args.file) {
        Ok(f) => f,
        Err(code) => return code,
    };
    match manifest::of_last_build(&store, &file, &args.targets) {
        Ok(m) if args.json => {
            print!("{}", manifest::to_json(&m));
            ExitCode::SUCCESS
        }
        Ok(m) => {
            print_manifest(&m);
            ExitCode::SUCCESS
        }
        // Options before `diff` make clap read it as a target name.
        Err(Error::Usage(msg)) if args.targets.first().is_some_and(|t| t == "diff") => {
            report::usage_error(&format!(
                "{msg}\n(to compare manifests: strata manifest diff A B [--json])"
            ))
        }
        Err(e) => error(e),
    }
}

fn error(e: Error) -> ExitCode {
    match e {
        Error::Usage(msg) => report::usage_error(&msg),
        Error::Environment(msg) => report::failure(&msg),
    }
}

fn print_manifest(m: &Manifest) {
    let mut first = true;
    for (name, t) in &m.targets {
        if !first {
            println!();
        }
        first = false;
        let note = if t.reproducible {
            ""
        } else {
            " (declared non-reproducible)"
        };
        println!("{name}  {}{note}", t.rule);
        println!(
            "  key     {}",
            t.key.as_deref().unwrap_or("none (not keyed)")
        );
        println!(
            "  output  {}",
            t.output.as_deref().unwrap_or("none (not built)")
        );
        match &t.inputs {
            Some(inputs) => {
                if let Some(how) = inputs.execution() {
                    println!("  runs    {how}");
                }
                for (path, digest) in &inputs.sources {
                    println!("  source  {path}  {digest}");
                }
                for (dep, digest) in &inputs.deps {
                    println!("  dep     {dep}  {digest}");
                }
            }
            None if t.key.is_some() => {
                println!("  inputs  unknown (the action is no longer in the store)")
            }
            None => {}
        }
        match &t.files {
            Some(files) => {
                for f in files {
                    println!("  {:<7} {}", f.kind.name(), file_line(f));
                }
            }
            None if t.output.is_some() => {
                println!("  files   unknown (the output tree is no longer in the store)")
            }
            None => {}
        }
    }
}

/// `path  size  digest`, with whatever else the entry records.
fn file_line(f: &manifest::FileEntry) -> String {
    let mut s = f.path.clone();
    if let (Some(size), Some(digest)) = (f.size, &f.digest) {
        s.push_str(&format!("  {size}  {digest}"));
    }
    if f.executable == Some(true) {
        s.push_str("  executable");
    }
    if let Some(target) = &f.target {
        s.push_str(&format!(" -> {target}"));
    }
    if let (Some(major), Some(minor)) = (f.major, f.minor) {
        s.push_str(&format!("  {major}:{minor}"));
    }
    if let Some(mode) = &f.mode {
        s.push_str(&format!("  mode {mode}"));
    }
    if let (Some(uid), Some(gid)) = (f.uid, f.gid) {
        s.push_str(&format!("  owner {uid}:{gid}"));
    }
    s
}

fn diff_command(a_path: &Path, b_path: &Path, json: bool) -> ExitCode {
    let (a, b) = match (manifest::read(a_path), manifest::read(b_path)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return error(e),
    };
    let d = match manifest::diff(&a, &b) {
        Ok(d) => d,
        Err(msg) => return report::usage_error(&msg),
    };
    if json {
        let mut doc = serde_json::to_value(&d).expect("diffs serialize");
        doc["version"] = manifest::VERSION.into();
        doc["identical"] = d.is_empty().into();
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("JSON values serialize")
        );
    } else {
        print_diff(&d, a_path, b_path);
    }
    if d.is_empty() {
        ExitCode::SUCCESS
    } else {
        exit::failed()
    }
}

fn print_diff(d: &ManifestDiff, a_path: &Path, b_path: &Path) {
    if d.is_empty() {
        println!("no differences");
        return;
    }
    let (a, b) = (a_path.display(), b_path.display());
    let sections = [
        (
            Verdict::ReproducibilityFailure,
            "REPRODUCIBILITY FAILURE (same key, different output)",
        ),
        (Verdict::KeyChanged, "key changed"),
        (
            Verdict::BuiltOnOneSide,
            "same key, built on one side only (failed or skipped on the other)",
        ),
        (
            Verdict::NonReproducible,
            "same key, different output, as expected: the rule is declared non-reproducible",
        ),
    ];
    for (verdict, title) in sections {
        let targets: Vec<&TargetDiff> = d.with(verdict).collect();
        if targets.is_empty() {
            continue;
        }
        println!("{title}:");
        for t in targets {
            print_target(t);
        }
    }
    for (names, side) in [(&d.only_in_a, &a), (&d.only_in_b, &b)] {
        if !names.is_empty() {
            println!("only in {side}: {}", names.join(", "));
        }
    }
    let count = |v| d.with(v).count();
    println!(
        "{} reproducibility failure(s), {} key(s) changed, {} built on one side, {} non-reproducible; {} only in {a}, {} only in {b}",
        count(Verdict::ReproducibilityFailure),
        count(Verdict::KeyChanged),
        count(Verdict::BuiltOnOneSide),
        count(Verdict::NonReproducible),
        d.only_in_a.len(),
        d.only_in_b.len(),
    );
}

fn print_target(t: &TargetDiff) {
    let key = |k: &Option<String>| k.as_deref().map(manifest::short).unwrap_or("none".into());
    let output = |o: &Option<String>| o.as_deref().map(manifest::short).unwrap_or("none".into());
    if t.verdict == Verdict::KeyChanged {
        println!("  {}: key {} -> {}", t.name, key(&t.key_a), key(&t.key_b));
        match &t.changes {
            Some(changes) => {
                for c in changes {
                    println!("    {c}");
                }
            }
            None => println!("    (what changed is unknown: a manifest lacks the key's parts)"),
        }
    } else {
        println!("  {}: key {}", t.name, key(&t.key_a));
    }
    if t.output_a == t.output_b {
        println!("    output unchanged");
    } else {
        println!(
            "    output {} -> {}",
            output(&t.output_a),
            output(&t.output_b)
        );
    }
    for f in t.files.iter().flatten() {
        println!("    {f}");
    }
}
