//! `when:` conditions: whether a target is part of the graph at all.
//!
//! Deliberately tiny (a boolean or one comparison), like Packer's and
//! Bazel's config switches: a condition is read at a glance, and anything
//! richer belongs in a variable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use super::schema::RawTarget;
use super::tree::{Node, Tree};
use super::{FileIds, Loader, Loc, Target, Vars};

/// Why a condition is not one. Carries no text of the condition: its value
/// may be a secret read with `!ENV`, and the caller knows what may be shown.
#[derive(Debug, PartialEq, Eq)]
pub enum BadCondition {
    TwoComparisons,
    Empty,
    NotABoolean,
}

impl BadCondition {
    fn describe(&self, shown: &str) -> String {
        match self {
            BadCondition::TwoComparisons => "a condition compares two values once".into(),
            BadCondition::Empty => "the condition is empty".into(),
            BadCondition::NotABoolean => format!("`{shown}` is neither true nor false"),
        }
    }
}

/// Evaluates an interpolated condition: `true`, `false`, `A == B` or
/// `A != B` (both sides trimmed, compared as text).
pub fn evaluate(condition: &str) -> Result<bool, BadCondition> {
    let c = condition.trim();
    for (op, equal) in [("==", true), ("!=", false)] {
        if let Some((left, right)) = c.split_once(op) {
            if right.contains("==") || right.contains("!=") {
                return Err(BadCondition::TwoComparisons);
            }
            return Ok((left.trim() == right.trim()) == equal);
        }
    }
    match c {
        "true" => Ok(true),
        "false" => Ok(false),
        "" => Err(BadCondition::Empty),
        _ => Err(BadCondition::NotABoolean),
    }
}

impl Loader {
    /// A target's `when:` (absent: true); `None` after reporting an error.
    pub(super) fn condition(
        &mut self,
        raw: &RawTarget,
        ids: &FileIds,
        vars: &Vars,
    ) -> Option<bool> {
        let Some(when) = &raw.when else {
            return Some(true);
        };
        let loc = ids.at(when);
        let written = match &when.value {
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::String(s) => s.clone(),
            _ => {
                let e = self.at().error(
                    loc,
                    "`when:` takes a condition",
                    "not a condition",
                    Some(CONDITION_HINT.into()),
                );
                self.errors.push(e);
                return None;
            }
        };
        // A flag read with !ENV is fine here: only the graph's shape depends
        // on it, and the value is never shown.
        let spanned = Spanned {
            value: written,
            referenced: when.referenced,
            defined: when.defined,
        };
        let text = self.text(&spanned, loc, vars, true, "when")?;
        match evaluate(&text.actual) {
            Ok(b) => Some(b),
            Err(bad) => {
                // As written (`${tok}`), never as interpolated, when a secret
                // took part: the condition names the variable, not its value.
                let shown = if text.has_secret() {
                    spanned.value.trim().to_string()
                } else {
                    text.actual.trim().to_string()
                };
                let e = self.at().error(
                    loc,
                    format!("bad condition `{shown}`: {}", bad.describe(&shown)),
                    "here",
                    Some(CONDITION_HINT.into()),
                );
                self.errors.push(e);
                None
            }
        }
    }

    /// Whether `reference` (`name` or `name:path`) names a switched-off target.
    pub(super) fn is_switched_off(&self, reference: &str) -> bool {
        let name = reference.split_once(':').map_or(reference, |(n, _)| n);
        name != "srcs" && self.off.contains_key(name)
    }

    /// Drops, from every list in a built-in rule's field, the items that
    /// name a switched-off target (`of: [a, b]`, `layers: [{from: a}]`).
    pub(super) fn drop_switched_off(&self, tree: &mut Tree) {
        tree.retain_items(|item| match &item.node {
            Node::Scalar(serde_json::Value::String(s)) => !self.is_switched_off(s.as_str()),
            Node::Map(_) => !["from", "source"]
                .iter()
                .filter_map(|k| item.str_at(k))
                .any(|s| self.is_switched_off(s)),
            _ => true,
        });
    }

    /// `out_dir:` of the root file, relative to its folder.
    pub(super) fn out_dir(
        &mut self,
        raw: Option<&Spanned<String>>,
        ids: &FileIds,
        vars: &Vars,
        root: &Path,
    ) -> Option<PathBuf> {
        let raw = raw?;
        let loc = ids.at(raw);
        let text = self.text(raw, loc, vars, false, "out_dir")?;
        if text.actual.trim().is_empty() {
            let e = self.at().error(
                loc,
                "`out_dir` is empty",
                "empty",
                Some("give a folder, such as `out_dir: dist` (relative to this file)".into()),
            );
            self.errors.push(e);
            return None;
        }
        let dir = normalize(&root.join(&text.actual));
        // `strata clean` removes this folder, and a build replaces what is in it.
        if root.starts_with(&dir) {
            let e = self.at().error(
                loc,
                format!("`out_dir` {} holds the workspace", dir.display()),
                "would hold the workspace",
                Some("outputs go to a folder of their own, such as `out` or `dist`".into()),
            );
            self.errors.push(e);
            return None;
        }
        Some(dir)
    }

    /// A reference that is not in a list cannot be dropped: the target that
    /// makes it needs the switched-off one.
    pub(super) fn check_switched_off_references(&mut self, targets: &BTreeMap<String, Target>) {
        for t in targets.values() {
            for d in &t.deps {
                let Some(when) = self.off.get(&d.value).copied() else {
                    continue;
                };
                let place = self.place(when);
                let user = t.name.split('#').next().unwrap_or(&t.name);
                let e = self.at().error(
                    d.loc,
                    format!("`{user}` needs `{}`, which is switched off", d.value),
                    "switched off",
                    Some(format!(
                        "`{}` has a false `when:` at {place}; give `{user}` the same condition, or name `{}` in a list (deps, layers, of, images), which leaves switched-off targets out",
                        d.value, d.value
                    )),
                );
                self.errors.push(e);
            }
        }
    }

    pub(super) fn place(&self, loc: Loc) -> String {
        self.at().error(loc, "", "", None).place.unwrap_or_default()
    }
}

/// `a/b/../c` -> `a/c`, without touching the file system (the folder may
/// not exist yet).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

const CONDITION_HINT: &str = "write `when: true`, `when: false`, `when: \"${flag}\"`, or compare: `when: \"${arch} == x86_64\"` (or `!=`)";

#[cfg(test)]
mod tests {
    use super::evaluate;

    #[test]
    fn booleans_and_comparisons() {
        assert_eq!(evaluate("true"), Ok(true));
        assert_eq!(evaluate(" false "), Ok(false));
        assert_eq!(evaluate("x86_64 == x86_64"), Ok(true));
        assert_eq!(evaluate("aarch64 == x86_64"), Ok(false));
        assert_eq!(evaluate("aarch64 != x86_64"), Ok(true));
        assert_eq!(evaluate(" == "), Ok(true));
    }

    #[test]
    fn anything_else_is_an_error() {
        assert!(evaluate("yes").is_err());
        assert!(evaluate("").is_err());
        assert!(evaluate("a == b == c").is_err());
        assert!(evaluate("True").is_err());
    }
}
