//! The YAML files a workspace was loaded from, and locations inside them.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use miette::{NamedSource, SourceSpan};

/// One loaded file: its path, the name shown in diagnostics, and its text.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub display: String,
    pub text: Arc<String>,
}

/// A place in a loaded file: 1-based line and column, and a length in chars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: usize,
    pub line: u64,
    pub column: u64,
    pub len: u64,
}

/// Every file of the workspace, indexed by `Loc::file`.
#[derive(Debug, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    pub fn add(&mut self, path: &Path, display: String, text: String) -> usize {
        self.files.push(SourceFile {
            path: path.to_path_buf(),
            display,
            text: Arc::new(text),
        });
        self.files.len() - 1
    }

    pub fn iter(&self) -> impl Iterator<Item = &SourceFile> {
        self.files.iter()
    }

    pub fn get(&self, file: usize) -> &SourceFile {
        &self.files[file]
    }

    pub fn named_source(&self, file: usize) -> NamedSource<Arc<String>> {
        let f = &self.files[file];
        NamedSource::new(f.display.clone(), f.text.clone()).with_language("yaml")
    }

    /// The byte span of `loc` in its file's text (clamped to the text).
    pub fn span(&self, loc: Loc) -> SourceSpan {
        let text = self.files[loc.file].text.as_str();
        let start = byte_offset(text, loc.line, loc.column);
        let len = text[start..]
            .char_indices()
            .nth(loc.len.max(1) as usize)
            .map(|(i, _)| i)
            .unwrap_or(text.len() - start);
        // Never underline across a line break: the first line is what matters.
        let line_len = text[start..].find('\n').unwrap_or(text.len() - start);
        (
            start,
            len.min(line_len).max(usize::from(start < text.len())),
        )
            .into()
    }
}

/// `path` (absolute) as messages show it: relative to the current folder,
/// as a user typed it (`BUILD.yaml`, `examples/image/BUILD.yaml` from above,
/// `../BUILD.yaml` from a subfolder), or whole when the two share no folder
/// but `/`.
pub fn shown(path: &Path) -> String {
    std::env::current_dir()
        .and_then(std::fs::canonicalize)
        .ok()
        .and_then(|cwd| relative_to(path, &cwd))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

/// `path` relative to the folder `base`, both absolute and without `..`.
fn relative_to(path: &Path, base: &Path) -> Option<PathBuf> {
    let path: Vec<Component> = path.components().collect();
    let base: Vec<Component> = base.components().collect();
    let common = path.iter().zip(&base).take_while(|(a, b)| a == b).count();
    if common < 2 || common == path.len() {
        return None;
    }
    let up = std::iter::repeat_n(Component::ParentDir, base.len() - common);
    Some(up.chain(path[common..].iter().copied()).collect())
}

fn byte_offset(text: &str, line: u64, column: u64) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i as u64 + 1 == line {
            let col = column.saturating_sub(1) as usize;
            return offset
                + l.char_indices()
                    .nth(col)
                    .map(|(b, _)| b)
                    .unwrap_or(l.trim_end_matches('\n').len());
        }
        offset += l.len();
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_shown_relative_to_a_folder_they_share_more_than_the_root_with() {
        let rel = |p: &str, base: &str| {
            relative_to(Path::new(p), Path::new(base)).map(|p| p.display().to_string())
        };
        assert_eq!(rel("/w/BUILD.yaml", "/w").as_deref(), Some("BUILD.yaml"));
        assert_eq!(
            rel("/w/examples/image/BUILD.yaml", "/w").as_deref(),
            Some("examples/image/BUILD.yaml")
        );
        assert_eq!(
            rel("/w/BUILD.yaml", "/w/src/lib").as_deref(),
            Some("../../BUILD.yaml")
        );
        assert_eq!(
            rel("/w/stages/a.yaml", "/w/src").as_deref(),
            Some("../stages/a.yaml")
        );
        assert_eq!(rel("/w/BUILD.yaml", "/home/me"), None);
        assert_eq!(rel("/w", "/w"), None);
    }

    #[test]
    fn spans_count_columns_in_chars() {
        let mut s = Sources::default();
        let f = s.add(Path::new("B"), "B".into(), "a: 1\nbé: xyz\n".into());
        let span = s.span(Loc {
            file: f,
            line: 2,
            column: 5,
            len: 3,
        });
        assert_eq!(span.offset(), 5 + 5);
        assert_eq!(span.len(), 3);
    }
}
