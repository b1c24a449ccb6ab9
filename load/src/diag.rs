//! Configuration errors: miette diagnostics pointing into BUILD.yaml.

use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};

use super::source::{Loc, Sources};

/// A configuration error at a place in a BUILD file, with a hint.
#[derive(Clone, Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
pub struct ConfigError {
    pub message: String,
    #[source_code]
    pub src: Option<NamedSource<Arc<String>>>,
    /// The place at fault: the snippet's header names it, even when
    /// another place (`others`) comes first in the file.
    #[label(primary, "{label}")]
    pub span: Option<SourceSpan>,
    pub label: String,
    /// Other places in the same file the error involves (where a name was
    /// first declared).
    #[label(collection)]
    pub others: Vec<LabeledSpan>,
    /// The same, in other files: each shown with its own file.
    #[related]
    pub elsewhere: Vec<Note>,
    #[help]
    pub help: Option<String>,
    /// `file:line:column`, so plain-text consumers see the place too.
    pub place: Option<String>,
    /// Where the error points, to tell the files of `others` apart.
    pub loc: Option<Loc>,
}

/// Another place an error involves, in a file of its own.
#[derive(Clone, Debug, thiserror::Error, Diagnostic)]
#[error("{label}")]
#[diagnostic(severity(Advice))]
pub struct Note {
    #[source_code]
    pub src: NamedSource<Arc<String>>,
    #[label("{label}")]
    pub span: SourceSpan,
    pub label: String,
}

impl ConfigError {
    /// An error without a place (a file that cannot be read, a bad flag).
    pub fn general(message: impl Into<String>, help: Option<String>) -> ConfigError {
        ConfigError {
            message: message.into(),
            src: None,
            span: None,
            label: String::new(),
            others: Vec::new(),
            elsewhere: Vec::new(),
            help,
            place: None,
            loc: None,
        }
    }

    /// An error in the flags of the command line (`line`, as the flags
    /// are shown), underlining `span` of it.
    pub fn on_command_line(
        line: &Arc<String>,
        span: SourceSpan,
        message: String,
        label: &str,
        help: String,
    ) -> ConfigError {
        ConfigError {
            message,
            src: Some(NamedSource::new("command line", line.clone())),
            span: Some(span),
            label: label.to_string(),
            others: Vec::new(),
            elsewhere: Vec::new(),
            help: Some(help),
            place: Some(format!("command line, column {}", span.offset() + 1)),
            loc: None,
        }
    }

    /// The error, also pointing at `loc` with `label`: in the same picture
    /// when it is in the same file, else as a note of its own.
    pub fn also_at(mut self, sources: &Sources, loc: Loc, label: &str) -> ConfigError {
        match self.loc {
            Some(here) if here.file == loc.file => {
                self.others.push(LabeledSpan::new_with_span(
                    Some(label.to_string()),
                    sources.span(loc),
                ));
            }
            _ => self.elsewhere.push(Note {
                src: sources.named_source(loc.file),
                span: sources.span(loc),
                label: label.to_string(),
            }),
        }
        self
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
            others: Vec::new(),
            elsewhere: Vec::new(),
            help,
            place: Some(format!("{}:{}:{}", file.display, loc.line, loc.column)),
            loc: Some(loc),
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

/// For serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown
/// variant"): the nearest of the names it lists, and the list (which is
/// that mapping's own).
pub fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (name, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|f| !f.is_empty())
        .collect();
    if expected.is_empty() {
        return Some(format!("`{name}` is not a field here"));
    }
    let list = match expected.as_slice() {
        [only] => format!("the only one here is `{only}`"),
        _ => format!("here: {}", expected.join(", ")),
    };
    Some(match did_you_mean(name, expected.iter().copied()) {
        Some(hint) => format!("{hint} ({list})"),
        None => list,
    })
}

#[cfg(test)]
mod tests {
    use super::{did_you_mean, unknown_field_hint};

    #[test]
    fn unknown_fields_get_the_nearest_of_their_own_mapping() {
        assert_eq!(
            unknown_field_hint(
                "unknown field `chmood`, expected one of `source`, `target`, `chmod`, `chown`"
            )
            .as_deref(),
            Some("did you mean `chmod`? (here: source, target, chmod, chown)")
        );
        assert_eq!(
            unknown_field_hint("unknown field `x`, expected `from`").as_deref(),
            Some("the only one here is `from`")
        );
        assert_eq!(unknown_field_hint("missing field `from`"), None);
    }

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
