//! `strata cache serve`: options in, strata-remote's server started.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use strata_engine::gc::parse_size;
use strata_remote::server::{self, DigestFunction, ServeError, ServeOptions, Started, Tokens};

use crate::report;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The folder holding the cache (created if missing).
    #[arg(long = "dir", value_name = "DIR")]
    dir: PathBuf,
    /// Address and port to listen on; port 0 picks a free one.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// The most the cache may hold: 10G, 500M, 64K (powers of 1024); least
    /// recently used entries are evicted to stay within it.
    #[arg(long = "max-size", value_name = "SIZE", value_parser = parse_size)]
    max_size: u64,
    /// The largest blob accepted (default: --max-size).
    #[arg(long = "max-blob-size", value_name = "SIZE", value_parser = parse_size)]
    max_blob_size: Option<u64>,
    /// The hash naming blobs; clients must use the same.
    #[arg(long = "digest-function", value_name = "FUNCTION", default_value = "sha256",
          value_parser = ["sha256", "blake3"])]
    digest_function: String,
    /// The REAPI instance name gRPC clients send (Bazel's
    /// --remote_instance_name); default none.
    #[arg(long = "instance-name", value_name = "NAME", default_value = "")]
    instance_name: String,
    /// File holding the token needed to read (default: $STRATA_CACHE_READ_TOKEN;
    /// without one, reads are open).
    #[arg(long = "read-token-file", value_name = "FILE")]
    read_token_file: Option<PathBuf>,
    /// File holding the token needed to write, which also reads (default:
    /// $STRATA_CACHE_WRITE_TOKEN; without one, whoever may read may write).
    #[arg(long = "write-token-file", value_name = "FILE")]
    write_token_file: Option<PathBuf>,
}

pub fn command(args: ServeArgs) -> ExitCode {
    let function = match args.digest_function.parse::<DigestFunction>() {
        Ok(f) => f,
        Err(msg) => return report::usage_error(&msg),
    };
    let tokens = match Tokens::load(
        args.read_token_file.as_deref(),
        args.write_token_file.as_deref(),
    ) {
        Ok(t) => t,
        Err(msg) => return report::usage_error(&msg),
    };
    if args.max_size == 0 || args.max_blob_size == Some(0) {
        return report::usage_error("--max-size and --max-blob-size must be more than 0");
    }
    let dir = std::path::absolute(&args.dir).unwrap_or(args.dir);
    let opts = ServeOptions {
        dir: dir.clone(),
        listen: args.listen,
        max_size: args.max_size,
        max_blob_size: args.max_blob_size,
        function,
        tokens: tokens.clone(),
        instance: args.instance_name.clone(),
    };
    let started = |s: &Started| {
        let f = &s.found;
        // A closed stdout or stderr must not stop the server.
        let mut err = std::io::stderr();
        let _ = writeln!(
            err,
            "serving {} ({function}): {}, {}, {} of {} bytes; reads {}, writes {}",
            dir.display(),
            report::count(f.blobs, "blob", "blobs"),
            report::count(f.action_results, "action result", "action results"),
            f.bytes,
            args.max_size,
            if tokens.has_read() {
                "need a token"
            } else {
                "open"
            },
            if tokens.has_write() || tokens.has_read() {
                "need a token"
            } else {
                "open"
            },
        );
        if f.incomplete > 0 || f.evicted > 0 {
            let _ = writeln!(
                err,
                "removed {} naming missing blobs, evicted {} over --max-size",
                report::count(f.incomplete, "action result", "action results"),
                report::count(f.evicted, "entry", "entries")
            );
        }
        // The one line on stdout, so a script (or a test with port 0) can
        // learn the address.
        let mut out = std::io::stdout();
        let _ = writeln!(out, "listening on http://{}", s.address).and_then(|()| out.flush());
    };
    match server::serve(opts, started) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ServeError::Usage(msg)) => report::usage_error(&msg),
        Err(ServeError::Failed(msg)) => report::failure(&msg),
    }
}
