//! The exit codes of every command, in one place: scripts and CI read them.

use std::process::ExitCode;

/// A build, an audit, a verification or a comparison found something wrong.
pub const FAILED: u8 = 1;
/// The command line or the configuration is wrong: nothing ran.
pub const USAGE: u8 = 2;
/// Interrupted (Ctrl-C), as shells report a process ended by SIGINT.
pub const INTERRUPTED: u8 = 130;

pub fn failed() -> ExitCode {
    ExitCode::from(FAILED)
}

pub fn usage() -> ExitCode {
    ExitCode::from(USAGE)
}

pub fn interrupted() -> ExitCode {
    ExitCode::from(INTERRUPTED)
}
