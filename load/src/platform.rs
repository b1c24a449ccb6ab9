//! The platform of every container step, once all targets are loaded: an
//! image's own platform decides which of its manifests and configs is read
//! and what the step runs as, so a step takes it from its image (a `stage`
//! from its `from:`), and a `platform:` written beside an image of another
//! platform is refused with both named. Steps with nothing to take it from
//! (an image pinned by digest, a stage from a tree or `scratch`) run on the
//! platform they ask for, or `linux/amd64`. `docker-data-root` learns each
//! image's platform here too.

use std::collections::{BTreeMap, BTreeSet};

use strata_rules::Work;
use strata_rules::builtin::Builtin;
use strata_rules::platform::{Platform, RunsOn};
use strata_rules::run::ImageRef;

use super::{Loader, Loc, Located, Target};

/// Where platforms are written in the workspace.
#[derive(Debug, Default)]
pub(super) struct Written {
    /// `platform:` of a `run` step in an image, or of a stage (by its name).
    asked: BTreeMap<String, Located<Platform>>,
    /// Field locations of `image` targets: `platform`, `from`, `base`.
    images: BTreeMap<String, BTreeMap<String, Loc>>,
}

impl Written {
    pub(super) fn asked(&mut self, target: &str, platform: Located<Platform>) {
        self.asked.insert(target.to_string(), platform);
    }

    pub(super) fn image(&mut self, target: &str, fields: &BTreeMap<&str, Loc>) {
        let places = ["platform", "from", "base"]
            .into_iter()
            .filter_map(|f| Some((f.to_string(), *fields.get(f)?)))
            .collect();
        self.images.insert(target.to_string(), places);
    }
}

/// The platform of each target's output, where it has one: images (`image`,
/// `image-pull`) and stages.
struct Outputs<'a> {
    targets: &'a BTreeMap<String, Target>,
    written: &'a Written,
    known: BTreeMap<String, Option<Platform>>,
}

impl Outputs<'_> {
    fn of(&mut self, name: &str) -> Option<Platform> {
        let mut visiting = BTreeSet::new();
        self.walk(name, &mut visiting)
    }

    fn walk(&mut self, name: &str, visiting: &mut BTreeSet<String>) -> Option<Platform> {
        if let Some(p) = self.known.get(name) {
            return p.clone();
        }
        // A cycle is the graph's to report.
        if !visiting.insert(name.to_string()) {
            return None;
        }
        let found = match self.targets.get(name).map(|t| &t.work) {
            Some(Work::Builtin {
                rule: Builtin::Image(p),
                ..
            }) => Platform::parse_known(&p.platform).ok(),
            Some(Work::ImagePull(p)) => Platform::parse_known(&p.platform).ok(),
            Some(Work::Stage { parent, .. }) => {
                let stage = stage_of(name);
                let from = parent.as_deref().and_then(|p| self.walk(p, visiting));
                from.or_else(|| self.written.asked.get(stage).map(|a| a.value.clone()))
            }
            _ => None,
        };
        self.known.insert(name.to_string(), found.clone());
        found
    }
}

/// The stage a step target belongs to (`build#2` -> `build`).
fn stage_of(step: &str) -> &str {
    step.split('#').next().unwrap_or(step)
}

