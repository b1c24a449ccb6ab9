//! Whether this machine can run the programs of a build's container steps,
//! and through which emulator.
//!
//! A step on an image of another architecture runs through a binfmt_misc
//! handler (qemu-user); without one, Docker fails deep in the step with
//! "exec format error". The build checks before anything runs and says how
//! to register one. The handler that will run a step is part of its key
//! (`RunsOn::emulator`), so emulated results are told from native ones.
//! Nothing else is ever emulated: built-in rules, image pulls and
//! `docker-data-root` (whose `dockerd` is this machine's) run natively
//! whatever the platform of the images they handle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use strata_rules::platform::{Emulator, Platform};
use strata_rules::run::ImageRef;
use strata_rules::stage::StageStep;

use crate::binfmt::{self, Handler};
use strata_load::diag::At;
use strata_load::{ConfigError, Target, Workspace};
use strata_rules::Work;

/// The architecture of this machine in OCI's words (`amd64`, `arm64`).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Whether programs of `platform` run here without an emulator.
pub fn is_native(platform: &Platform) -> bool {
    platform.os == "linux" && platform.architecture == host_architecture()
}

/// The emulators of this machine, found once per architecture.
pub struct Emulators {
    dir: PathBuf,
    found: Mutex<BTreeMap<String, Result<Emulator, Missing>>>,
}

/// Why an architecture has no usable emulator.
#[derive(Clone, Debug)]
enum Missing {
    NoHandler,
    NotFixed(Handler),
    Unreadable(String),
}

impl Emulators {
    /// The handlers of [`binfmt::dir`].
    pub fn of_this_machine() -> Emulators {
        Emulators::in_dir(&binfmt::dir())
    }

    fn in_dir(dir: &Path) -> Emulators {
        Emulators {
            dir: dir.to_path_buf(),
            found: Mutex::default(),
        }
    }

    fn lookup(&self, arch: &str) -> Result<Emulator, Missing> {
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        found
            .entry(arch.to_string())
            .or_insert_with(|| match binfmt::handler_for(&self.dir, arch) {
                None => Err(Missing::NoHandler),
                Some(h) if !h.fixed() => Err(Missing::NotFixed(h)),
                Some(h) => h.emulator().map_err(Missing::Unreadable),
            })
            .clone()
    }

    /// The emulator that runs programs of `platform` here; `None` for this
    /// machine's own platform, or when there is none (which `check`
    /// refuses before a build runs).
    pub fn for_platform(&self, platform: &Platform) -> Option<Emulator> {
        if is_native(platform) {
            return None;
        }
        self.lookup(&platform.architecture).ok()
    }
}

/// A container step that runs programs: who runs what, and where to point.
struct Runner<'a> {
    /// The target the user wrote (a stage for its steps).
    user: &'a str,
    /// The image (or `from:`) as written.
    image: String,
    /// Where the error points: the image target, else the step.
    at: &'a Target,
    platform: &'a Platform,
}

fn runner<'a>(ws: &'a Workspace, t: &'a Target) -> Option<Runner<'a>> {
    let user = t.name.split('#').next().unwrap_or(&t.name);
    let find = |name: &str| ws.targets.iter().find(|x| x.name == name);
    match &t.work {
        Work::Run(step) => {
            let c = step.container.as_ref()?;
            let (image, at) = match &c.image {
                ImageRef::Target(name) => (name.clone(), find(name).unwrap_or(t)),
                ImageRef::Pinned { name, digest } => (format!("{name}@{digest}"), t),
            };
            Some(Runner {
                user,
                image,
                at,
                platform: &c.runs_on.platform,
            })
        }
        Work::Stage {
            step: StageStep::Run(_),
            runs_on,
            ..
        } => {
            // The stage's `from:`: the first parent that is not a step.
            let mut parent = stage_parent(t);
            let mut seen = BTreeSet::new();
            while let Some(p) = parent.and_then(find) {
                if !matches!(p.work, Work::Stage { .. }) || !seen.insert(p.name.as_str()) {
                    break;
                }
                parent = stage_parent(p);
            }
            let (image, at) = match parent {
                Some(name) => {
                    let from = find(name);
                    let is_image = from.is_some_and(|f| {
                        matches!(
                            f.work,
                            Work::ImagePull(_)
                                | Work::Builtin {
                                    rule: strata_rules::builtin::Builtin::Image(_),
                                    ..
                                }
                        )
                    });
                    (name.to_string(), from.filter(|_| is_image).unwrap_or(t))
                }
                None => ("scratch".to_string(), t),
            };
            Some(Runner {
                user,
                image,
                at,
                platform: &runs_on.platform,
            })
        }
        _ => None,
    }
}

