//! The action a remote execution service runs for a `run` step: the step's
//! keyed command over the step's input root (both as the key has them),
//! made to run on any REAPI worker.
//!
//! A key's command names the sandbox layout (`/strata/out`, `/strata/deps`,
//! working folder `work`) and its output paths lie outside its working
//! folder, which REAPI cannot say. So the command sent runs a short shell
//! prologue in the input root first: it makes the empty `out/`, `home/`
//! and `tmp/` a local step gets, points `$OUT`, `$DEPS`, `$HOME` and
//! `$TMPDIR` at them wherever the worker put the input root, enters `work/`
//! and runs the step's own arguments. Its one output path is `out`, the
//! whole folder (REAPI has workers create the parents of output paths,
//! which a step writing `$OUT/a/b` would not expect); the declared outputs
//! are picked from it afterwards, as a local step's are from `$OUT`.
//!
//! A step's time limit (`limits: time`) is the action's `timeout`, which the
//! worker enforces. It is part of the action, so of the digest the
//! service's action cache is asked by (the digest executed), but never of
//! the step's key: the local cache and a remote cache hit whatever the
//! limit, the service's cache per limit.

use strata_rules::layout;
use strata_rules::run::RunStep;
use strata_store::{Digest, DigestFunction, reapi};

/// Versions what this module sends: a change of prologue or layout bumps it.
const SALT: &[u8] = b"strata/remote-run/v1";

/// The prologue, run by `/bin/sh -c` with the step's arguments after it.
const PROLOGUE: &str = "set -e; r=$PWD; mkdir out home tmp; \
export OUT=\"$r/out\" DEPS=\"$r/deps\" HOME=\"$r/home\" TMPDIR=\"$r/tmp\"; \
cd work; exec \"$@\"";

/// `$0` of the prologue, as `ps` on the worker shows it.
const NAME: &str = "strata-remote-step";

/// The command and action a service executes for one step.
pub struct RemoteAction {
    pub command: reapi::Command,
    pub action: reapi::Action,
}

impl RemoteAction {
    /// The action for `step` over `input_root` (the key's), asking for a
    /// worker of `platform` (`(name, value)`, such as `OSFamily=linux`).
    pub fn of(
        function: DigestFunction,
        step: &RunStep,
        input_root: Digest,
        platform: &[(String, String)],
    ) -> RemoteAction {
        let keyed = &step.keyed_command;
        let mut arguments = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            PROLOGUE.to_string(),
            NAME.to_string(),
        ];
        arguments.extend(keyed.arguments.iter().cloned());
        let platform = platform_of(platform);
        let command = reapi::Command {
            arguments,
            environment_variables: keyed.environment_variables.clone(),
            platform: Some(platform.clone()),
            working_directory: String::new(),
            output_paths: vec![layout::OUT.to_string()],
        };
        let command_digest = function.of_bytes(&prost::Message::encode_to_vec(&command));
        let action = reapi::Action {
            command_digest: Some(command_digest.to_proto()),
            input_root_digest: Some(input_root.to_proto()),
            timeout: step.limits.time.map(|limit| reapi::Duration {
                seconds: limit.as_secs() as i64,
                nanos: limit.subsec_nanos() as i32,
            }),
            do_not_cache: false,
            salt: SALT.to_vec(),
            platform: Some(platform),
        };
        RemoteAction { command, action }
    }
}

/// REAPI wants properties sorted by name, then value.
fn platform_of(properties: &[(String, String)]) -> reapi::Platform {
    let mut properties: Vec<reapi::Property> = properties
        .iter()
        .map(|(name, value)| reapi::Property {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    properties.sort_by(|a, b| (&a.name, &a.value).cmp(&(&b.name, &b.value)));
    reapi::Platform { properties }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_rules::run::RunParams;

    fn step(cmd: &str) -> RunStep {
        RunParams::shell(cmd, &["o"]).step()
    }

    fn platform() -> Vec<(String, String)> {
        vec![
            ("OSFamily".into(), "linux".into()),
            ("ISA".into(), "x86-64".into()),
        ]
    }

    #[test]
    fn the_remote_command_runs_the_keyed_arguments_after_the_prologue() {
        let function = DigestFunction::Sha256;
        let root = function.of_bytes(b"root");
        let s = step("echo hi > $OUT/o");
        let remote = RemoteAction::of(function, &s, root, &platform());
        assert_eq!(remote.command.arguments[..2], ["/bin/sh", "-c"]);
        assert_eq!(remote.command.arguments[4..], s.keyed_command.arguments[..]);
        assert_eq!(remote.command.output_paths, ["out"]);
        assert_eq!(remote.command.working_directory, "");
        assert_eq!(
            remote.command.environment_variables,
            s.keyed_command.environment_variables
        );
        let names: Vec<&str> = remote
            .action
            .platform
            .as_ref()
            .unwrap()
            .properties
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["ISA", "OSFamily"], "sorted, as REAPI asks");
        assert_eq!(
            remote.action.command_digest,
            Some(
                function
                    .of_bytes(&prost::Message::encode_to_vec(&remote.command))
                    .to_proto()
            )
        );
        assert_eq!(remote.action.input_root_digest, Some(root.to_proto()));
    }

    #[test]
    fn another_command_or_input_root_is_another_remote_action() {
        let function = DigestFunction::Sha256;
        let digest =
            |r: &RemoteAction| function.of_bytes(&prost::Message::encode_to_vec(&r.action));
        let a = RemoteAction::of(
            function,
            &step("echo a > $OUT/o"),
            function.of_bytes(b"1"),
            &platform(),
        );
        let b = RemoteAction::of(
            function,
            &step("echo b > $OUT/o"),
            function.of_bytes(b"1"),
            &platform(),
        );
        let c = RemoteAction::of(
            function,
            &step("echo a > $OUT/o"),
            function.of_bytes(b"2"),
            &platform(),
        );
        let again = RemoteAction::of(
            function,
            &step("echo a > $OUT/o"),
            function.of_bytes(b"1"),
            &platform(),
        );
        assert_ne!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&c));
        assert_eq!(digest(&a), digest(&again));
    }

    #[test]
    fn the_time_limit_is_the_actions_timeout_and_another_limit_another_action() {
        let function = DigestFunction::Sha256;
        let root = function.of_bytes(b"root");
        let limited = |secs: u64| {
            let mut s = step("sleep 1; echo a > $OUT/o");
            s.limits.time = Some(std::time::Duration::from_secs(secs));
            RemoteAction::of(function, &s, root, &platform())
        };
        let free = RemoteAction::of(
            function,
            &step("sleep 1; echo a > $OUT/o"),
            root,
            &platform(),
        );
        assert_eq!(free.action.timeout, None);
        let ten = limited(600);
        assert_eq!(
            ten.action.timeout,
            Some(reapi::Duration {
                seconds: 600,
                nanos: 0
            })
        );
        // The command is the same: only the action (and its digest, by
        // which the service's cache is asked) differs.
        assert_eq!(ten.command, free.command);
        let digest =
            |r: &RemoteAction| function.of_bytes(&prost::Message::encode_to_vec(&r.action));
        assert_ne!(digest(&ten), digest(&free));
        assert_ne!(digest(&ten), digest(&limited(90)));
        assert_eq!(digest(&ten), digest(&limited(600)));
    }
}
