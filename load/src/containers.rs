//! Loading what runs on the Docker Engine: `image:`, `user:` and `caches:`
//! of `run`, the `stage` rule (one target per step), `image-pull` and
//! `docker-data-root`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_saphyr::Spanned;
use strata_rules::Text;
use strata_rules::Work;
use strata_rules::builtin::{Mode, Owner, Source};
use strata_rules::data_root::{self, DataRootParams};
use strata_rules::image_pull::{self, PullParams};
use strata_rules::platform::{DEFAULT_PLATFORM, Platform, RunsOn};
use strata_rules::run::{Container, ImageRef, check_cache_name, check_container_path};
use strata_rules::stage::{self, CopyInto, RunInStage, StageStep};
use strata_rules::table::Rule;

use super::schema::{Pairs, RawStep, RawTarget};
use super::tree::RawNode;
use super::{FileIds, Loader, Located, Target, Vars, is_var_name};
use crate::Loc;

/// A loaded stage step: its work, sources and dependencies.
type LoadedStep = (Work, Vec<Located<String>>, Vec<Located<String>>);

const PLATFORM_HINT: &str = "write `os/architecture[/variant]` as OCI names them: `linux/amd64`, `linux/arm64` or `linux/arm/v7` (an arm64 board is `linux/arm64`, not `aarch64`)";

const PIN_HINT: &str = "pin the image by digest, `name@sha256:<hex>`: a tag can move, so it cannot enter a key (`docker inspect --format '{{index .RepoDigests 0}}' IMAGE` prints it)";

/// A target's pieces shared by every rule, already read by `Loader::target`.
pub(super) struct Common {
    pub name: Located<String>,
    pub dir: PathBuf,
    pub srcs: Vec<Located<String>>,
    pub deps: Vec<Located<String>>,
    pub source_date_epoch: Text,
    pub errors_before: usize,
}

impl Loader {
    /// Refuses every present field of `raw` that `rule` does not take.
    fn only_fields(&mut self, raw: &RawTarget, ids: &FileIds, rule: &Rule) {
        let accepted = rule.field_names();
        let rule = rule.name;
        let help = format!("`{rule}` takes: {}", accepted.join(", "));
        let present = raw
            .run_fields()
            .into_iter()
            .map(|(f, l)| (f, ids.loc(&l)))
            .chain(raw.generic_fields().map(|(f, v)| (f, ids.at(v))));
        let refused: Vec<(&str, Loc)> = present.filter(|(f, _)| !accepted.contains(f)).collect();
        for (field, loc) in refused {
            let e = self.at().error(
                loc,
                format!("field `{field}` does not apply to rule `{rule}`"),
                format!("not a field of `{rule}`"),
                Some(help.clone()),
            );
            self.errors.push(e);
        }
    }

    fn plain(
        &mut self,
        s: &Spanned<String>,
        ids: &FileIds,
        vars: &Vars,
        what: &str,
    ) -> Option<Located<String>> {
        let loc = ids.at(s);
        self.text(s, loc, vars, false, what).map(|t| Located {
            value: t.actual,
            loc,
        })
    }

    fn user(
        &mut self,
        user: &Option<Spanned<String>>,
        ids: &FileIds,
        vars: &Vars,
    ) -> Option<String> {
        let u = self.plain(user.as_ref()?, ids, vars, "user")?;
        let ok = !u.value.is_empty()
            && u.value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if !ok {
            let e = self.at().error(u.loc, format!("`{}` is not a user", u.value), "not a user", Some("write `user: 1000:1000`, `user: 1000` or a name the image knows, such as `nobody`".into()));
            self.errors.push(e);
            return None;
        }
        Some(u.value)
    }