fn stage_parent(t: &Target) -> Option<&str> {
    match &t.work {
        Work::Stage { parent, .. } => parent.as_deref(),
        _ => None,
    }
}

/// The commands that register qemu-user's handler for `arch` on Debian.
pub fn register_commands(arch: &str) -> String {
    let q = binfmt::qemu_name(arch);
    format!(
        "as root: `mountpoint -q {dir} || mount -t binfmt_misc binfmt_misc {dir}`, \
         `apt-get install qemu-user-static`, \
         `cat /usr/lib/binfmt.d/qemu-{q}.conf > {dir}/register` \
         (scripts/binfmt-up.sh does all three); or build on a linux/{arch} machine",
        dir = binfmt::KERNEL_DIR
    )
}

/// Refuses, before anything runs, every container step among `targets`
/// whose programs this machine cannot run: another architecture with no
/// binfmt_misc handler, a handler registered without the `F` flag (a
/// container does not see its interpreter), or an interpreter that cannot
/// be read. One error per stage or step and image.
pub fn check<'a>(
    ws: &Workspace,
    targets: impl Iterator<Item = &'a Target>,
    emulators: &Emulators,
) -> Result<(), Vec<ConfigError>> {
    let at = At {
        sources: &ws.sources,
    };
    let host = host_architecture();
    let mut errors = Vec::new();
    let mut reported = BTreeSet::new();
    for t in targets {
        let Some(r) = runner(ws, t) else { continue };
        if is_native(r.platform) {
            continue;
        }
        let Err(missing) = emulators.lookup(&r.platform.architecture) else {
            continue;
        };
        if !reported.insert((r.user.to_string(), r.image.clone())) {
            continue;
        }
        let (arch, platform) = (&r.platform.architecture, r.platform);
        let runs = format!(
            "`{}` runs `{}`, an image for {platform}, but this machine is linux/{host}",
            r.user, r.image
        );
        let (message, hint) = match missing {
            Missing::NoHandler => (
                format!(
                    "{runs} and has no binfmt_misc handler for {arch} (in {})",
                    emulators.dir.display()
                ),
                format!(
                    "register an emulator for {arch}, {}",
                    register_commands(arch)
                ),
            ),
            Missing::NotFixed(h) => (
                format!(
                    "{runs}, and its binfmt_misc handler `{}` ({}) was registered without the `F` flag (flags: `{}`), so a container cannot see its interpreter",
                    h.name, h.interpreter, h.flags
                ),
                format!(
                    "register it again with `F` at the end of its line: `echo -1 > {}/{}`, then {}",
                    binfmt::KERNEL_DIR,
                    h.name,
                    register_commands(arch)
                ),
            ),
            Missing::Unreadable(why) => (
                format!("{runs}, and its emulator cannot be keyed: {why}"),
                "reinstall qemu-user-static, or register the handler again".to_string(),
            ),
        };
        errors.push(at.error(r.at.loc, message, format!("{platform} image"), Some(hint)));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_runs_its_own_platform_natively() {
        let own = Platform::parse(&format!("linux/{}", host_architecture())).unwrap();
        assert!(is_native(&own));
        let empty = tempfile::tempdir().unwrap();
        let emulators = Emulators::in_dir(empty.path());
        assert_eq!(emulators.for_platform(&own), None);
        let other = if host_architecture() == "arm64" {
            "linux/amd64"
        } else {
            "linux/arm64"
        };
        let other = Platform::parse(other).unwrap();
        assert!(!is_native(&other));
        assert_eq!(emulators.for_platform(&other), None);
        assert!(matches!(
            emulators.lookup(&other.architecture),
            Err(Missing::NoHandler)
        ));
    }

    #[test]
    fn the_commands_name_debians_handler_file() {
        let c = register_commands("arm64");
        assert!(c.contains("apt-get install qemu-user-static"), "{c}");
        assert!(
            c.contains(
                "cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register"
            ),
            "{c}"
        );
        assert!(c.contains("mount -t binfmt_misc"), "{c}");
    }
}
