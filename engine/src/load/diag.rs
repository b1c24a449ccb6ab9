//! Configuration errors: miette diagnostics pointing into BUILD.yaml.

use std::sync::Arc;

use miette::{Diagnostic, NamedSource, SourceSpan};

use super::source::{Loc, Sources};

/// A configuration error at a place in a BUILD file, with a hint.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
pub struct ConfigError {
    pub message: String,
    #[source_code]
    pub src: Option<NamedSource<Arc<String>>>,
    #[label("{label}")]
    pub span: Option<SourceSpan>,
    pub label: String,
    #[help]
    pub help: Option<String>,
    /// `file:line:column`, so plain-text consumers see the place too.
    pub place: Option<String>,
}

impl ConfigError {
    /// An error without a place (a file that cannot be read, a bad flag).
    pub fn general(message: impl Into<String>, help: Option<String>) -> ConfigError {
        ConfigError {
            message: message.into(),
            src: None,
            span: None,
            label: String::new(),
            help,
            place: None,
        }
    }

    /// Where the error points, as `file:line:column`.
    pub fn place(&self) -> Option<&str> {
        self.place.as_deref()
    }
}

/// Builds located errors against the workspace's sources.
pub struct At<'a> {
    pub sources: &'a Sources,
}

impl At<'_> {
    pub fn error(
        &self,
        loc: Loc,
        message: impl Into<String>,
        label: impl Into<String>,
        help: Option<String>,
    ) -> ConfigError {
        let file = self.sources.get(loc.file);
        ConfigError {
            message: message.into(),
            src: Some(self.sources.named_source(loc.file)),
            span: Some(self.sources.span(loc)),
            label: label.into(),
            help,
            place: Some(format!("{}:{}:{}", file.display, loc.line, loc.column)),
        }
    }
}

/// The closest of `candidates` to `name`, for "did you mean" hints.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}