    fn caches(
        &mut self,
        raw: Option<Pairs<Spanned<String>>>,
        ids: &FileIds,
        vars: &Vars,
    ) -> BTreeMap<String, String> {
        let mut caches: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in raw.map(|p| p.0).unwrap_or_default() {
            let kloc = ids.at(&k);
            if let Err(msg) = check_cache_name(&k.value) {
                let e = self.at().error(kloc, msg, "bad cache name", None);
                self.errors.push(e);
                continue;
            }
            let Some(path) = self.plain(&v, ids, vars, "caches") else {
                continue;
            };
            if let Err(msg) = check_container_path(&path.value) {
                let e = self.at().error(
                    path.loc,
                    format!("cache mount point {msg}"),
                    "bad mount point",
                    Some(
                        "mount a cache at an absolute path in the image, such as `/var/cache/apt`"
                            .into(),
                    ),
                );
                self.errors.push(e);
                continue;
            }
            if let Some((other, _)) = caches.iter().find(|(_, p)| **p == path.value) {
                let e = self.at().error(
                    path.loc,
                    format!(
                        "`{}` is already the mount point of cache `{other}`",
                        path.value
                    ),
                    "mounted twice",
                    None,
                );
                self.errors.push(e);
                continue;
            }
            if caches.insert(k.value.clone(), path.value).is_some() {
                let e = self.at().error(
                    kloc,
                    format!("cache `{}` is listed twice", k.value),
                    "listed again",
                    None,
                );
                self.errors.push(e);
            }
        }
        caches
    }

    /// `image:`, `user:`, `caches:` of a `run` target: a container step when
    /// `image` is given. An image target becomes a dependency.
    pub(super) fn run_container(
        &mut self,
        raw: &mut RawTarget,
        ids: &FileIds,
        vars: &Vars,
        name: &Located<String>,
        deps: &mut Vec<Located<String>>,
    ) -> Option<Container> {
        let name_loc = name.loc;
        let user = self.user(&raw.user, ids, vars);
        let caches = self.caches(raw.caches.take(), ids, vars);
        let Some(image) = raw.image.as_ref() else {
            let stray = raw
                .user
                .as_ref()
                .map(|u| ("user", ids.at(u)))
                .or_else(|| raw.field("platform").map(|p| ("platform", ids.at(p))));
            if let Some((field, loc)) =
                stray.or_else(|| (!caches.is_empty()).then_some(("caches", name_loc)))
            {
                let e = self.at().error(loc, format!("`{field}` applies to steps in a container"), "needs `image:`", Some("name the image the step runs in with `image: TARGET` or `image: name@sha256:<hex>`".into()));
                self.errors.push(e);
            }
            return None;
        };
        let asked = self.platform(raw.field("platform"), ids, vars);
        let image = self.plain(image, ids, vars, "image")?;
        let parsed = match ImageRef::parse(&image.value) {
            Ok(r) => r,
            Err(msg) => {
                let e = self.at().error(
                    image.loc,
                    msg,
                    "not a pinned image",
                    Some(format!("use a target that builds an image, or {PIN_HINT}")),
                );
                self.errors.push(e);
                return None;
            }
        };
        if let ImageRef::Target(t) = &parsed
            && !deps.iter().any(|d| &d.value == t)
        {
            deps.push(Located {
                value: t.clone(),
                loc: image.loc,
            });
        }
        // The image target's platform is known once every target is
        // loaded (`platform::resolve`); until then, the one asked for.
        let platform = match &asked {
            Some(p) => {
                self.platforms.asked(&name.value, p.clone());
                p.value.clone()
            }
            None => Platform::default_platform(),
        };
        Some(Container {
            image: parsed,
            user,
            caches,
            runs_on: RunsOn::native(platform),
        })
    }

    /// A `platform:` as written (`linux/arm64`), checked against the
    /// platforms Strata knows; `None` when absent or wrong (reported).
    pub(super) fn platform(
        &mut self,
        raw: Option<&Spanned<RawNode>>,
        ids: &FileIds,
        vars: &Vars,
    ) -> Option<Located<Platform>> {
        let raw = raw?;
        let loc = ids.at(raw);
        let parsed = match raw.value.as_str().map(|s| vars.interpolate(s)) {
            Some(Ok(t)) if t.has_secret() => Err("a platform cannot be a secret".to_string()),
            Some(Ok(t)) => Platform::parse_known(&t.actual),
            Some(Err(e)) => Err(e.message),
            None => Err("`platform` is a string such as `linux/arm64`".to_string()),
        };
        match parsed {
            Ok(value) => Some(Located { value, loc }),
            Err(msg) => {
                let e = self
                    .at()
                    .error(loc, msg, "not a platform", Some(PLATFORM_HINT.into()));
                self.errors.push(e);
                None
            }
        }
    }

