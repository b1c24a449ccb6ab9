//! `strata worker`: options in, strata-remote's worker started with the
//! platform this machine offers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use strata_engine::binfmt;
use strata_engine::gc::parse_size;
use strata_exec::remote_step::ContainerHost;
use strata_remote::client::RemoteConfig;
use strata_remote::execution::isa;
use strata_remote::worker::{self, WorkerError, WorkerOptions};

use crate::report;

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The execution service: grpc://HOST:PORT[/INSTANCE] (grpcs:// for
    /// TLS), such as BuildGrid's.
    #[arg(long = "server", value_name = "URL")]
    server: String,
    /// Leases run at once.
    #[arg(short = 'j', long = "jobs", default_value_t = 1)]
    jobs: usize,
    /// The most the worker's own CAS may hold: 10G, 500M (powers of 1024);
    /// least recently used blobs are evicted to stay within it.
    #[arg(long = "max-size", value_name = "SIZE", value_parser = parse_size, default_value = "10G")]
    max_size: u64,
    /// The worker's own CAS, used by no other worker (default:
    /// $XDG_CACHE_HOME/strata-worker or ~/.cache/strata-worker).
    #[arg(long = "cache-dir", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// How the worker names itself to the service (default: HOST-PID); a
    /// restarted worker with the same id replaces its old session.
    #[arg(long = "bot-id", value_name = "ID")]
    bot_id: Option<String>,
}

pub fn command(args: WorkerArgs) -> ExitCode {
    let cache_dir = args.cache_dir.unwrap_or_else(default_cache_dir);
    let cache_dir = std::path::absolute(&cache_dir).unwrap_or(cache_dir);
    let options = WorkerOptions {
        server: RemoteConfig::new(args.server),
        cache_dir,
        max_size: args.max_size,
        jobs: args.jobs,
        platform: platform(),
        containers: Some(Box::new(|| Box::pin(docker_engine()))),
        bot_id: args.bot_id.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        }),
    };
    let ready = |line: &str| eprintln!("strata worker: {line}");
    match worker::run(options, ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(WorkerError::Usage(msg)) => report::usage_error(&msg),
        Err(WorkerError::Failed(msg)) => report::failure(&msg),
    }
}

/// `OSFamily=linux` and this machine's `ISA`, plus `ISA=aarch64` on
/// another machine whose kernel runs arm64 programs through an emulator
/// (a binfmt_misc handler with the `F` flag, which works in the sandbox).
fn platform() -> Vec<(String, String)> {
    let mut platform = vec![("OSFamily".to_string(), "linux".to_string())];
    let native = std::env::consts::ARCH;
    platform.push(("ISA".to_string(), isa(native).to_string()));
    if native != "aarch64"
        && binfmt::handler_for(&binfmt::dir(), "arm64").is_some_and(|h| h.fixed())
    {
        platform.push(("ISA".to_string(), isa("aarch64").to_string()));
    }
    platform
}

/// The Docker Engine that runs `container-image` actions, if one answers.
async fn docker_engine() -> Option<Arc<dyn ContainerHost>> {
    match strata_docker::WorkerContainers::connect().await {
        Ok(engine) => Some(Arc::new(engine)),
        Err(e) => {
            eprintln!("strata worker: no container-image actions here: {e}");
            None
        }
    }
}

fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("strata-worker")
}
