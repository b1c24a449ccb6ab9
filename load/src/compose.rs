//! The `docker-compose` component of `rootfs`: a compose file read at load
//! time, whose services' images are preloaded into the root file system's
//! Docker data-root.
//!
//! ```yaml
//! components:
//!   - type: docker-compose
//!     file: compose.yaml                  # beside the declaring BUILD file
//!     target: /etc/app/compose.yaml       # where it is installed
//!     images: {web: web-image}            # services built by Strata
//!     data_root: /var/lib/docker          # the default
//!     platform: linux/arm64               # the device's; default: the built images'
//! ```
//!
//! Every service needs an `image:`. A service listed in `images:` runs the
//! image of that target (an `image` or `image-pull` target), tagged in the
//! data-root as the compose file names it; any other service's image must be
//! pinned by digest (`name@sha256:<hex>`) and is pulled by a hidden
//! `image-pull` target (`<rootfs>#compose-<i>-<service>`), then recorded in
//! the data-root under that digest reference. A data-root serves one device,
//! so its images are for one platform: `platform:` when written, else that
//! of the images Strata builds for it (`linux/amd64` when there are none);
//! the pulls are for it, and a built image for another is refused. The images are loaded by a
//! hidden `docker-data-root` target (`<rootfs>#compose-<i>`), and the
//! component the rule receives is the resolved form: the compose file's
//! text (interpolated with the workspace's variables), its target path,
//! that data-root target and where it goes.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::rc::Rc;

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;
use strata_formats::oci::reference::split_tag;
use strata_rules::Work;
use strata_rules::builtin::{Builtin, Seg};
use strata_rules::data_root::{DataRootParams, DataRootRef};
use strata_rules::image_pull::PullParams;
use strata_rules::platform::{DEFAULT_PLATFORM, Platform};
use strata_rules::run::ImageRef;

use super::diag::{did_you_mean, unknown_field_hint};
use super::schema::Pairs;
use super::tree::Tree;
use super::{FileIds, Loader, Loc, Located, Target, Vars};

const FIELDS: &str = "file, target, images, data_root, platform";

/// The component as written in BUILD.yaml (after `${var}` interpolation).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    file: String,
    target: String,
    #[serde(default)]
    images: BTreeMap<String, String>,
    #[serde(default = "default_data_root")]
    data_root: String,
    /// The device's: pinned services are pulled for it and built images
    /// must be for it (by default, the built images' own).
    #[serde(default)]
    platform: Option<String>,
}

fn default_data_root() -> String {
    "/var/lib/docker".into()
}

/// What Strata reads of a compose file: the services and their images.
/// Everything else (ports, volumes, `x-` keys, ...) is the engine's.
#[derive(Deserialize)]
struct ComposeDoc {
    #[serde(default)]
    services: Option<Spanned<Option<Services>>>,
}

/// `services:` in file order, each name with its (possibly empty) body.
type Services = Pairs<Spanned<Option<Service>>>;

#[derive(Deserialize)]
struct Service {
    #[serde(default)]
    image: Option<Spanned<String>>,
}

/// An image target a compose component names, checked once every target
/// is loaded.
pub(super) struct ImageCheck {
    rootfs: String,
    service: String,
    target: Located<String>,
}

const IMAGE_HINT: &str = "name an `image` or `image-pull` target";

/// One component's platform, settled once every target is loaded: its
/// pulls are made for it and its built images must be for it.
pub(super) struct PlatformCheck {
    rootfs: String,
    /// `platform:` as written, checked.
    asked: Option<Located<Platform>>,
    /// Services built by Strata, with their image targets, in file order.
    built: Vec<(String, Located<String>)>,
    /// The hidden `image-pull` targets of the pinned services.
    pulls: Vec<String>,
}