    /// A `stage`: one target per step, the last under the stage's own name
    /// and the others hidden as `<stage>#<n>`, each depending on the one
    /// before.
    pub(super) fn stage_targets(
        &mut self,
        mut raw: RawTarget,
        ids: &FileIds,
        vars: &Vars,
        common: Common,
    ) -> Vec<Target> {
        self.only_fields(&raw, ids, &stage::RULE);
        let name = common.name.clone();
        let asked = self.platform(raw.field("platform"), ids, vars);
        let platform = match &asked {
            Some(p) => {
                self.platforms.asked(&name.value, p.clone());
                p.value.clone()
            }
            None => Platform::default_platform(),
        };
        if let Some(first) = common.srcs.first().or(common.deps.first()) {
            let e = self.at().error(
                first.loc,
                "a stage takes `srcs` and `deps` per step",
                "on the stage",
                Some(
                    "move them into the step that uses them (`steps: [{srcs: [...], cmd: ...}]`)"
                        .into(),
                ),
            );
            self.errors.push(e);
        }
        let parent = match raw.field("from") {
            None => {
                let e = self.at().error(name.loc, format!("stage `{}` has no `from:`", name.value), "no `from:`", Some("start from a target that makes a root file system or an image (`rootfs`, `extract`, `image`, `image-pull`, another stage), or `from: scratch`".into()));
                self.errors.push(e);
                None
            }
            Some(v) => match v.value.as_str().map(|s| vars.interpolate(s)) {
                Some(Ok(t)) if t.actual == "scratch" => Some(None),
                Some(Ok(t))
                    if ImageRef::parse(&t.actual)
                        .is_ok_and(|r| matches!(r, ImageRef::Target(_))) =>
                {
                    Some(Some(t.actual))
                }
                _ => {
                    let e = self.at().error(ids.at(v), "`from:` of a stage is a target name or `scratch`", "not a target", Some("to start from a registry image, pull it with an `image-pull` target and name that target".into()));
                    self.errors.push(e);
                    None
                }
            },
        };
        let Some(steps) = raw.steps.take() else {
            let e = self.at().error(
                name.loc,
                format!("stage `{}` has no `steps:`", name.value),
                "no steps",
                Some(
                    "list the steps: `steps: [{cmd: \"...\"}, {copy: TARGET:path, to: /path}]`"
                        .into(),
                ),
            );
            self.errors.push(e);
            return Vec::new();
        };
        if steps.value.is_empty() {
            let e = self
                .at()
                .error(ids.at(&steps), "`steps` is empty", "empty", None);
            self.errors.push(e);
            return Vec::new();
        }
        let count = steps.value.len();
        let mut targets = Vec::new();
        let mut previous = parent.clone().flatten();
        for (i, step) in steps.value.into_iter().enumerate() {
            let loc = ids.at(&step);
            let last = i + 1 == count;
            let step_name = if last {
                name.value.clone()
            } else {
                format!("{}#{}", name.value, i + 1)
            };
            let Some((work, srcs, mut deps)) = self.stage_step(
                step.value,
                loc,
                ids,
                vars,
                &common.source_date_epoch,
                (previous.clone(), &platform),
            ) else {
                previous = Some(step_name);
                continue;
            };
            if let Some(p) = &previous
                && !deps.iter().any(|d| &d.value == p)
            {
                deps.insert(
                    0,
                    Located {
                        value: p.clone(),
                        loc,
                    },
                );
            }
            targets.push(Target {
                name: step_name.clone(),
                loc: if last { name.loc } else { loc },
                dir: common.dir.clone(),
                srcs,
                named_srcs: Vec::new(),
                deps,
                outs: Vec::new(),
                output_digest: None,
                hidden: !last,
                work,
                run: None,
            });
            previous = Some(step_name);
        }
        if parent.is_none() || self.errors.len() > common.errors_before {
            return Vec::new();
        }
        targets
    }

