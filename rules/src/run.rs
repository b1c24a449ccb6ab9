//! The `run` rule: a command in a sandbox that sees only its declared inputs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use strata_store::reapi;
use strata_store::{Digest, DigestFunction};

use crate::Text;
use crate::layout;
use crate::platform::RunsOn;
use crate::table::{Field, Parse, Rule};

/// `run`: a command, in the sandbox or in an image's container.
pub const RULE: Rule = Rule {
    name: "run",
    doc: "runs a command in the sandbox, or in a container of an image",
    fields: &[
        Field::typed("cmd", "the command, run by `/bin/sh -c`"),
        Field::typed("argv", "the program and its arguments, run without a shell"),
        Field::typed("env", "environment variables the step gets"),
        Field::typed(
            "outs",
            "the outputs under `$OUT`; a trailing `/` marks a folder",
        ),
        Field::typed("network", "whether the step may reach the network"),
        Field::typed(
            "local",
            "run on this machine even when the build has a remote executor",
        ),
        Field::typed("tools", "the host programs the step uses, which key it"),
        Field::typed(
            "output_digest",
            "the output's digest, known in advance (a fixed-output step)",
        ),
        Field::typed(
            "image",
            "run in a container of this image (a target or a pinned reference)",
        ),
        Field::typed("platform", "the platform of the image's programs"),
        Field::typed("user", "the user the container runs as"),
        Field::typed(
            "caches",
            "cache folders mounted into the container, by name",
        ),
        Field::typed("limits", "processes, memory and time the step may use"),
    ],
    parse: Parse::Run,
    image_output: false,
    contains_inputs: false,
};

/// Version of the key encoding of `run`. Bump it when the meaning of a key
/// changes, so old cache entries are not reused with new semantics.
const RUN_SALT: &[u8] = b"strata/run/v1";
const FIXED_OUTPUT_SALT: &[u8] = b"strata/fixed-output/v1";

/// What the step executes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// `cmd:` run by `/bin/sh -c`.
    Shell(Text),
    /// `argv:` run directly, without a shell.
    Argv(Vec<Text>),
}

impl Program {
    /// The arguments as the step receives them, and as they are keyed.
    /// Every text the program is made of.
    pub fn texts(&self) -> impl Iterator<Item = &Text> {
        match self {
            Program::Shell(cmd) => std::slice::from_ref(cmd).iter(),
            Program::Argv(args) => args.iter(),
        }
    }

    pub fn argv(&self) -> (Vec<String>, Vec<String>) {
        match self {
            Program::Shell(cmd) => (
                vec!["/bin/sh".into(), "-c".into(), cmd.actual.clone()],
                vec!["/bin/sh".into(), "-c".into(), cmd.keyed.clone()],
            ),
            Program::Argv(args) => args
                .iter()
                .map(|a| (a.actual.clone(), a.keyed.clone()))
                .unzip(),
        }
    }
}

/// The declared output digest of a fixed-output step, `<function>:<hex>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedOutput {
    pub function: DigestFunction,
    pub hash: [u8; 32],
}

impl FixedOutput {
    /// Parses `blake3:<64 hex>` or `sha256:<64 hex>`.
    pub fn parse(s: &str) -> Result<FixedOutput, String> {
        let (f, hex) = s.split_once(':').ok_or_else(|| {
            "expected `<function>:<hex>`, for example `blake3:` followed by 64 hex digits"
                .to_string()
        })?;
        let function: DigestFunction = f.parse()?;
        let d = Digest::from_hex(hex, 0)
            .ok_or_else(|| format!("`{hex}` is not 64 lower-case hex digits"))?;
        Ok(FixedOutput {
            function,
            hash: d.hash,
        })
    }

    pub fn matches(&self, function: DigestFunction, digest: &Digest) -> bool {
        self.function == function && self.hash == digest.hash
    }
}

impl std::fmt::Display for FixedOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.function, hex::encode(self.hash))
    }
}

/// The image a containerized step runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// The output of a target (an image layout): keyed by that output, like
    /// any dependency.
    Target(String),
    /// A registry image pinned by digest (`name@sha256:<hex>`): keyed by the
    /// digest only, since the name is just where the bytes are found.
    Pinned { name: String, digest: String },
}

