//! Phase 3, key: a target's action and its digest.
//!
//! The key is the digest of a REAPI `Action` whose input root holds
//! `work/<source>` for every declared source (path, digest, executable bit)
//! and `deps/<name>` for every dependency, referenced by the dependency's
//! *output* tree digest. A dependency that re-runs and produces the same
//! bytes therefore leaves its dependents' keys unchanged (early cutoff).
//! Nothing host-specific enters: paths are relative, the command names the
//! fixed sandbox layout, and times never appear.

use std::collections::BTreeMap;

use strata_rules::Text;
use strata_rules::builtin::Builtin;
use strata_rules::data_root::DataRootParams;
use strata_rules::image_pull::PullParams;
use strata_rules::layout;
use strata_rules::platform::RunsOn;
use strata_rules::run::RunStep;
use strata_rules::stage::StageStep;
use strata_store::reapi;
use strata_store::tree::{Node, TreeBuilder};
use strata_store::{Cas, Digest, DigestFunction, Result as StoreResult};

use crate::inputs::SourceFile;

/// Everything that determines a target's result, ready to hash or store.
pub struct KeyedAction {
    pub key: Digest,
    pub action: reapi::Action,
    pub input_root: TreeBuilder,
    pub command: reapi::Command,
}

/// The input root: `work/<source>` and `deps/<name>` (by output digest).
fn input_root(sources: &[SourceFile], deps: &[(String, Digest)]) -> TreeBuilder {
    let nodes = deps
        .iter()
        .map(|(name, d)| (name.clone(), Node::Stored(*d)))
        .collect();
    input_root_of(sources, nodes)
}

/// The input root with each dependency as given: a whole output, or only
/// the paths read from it (see `narrow`).
fn input_root_of(sources: &[SourceFile], deps: Vec<(String, Node)>) -> TreeBuilder {
    let mut root = TreeBuilder::new();
    root.insert(layout::WORK, Node::Dir(TreeBuilder::new()))
        .expect("fresh tree");
    root.insert(layout::DEPS, Node::Dir(TreeBuilder::new()))
        .expect("fresh tree");
    for src in sources {
        root.insert(
            &format!("{}/{}", layout::WORK, src.rel),
            Node::file(src.digest, src.executable),
        )
        .expect("source paths are clean and distinct");
    }
    for (name, node) in deps {
        root.insert(&format!("{}/{name}", layout::DEPS), node)
            .expect("dependency names are distinct");
    }
    root
}

fn finish(
    function: DigestFunction,
    command: reapi::Command,
    root: TreeBuilder,
    action: impl FnOnce(Digest, Digest) -> reapi::Action,
) -> KeyedAction {
    let command_digest = function.of_bytes(&prost::Message::encode_to_vec(&command));
    let action = action(command_digest, root.encode(function).root);
    let key = function.of_bytes(&prost::Message::encode_to_vec(&action));
    KeyedAction {
        key,
        action,
        input_root: root,
        command,
    }
}

/// The action of a `run` target from its step, sources and dependency outputs.
pub fn key(
    function: DigestFunction,
    target_name: &str,
    step: &RunStep,
    sources: &[SourceFile],
    deps: &[(String, Digest)],
    sandboxed: bool,
) -> KeyedAction {
    finish(
        function,
        step.keyed_command.clone(),
        input_root(sources, deps),
        |cmd, root| step.action(target_name, cmd, root, sandboxed),
    )
}

/// The action of a built-in rule's target; `deps` as `narrow` gives them.
pub fn key_builtin(
    function: DigestFunction,
    rule: &Builtin,
    source_date_epoch: &Text,
    sources: &[SourceFile],
    deps: Vec<(String, Node)>,
    dep_keys: &BTreeMap<String, Digest>,
) -> KeyedAction {
    finish(
        function,
        rule.keyed_command(&source_date_epoch.keyed, dep_keys),
        input_root_of(sources, deps),
        |cmd, root| rule.action(cmd, root),
    )
}

/// The action of a stage step: its command, the parent tree (a dependency)
/// and the step's own sources and dependencies (as `narrow` gives them).
pub fn key_stage(
    function: DigestFunction,
    step: &StageStep,
    runs_on: &RunsOn,
    sources: &[SourceFile],
    deps: Vec<(String, Node)>,
) -> KeyedAction {
    finish(
        function,
        step.keyed_command(runs_on),
        input_root_of(sources, deps),
        |cmd, root| step.action(cmd, root),
    )
}

/// The action of an `image-pull`: the pinned digest and platform only.
pub fn key_pull(function: DigestFunction, pull: &PullParams) -> KeyedAction {
    finish(
        function,
        pull.keyed_command(),
        TreeBuilder::new(),
        |cmd, _| pull.action(cmd),
    )
}

/// The action of a `docker-data-root`: the images it preloads.
pub fn key_data_root(
    function: DigestFunction,
    params: &DataRootParams,
    deps: &[(String, Digest)],
) -> KeyedAction {
    finish(
        function,
        params.keyed_command(),
        input_root(&[], deps),
        |cmd, root| params.action(cmd, root),
    )
}

