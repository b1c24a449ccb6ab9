//! Argument parsing and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use strata_engine::audit::AuditOptions;
use strata_engine::build::{self, BuildError, BuildOptions};
use strata_load::LoadOptions;
use strata_load::matrix::MatrixRequest;

use crate::{build_file, progress, report, store_cmd};

/// The most steps `-j` may run at once.
const MAX_JOBS: usize = 4096;

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "A declarative, content-addressed build engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build targets and their dependencies (default: the BUILD file's
    /// `default:` list when it has one, else every target).
    Build(BuildArgs),
    /// Why TARGET has its key: the key's parts, and what changed since the
    /// target's last build, followed through dependencies to the cause.
    Explain {
        target: String,
        /// The BUILD file (default: the nearest BUILD.yaml, in this folder or above).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        #[arg(long = "store")]
        store: Option<PathBuf>,
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Explain TARGET in every configuration of a matrix build (as
        /// `build --matrix`); TARGET may be `<value>/<target>`.
        #[arg(long = "matrix", value_name = "VAR[=A,B]")]
        matrix: Vec<String>,
        /// Print the explanation as JSON.
        #[arg(long = "json")]
        json: bool,
    },
    /// Rebuild targets under perturbations, bypassing the cache, and compare
    /// with the last build; exit 1 if a target is not reproducible.
    Audit(AuditArgs),
    /// Print what TARGET's step printed the last time it ran, succeeded,
    /// cached or failed: its stdout on stdout, its stderr on stderr, secrets
    /// masked as they were kept.
    Log {
        target: String,
        /// The BUILD file (default: the nearest BUILD.yaml, in this folder or above).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        #[arg(long = "store")]
        store: Option<PathBuf>,
    },
    /// Inspect the store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Cache mounts (`caches:` of container steps): list, export, import;
    /// and `serve`, a remote cache server for builds to share.
    Cache {
        #[command(subcommand)]
        command: CacheGroup,
    },
    /// Print the dependency graph of targets (default: the BUILD file's
    /// `default:` list when it has one, else every target) as Graphviz DOT
    /// or JSON.
    Graph(GraphArgs),
    /// The hashes of the last build: keys, their parts, every output file;
    /// `manifest diff A B` compares two saved with --json.
    Manifest(crate::manifest::ManifestArgs),
    /// A software bill of materials of TARGET as last built: the Debian
    /// packages, fetched files, pulled images and compiled tools in it and
    /// how they nest, as SPDX 2.3 or CycloneDX 1.6 JSON.
    Sbom(crate::supply::SbomArgs),
    /// SLSA provenance of TARGET as last built (an in-toto statement),
    /// signed into a DSSE envelope with --sign-key; `provenance verify FILE
    /// --trusted-key KEY` checks one.
    Provenance(crate::supply::ProvenanceArgs),
    /// Run actions for a remote execution service: a bot of BuildGrid's
    /// Remote Workers API that runs the REAPI actions leased to it in
    /// Strata's sandbox, with a CAS of its own.
    Worker(crate::worker::WorkerArgs),
    /// Remove the outputs Strata placed in the output folder (`out/`), and
    /// the folder once empty; the store is never touched.
    Clean {
        /// The BUILD file (default: the nearest BUILD.yaml, in this folder or above).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        #[arg(long = "out-dir")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Re-hash every object and check every action-cache entry, of every
    /// digest function in the store; exit 1 if anything is corrupt.
    Verify {
        /// The store folder (default as for `build`).
        #[arg(long = "store")]
        store: Option<PathBuf>,
        /// Remove corrupt objects and the action-cache entries that reach
        /// them (their steps run again), waiting for running builds; exit 1
        /// only if the store is still not clean after.
        #[arg(long = "repair")]
        repair: bool,
    },
    /// Count objects and bytes: blobs, action results, leftovers, caches,
    /// build records, and what the newest builds reach.
    Stats {
        #[arg(long = "store")]
        store: Option<PathBuf>,
        /// Count as reachable what this many newest builds of each workspace use.
        #[arg(long = "keep-builds", default_value_t = strata_engine::gc::DEFAULT_KEEP_BUILDS)]
        keep_builds: usize,
        /// Print one JSON document.
        #[arg(long = "json")]
        json: bool,
    },
    /// Evict least recently used objects that the newest builds of every
    /// workspace do not need, until the store fits in SIZE.
    Gc {
        /// The most the CAS and action cache may hold: 10G, 500M, 64K, 0 (powers of 1024).
        #[arg(long = "max-size", value_name = "SIZE", value_parser = strata_engine::gc::parse_size)]
        max_size: u64,
        /// Keep everything the newest N builds of each workspace use.
        #[arg(long = "keep-builds", value_name = "N", default_value_t = strata_engine::gc::DEFAULT_KEEP_BUILDS)]
        keep_builds: usize,
        #[arg(long = "store")]
        store: Option<PathBuf>,
        /// Report what would be removed; remove nothing.
        #[arg(long = "dry-run")]
        dry_run: bool,
        /// Exit 1 at once if a build is running, instead of waiting for it.
        #[arg(long = "no-wait")]
        no_wait: bool,
        /// Also remove Strata's tree images (strata-tree:<digest>) from the
        /// Docker Engine at DOCKER_HOST whose tree the store no longer holds.
        #[arg(long = "docker")]
        docker: bool,
        /// Print one JSON document.
        #[arg(long = "json")]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CacheGroup {
    #[command(flatten)]
    Mounts(CacheCommand),
    /// Serve a remote cache over HTTP (Bazel's HTTP cache protocol) from
    /// DIR, for builds on other machines to share.
    Serve(crate::cache_serve::ServeArgs),
}

#[derive(Subcommand)]
enum CacheCommand {
    /// List the caches in the store with their sizes.
    List {
        #[arg(long = "store")]
        store: Option<PathBuf>,
    },
    /// Write cache NAME to a .tar.zst file (e.g. to save it in CI).
    Export {
        name: String,
        /// The file to write (default: NAME.tar.zst).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        #[arg(long = "store")]
        store: Option<PathBuf>,
    },
    /// Replace cache NAME with the contents of an exported file.
    Import {
        name: String,
        file: PathBuf,
        #[arg(long = "store")]
        store: Option<PathBuf>,
    },
    /// Create an ed25519 key for signing remote cache entries (`--sign-key
    /// FILE`); prints the public key for `trusted_keys`.
    Keygen {
        /// Where to write the private key (created, mode 0600).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

#[derive(clap::Args)]
struct BuildArgs {
    /// Targets to build, with their dependencies (default: the BUILD file's
    /// `default:` list when it has one, else every target).
    targets: Vec<String>,
    /// The BUILD file (default: the nearest BUILD.yaml, in this folder or above).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Steps run at once (default: number of cores).
    #[arg(short = 'j', long = "jobs")]
    jobs: Option<usize>,
    /// Build everything not downstream of a failure (default: once a step
    /// fails no other starts; running steps finish).
    #[arg(short = 'k', long = "keep-going")]
    keep_going: bool,
    /// Run every step even if cached (results are still recorded).
    #[arg(long = "no-cache")]
    no_cache: bool,
    /// The store folder (default: $STRATA_STORE, $XDG_CACHE_HOME/strata or ~/.cache/strata).
    #[arg(long = "store")]
    store: Option<PathBuf>,
    /// Where outputs are materialized (default: the file's `out_dir:`, else
    /// out/ beside the BUILD file).
    #[arg(long = "out-dir")]
    out_dir: Option<PathBuf>,
    /// Set or override a variable: --var name=value (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Build every listed value of VAR in one invocation (repeatable: the
    /// product); without values, those `matrix:` lists in BUILD.yaml.
    /// Outputs go to <out>/<value>/<target>.
    #[arg(long = "matrix", value_name = "VAR[=A,B]")]
    matrix: Vec<String>,
    /// Print one JSON document on stdout instead of the human summary.
    #[arg(long = "json")]
    json: bool,
    /// After the build, print one line per executed target with the root
    /// cause of its new key.
    #[arg(long = "explain")]
    explain: bool,
    /// Write a Chrome trace of the build (Perfetto, chrome://tracing) to FILE.
    #[arg(long = "trace", value_name = "FILE")]
    trace: Option<PathBuf>,
    /// A remote cache: grpc://, grpcs://, http:// or https:// (overrides
    /// `remote_cache.url` in strata.yaml). Credentials come from
    /// $STRATA_REMOTE_TOKEN or strata.yaml, never from the command line.
    #[arg(long = "remote-cache", value_name = "URL")]
    remote_cache: Option<String>,
    /// `--remote-upload=false`: read from the remote cache, never write
    /// (for untrusted pull-request CI).
    #[arg(long = "remote-upload", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    remote_upload: Option<bool>,
    /// Sign uploaded action-cache entries with this ed25519 key (see
    /// `strata cache keygen`).
    #[arg(long = "sign-key", value_name = "FILE")]
    sign_key: Option<PathBuf>,
    /// Run `run` steps on a REAPI execution service:
    /// grpc[s]://HOST:PORT[/INSTANCE] (overrides `remote_executor` in
    /// strata.yaml). Without it reachable, the build runs locally.
    #[arg(long = "remote-executor", value_name = "URL")]
    remote_executor: Option<String>,
    /// With a remote executor: fail rather than build locally when it
    /// cannot be reached.
    #[arg(long = "remote-only")]
    remote_only: bool,
}

#[derive(clap::Args)]
struct GraphArgs {
    /// Targets to show, with their dependencies (default: the BUILD file's
    /// `default:` list when it has one, else every target).
    targets: Vec<String>,
    /// The BUILD file (default: the nearest BUILD.yaml, in this folder or above).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    #[arg(long = "format", value_enum, default_value_t = GraphFormat::Dot)]
    format: GraphFormat,
    /// Set or override a variable: --var name=value (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Show every listed value of VAR in one invocation (repeatable: the
    /// product); without values, those `matrix:` lists in BUILD.yaml.
    /// Outputs go to <out>/<value>/<target>.
    #[arg(long = "matrix", value_name = "VAR[=A,B]")]
    matrix: Vec<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum GraphFormat {
    /// Graphviz: edges point from a dependency to its dependent.
    Dot,
    /// {"targets": {"name": {"rule": "...", "deps": [...]}}}
    Json,
}

#[derive(clap::Args)]
struct AuditArgs {
    /// Targets to audit, with their dependencies (default: the BUILD file's
    /// `default:` list when it has one, else every target).
    targets: Vec<String>,
    /// The BUILD file (default: the nearest BUILD.yaml, in this folder or above).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// The -j your builds use (default: number of cores); the audit runs
    /// with another (1, or 2 if this is 1).
    #[arg(short = 'j', long = "jobs")]
    jobs: Option<usize>,
    /// The store folder (default as for `build`).
    #[arg(long = "store")]
    store: Option<PathBuf>,
    /// The build's output folder, kept out of the sources (never written).
    #[arg(long = "out-dir")]
    out_dir: Option<PathBuf>,
    /// Set or override a variable: --var name=value (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Audit every listed value of VAR in one invocation (repeatable: the
    /// product); without values, those `matrix:` lists in BUILD.yaml.
    /// Outputs go to <out>/<value>/<target>.
    #[arg(long = "matrix", value_name = "VAR[=A,B]")]
    matrix: Vec<String>,
    /// Print one JSON document on stdout instead of the human report.
    #[arg(long = "json")]
    json: bool,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Build(args) => build_command(args),
        Command::Graph(args) => graph_command(args),
        Command::Audit(args) => audit_command(args),
        Command::Clean { file, out_dir } => clean_command(file, out_dir),
        Command::Store { command } => store_command(command),
        Command::Cache {
            command: CacheGroup::Mounts(command),
        } => cache_command(command),
        Command::Cache {
            command: CacheGroup::Serve(args),
        } => crate::cache_serve::command(args),
        Command::Explain {
            target,
            file,
            store,
            vars,
            matrix,
            json,
        } => explain_command(target, file, store, vars, matrix, json),
        Command::Manifest(args) => crate::manifest::command(args),
        Command::Sbom(args) => crate::supply::sbom_command(args),
        Command::Provenance(args) => crate::supply::provenance_command(args),
        Command::Worker(args) => crate::worker::command(args),
        Command::Log {
            target,
            file,
            store,
        } => match build_file::resolve(file) {
            Ok(file) => report::step_log(strata_engine::logs::last_run(
                &store_dir(store),
                &file,
                &target,
            )),
            Err(code) => code,
        },
    }
}

fn cache_command(command: CacheCommand) -> ExitCode {
    if let CacheCommand::Keygen { output } = &command {
        return match strata_remote::sign::keygen(output) {
            Ok(public) => {
                println!("{public}");
                ExitCode::SUCCESS
            }
            Err(e) => report::usage_error(&format!("cannot write {}: {e}", output.display())),
        };
    }
    let (store_dir, name) = match &command {
        CacheCommand::Keygen { .. } => unreachable!("handled above"),
        CacheCommand::List { store } => (store, None),
        CacheCommand::Export { store, name, .. } | CacheCommand::Import { store, name, .. } => {
            (store, Some(name))
        }
    };
    if let Some(name) = name
        && let Err(msg) = strata_exec::caches::check_name(name)
    {
        return report::usage_error(&msg);
    }
    let dir = absolute(store_dir.clone().unwrap_or_else(build::default_store_dir));
    let store = match strata_engine::open_store(&dir) {
        Ok(s) => s,
        Err(e) => return report::failure(&format!("cannot open the store: {e}")),
    };
    let result = match command {
        CacheCommand::Keygen { .. } => unreachable!("handled above"),
        CacheCommand::List { .. } => strata_exec::caches::list(&store).map(|caches| {
            for (name, size) in caches {
                println!("{name}\t{size}");
            }
        }),
        CacheCommand::Export { name, output, .. } => {
            let output =
                absolute(output.unwrap_or_else(|| PathBuf::from(format!("{name}.tar.zst"))));
            strata_exec::caches::export(&store, &name, &output).map(|n| {
                println!(
                    "exported cache `{name}` ({}) to {}",
                    report::count(n, "entry", "entries"),
                    output.display()
                )
            })
        }
        CacheCommand::Import { name, file, .. } => {
            if !file.is_file() {
                return report::usage_error(&format!("no file {}", file.display()));
            }
            strata_exec::caches::import(&store, &name, &file).map(|n| {
                println!(
                    "imported cache `{name}` ({}) from {}",
                    report::count(n, "entry", "entries"),
                    file.display()
                )
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report::failure(&e.to_string()),
    }
}

fn explain_command(
    target: String,
    file: Option<PathBuf>,
    store: Option<PathBuf>,
    vars: Vec<String>,
    matrix: Vec<String>,
    json: bool,
) -> ExitCode {
    let (var_overrides, matrix) = match parse_vars(&vars, &matrix) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let file = match build_file::resolve(file) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let is_matrix = !matrix.is_empty();
    let opts = strata_engine::explain::ExplainOptions {
        build_file: file,
        target,
        store_dir: absolute(store.unwrap_or_else(build::default_store_dir)),
        load: LoadOptions {
            var_overrides,
            ..LoadOptions::default()
        },
        matrix,
    };
    let observer = progress::Progress::new(true);
    match strata_engine::explain::explain(&opts, &observer) {
        Ok(e) => report::explanations(&e, is_matrix, json),
        Err(BuildError::Config(errors)) => report::config_errors(errors),
        Err(BuildError::Usage(msg)) => report::usage_error(&msg),
        Err(BuildError::Environment(msg)) => report::failure(&msg),
    }
}

fn build_command(args: BuildArgs) -> ExitCode {
    let (var_overrides, matrix) = match parse_vars(&args.vars, &args.matrix) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if let Some(j) = args.jobs
        && !(1..=MAX_JOBS).contains(&j)
    {
        return report::usage_error(&format!("-j must be between 1 and {MAX_JOBS}"));
    }
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let build_file = match build_file::resolve(args.file) {
        Ok(f) => f,
        Err(code) => return code,
    };
    // The remote executor is asked by the opener (before the store opens)
    // and runs steps among the executors; its counts go to the report.
    let (executors, remote_executor) = crate::executors::with_remote(strata_remote::ExecutorCli {
        url: args.remote_executor,
        remote_only: args.remote_only,
    });
    let opener = strata_remote::Opener::new(strata_remote::RemoteCli {
        url: args.remote_cache,
        upload: args.remote_upload,
        sign_key: args.sign_key.map(absolute),
    })
    .with_executor(remote_executor.clone());
    let opts = BuildOptions {
        build_file,
        targets: args.targets,
        jobs,
        keep_going: args.keep_going,
        no_cache: args.no_cache,
        store_dir: absolute(args.store.unwrap_or_else(build::default_store_dir)),
        out_dir: args.out_dir.map(absolute),
        load: LoadOptions {
            var_overrides,
            ..LoadOptions::default()
        },
        matrix,
        trace: args.trace.map(absolute),
        remote: Some(Arc::new(opener)),
    };
    let observer = Arc::new(progress::Progress::new(args.json));
    let result = build::build(&opts, observer.clone(), executors);
    observer.finish();
    match result {
        Ok(r) => {
            if args.explain {
                report::executed_causes(&opts.store_dir, &r.workspace_tag);
            }
            let execution = remote_executor.is_open().then(|| remote_executor.stats());
            report::build_report(&r, execution.as_ref(), args.json)
        }
        Err(BuildError::Config(errors)) => report::config_errors(errors),
        Err(BuildError::Usage(msg)) => report::usage_error(&msg),
        Err(BuildError::Environment(msg)) => report::failure(&msg),
    }
}

fn graph_command(args: GraphArgs) -> ExitCode {
    let (var_overrides, matrix) = match parse_vars(&args.vars, &args.matrix) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let load = LoadOptions {
        var_overrides,
        ..LoadOptions::default()
    };
    let file = match build_file::resolve(args.file) {
        Ok(f) => f,
        Err(code) => return code,
    };
    match strata_engine::render::plan(&file, &load, &matrix, &args.targets) {
        Ok(plan) => {
            match args.format {
                GraphFormat::Dot => print!("{}", strata_engine::render::dot(&plan)),
                GraphFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&strata_engine::render::json(&plan))
                        .expect("JSON values serialize")
                ),
            }
            ExitCode::SUCCESS
        }
        Err(BuildError::Config(errors)) => report::config_errors(errors),
        Err(BuildError::Usage(msg)) => report::usage_error(&msg),
        Err(BuildError::Environment(msg)) => report::failure(&msg),
    }
}

fn audit_command(args: AuditArgs) -> ExitCode {
    // SAFETY: nothing but this thread runs yet (no runtime, no progress
    // ticker): the process environment may change.
    let original_env = unsafe { strata_engine::audit::perturb::pin_process_env() };
    let (var_overrides, matrix) = match parse_vars(&args.vars, &args.matrix) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if let Some(j) = args.jobs
        && !(1..=MAX_JOBS).contains(&j)
    {
        return report::usage_error(&format!("-j must be between 1 and {MAX_JOBS}"));
    }
    let build_file = match build_file::resolve(args.file) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let opts = AuditOptions {
        build_file,
        targets: args.targets,
        jobs: args.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }),
        store_dir: absolute(args.store.unwrap_or_else(build::default_store_dir)),
        out_dir: args.out_dir.map(absolute),
        load: LoadOptions {
            var_overrides,
            env_overrides: original_env,
        },
        matrix,
    };
    let observer = Arc::new(progress::Progress::new(args.json));
    let result =
        strata_engine::audit::audit(&opts, observer.clone(), crate::executors::of_this_machine());
    observer.finish();
    match result {
        Ok(r) => report::audit_report(&r, args.json),
        Err(BuildError::Config(errors)) => report::config_errors(errors),
        Err(BuildError::Usage(msg)) => report::usage_error(&msg),
        Err(BuildError::Environment(msg)) => report::failure(&msg),
    }
}

/// `--var NAME=VALUE` and `--matrix VAR[=A,B]` arguments, checked
/// together (a variable given twice, or by both), or the exit code of a
/// usage error.
fn parse_vars(
    vars: &[String],
    matrix: &[String],
) -> Result<(Vec<(String, String)>, MatrixRequest), ExitCode> {
    let vars = vars
        .iter()
        .map(|v| match v.split_once('=') {
            Some((name, value)) if strata_load::is_var_name(name) => {
                Ok((name.to_string(), value.to_string()))
            }
            _ => Err(report::usage_error(&format!(
                "--var expects NAME=VALUE, got `{v}`"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let matrix = MatrixRequest::parse(matrix, &vars).map_err(report::config_errors)?;
    Ok((vars, matrix))
}

fn clean_command(file: Option<PathBuf>, out_dir: Option<PathBuf>) -> ExitCode {
    let out_dir = match out_dir {
        Some(d) => absolute(d),
        None => {
            let file = match build_file::resolve(file) {
                Ok(f) => absolute(f),
                Err(code) => return code,
            };
            // The workspace's `out_dir:` when it loads; `out/` otherwise, so
            // a broken BUILD.yaml can still be cleaned after.
            let declared = strata_load::load(&file, &Default::default())
                .ok()
                .map(|ws| ws.out_dir);
            declared.unwrap_or_else(|| {
                file.parent()
                    .map(|p| p.join("out"))
                    .unwrap_or_else(|| PathBuf::from("out"))
            })
        }
    };
    if !out_dir.exists() {
        return ExitCode::SUCCESS;
    }
    let lock = match strata_engine::materialize::lock(&out_dir, |holder| {
        eprintln!("waiting for {} (locked by {holder})", out_dir.display())
    }) {
        Ok(lock) => lock,
        Err(e) => return report::failure(&format!("cannot lock {}: {e}", out_dir.display())),
    };
    match strata_engine::materialize::clean(&out_dir, &lock) {
        Ok(cleaned) => {
            report::cleaned(&out_dir, &cleaned);
            ExitCode::SUCCESS
        }
        Err(e) => report::failure(&e),
    }
}

fn store_command(command: StoreCommand) -> ExitCode {
    match command {
        StoreCommand::Verify { store, repair } => store_cmd::verify(store_dir(store), repair),
        StoreCommand::Stats {
            store,
            keep_builds,
            json,
        } => store_cmd::stats(store_dir(store), keep_builds, json),
        StoreCommand::Gc {
            max_size,
            keep_builds,
            store,
            dry_run,
            no_wait,
            docker,
            json,
        } => store_cmd::gc(
            store_dir(store),
            &strata_engine::gc::GcOptions {
                max_bytes: max_size,
                keep_builds,
                dry_run,
                docker,
            },
            !no_wait,
            json,
        ),
    }
}

fn store_dir(store: Option<PathBuf>) -> PathBuf {
    absolute(store.unwrap_or_else(build::default_store_dir))
}

fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}