impl ImageRef {
    /// Reads `image:`: a target name, or a reference pinned by digest. A
    /// reference by tag is refused: a tag moves, so the key would lie.
    pub fn parse(s: &str) -> Result<ImageRef, String> {
        if let Some((name, digest)) = s.rsplit_once('@') {
            let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
                format!("`{digest}` is not a sha256 digest (`sha256:` and 64 hex digits)")
            })?;
            if hex.len() != 64
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err(format!(
                    "`{digest}` is not `sha256:` followed by 64 lower-case hex digits"
                ));
            }
            if name.is_empty() {
                return Err("the image name before `@` is empty".into());
            }
            return Ok(ImageRef::Pinned {
                name: name.to_string(),
                digest: digest.to_string(),
            });
        }
        let is_target = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if is_target {
            Ok(ImageRef::Target(s.to_string()))
        } else {
            Err(format!(
                "`{s}` is neither a target nor an image pinned by digest"
            ))
        }
    }

    /// How the image enters the key.
    pub fn keyed(&self) -> String {
        match self {
            ImageRef::Target(t) => format!("target:{t}"),
            ImageRef::Pinned { digest, .. } => digest.clone(),
        }
    }
}

/// Where a step runs when it names an `image:`: a container of the Docker
/// Engine instead of the namespace sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub image: ImageRef,
    /// `user:` as Docker takes it (`1000:1000`, `nobody`); the image's
    /// default (usually root) when absent.
    pub user: Option<String>,
    /// Named persistent caches (name -> mount path): their contents are not
    /// keyed, only where they are mounted.
    pub caches: BTreeMap<String, String>,
    /// The image's platform, and the emulator when it is not the machine's.
    pub runs_on: RunsOn,
}

impl Container {
    /// The keyed description: image, user, cache mount points, platform and
    /// emulator.
    fn properties(&self) -> Vec<reapi::Property> {
        let prop = |name: &str, value: String| reapi::Property {
            name: name.to_string(),
            value,
        };
        let mut v = vec![prop("image", self.image.keyed())];
        if let Some(u) = &self.user {
            v.push(prop("user", u.clone()));
        }
        for (name, path) in &self.caches {
            v.push(prop(&format!("cache:{name}"), path.clone()));
        }
        v.extend(self.runs_on.properties());
        v
    }
}

/// Checks a cache name (`apt`, `pip-3.11`): it names a folder in the store.
pub fn check_cache_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a cache name (letters, digits, `_`, `-`, `.`; up to 64)"
        ))
    }
}

