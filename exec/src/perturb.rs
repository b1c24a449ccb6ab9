//! What a perturbed step runs under, for `strata audit` (which chooses
//! them), in the spirit of reprotest: a step that depends on any of it is
//! not reproducible, even where a normal build pins the value (a step
//! always gets `TZ=UTC`, `LANG=C.UTF-8` and umask 022), because the pin only
//! hides the dependency. Executors apply a `Perturbation`; `reorder` holds
//! the folder-listing reversal.

use std::ffi::OsString;

use serde::Serialize;

use crate::sandbox;

/// A time zone 14 hours ahead of UTC, as a POSIX TZ string: it needs no
/// tzdata, and no day boundary falls at the same instant as in UTC.
pub const TZ: &str = "GMT-14";
/// A locale other than the step's `C.UTF-8`. Where it is not installed,
/// programs fall back to the `C` locale, which still differs.
pub const LANG: &str = "fr_CH.UTF-8";
/// Group-writable files and folders, unlike the step's 022.
pub const UMASK: u32 = 0o002;

/// How one step is perturbed. Keys never see any of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Perturbation {
    /// `TZ` of steps that do not declare it.
    pub tz: String,
    /// `LANG` of steps that do not declare it.
    pub lang: String,
    /// The step's umask (namespace sandbox and unsandboxed steps; Docker
    /// offers no umask).
    pub umask: u32,
    /// The step's environment in reverse order.
    pub reverse_env: bool,
    /// Folders of the step's inputs list their entries in reverse order
    /// (see `reorder`).
    pub reverse_dirs: bool,
}

impl Default for Perturbation {
    fn default() -> Self {
        Perturbation {
            tz: TZ.into(),
            lang: LANG.into(),
            umask: UMASK,
            reverse_env: true,
            reverse_dirs: true,
        }
    }
}

impl Perturbation {
    /// A step's actual environment, perturbed: `TZ` and `LANG` replaced
    /// unless the target declares them (a declared value is part of the
    /// target's meaning), then the order reversed.
    pub fn step_env(
        &self,
        env: &[(String, String)],
        declared: impl Fn(&str) -> bool,
    ) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| {
                let v = match k.as_str() {
                    "TZ" if !declared(k) => self.tz.clone(),
                    "LANG" if !declared(k) => self.lang.clone(),
                    _ => v.clone(),
                };
                (k.clone(), v)
            })
            .collect();
        if self.reverse_env {
            out.reverse();
        }
        out
    }

    /// The options of the sandbox helper that apply this perturbation.
    pub fn helper_flags(&self) -> Vec<OsString> {
        let mut flags = vec![OsString::from(format!(
            "{}{:04o}",
            sandbox::FLAG_UMASK,
            self.umask
        ))];
        if self.reverse_env {
            flags.push(sandbox::FLAG_REVERSE_ENV.into());
        }
        if self.reverse_dirs {
            flags.push(sandbox::FLAG_REVERSE_DIRS.into());
        }
        flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        [("HOME", "/h"), ("LANG", "C.UTF-8"), ("TZ", "UTC")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tz_and_lang_change_and_the_order_reverses() {
        let p = Perturbation::default();
        let out = p.step_env(&env(), |_| false);
        assert_eq!(
            out,
            vec![
                ("TZ".to_string(), TZ.to_string()),
                ("LANG".to_string(), LANG.to_string()),
                ("HOME".to_string(), "/h".to_string()),
            ]
        );
    }

    #[test]
    fn declared_variables_keep_their_value() {
        let p = Perturbation::default();
        let out = p.step_env(&env(), |k| k == "TZ");
        assert!(out.contains(&("TZ".to_string(), "UTC".to_string())));
        assert!(out.contains(&("LANG".to_string(), LANG.to_string())));
    }

    #[test]
    fn helper_flags_carry_the_umask_in_octal() {
        let p = Perturbation::default();
        assert_eq!(p.helper_flags()[0], OsString::from("--umask=0002"));
    }
}
