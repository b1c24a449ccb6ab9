//! The `!include` YAML tag: one file (or `file.yaml#anchor`) in place, or,
//! with a glob, a sequence of every matching file in path order.
//!
//! serde-saphyr resolves one request at a time; a glob is answered with a
//! synthesized list of plain `!include`s, whose own requests are then
//! resolved as if the file holding the glob had made them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde_saphyr::{
    IncludeRequest, IncludeResolveError, InputSource, ResolvedInclude, SafeFileResolver,
};

use crate::globs;

/// One source the parser read besides the file itself, in the order of
/// serde-saphyr's source ids; `text` is set for a synthesized glob list.
pub(super) struct Resolved {
    pub path: PathBuf,
    pub text: Option<String>,
}

pub(super) struct Includes {
    files: SafeFileResolver,
    root: PathBuf,
    /// The folder of the file being parsed: where its own includes start.
    dir: PathBuf,
    record: Rc<RefCell<Vec<Resolved>>>,
    /// Synthesized list id -> the id of the file that wrote the glob
    /// (`None`: the file being parsed).
    lists: BTreeMap<String, Option<String>>,
}

impl Includes {
    pub fn new(
        files: SafeFileResolver,
        root: &Path,
        file: &Path,
        record: Rc<RefCell<Vec<Resolved>>>,
    ) -> Includes {
        Includes {
            files,
            root: root.to_path_buf(),
            dir: file.parent().unwrap_or(root).to_path_buf(),
            record,
            lists: BTreeMap::new(),
        }
    }

    pub fn resolve(
        &mut self,
        req: IncludeRequest<'_>,
    ) -> Result<ResolvedInclude, IncludeResolveError> {
        let writer: Option<String> = match req.from_id {
            Some(id) => match self.lists.get(id) {
                Some(writer) => writer.clone(),
                None => Some(id.to_string()),
            },
            None => None,
        };
        if is_glob(req.spec) {
            return self.glob(req.spec, writer.as_deref());
        }
        let mut forwarded = IncludeRequest::new(req.spec, req.from_name, req.location)
            .with_stack(req.stack.clone());
        if let Some(w) = &writer {
            forwarded = forwarded.with_from_id(w);
        }
        if let Some(n) = req.size_remaining {
            forwarded = forwarded.with_size_remaining(n);
        }
        let r = self.files.resolve(forwarded)?;
        self.record.borrow_mut().push(Resolved {
            path: PathBuf::from(&r.id),
            text: None,
        });
        Ok(r)
    }

    fn glob(
        &mut self,
        pattern: &str,
        writer: Option<&str>,
    ) -> Result<ResolvedInclude, IncludeResolveError> {
        let dir = match writer {
            Some(w) => Path::new(w).parent().unwrap_or(&self.root).to_path_buf(),
            None => self.dir.clone(),
        };
        let files = globs::expand(&dir, pattern, &[], &self.root).map_err(|e| {
            IncludeResolveError::Message(match e {
                globs::GlobError::Pattern(msg) => {
                    format!("bad !include pattern `{pattern}`: {msg}")
                }
                globs::GlobError::Path { path, reason } => {
                    format!("!include `{pattern}`: {}: {reason}", path.display())
                }
            })
        })?;
        let files: Vec<String> = files
            .into_iter()
            .filter(|f| f.ends_with(".yaml") || f.ends_with(".yml"))
            .collect();
        if files.is_empty() {
            return Err(IncludeResolveError::Message(format!(
                "`!include {pattern}` matches no .yaml file (patterns are relative to the including file)"
            )));
        }
        let text: String = files
            .iter()
            .map(|f| format!("- !include {}\n", quoted(f)))
            .collect();
        let path = dir.join(pattern);
        let id = path.to_string_lossy().into_owned();
        self.lists.insert(id.clone(), writer.map(str::to_string));
        self.record.borrow_mut().push(Resolved {
            path,
            text: Some(text.clone()),
        });
        Ok(ResolvedInclude::new(
            id,
            pattern.to_string(),
            InputSource::Text(text),
        ))
    }
}

fn is_glob(spec: &str) -> bool {
    spec.contains(['*', '?', '['])
}

/// A path as a YAML double-quoted scalar.
fn quoted(path: &str) -> String {
    format!("\"{}\"", path.replace('\\', "\\\\").replace('"', "\\\""))
}