/// Checks an absolute path inside a container (a cache mount point, a
/// working directory, a copy destination).
pub fn check_container_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` is not an absolute path"));
    }
    if path.split('/').any(|p| p == ".." || p == ".") || path.contains('\0') {
        return Err(format!("`{path}` contains `.` or `..`"));
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("`/` is the whole file system".into());
    }
    if trimmed == layout::EXEC_ROOT || trimmed.starts_with(&format!("{}/", layout::EXEC_ROOT)) {
        return Err(format!(
            "`{path}` is inside {}, which Strata owns",
            layout::EXEC_ROOT
        ));
    }
    Ok(())
}

/// Typed parameters of a `run` target, after interpolation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunParams {
    pub program: Program,
    pub env: BTreeMap<String, Text>,
    /// Declared outputs relative to `$OUT`; a trailing `/` marks a folder.
    pub outs: Vec<String>,
    pub network: bool,
    /// `local: true`: runs on this machine even when the build has a
    /// remote executor. Never keyed: where a step runs does not change
    /// what it makes.
    pub local: bool,
    pub fixed_output: Option<FixedOutput>,
    /// The value of SOURCE_DATE_EPOCH the step gets.
    pub source_date_epoch: Text,
    /// `image:`: run in a container instead of the sandbox.
    pub container: Option<Container>,
    /// `tools:`: the host programs the step uses, which key it instead of
    /// the whole host package database (`None`: not declared).
    pub tools: Option<Vec<String>>,
    pub limits: Limits,
}

/// What a step may use of the machine (`limits:`). Limits never enter the
/// key: within them a step produces what it would without them, and a step
/// that exceeds one fails, which is never cached, so a raised limit runs it
/// again anyway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// The most processes (threads included) the step may run at once;
    /// `None` for the executor's default.
    pub processes: Option<u32>,
    /// The most memory, in bytes, the step's processes may use together
    /// (swap included); `None` for no limit.
    pub memory: Option<u64>,
    /// How long the step may run, from its start to its end (wall-clock);
    /// `None` for no limit. A remote step's Action carries it as its
    /// `timeout`.
    pub time: Option<std::time::Duration>,
}

/// A time limit as BUILD.yaml writes it, in its largest whole unit:
/// `10m` for 600 seconds, `90s`, `2h`.
pub fn shown_time(limit: std::time::Duration) -> String {
    let secs = limit.as_secs();
    if limit.subsec_nanos() != 0 || secs == 0 {
        format!("{limit:?}")
    } else if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// A `run` step ready to be keyed and executed.
#[derive(Clone, Debug, PartialEq)]
pub struct RunStep {
    /// The command as it enters the key and the store (secrets hashed).
    pub keyed_command: reapi::Command,
    /// Arguments and environment as the step receives them.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Output paths relative to `$OUT`, without trailing `/`.
    pub outs: Vec<String>,
    /// For each output, whether it was declared as a folder (trailing `/`).
    pub declared_dirs: Vec<bool>,
    pub network: bool,
    /// `local: true` (see [`RunParams::local`]).
    pub local: bool,
    pub fixed_output: Option<FixedOutput>,
    pub container: Option<Container>,
    /// Secret values the step receives (`Text::secrets`), longest first:
    /// what its logs are masked with.
    pub secrets: Vec<String>,
    pub limits: Limits,
}

impl RunParams {
    /// A plain `cmd:` step declaring `outs`: no environment, no network, no
    /// image, no limits, SOURCE_DATE_EPOCH 0 (what tests and tools that make
    /// a step without BUILD.yaml start from).
    pub fn shell(cmd: &str, outs: &[&str]) -> RunParams {
        RunParams {
            program: Program::Shell(Text::plain(cmd)),
            env: BTreeMap::new(),
            outs: outs.iter().map(|o| o.to_string()).collect(),
            network: false,
            local: false,
            fixed_output: None,
            source_date_epoch: Text::plain("0"),
            container: None,
            tools: None,
            limits: Limits::default(),
        }
    }

    /// Whether the step may reach the network: declared, or implied by a
    /// declared output digest (a fixed-output step, as in Nix).
    pub fn network_allowed(&self) -> bool {
        self.network || self.fixed_output.is_some()
    }

    /// Whether the step runs on the host's toolchain, so that the host must
    /// enter its key: not in an image, and not a fixed-output step (whose
    /// result is checked by its digest, however it was made).
    pub fn runs_on_host(&self) -> bool {
        self.container.is_none() && self.fixed_output.is_none()
    }

    pub fn step(&self) -> RunStep {
        let (argv, keyed_argv) = self.program.argv();
        // Fixed variables first, then the declared ones, which replace a
        // fixed one of the same name (the loader refuses the reserved
        // names). By name: (what the step gets, what its key holds),
        // borrowed, so only the two lists below allocate.
        let mut env: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
        for (name, value) in fixed_env() {
            env.insert(name, (value, value));
        }
        let sde = &self.source_date_epoch;
        env.insert("SOURCE_DATE_EPOCH", (&sde.actual, &sde.keyed));
        for (name, value) in &self.env {
            env.insert(name, (&value.actual, &value.keyed));
        }
        let outs: Vec<String> = self
            .outs
            .iter()
            .map(|o| o.trim_end_matches('/').to_string())
            .collect();
        let keyed_command = reapi::Command {
            arguments: keyed_argv,
            environment_variables: env
                .iter()
                .map(|(name, (_, keyed))| reapi::EnvironmentVariable {
                    name: name.to_string(),
                    value: keyed.to_string(),
                })
                .collect(),
            platform: self.container.as_ref().map(|c| reapi::Platform {
                properties: c.properties(),
            }),
            working_directory: layout::WORK.to_string(),
            // As declared: the trailing `/` of a folder output is part of the
            // contract (a file where a folder was declared fails the step).
            output_paths: self
                .outs
                .iter()
                .map(|o| format!("{}/{o}", layout::OUT))
                .collect(),
        };
        // The fixed values hold no secret.
        let texts = self.program.texts().chain([sde]).chain(self.env.values());
        let secrets = crate::text::secrets_of(texts);
        RunStep {
            keyed_command,
            argv,
            secrets,
            env: env
                .into_iter()
                .map(|(name, (actual, _))| (name.to_string(), actual.to_string()))
                .collect(),
            outs,
            declared_dirs: self.outs.iter().map(|o| o.ends_with('/')).collect(),
            network: self.network_allowed(),
            local: self.local,
            fixed_output: self.fixed_output.clone(),
            container: self.container.clone(),
            limits: self.limits,
        }
    }

    /// What the declaration says that its step does not carry.
    pub fn declared(&self) -> RunDeclared {
        RunDeclared {
            tools: self.tools.clone(),
            shell: matches!(self.program, Program::Shell(_)),
            env: self.env.keys().cloned().collect(),
        }
    }

    /// Names of environment variables a declaration may not set, because the
    /// sandbox owns them.
    pub const RESERVED_ENV: &'static [&'static str] =
        &["PATH", "HOME", "TMPDIR", "OUT", "DEPS", "SOURCE_DATE_EPOCH"];
}

/// The variables every step gets from the sandbox, by name, with their
/// values (made once: every step of a build copies them).
fn fixed_env() -> &'static [(&'static str, String)] {
    static FIXED: LazyLock<Vec<(&'static str, String)>> = LazyLock::new(|| {
        vec![
            ("PATH", layout::PATH.to_string()),
            ("HOME", layout::in_sandbox(layout::HOME)),
            ("TMPDIR", layout::in_sandbox(layout::TMP)),
            ("LANG", "C.UTF-8".to_string()),
            ("TZ", "UTC".to_string()),
            ("OUT", layout::in_sandbox(layout::OUT)),
            ("DEPS", layout::in_sandbox(layout::DEPS)),
        ]
    });
    &FIXED
}

/// What a `run` declaration says beyond its [`RunStep`]: what keys a host
/// step by the host's toolchain, and which variables the user set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDeclared {
    /// `tools:`: the host programs the step uses (`None`: not declared).
    pub tools: Option<Vec<String>>,
    /// `cmd:`: the step runs `/bin/sh`, which joins its declared tools.
    pub shell: bool,
    /// The names `env:` sets.
    pub env: BTreeSet<String>,
}

impl RunStep {
    /// Whether the step runs on the host's toolchain (see
    /// [`RunParams::runs_on_host`]).
    pub fn runs_on_host(&self) -> bool {
        self.container.is_none() && self.fixed_output.is_none()
    }

    /// Moves a container step to `runs_on` (its resolved platform, its
    /// emulator), which its key names.
    pub fn set_runs_on(&mut self, runs_on: RunsOn) {
        if let Some(c) = self.container.as_mut() {
            c.runs_on = runs_on;
            self.keyed_command.platform = Some(reapi::Platform {
                properties: c.properties(),
            });
        }
    }

    /// The action whose digest is the step's key.
    ///
    /// A normal step is keyed by its command and input root (which holds the
    /// sources' digests and the dependencies' *output* digests). A
    /// fixed-output step is keyed by its target name and declared digest
    /// only: how the bytes are fetched does not matter, only what they are.
    /// `sandboxed` says whether the step runs in the namespace sandbox: a
    /// result made without it (seeing the whole host) is a different result.
    pub fn action(
        &self,
        target: &str,
        command_digest: Digest,
        input_root: Digest,
        sandboxed: bool,
    ) -> reapi::Action {
        let prop = |name: &str, value: &str| reapi::Property {
            name: name.to_string(),
            value: value.to_string(),
        };
        match &self.fixed_output {
            Some(fixed) => reapi::Action {
                salt: FIXED_OUTPUT_SALT.to_vec(),
                platform: Some(reapi::Platform {
                    properties: vec![
                        prop("strata.output_digest", &fixed.to_string()),
                        prop("strata.rule", "run"),
                        prop("strata.target", target),
                    ],
                }),
                ..Default::default()
            },
            None => reapi::Action {
                command_digest: Some(command_digest.to_proto()),
                input_root_digest: Some(input_root.to_proto()),
                salt: RUN_SALT.to_vec(),
                platform: Some(reapi::Platform {
                    properties: vec![
                        prop(
                            "strata.network",
                            if self.network { "true" } else { "false" },
                        ),
                        prop("strata.rule", "run"),
                        prop(
                            "strata.sandbox",
                            match (&self.container, sandboxed) {
                                (Some(_), _) => "docker",
                                (None, true) => "namespaces",
                                (None, false) => "none",
                            },
                        ),
                    ],
                }),
                ..Default::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> RunParams {
        RunParams::shell("echo hi > $OUT/a", &["a"])
    }

    #[test]
    fn a_time_limit_is_shown_in_its_largest_whole_unit() {
        let s = std::time::Duration::from_secs;
        assert_eq!(shown_time(s(600)), "10m");
        assert_eq!(shown_time(s(90)), "90s");
        assert_eq!(shown_time(s(7200)), "2h");
        assert_eq!(shown_time(s(5400)), "90m");
        assert_eq!(shown_time(s(1)), "1s");
    }

    #[test]
    fn limits_never_enter_the_key() {
        let free = params().step();
        let mut p = params();
        p.limits = Limits {
            processes: Some(64),
            memory: Some(64 << 20),
            time: Some(std::time::Duration::from_secs(60)),
        };
        let limited = p.step();
        assert_eq!(limited.keyed_command, free.keyed_command);
        let (cmd, root) = (
            Digest::from_hex(&"1".repeat(64), 3).unwrap(),
            Digest::from_hex(&"2".repeat(64), 5).unwrap(),
        );
        assert_eq!(
            limited.action("t", cmd, root, true),
            free.action("t", cmd, root, true),
            "the keyed action carries no timeout"
        );
    }

    #[test]
    fn secrets_never_reach_the_keyed_command() {
        let mut p = params();
        p.env.insert(
            "TOKEN".into(),
            Text {
                actual: "hunter2".into(),
                keyed: "<secret TOKEN blake3:abcd>".into(),
                secrets: vec!["hunter2".into()],
            },
        );
        let step = p.step();
        let encoded = prost::Message::encode_to_vec(&step.keyed_command);
        assert!(!String::from_utf8_lossy(&encoded).contains("hunter2"));
        assert!(step.env.contains(&("TOKEN".into(), "hunter2".into())));
    }

    #[test]
    fn a_step_gets_the_sandbox_variables_and_the_declared_ones_by_name() {
        let mut p = params();
        p.source_date_epoch = Text::plain("1700000000");
        p.env.insert("LANG".into(), Text::plain("de_DE.UTF-8"));
        p.env.insert(
            "A_TOKEN".into(),
            Text {
                actual: "hunter2".into(),
                keyed: "<secret>".into(),
                secrets: vec!["hunter2".into()],
            },
        );
        let step = p.step();
        let env: Vec<String> = step.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            env,
            [
                "A_TOKEN=hunter2",
                "DEPS=/strata/deps",
                "HOME=/strata/home",
                "LANG=de_DE.UTF-8",
                "OUT=/strata/out",
                "PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
                "SOURCE_DATE_EPOCH=1700000000",
                "TMPDIR=/strata/tmp",
                "TZ=UTC",
            ]
        );
        let keyed: Vec<String> = step
            .keyed_command
            .environment_variables
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect();
        let mut expected = env.clone();
        expected[0] = "A_TOKEN=<secret>".into();
        assert_eq!(keyed, expected);
        assert_eq!(step.secrets, ["hunter2"]);
    }

    #[test]
    fn network_enters_the_action() {
        let d = DigestFunction::Blake3.of_bytes(b"");
        let off = params().step().action("t", d, d, true);
        let mut p = params();
        p.network = true;
        let on = p.step().action("t", d, d, true);
        assert_ne!(off, on);
    }

    #[test]
    fn a_container_steps_platform_and_emulator_enter_its_command() {
        let mut p = params();
        p.container = Some(Container {
            image: ImageRef::Target("img".into()),
            user: None,
            caches: BTreeMap::new(),
            runs_on: RunsOn::default(),
        });
        let amd64 = p.step().keyed_command;
        let c = p.container.as_mut().unwrap();
        c.runs_on.platform = crate::platform::Platform::parse_known("linux/arm64").unwrap();
        let arm64 = p.step().keyed_command;
        assert_ne!(amd64, arm64);
        let c = p.container.as_mut().unwrap();
        c.runs_on.emulator = Some(crate::platform::Emulator {
            interpreter: "/usr/bin/qemu-aarch64-static".into(),
            sha256: format!("sha256:{}", "cd".repeat(32)),
            flags: "F".into(),
        });
        let emulated = p.step().keyed_command;
        assert_ne!(arm64, emulated);
        let props = &emulated.platform.unwrap().properties;
        assert!(
            props
                .iter()
                .any(|x| x.name == "emulator" && x.value == "/usr/bin/qemu-aarch64-static")
        );
    }

    #[test]
    fn fixed_output_key_ignores_the_command() {
        let d = DigestFunction::Blake3.of_bytes(b"");
        let mut a = params();
        a.fixed_output = Some(FixedOutput::parse(&format!("blake3:{}", "ab".repeat(32))).unwrap());
        let mut b = a.clone();
        b.program = Program::Shell(Text::plain("curl something else"));
        let (sa, sb) = (a.step(), b.step());
        assert_eq!(sa.action("t", d, d, true), sb.action("t", d, d, true));
        assert_ne!(sa.action("t", d, d, true), sa.action("u", d, d, true));
    }
}