impl Loader {
    /// Resolves the `docker-compose` components of a target's (interpolated)
    /// field `field` (a [`FieldKind::Components`]) in place and returns the
    /// hidden targets they need.
    ///
    /// [`FieldKind::Components`]: strata_rules::table::FieldKind::Components
    #[allow(clippy::too_many_arguments)]
    pub(super) fn compose_components(
        &mut self,
        fields: &mut serde_json::Map<String, Value>,
        field: &str,
        written_components: &Tree,
        rootfs: &str,
        dir: &Path,
        vars: &Vars,
    ) -> Vec<Target> {
        let Some(Value::Array(components)) = fields.get_mut(field) else {
            return Vec::new();
        };
        let mut hidden = Vec::new();
        for (i, component) in components.iter_mut().enumerate() {
            let Value::Object(map) = component else {
                continue;
            };
            if map.get("type").and_then(Value::as_str) != Some("docker-compose") {
                continue;
            }
            let mut written = map.clone();
            written.remove("type");
            let item = written_components.item(i);
            let written: Written = match serde_json::from_value(Value::Object(written)) {
                Ok(w) => w,
                Err(e) => {
                    let message = e.to_string();
                    let loc = match message
                        .strip_prefix("unknown field `")
                        .and_then(|r| r.split('`').next())
                    {
                        Some(name) => item.locate(&[Seg::Name(name.into())]),
                        None => item.loc,
                    };
                    let help = unknown_field_hint(&message)
                        .unwrap_or_else(|| format!("a `docker-compose` component takes: {FIELDS}"));
                    let err = self.at().error(
                        loc,
                        format!("components[{i}] (docker-compose): {message}"),
                        format!("components[{i}]"),
                        Some(help),
                    );
                    self.errors.push(err);
                    continue;
                }
            };
            let Some((resolved, targets)) =
                self.compose_component(i, &written, item, rootfs, dir, vars)
            else {
                continue;
            };
            *component = resolved;
            hidden.extend(targets);
        }
        hidden
    }

