//! Platforms (`linux/arm64`) and where a container step's programs run.
//!
//! A container step runs the programs of its image, so the image's platform
//! decides which layout and config are read and enters the step's key. An
//! image of another architecture than the machine's runs through an emulator
//! (a binfmt_misc handler, usually qemu-user); which one is part of the key
//! too, so a result made under emulation is never mistaken for a native one.
//! Finding the emulator is the engine's business: here it is only data.

pub use strata_formats::oci::platform::{
    DEFAULT_PLATFORM, KNOWN_ARCHITECTURES, KNOWN_OS, Platform,
};
use strata_store::reapi;

/// The binfmt_misc handler that runs a foreign image's programs: the
/// interpreter the kernel starts (its path as registered), the SHA-256 of
/// the file that path names, and the handler's flags (`POF`: preserve
/// argv[0], open the binary, fix the interpreter at registration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emulator {
    pub interpreter: String,
    /// `sha256:<hex>` of the interpreter file.
    pub sha256: String,
    pub flags: String,
}

/// Where a container step's programs run: its image's platform and, when
/// that is not the machine's, the emulator. Both enter the step's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunsOn {
    pub platform: Platform,
    /// `None`: natively (or nothing runs, as in a `copy` step).
    pub emulator: Option<Emulator>,
}

impl RunsOn {
    /// Natively on `platform` (the engine adds the emulator a foreign one
    /// needs when it plans the build).
    pub fn native(platform: Platform) -> RunsOn {
        RunsOn {
            platform,
            emulator: None,
        }
    }

    /// The key's properties: `platform`, and `emulator`,
    /// `emulator.sha256` and `emulator.flags` for an emulated step.
    pub fn properties(&self) -> Vec<reapi::Property> {
        let prop = |name: &str, value: String| reapi::Property {
            name: name.to_string(),
            value,
        };
        let mut v = vec![prop("platform", self.platform.to_string())];
        if let Some(e) = &self.emulator {
            v.push(prop("emulator", e.interpreter.clone()));
            v.push(prop("emulator.flags", e.flags.clone()));
            v.push(prop("emulator.sha256", e.sha256.clone()));
        }
        v
    }
}

impl Default for RunsOn {
    fn default() -> RunsOn {
        RunsOn::native(Platform::default_platform())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_and_emulator_are_keyed() {
        let native = RunsOn::default();
        let arm = RunsOn::native(Platform::parse_known("linux/arm64").unwrap());
        let emulated = RunsOn {
            emulator: Some(Emulator {
                interpreter: "/usr/libexec/qemu-binfmt/aarch64-binfmt-P".into(),
                sha256: format!("sha256:{}", "ab".repeat(32)),
                flags: "POF".into(),
            }),
            ..arm.clone()
        };
        assert_ne!(native.properties(), arm.properties());
        assert_ne!(arm.properties(), emulated.properties());
        let names: Vec<String> = emulated.properties().into_iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            ["platform", "emulator", "emulator.flags", "emulator.sha256"]
        );
    }
}
