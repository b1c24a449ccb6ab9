//! `strata sbom`, `strata provenance` and `strata provenance verify`:
//! arguments, files and exit codes. The facts come from
//! `strata_engine::supply` (the last build's record and the store), the
//! documents from strata-supply.
//!
//! Exit codes: 2 for a usage error, including a target the last build did
//! not build (nothing is built for you: run `strata build` first, then ask
//! again); 1 when the store no longer holds what the record names, a file
//! cannot be written, or `verify` rejects a file (the reason is printed).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use strata_engine::build;
use strata_engine::manifest::Error;
use strata_supply::{SbomFormat, dsse, keys, provenance};

use crate::report;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// SPDX 2.3, JSON.
    SpdxJson,
    /// CycloneDX 1.6, JSON.
    CyclonedxJson,
}

#[derive(clap::Args)]
pub struct SbomArgs {
    /// The target (as last built; `<config>/<target>` after a matrix build).
    target: String,
    #[arg(long = "format", value_enum, default_value = "spdx-json")]
    format: Format,
    /// Write the document to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Also list every file of every component with its SHA-256 (the
    /// target's own files are always hashed).
    #[arg(long = "files")]
    files: bool,
    /// A `run` or `stage` target whose output holds its inputs (a disk
    /// image made from a rootfs): what went into it is contained in it, not
    /// only what it was made from (repeatable).
    #[arg(long = "holds-inputs", value_name = "TARGET")]
    holds_inputs: Vec<String>,
    /// The BUILD file (default: the nearest BUILD.yaml, in this folder or above).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// The store folder (default as for `build`).
    #[arg(long = "store")]
    store: Option<PathBuf>,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ProvenanceArgs {
    #[command(subcommand)]
    command: Option<ProvenanceCommand>,
    /// The target (as last built). A target named `verify` is written after `--`.
    target: Option<String>,
    /// Sign the statement with this ed25519 key (`strata cache keygen`):
    /// the output is a DSSE envelope.
    #[arg(long = "sign-key", value_name = "KEY")]
    sign_key: Option<PathBuf>,
    /// Write to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// The BUILD file (default: the nearest BUILD.yaml, in this folder or above).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// The store folder (default as for `build`).
    #[arg(long = "store")]
    store: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ProvenanceCommand {
    /// Check a signed provenance file: exit 0 if the trusted key signed it
    /// as it is, 1 naming the reason otherwise.
    Verify {
        /// A DSSE envelope written by `strata provenance --sign-key`.
        file: PathBuf,
        /// The public key (`ed25519:<64 hex>`, as `strata cache keygen`
        /// prints it), or a file holding it.
        #[arg(long = "trusted-key", value_name = "KEY")]
        trusted_key: String,
    },
}

pub fn sbom_command(args: SbomArgs) -> ExitCode {
    let format = match args.format {
        Format::SpdxJson => SbomFormat::SpdxJson,
        Format::CyclonedxJson => SbomFormat::CycloneDxJson,
    };
    let holds = args.holds_inputs.iter().cloned().collect();
    let facts = match facts(args.file, args.store, &args.target, args.files, &holds) {
        Ok(f) => f,
        Err(code) => return code,
    };
    emit(&format.render(&facts), args.output.as_deref())
}

pub fn provenance_command(args: ProvenanceArgs) -> ExitCode {
    if let Some(ProvenanceCommand::Verify { file, trusted_key }) = args.command {
        return verify(&file, &trusted_key);
    }
    let Some(target) = args.target else {
        return report::usage_error(
            "name a target: strata provenance TARGET [--sign-key KEY], or strata provenance verify FILE --trusted-key KEY",
        );
    };
    // Read the key before the facts: a wrong key is a usage error either way.
    let key = match args.sign_key.as_deref().map(keys::read_signing_key) {
        Some(Err(msg)) => return report::usage_error(&msg),
        Some(Ok(k)) => Some(k),
        None => None,
    };
    let facts = match facts(args.file, args.store, &target, false, &Default::default()) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let statement = strata_supply::pretty(&provenance::statement(&facts));
    let text = match key {
        None => statement,
        Some(key) => {
            let envelope = dsse::sign(dsse::IN_TOTO, statement.as_bytes(), &key);
            let mut s = serde_json::to_string_pretty(&envelope).expect("envelopes serialize");
            s.push('\n');
            s
        }
    };
    emit(&text, args.output.as_deref())
}

fn facts(
    file: Option<PathBuf>,
    store: Option<PathBuf>,
    target: &str,
    all_files: bool,
    holds_inputs: &std::collections::BTreeSet<String>,
) -> Result<strata_supply::Facts, ExitCode> {
    let store = store.unwrap_or_else(build::default_store_dir);
    let store = std::path::absolute(&store).unwrap_or(store);
    let file = crate::build_file::resolve(file)?;
    strata_engine::supply::facts_of_last_build(&store, &file, target, all_files, holds_inputs)
        .map_err(|e| match e {
            Error::Usage(msg) => report::usage_error(&msg),
            Error::Environment(msg) => report::failure(&msg),
        })
}

fn emit(text: &str, output: Option<&Path>) -> ExitCode {
    match output {
        None => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Some(path) => match std::fs::write(path, text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report::failure(&format!("cannot write {}: {e}", path.display())),
        },
    }
}

fn verify(file: &Path, trusted: &str) -> ExitCode {
    let text = if trusted.starts_with("ed25519:") {
        trusted.to_string()
    } else {
        match std::fs::read_to_string(trusted) {
            Ok(t) => t.trim().to_string(),
            Err(e) => {
                return report::usage_error(&format!(
                    "--trusted-key `{trusted}` is neither `ed25519:<64 hex>` nor a readable file: {e}"
                ));
            }
        }
    };
    let key = match keys::parse_public_key(&text) {
        Ok(k) => k,
        Err(msg) => return report::usage_error(&msg),
    };
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => return report::usage_error(&format!("cannot read {}: {e}", file.display())),
    };
    let payload = match dsse::verify(&bytes, dsse::IN_TOTO, &key) {
        Ok(p) => p,
        Err(reason) => return report::failure(&format!("{}: {reason}", file.display())),
    };
    let statement: serde_json::Value = match serde_json::from_slice(&payload) {
        Ok(v) => v,
        Err(e) => {
            return report::failure(&format!(
                "{}: the signed payload is not JSON: {e}",
                file.display()
            ));
        }
    };
    if statement["_type"] != provenance::STATEMENT_TYPE
        || statement["predicateType"] != provenance::PREDICATE_TYPE
    {
        return report::failure(&format!(
            "{}: the signed payload is not an in-toto statement of SLSA provenance v1",
            file.display()
        ));
    }
    println!(
        "{}: signed by {} (SLSA provenance of `{}`)",
        file.display(),
        keys::public_key_string(&key),
        statement["predicate"]["buildDefinition"]["externalParameters"]["target"]
            .as_str()
            .unwrap_or("?")
    );
    for s in statement["subject"].as_array().into_iter().flatten() {
        let digest = s["digest"]
            .as_object()
            .and_then(|d| d.iter().next())
            .map(|(alg, v)| format!("{alg}:{}", v.as_str().unwrap_or("")))
            .unwrap_or_default();
        println!("  {}  {digest}", s["name"].as_str().unwrap_or(""));
    }
    ExitCode::SUCCESS
}