    /// One step: its kind, sources and dependencies.
    fn stage_step(
        &mut self,
        step: RawStep,
        loc: Loc,
        ids: &FileIds,
        vars: &Vars,
        source_date_epoch: &Text,
        (parent, platform): (Option<String>, &Platform),
    ) -> Option<LoadedStep> {
        let srcs = self.sources(&step.srcs, ids, vars);
        let mut deps = self.dependencies(&step.deps, ids, vars);
        let kind = if let Some(copy) = &step.copy {
            let from = self.plain(copy, ids, vars, "copy")?;
            let stray = [
                ("cmd", step.cmd.as_ref().map(|x| x.referenced)),
                ("argv", step.argv.as_ref().map(|x| x.referenced)),
                ("network", step.network.as_ref().map(|x| x.referenced)),
                ("user", step.user.as_ref().map(|x| x.referenced)),
                ("workdir", step.workdir.as_ref().map(|x| x.referenced)),
            ];
            for (field, l) in stray.into_iter().filter_map(|(f, l)| l.map(|l| (f, l))) {
                let e = self.at().error(
                    ids.loc(&l),
                    format!("`{field}` does not apply to a `copy` step"),
                    "not a field of `copy`",
                    Some("a `copy` step takes: copy, to, mode, owner, srcs, deps".into()),
                );
                self.errors.push(e);
            }
            let source = match Source::try_from(from.value.clone()) {
                Ok(s) => s,
                Err(msg) => {
                    let e = self.at().error(from.loc, msg, "not a source", Some("copy a path among the step's `srcs`, or `TARGET:path` from another target's output".into()));
                    self.errors.push(e);
                    return None;
                }
            };
            if let Some(t) = &source.0.target
                && !deps.iter().any(|d| &d.value == t)
            {
                deps.push(Located {
                    value: t.clone(),
                    loc: from.loc,
                });
            }
            let Some(to) = step.to.as_ref() else {
                let e = self.at().error(
                    loc,
                    "a `copy` step needs `to:`",
                    "no destination",
                    Some("give an absolute path; end it with `/` to copy into that folder".into()),
                );
                self.errors.push(e);
                return None;
            };
            let to = self.plain(to, ids, vars, "to")?;
            if let Err(msg) = check_container_path(&to.value) {
                let e = self.at().error(
                    to.loc,
                    format!("destination {msg}"),
                    "bad destination",
                    None,
                );
                self.errors.push(e);
                return None;
            }
            let mode = match &step.mode {
                None => None,
                Some(m) => match Mode::try_from(m.value.clone()) {
                    Ok(m) => Some(m),
                    Err(msg) => {
                        let e = self.at().error(ids.at(m), msg, "bad mode", None);
                        self.errors.push(e);
                        return None;
                    }
                },
            };
            let owner = match &step.owner {
                None => None,
                Some(o) => match Owner::try_from(o.value.clone()) {
                    Ok(o) => Some(o),
                    Err(msg) => {
                        let e = self.at().error(ids.at(o), msg, "bad owner", None);
                        self.errors.push(e);
                        return None;
                    }
                },
            };
            StageStep::Copy(CopyInto {
                from: source,
                to: to.value,
                mode,
                owner,
            })
        } else {
            if let Some(to) = &step.to {
                let e = self.at().error(
                    ids.at(to),
                    "`to` belongs to a `copy` step",
                    "no `copy:`",
                    None,
                );
                self.errors.push(e);
            }
            let program = self.program(&step.cmd, &step.argv, ids, vars, loc, "this step");
            let env = self.env(step.env, ids, vars, RunInStage::RESERVED_ENV);
            let user = self.user(&step.user, ids, vars);
            let caches = self.caches(step.caches, ids, vars);
            let workdir = match &step.workdir {
                None => "/".to_string(),
                Some(w) => {
                    let w = self.plain(w, ids, vars, "workdir")?;
                    if !w.value.starts_with('/') || w.value.split('/').any(|p| p == "..") {
                        let e = self.at().error(
                            w.loc,
                            format!("`{}` is not an absolute path", w.value),
                            "not absolute",
                            None,
                        );
                        self.errors.push(e);
                        return None;
                    }
                    w.value
                }
            };
            StageStep::Run(RunInStage {
                program: program?,
                env,
                network: step.network.map(|n| n.value).unwrap_or(false),
                user,
                workdir,
                caches,
                source_date_epoch: source_date_epoch.clone(),
            })
        };
        let runs_on = RunsOn::native(platform.clone());
        Some((
            Work::Stage {
                parent,
                step: kind,
                runs_on,
            },
            srcs,
            deps,
        ))
    }

