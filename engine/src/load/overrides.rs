//! `--var NAME=VALUE` must name a variable of the workspace: one declared
//! under `vars:`, or one a loaded file uses as `${NAME}` without declaring
//! it (a value only the command line gives, such as a digest). A typo
//! (`--var verison=2`) would otherwise change nothing, silently.

use std::collections::BTreeSet;

use super::diag::{ConfigError, did_you_mean};
use super::interp::referenced_names;
use super::source::Sources;

/// Errors for the `names` given on the command line (`flag`: how, such
/// as `--var`) that are neither `declared` nor used in any of `sources`.
pub(super) fn unknown_overrides<'a>(
    names: impl IntoIterator<Item = &'a str>,
    declared: &BTreeSet<String>,
    sources: &Sources,
    flag: &str,
) -> Vec<ConfigError> {
    let mut known = declared.clone();
    for file in sources.iter() {
        known.extend(referenced_names(&file.text));
    }
    names
        .into_iter()
        .filter(|name| !known.contains(*name))
        .map(|name| {
            let listed = match known.len() {
                0 => "the workspace declares no variable: declare it under `vars:` with its default".to_string(),
                _ => format!(
                    "the workspace's variables: {} (declared under `vars:`, or used as `${{name}}`)",
                    known.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            };
            let help = match did_you_mean(name, known.iter().map(String::as_str)) {
                Some(hint) => format!("{hint} {listed}"),
                None => listed,
            };
            ConfigError::general(
                format!("`{flag} {name}=...` names no variable of the workspace"),
                Some(help),
            )
        })
        .collect()
}
