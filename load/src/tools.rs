//! `tools:` of a `run` step: each found on this machine when it is loaded
//! (the engine's host toolchain keys the step by what they resolve to).

use std::fs;
use std::path::{Path, PathBuf};

use strata_rules::layout;

/// Resolves a tool as the step's shell would: an absolute path as it is,
/// a name through the step's fixed `PATH`.
pub fn resolve(tool: &str) -> Result<PathBuf, String> {
    if tool.starts_with('/') {
        return match fs::metadata(tool) {
            Ok(m) if m.is_file() => Ok(PathBuf::from(tool)),
            Ok(_) => Err(format!("`{tool}` is not a file")),
            Err(e) => Err(format!("`{tool}`: {e}")),
        };
    }
    if tool.is_empty() || tool.contains('/') {
        return Err(format!(
            "`{tool}` is neither a program name nor an absolute path"
        ));
    }
    layout::PATH
        .split(':')
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file()))
        .ok_or_else(|| format!("`{tool}` is not in the step's PATH ({})", layout::PATH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_resolve_through_the_step_path_or_absolutely() {
        assert!(resolve("sh").unwrap().ends_with("sh"));
        assert!(resolve("/bin/sh").is_ok());
        assert!(resolve("no-such-tool-4471").unwrap_err().contains("PATH"));
        assert!(resolve("bin/sh").is_err());
    }
}
