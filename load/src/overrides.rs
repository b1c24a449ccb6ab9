//! `--var NAME=VALUE` must name a variable of the workspace: one declared
//! under `vars:`, or one a loaded file uses as `${NAME}` without declaring
//! it (a value only the command line gives, such as a digest). A typo
//! (`--var verison=2`) would otherwise change nothing, silently.

use std::collections::BTreeSet;
use std::sync::Arc;

use miette::SourceSpan;

use super::diag::{ConfigError, did_you_mean};
use super::interp::referenced_names;
use super::source::Sources;

/// Errors for the `--var` flags (`overrides`, in command-line order) whose
/// name is neither `declared` nor used in any of `sources`, each pointing
/// at the name in the flags as `--matrix` errors do.
pub(super) fn unknown_overrides(
    overrides: &[(String, String)],
    declared: &BTreeSet<String>,
    sources: &Sources,
) -> Vec<ConfigError> {
    let mut known = declared.clone();
    for file in sources.iter() {
        known.extend(referenced_names(&file.text));
    }
    // The flags as written, each error showing them up to its own (a
    // matrix build appends its configuration's values after them).
    let mut line = String::new();
    let mut flags: Vec<(&str, SourceSpan, Arc<String>)> = Vec::new();
    for (name, value) in overrides {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str("--var ");
        let span: SourceSpan = (line.len(), name.len()).into();
        line.push_str(&format!("{name}={value}"));
        flags.push((name, span, Arc::new(line.clone())));
    }
    let mut errors: Vec<(&str, ConfigError)> = Vec::new();
    for (name, span, line) in flags {
        if known.contains(name) || errors.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let listed = match known.len() {
            0 => "the workspace has no variable: declare this one under `vars:` with its default"
                .to_string(),
            _ => format!(
                "the workspace's variables: {} (declared under `vars:`, or used as `${{name}}`)",
                known.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        let help = match did_you_mean(name, known.iter().map(String::as_str)) {
            Some(hint) => format!("{hint} {listed}"),
            None => listed,
        };
        let e = ConfigError::on_command_line(
            &line,
            span,
            format!("`--var {name}`: the workspace has no variable `{name}`"),
            "not a variable of the workspace",
            help,
        );
        errors.push((name, e));
    }
    errors.into_iter().map(|(_, e)| e).collect()
}