    /// An `image-pull` target: a registry reference pinned by digest.
    pub(super) fn image_pull_target(
        &mut self,
        raw: RawTarget,
        ids: &FileIds,
        vars: &Vars,
        common: Common,
    ) -> Option<Target> {
        self.only_fields(&raw, ids, &image_pull::RULE);
        if let Some(first) = common.srcs.first().or(common.deps.first()) {
            let e = self.at().error(
                first.loc,
                "`image-pull` has no inputs besides its reference",
                "not an input of `image-pull`",
                None,
            );
            self.errors.push(e);
        }
        let Some(image) = raw.image.as_ref() else {
            let e = self.at().error(
                common.name.loc,
                format!("`{}` has no `image:`", common.name.value),
                "no image",
                Some(PIN_HINT.into()),
            );
            self.errors.push(e);
            return None;
        };
        let image = self.plain(image, ids, vars, "image")?;
        let digest = match ImageRef::parse(&image.value) {
            Ok(ImageRef::Pinned { digest, .. }) => digest,
            Ok(ImageRef::Target(_)) | Err(_) if !image.value.contains('@') => {
                let e = self.at().error(
                    image.loc,
                    format!("`{}` is not pinned by digest", image.value),
                    "a tag, not a digest",
                    Some(PIN_HINT.into()),
                );
                self.errors.push(e);
                return None;
            }
            Ok(ImageRef::Target(_)) => unreachable!("a target name has no `@`"),
            Err(msg) => {
                let e = self
                    .at()
                    .error(image.loc, msg, "bad digest", Some(PIN_HINT.into()));
                self.errors.push(e);
                return None;
            }
        };
        let platform = match raw.field("platform") {
            None => DEFAULT_PLATFORM.to_string(),
            Some(p) => self.platform(Some(p), ids, vars)?.value.to_string(),
        };
        let auth_env = match &raw.auth {
            None => None,
            Some(a) => {
                let mut names = Vec::new();
                for v in [&a.value.username_env, &a.value.password_env] {
                    if !is_var_name(&v.value) {
                        let e = self.at().error(ids.at(v), format!("`{}` is not an environment variable name", v.value), "not a variable name", Some("`auth:` names the variables that hold the credentials, never the credentials".into()));
                        self.errors.push(e);
                    }
                    names.push(v.value.clone());
                }
                Some((names[0].clone(), names[1].clone()))
            }
        };
        if self.errors.len() > common.errors_before {
            return None;
        }
        Some(Target {
            name: common.name.value,
            loc: common.name.loc,
            dir: common.dir,
            srcs: Vec::new(),
            named_srcs: Vec::new(),
            deps: Vec::new(),
            outs: Vec::new(),
            output_digest: None,
            hidden: false,
            run: None,
            work: Work::ImagePull(PullParams {
                reference: image.value,
                digest,
                platform,
                auth_env,
            }),
        })
    }

    /// A `docker-data-root` target: the image targets to preload.
    pub(super) fn data_root_target(
        &mut self,
        raw: RawTarget,
        ids: &FileIds,
        vars: &Vars,
        common: Common,
    ) -> Option<Target> {
        self.only_fields(&raw, ids, &data_root::RULE);
        let mut deps = common.deps;
        let mut images = Vec::new();
        match &raw.images {
            Some(list) if !list.value.is_empty() => {
                for i in &list.value {
                    let Some(t) = self.plain(i, ids, vars, "images") else {
                        continue;
                    };
                    if self.is_switched_off(&t.value) {
                        continue;
                    }
                    if !matches!(ImageRef::parse(&t.value), Ok(ImageRef::Target(_))) {
                        let e = self.at().error(t.loc, format!("`{}` is not a target", t.value), "not a target", Some("name `image` or `image-pull` targets; pull registry images with `image-pull` first".into()));
                        self.errors.push(e);
                        continue;
                    }
                    if !deps.iter().any(|d| d.value == t.value) {
                        deps.push(t.clone());
                    }
                    images.push(t.value);
                }
            }
            _ => {
                let e = self.at().error(
                    common.name.loc,
                    "`docker-data-root` needs `images:`",
                    "no images",
                    Some("list the `image` or `image-pull` targets to preload".into()),
                );
                self.errors.push(e);
            }
        }
        if self.errors.len() > common.errors_before {
            return None;
        }
        Some(Target {
            name: common.name.value,
            loc: common.name.loc,
            dir: common.dir,
            srcs: common.srcs,
            named_srcs: Vec::new(),
            deps,
            outs: Vec::new(),
            output_digest: None,
            hidden: false,
            run: None,
            work: Work::DataRoot(DataRootParams {
                // Each image's, once every target is loaded.
                platforms: vec![Platform::default_platform(); images.len()],
                images,
                references: Vec::new(),
            }),
        })
    }
}