    /// One component: its resolved form and its hidden targets.
    #[allow(clippy::too_many_arguments)]
    fn compose_component(
        &mut self,
        i: usize,
        written: &Written,
        item: &Tree,
        rootfs: &str,
        dir: &Path,
        vars: &Vars,
    ) -> Option<(Value, Vec<Target>)> {
        let errors_before = self.errors.len();
        let file_loc = item.locate(&[Seg::Key("file".into())]);
        let asked = written.platform.as_ref().and_then(|text| {
            let loc = item.locate(&[Seg::Key("platform".into())]);
            match Platform::parse_known(text) {
                Ok(value) => Some(Located { value, loc }),
                Err(msg) => {
                    let e = self.at().error(
                        loc,
                        format!("components[{i}] (docker-compose): {msg}"),
                        "not a platform",
                        Some("write the platform of the device's images as OCI names it: `linux/amd64` or `linux/arm64` (an arm64 board is `linux/arm64`, not `aarch64`)".into()),
                    );
                    self.errors.push(e);
                    None
                }
            }
        });
        let mut built: Vec<(String, Located<String>)> = Vec::new();
        let (fid, raw, text) = self.read_compose(&written.file, file_loc, dir, vars)?;
        let compose_ids = FileIds(Rc::new(vec![fid]));
        let options = serde_saphyr::options! { with_snippet: false };
        let doc: ComposeDoc = match serde_saphyr::from_str_with_options(&raw, options) {
            Ok(d) => d,
            Err(e) => {
                let full = e.to_string();
                let message = super::strip_location(&full);
                let err = match e.location() {
                    Some(l) => {
                        // Tabs and indentation, said as for BUILD files.
                        let said =
                            super::yaml_errors::explain(&message, compose_ids.loc(&l), &raw, false);
                        let err = self.at().error(
                            said.loc,
                            format!("compose file: {}", said.message),
                            said.label,
                            Some(said.help),
                        );
                        match said.also {
                            Some((other, label)) => err.also_at(&self.sources, other, &label),
                            None => err,
                        }
                    }
                    None => {
                        super::ConfigError::general(format!("{}: {message}", written.file), None)
                    }
                };
                self.errors.push(err);
                return None;
            }
        };
        let services = match doc.services {
            Some(Spanned {
                value: Some(pairs), ..
            }) if !pairs.0.is_empty() => pairs.0,
            other => {
                let loc = other.map(|s| compose_ids.at(&s)).unwrap_or(Loc {
                    file: fid,
                    line: 1,
                    column: 1,
                    len: 1,
                });
                let e = self.at().error(
                    loc,
                    format!("compose file `{}` has no services", written.file),
                    "no `services:`",
                    Some("list the services under `services:`, each with an `image:`".into()),
                );
                self.errors.push(e);
                return None;
            }
        };
        let data_root_name = format!("{rootfs}#compose-{i}");
        let mut images: Vec<String> = Vec::new();
        let mut references: Vec<DataRootRef> = Vec::new();
        let mut deps: Vec<Located<String>> = Vec::new();
        let mut pulls: Vec<Target> = Vec::new();
        for (service, body) in &services {
            let key_loc = compose_ids.at(service);
            let image = body.value.as_ref().and_then(|b| b.image.as_ref());
            let Some(image) = image else {
                let e = self.at().error(
                    key_loc,
                    format!("service `{}` has no `image:`", service.value),
                    "no image",
                    Some(format!("give it `image: name@sha256:<hex>` (pulled, pinned by digest) or `image: name:tag` built by Strata (`images: {{{}: TARGET}}` on the component)", service.value)),
                );
                self.errors.push(e);
                continue;
            };
            let image_loc = compose_ids.at(image);
            let reference = match vars.interpolate(&image.value) {
                Ok(t) => t.actual,
                // Reported for the whole file by `read_compose`.
                Err(_) => continue,
            };
            if let Some(target) = written.images.get(&service.value) {
                if reference.contains('@') {
                    let e = self.at().error(
                        image_loc,
                        format!("service `{}` is built from `{target}`, but its image `{reference}` is a digest reference", service.value),
                        "pinned by digest",
                        Some("name a built image by a tag, such as `app/web:1`: the data-root tags the built image with it".into()),
                    );
                    self.errors.push(e);
                    continue;
                }
                if let Err(msg) = check_tag_reference(&reference) {
                    let e = self.at().error(
                        image_loc,
                        format!("service `{}`: `{reference}` {msg}", service.value),
                        "not an image reference",
                        Some(
                            "write `name:tag`, such as `app/web:1` or `registry:5000/app/web:1`"
                                .into(),
                        ),
                    );
                    self.errors.push(e);
                    continue;
                }
                let loc =
                    item.locate(&[Seg::Key("images".into()), Seg::Key(service.value.clone())]);
                self.compose_checks.push(ImageCheck {
                    rootfs: rootfs.to_string(),
                    service: service.value.clone(),
                    target: Located {
                        value: target.clone(),
                        loc,
                    },
                });
                built.push((
                    service.value.clone(),
                    Located {
                        value: target.clone(),
                        loc,
                    },
                ));
                if !images.contains(target) {
                    images.push(target.clone());
                    deps.push(Located {
                        value: target.clone(),
                        loc,
                    });
                }
                references.push(DataRootRef {
                    image: target.clone(),
                    reference,
                });
                continue;
            }
            let digest = match ImageRef::parse(&reference) {
                Ok(ImageRef::Pinned { digest, .. }) => digest,
                Ok(ImageRef::Target(_)) | Err(_) if !reference.contains('@') => {
                    let e = self.at().error(
                        image_loc,
                        format!("the image `{reference}` of service `{}` is neither built by Strata nor pinned by digest", service.value),
                        "not pinned",
                        Some(format!("pin it, `name@sha256:<hex>` (a tag can move, so the build would not be reproducible; `docker inspect --format '{{{{index .RepoDigests 0}}}}' IMAGE` prints it), or build it with Strata: `images: {{{}: TARGET}}` on the component", service.value)),
                    );
                    self.errors.push(e);
                    continue;
                }
                Ok(ImageRef::Target(_)) => unreachable!("a target name has no `@`"),
                Err(msg) => {
                    let e = self.at().error(
                        image_loc,
                        format!("service `{}`: {msg}", service.value),
                        "bad digest",
                        Some("pin the image as `name@sha256:<64 hex digits>`".into()),
                    );
                    self.errors.push(e);
                    continue;
                }
            };
            let pull_name = match pulls
                .iter()
                .find(|t| matches!(&t.work, Work::ImagePull(p) if p.reference == reference))
            {
                Some(t) => t.name.clone(),
                None => {
                    let name = format!("{data_root_name}-{}", service.value);
                    pulls.push(Target {
                        name: name.clone(),
                        loc: image_loc,
                        dir: dir.to_path_buf(),
                        srcs: Vec::new(),
                        named_srcs: Vec::new(),
                        deps: Vec::new(),
                        outs: Vec::new(),
                        output_digest: None,
                        hidden: true,
                        run: None,
                        work: Work::ImagePull(PullParams {
                            reference: reference.clone(),
                            digest,
                            // The component's, once every target is loaded
                            // (`compose_platforms`).
                            platform: DEFAULT_PLATFORM.into(),
                            auth_env: None,
                        }),
                    });
                    images.push(name.clone());
                    deps.push(Located {
                        value: name.clone(),
                        loc: image_loc,
                    });
                    name
                }
            };
            references.push(DataRootRef {
                image: pull_name,
                reference,
            });
        }
        for service in written.images.keys() {
            if !services.iter().any(|(s, _)| &s.value == service) {
                let loc = item.locate(&[Seg::Key("images".into()), Seg::Name(service.clone())]);
                let known = services.iter().map(|(s, _)| s.value.as_str());
                let hint = did_you_mean(service, known)
                    .unwrap_or_else(|| "`images:` maps services of the compose file to the targets that build their images".into());
                let e = self.at().error(
                    loc,
                    format!(
                        "`images:` names service `{service}`, which `{}` does not have",
                        written.file
                    ),
                    "not a service",
                    Some(hint),
                );
                self.errors.push(e);
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        self.compose_platforms.push(PlatformCheck {
            rootfs: rootfs.to_string(),
            asked,
            built,
            pulls: pulls.iter().map(|t| t.name.clone()).collect(),
        });
        let mut targets = pulls;
        targets.push(Target {
            name: data_root_name.clone(),
            loc: file_loc,
            dir: dir.to_path_buf(),
            srcs: Vec::new(),
            named_srcs: Vec::new(),
            deps,
            outs: Vec::new(),
            output_digest: None,
            hidden: true,
            run: None,
            work: Work::DataRoot(DataRootParams {
                // Each image's, once every target is loaded.
                platforms: vec![Platform::default_platform(); images.len()],
                images,
                references,
            }),
        });
        let resolved = serde_json::json!({
            "type": "docker-compose",
            "compose": text,
            "target": written.target,
            "preload": data_root_name,
            "data_root": written.data_root,
        });
        Some((resolved, targets))
    }

    /// Reads the compose file (relative to `dir`, inside the workspace) as
    /// a source of diagnostics: its index, its text and its text with
    /// `${var}` interpolated.
    fn read_compose(
        &mut self,
        file: &str,
        loc: Loc,
        dir: &Path,
        vars: &Vars,
    ) -> Option<(usize, String, String)> {
        let path = match fs::canonicalize(dir.join(file)) {
            Ok(p) if p.starts_with(&self.root) && p.is_file() => p,
            Ok(_) if !file.contains("..") && !file.starts_with('/') => {
                let e = self.at().error(
                    loc,
                    format!("compose file `{file}` is not a file"),
                    "not a file",
                    None,
                );
                self.errors.push(e);
                return None;
            }
            Ok(_) => {
                let e = self.at().error(
                    loc,
                    format!("compose file `{file}` is outside the workspace"),
                    "outside the workspace",
                    Some("the compose file is read at load time and must be inside the folder of the root BUILD.yaml".into()),
                );
                self.errors.push(e);
                return None;
            }
            Err(e) => {
                let err = self.at().error(
                    loc,
                    format!("cannot read compose file `{file}`: {e}"),
                    "cannot read",
                    Some(
                        "the path is relative to the folder of the file declaring the target"
                            .into(),
                    ),
                );
                self.errors.push(err);
                return None;
            }
        };
        let Ok(raw) = fs::read_to_string(&path) else {
            let e = self.at().error(
                loc,
                format!("compose file `{file}` is not UTF-8 text"),
                "not UTF-8",
                None,
            );
            self.errors.push(e);
            return None;
        };
        let display = super::source::shown(&path);
        let fid = self.sources.add(&path, display, raw.clone());
        let at_offset = |offset: usize, len: usize| {
            let before: String = raw.chars().take(offset).collect();
            Loc {
                file: fid,
                line: before.matches('\n').count() as u64 + 1,
                column: before.rsplit('\n').next().unwrap_or("").chars().count() as u64 + 1,
                len: len.max(1) as u64,
            }
        };
        match vars.interpolate(&raw) {
            Ok(t) if t.has_secret() => {
                let (offset, len) = secret_use(&raw, vars).unwrap_or((0, 1));
                let e = self.at().error(
                    at_offset(offset, len),
                    "a value read with !ENV cannot be used in a compose file",
                    "uses an !ENV value",
                    Some("the compose file is installed in the root file system, and !ENV values are secrets; use a plain variable or `--var`".into()),
                );
                self.errors.push(e);
                None
            }
            Ok(t) => Some((fid, raw.clone(), t.actual)),
            Err(e) => {
                let err = self.at().error(
                    at_offset(e.offset, e.len),
                    e.message,
                    "here",
                    Some(format!("{} (Strata interpolates `${{var}}` in compose files; `$${{` stands for a literal `${{`, for compose's own variables)", e.help)),
                );
                self.errors.push(err);
                None
            }
        }
    }

    /// Once every target is loaded: the targets compose components build
    /// images with exist and make images.
    pub(super) fn check_compose_images(&mut self, targets: &BTreeMap<String, Target>) {
        for check in std::mem::take(&mut self.compose_checks) {
            let name = &check.target.value;
            match targets.get(name) {
                Some(Target {
                    work:
                        Work::Builtin {
                            rule: Builtin::Image(_),
                            ..
                        }
                        | Work::ImagePull(_),
                    ..
                }) => {}
                Some(t) => {
                    let e = self.at().error(
                        check.target.loc,
                        format!(
                            "service `{}` of `{}` runs `{name}`, a `{}` target, which makes no image",
                            check.service,
                            check.rootfs,
                            t.work.rule_name()
                        ),
                        "not an image",
                        Some(IMAGE_HINT.into()),
                    );
                    self.errors.push(e);
                }
                None if self.off.contains_key(name.as_str()) => {
                    let place = self.place(self.off[name.as_str()]);
                    let e = self.at().error(
                        check.target.loc,
                        format!(
                            "service `{}` of `{}` is built by `{name}`, which is switched off",
                            check.service, check.rootfs
                        ),
                        "switched off",
                        Some(format!(
                            "`{name}` has a false `when:` at {place}; a service needs its image"
                        )),
                    );
                    self.errors.push(e);
                }
                None => {
                    let hint = did_you_mean(name, targets.keys().map(String::as_str))
                        .unwrap_or_else(|| IMAGE_HINT.into());
                    let e = self.at().error(
                        check.target.loc,
                        format!(
                            "service `{}` of `{}` is built by unknown target `{name}`",
                            check.service, check.rootfs
                        ),
                        "unknown target",
                        Some(hint),
                    );
                    self.errors.push(e);
                }
            }
        }
    }
}

impl Loader {
    /// Once every target is loaded (and before `resolve_platforms`, which
    /// gives each data-root image its platform): each compose component's
    /// platform, its pulls made for it, built images for another refused.
    pub(super) fn compose_platforms(&mut self, targets: &mut BTreeMap<String, Target>) {
        for check in std::mem::take(&mut self.compose_platforms) {
            let built: Vec<(&String, &Located<String>, Platform)> = check
                .built
                .iter()
                .filter_map(|(service, target)| {
                    let written = match &targets.get(&target.value)?.work {
                        Work::Builtin {
                            rule: Builtin::Image(p),
                            ..
                        } => &p.platform,
                        Work::ImagePull(p) => &p.platform,
                        _ => return None,
                    };
                    Some((service, target, Platform::parse_known(written).ok()?))
                })
                .collect();
            let platform = match (&check.asked, built.first()) {
                (Some(asked), _) => {
                    for (service, target, theirs) in &built {
                        if *theirs != asked.value {
                            let e = self.at().error(
                                target.loc,
                                format!("the docker-compose component of `{}` is for {}, but its service `{service}` runs `{}`, an image for {theirs}", check.rootfs, asked.value, target.value),
                                format!("for {theirs}"),
                                Some(format!("a data-root holds the images of one device: build `{}` for {} (`platform:` on it), or change the component's `platform:`", target.value, asked.value)),
                            );
                            self.errors.push(e);
                        }
                    }
                    asked.value.clone()
                }
                (None, Some((first_service, first_target, first))) => {
                    for (service, target, theirs) in &built[1..] {
                        if theirs != first {
                            let e = self.at().error(
                                target.loc,
                                format!("service `{service}` of `{}` runs `{}`, an image for {theirs}, but service `{first_service}` runs `{}`, for {first}", check.rootfs, target.value, first_target.value),
                                format!("for {theirs}"),
                                Some("a data-root holds the images of one device: build them for one platform".into()),
                            );
                            self.errors.push(e);
                        }
                    }
                    first.clone()
                }
                (None, None) => Platform::default_platform(),
            };
            for pull in &check.pulls {
                if let Some(Work::ImagePull(p)) = targets.get_mut(pull).map(|t| &mut t.work) {
                    p.platform = platform.to_string();
                }
            }
        }
    }
}

/// Checks a `name[:tag]` reference the data-root can tag an image with.
fn check_tag_reference(reference: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c);
    let (name, tag) = split_tag(reference);
    if name.is_empty() || !name.chars().all(ok_char) || name.starts_with('/') || name.ends_with('/')
    {
        return Err(
            "is not an image name (lower-case letters, digits, `._-/`, a registry's `host:port/`)"
                .into(),
        );
    }
    if tag.is_empty()
        || tag.len() > 128
        || !tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!("has a bad tag `{tag}`"));
    }
    Ok(())
}

/// The first `${name}` in `text` naming a variable read with `!ENV`, as a
/// char offset and length.
fn secret_use(text: &str, vars: &Vars) -> Option<(usize, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i + 1 < chars.len() {
        if chars[i] == '$' && chars[i + 1] == '{' && (i == 0 || chars[i - 1] != '$') {
            let close = chars[i + 2..].iter().position(|c| *c == '}')? + i + 2;
            let name: String = chars[i + 2..close].iter().collect();
            if vars.get(&name).is_some_and(|v| v.from_env.is_some()) {
                return Some((i, close + 1 - i));
            }
            i = close;
        }
        i += 1;
    }
    None
}