impl Loader {
    /// Gives every container step, stage step and `docker-data-root` image
    /// its platform; refuses a `platform:` that contradicts an image's.
    pub(super) fn resolve_platforms(&mut self, targets: &mut BTreeMap<String, Target>) {
        let written = std::mem::take(&mut self.platforms);
        let mut outputs = Outputs {
            targets,
            written: &written,
            known: BTreeMap::new(),
        };
        let mut resolved: BTreeMap<String, Platform> = BTreeMap::new();
        let mut data_roots: BTreeMap<String, Vec<Platform>> = BTreeMap::new();
        let mut errors = Vec::new();
        let default = Platform::default_platform;
        for (name, t) in outputs.targets {
            match &t.work {
                Work::Run(step) => {
                    let Some(c) = &step.container else { continue };
                    let asked = written.asked.get(name);
                    let image = match &c.image {
                        ImageRef::Target(image) => outputs.of(image).map(|p| (image.as_str(), p)),
                        ImageRef::Pinned { .. } => None,
                    };
                    if let (Some(a), Some((image, p))) = (asked, &image)
                        && a.value != *p
                    {
                        errors.push((a.loc, format!("`{name}` asks for {}, but its image `{image}` is for {p}", a.value), format!("the image is for {p}"), format!("drop `platform:` to run `{image}` as what it is, or build `{image}` for {}", a.value)));
                    }
                    let platform = image
                        .map(|(_, p)| p)
                        .or_else(|| asked.map(|a| a.value.clone()))
                        .unwrap_or_else(default);
                    resolved.insert(name.clone(), platform);
                }
                Work::Stage { parent, .. } => {
                    let stage = stage_of(name);
                    let asked = written.asked.get(stage);
                    // Checked where the stage starts: its first step's
                    // parent is the `from:` target, not a step of its own.
                    let starts = parent.as_deref().is_none_or(|p| stage_of(p) != stage);
                    if starts
                        && let (Some(a), Some(from)) = (asked, parent)
                        && let Some(p) = outputs.of(from)
                        && a.value != p
                    {
                        errors.push((a.loc, format!("stage `{stage}` asks for {}, but `from: {from}` is for {p}", a.value), format!("`{from}` is for {p}"), format!("drop `platform:` to build on `{from}` as what it is, or start from a {} image", a.value)));
                    }
                    let platform = outputs.of(name).unwrap_or_else(default);
                    resolved.insert(name.clone(), platform);
                }
                Work::DataRoot(p) => {
                    let platforms = p
                        .images
                        .iter()
                        .map(|i| outputs.of(i).unwrap_or_else(default))
                        .collect();
                    data_roots.insert(name.clone(), platforms);
                }
                Work::Builtin {
                    rule: Builtin::Image(p),
                    ..
                } => {
                    let Some(places) = written.images.get(name) else {
                        continue;
                    };
                    let Ok(own) = Platform::parse_known(&p.platform) else {
                        continue;
                    };
                    // A whole image or stage as `from:` or `base:`: its
                    // platform is the one this image is made for.
                    let inputs = [("base", p.base.as_ref()), ("from", Some(&p.from))];
                    for (field, input) in inputs {
                        let Some(input) = input.filter(|f| f.path.is_empty()) else {
                            continue;
                        };
                        let Some(target) = input.target.as_deref() else {
                            continue;
                        };
                        let Some(theirs) = outputs.of(target) else {
                            continue;
                        };
                        if theirs.architecture != own.architecture || theirs.os != own.os {
                            let written_at = places.get("platform");
                            let loc = written_at.or(places.get(field)).copied().unwrap_or(t.loc);
                            let own_text = match written_at {
                                Some(_) => own.to_string(),
                                None => format!("{own} (the default)"),
                            };
                            errors.push((loc, format!("image `{name}` is for {own_text}, but its `{field}: {target}` is for {theirs}"), format!("`{target}` is for {theirs}"), format!("write `platform: {theirs}` on `{name}`, or make `{target}` for {own}")));
                        }
                    }
                }
                _ => {}
            }
        }
        for (loc, message, label, hint) in errors {
            let e = self.at().error(loc, message, label, Some(hint));
            self.errors.push(e);
        }
        for (name, platform) in resolved {
            match targets.get_mut(&name).map(|t| &mut t.work) {
                Some(Work::Run(step)) => {
                    if let Some(c) = &step.container {
                        let runs_on = RunsOn {
                            platform,
                            ..c.runs_on.clone()
                        };
                        step.set_runs_on(runs_on);
                    }
                }
                Some(Work::Stage { runs_on, .. }) => runs_on.platform = platform,
                _ => {}
            }
        }
        for (name, platforms) in data_roots {
            if let Some(Work::DataRoot(p)) = targets.get_mut(&name).map(|t| &mut t.work) {
                p.platforms = platforms;
            }
        }
    }
}
