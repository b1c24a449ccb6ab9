//! The one error type of the engine's commands (build, audit, explain,
//! graph), which the binary maps to exit codes.

use strata_load::ConfigError;

/// Why a build could not start or finish.
#[derive(Debug)]
pub enum BuildError {
    /// BUILD.yaml is wrong (exit code 2).
    Config(Vec<ConfigError>),
    /// The command line is wrong (exit code 2).
    Usage(String),
    /// The store or `out/` could not be used (exit code 1).
    Environment(String),
}
