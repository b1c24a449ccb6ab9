//! `strata`: the command line. It parses arguments and prints; the work is
//! done by `strata-engine`.

mod build_file;
mod cache_serve;
mod cli;
mod executors;
mod exit;
mod manifest;
mod progress;
mod report;
mod store_cmd;
mod supply;
mod worker;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes
    // away (`strata build | head`), instead of panicking on a failed write.
    // SAFETY: setting a signal disposition at startup, before any thread.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // Descriptors left open by whoever started us must not reach a step
    // (nor the sandbox helper, which is this binary too).
    strata_exec::descriptors::keep_from_children();
    // A root build's steps run as another user: what Strata stages for them
    // must stay readable whatever the caller's umask.
    strata_exec::sandbox::let_the_step_user_read();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == strata_exec::sandbox::SUBCOMMAND)
    {
        strata_exec::sandbox::helper_main(&args[2..]);
    }
    // Digests and paths in diagnostics must stay copyable: never wrap them.
    let _ = miette::set_hook(Box::new(|_| {
        Box::new(miette::MietteHandlerOpts::new().wrap_lines(false).build())
    }));
    cli::run()
}
