//! `default:` of the root file: the targets a command builds when it names
//! none, as a Makefile's first goal. Without it, every target that is not a
//! hidden stage step.

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use super::diag::did_you_mean;
use super::{FileIds, Loader, Target};

impl Loader {
    /// The names `default:` lists, checked against the loaded targets. A
    /// switched-off name is left out, as from every list; an unknown one is
    /// an error at its place.
    pub(super) fn defaults(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<String>>>>,
        ids: &FileIds,
        targets: &BTreeMap<String, Target>,
    ) -> Option<Vec<String>> {
        let raw = raw?;
        if raw.value.is_empty() {
            let e = self.at().error(
                ids.at(raw),
                "`default` lists no target",
                "empty",
                Some("name the targets `strata build` builds when given none, or remove `default:` to build every target".into()),
            );
            self.errors.push(e);
            return None;
        }
        let mut names: Vec<String> = Vec::new();
        for name in &raw.value {
            if targets.contains_key(&name.value) {
                if !names.contains(&name.value) {
                    names.push(name.value.clone());
                }
                continue;
            }
            if self.off.contains_key(&name.value) {
                continue;
            }
            let hint = did_you_mean(&name.value, targets.keys().map(String::as_str))
                .unwrap_or_else(|| "`default` names targets of this workspace".into());
            let e = self.at().error(
                ids.at(name),
                format!("`default` names `{}`, which is not a target", name.value),
                "no such target",
                Some(hint),
            );
            self.errors.push(e);
        }
        Some(names)
    }
}