/// The action of any work: what the scheduler keys before each lookup.
/// `cas` holds the dependencies' outputs, for the paths read from them.
#[allow(clippy::too_many_arguments)]
pub fn of_work(
    function: DigestFunction,
    cas: &Cas,
    name: &str,
    work: &strata_rules::Work,
    sandboxed: bool,
    sources: &[SourceFile],
    deps: &[(String, Digest)],
    dep_keys: &BTreeMap<String, Digest>,
) -> KeyedAction {
    use strata_rules::Work;
    match work {
        Work::Run(step) => key(function, name, step, sources, deps, sandboxed),
        Work::Builtin {
            rule,
            source_date_epoch,
        } => {
            let deps = crate::narrow::dependency_nodes(cas, work, deps);
            key_builtin(function, rule, source_date_epoch, sources, deps, dep_keys)
        }
        Work::Stage { step, runs_on, .. } => {
            let deps = crate::narrow::dependency_nodes(cas, work, deps);
            key_stage(function, step, runs_on, sources, deps)
        }
        Work::ImagePull(pull) => key_pull(function, pull),
        Work::DataRoot(params) => key_data_root(function, params, deps),
    }
}

impl KeyedAction {
    /// Stores the action, its command and its input root's directories, so
    /// the key can be explained and shared later.
    pub fn store(&self, cas: &Cas) -> StoreResult<()> {
        cas.put_message(&self.command)?;
        self.input_root.store(cas)?;
        cas.put_message(&self.action)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_rules::run::RunParams;

    /// The key of a sandboxed step (the usual case).
    fn key(
        f: DigestFunction,
        name: &str,
        step: RunStep,
        sources: &[SourceFile],
        deps: &[(String, Digest)],
    ) -> KeyedAction {
        super::key(f, name, &step, sources, deps, true)
    }

    #[test]
    fn an_unsandboxed_result_has_another_key() {
        let f = DigestFunction::Blake3;
        let a = super::key(f, "t", &step("c"), &[], &[], true);
        let b = super::key(f, "t", &step("c"), &[], &[], false);
        assert_ne!(a.key, b.key);
    }

    #[test]
    fn a_folder_output_and_a_file_output_have_other_keys() {
        let f = DigestFunction::Blake3;
        let as_dir = RunParams {
            outs: vec!["o/".into()],
            ..params_of("c")
        }
        .step();
        assert_ne!(
            key(f, "t", step("c"), &[], &[]).key,
            key(f, "t", as_dir, &[], &[]).key
        );
    }

    fn params_of(cmd: &str) -> RunParams {
        RunParams::shell(cmd, &["o"])
    }

    fn step(cmd: &str) -> RunStep {
        params_of(cmd).step()
    }

    fn src(rel: &str, content: &[u8], executable: bool, abs: &str) -> SourceFile {
        SourceFile {
            rel: rel.into(),
            abs: abs.into(),
            digest: DigestFunction::Blake3.of_bytes(content),
            executable,
            fingerprint: crate::statcache::Stat::of(&std::fs::metadata("/").unwrap()),
        }
    }

    #[test]
    fn key_is_stable_and_ignores_absolute_paths() {
        let f = DigestFunction::Blake3;
        let a = key(
            f,
            "t",
            step("c"),
            &[src("a.txt", b"x", false, "/home/alice/ws/a.txt")],
            &[],
        );
        let b = key(
            f,
            "t",
            step("c"),
            &[src("a.txt", b"x", false, "/tmp/other/a.txt")],
            &[],
        );
        assert_eq!(a.key, b.key);
        let again = key(f, "t", step("c"), &[src("a.txt", b"x", false, "/x")], &[]);
        assert_eq!(a.key, again.key);
    }

    /// The key encoding is a contract with every store and shared cache: a
    /// change must be deliberate (bump the rule's salt) and update this value.
    #[test]
    fn key_encoding_is_pinned() {
        let f = DigestFunction::Blake3;
        let k = key(
            f,
            "t",
            step("cat a.txt > $OUT/o"),
            &[src("a.txt", b"x", false, "/a")],
            &[("d".into(), f.of_bytes(b"1"))],
        );
        assert_eq!(k.key.hex(), PINNED_KEY);
    }

    const PINNED_KEY: &str = "81012ab86be00e0605bd045ebad500e7953d22ebc88c680152da81dbbbef12d1";

    #[test]
    fn every_component_enters_the_key() {
        let f = DigestFunction::Blake3;
        let base = key(
            f,
            "t",
            step("c"),
            &[src("a.txt", b"x", false, "/a")],
            &[("d".into(), f.of_bytes(b"1"))],
        );
        let variants = [
            key(
                f,
                "t",
                step("c2"),
                &[src("a.txt", b"x", false, "/a")],
                &[("d".into(), f.of_bytes(b"1"))],
            ),
            key(
                f,
                "t",
                step("c"),
                &[src("a.txt", b"y", false, "/a")],
                &[("d".into(), f.of_bytes(b"1"))],
            ),
            key(
                f,
                "t",
                step("c"),
                &[src("b.txt", b"x", false, "/a")],
                &[("d".into(), f.of_bytes(b"1"))],
            ),
            key(
                f,
                "t",
                step("c"),
                &[src("a.txt", b"x", true, "/a")],
                &[("d".into(), f.of_bytes(b"1"))],
            ),
            key(
                f,
                "t",
                step("c"),
                &[src("a.txt", b"x", false, "/a")],
                &[("d".into(), f.of_bytes(b"2"))],
            ),
            key(
                f,
                "t",
                step("c"),
                &[src("a.txt", b"x", false, "/a")],
                &[("e".into(), f.of_bytes(b"1"))],
            ),
        ];
        for v in variants {
            assert_ne!(v.key, base.key);
        }
    }

    #[test]
    fn sha256_keys_differ_from_blake3_keys() {
        let a = key(DigestFunction::Blake3, "t", step("c"), &[], &[]);
        let b = key(DigestFunction::Sha256, "t", step("c"), &[], &[]);
        assert_ne!(a.key.hash, b.key.hash);
    }
}
