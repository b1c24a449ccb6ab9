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

/// The closest of `candidates` to `name`, for "did you mean" hints. Close
/// means few edits (a transposition counts as one, so short names like `rnu`
/// still find `run`) or a high Jaro-Winkler similarity.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let max_edits = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter_map(|c| {
            let edits = strsim::damerau_levenshtein(name, c);
            let similar = strsim::jaro_winkler(name, c);
            let rank = (edits, std::cmp::Reverse((similar * 1e6) as u64));
            (edits <= max_edits || similar > 0.8).then_some((rank, c))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_transpositions_and_typos_but_not_strangers() {
        assert_eq!(
            did_you_mean("rnu", ["run"]).as_deref(),
            Some("did you mean `run`?")
        );
        assert_eq!(
            did_you_mean("wrods", ["words", "count"]).as_deref(),
            Some("did you mean `words`?")
        );
        assert_eq!(
            did_you_mean("ab", ["ba"]).as_deref(),
            Some("did you mean `ba`?")
        );
        assert_eq!(did_you_mean("compile", ["words", "count"]), None);
    }
}
