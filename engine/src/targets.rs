//! What a command works on (`requested`) and what each of its targets does
//! when it runs (`work_of`), for the plan of every command.

use petgraph::graph::NodeIndex;
use strata_load::Workspace;
use strata_load::diag::{At, did_you_mean};
use strata_rules::Work;
use strata_rules::platform::RunsOn;
use strata_rules::stage::StageStep;
use strata_store::reapi;

use crate::error::BuildError;
use crate::graph::Graph;
use crate::platforms::Emulators;
use crate::toolchain::HostToolchain;

/// What a target does when it runs, as the scheduler sees it: a step on a
/// foreign image is keyed with the emulator that runs it.
pub(crate) fn work_of(
    toolchain: &HostToolchain,
    t: &strata_load::Target,
    emulators: &Emulators,
) -> Result<Work, BuildError> {
    let emulated = |runs_on: &RunsOn| RunsOn {
        platform: runs_on.platform.clone(),
        emulator: emulators.for_platform(&runs_on.platform),
    };
    let mut work = t.work.clone();
    match &mut work {
        Work::Run(step) => {
            if let Some(c) = &step.container {
                let runs_on = emulated(&c.runs_on);
                step.set_runs_on(runs_on);
            }
            if step.runs_on_host() {
                // The loader declares every `run` target's tools and shell.
                let declared = t.run.as_ref();
                let properties = toolchain
                    .properties(
                        declared.and_then(|d| d.tools.as_deref()),
                        declared.is_some_and(|d| d.shell),
                    )
                    .map_err(|e| BuildError::Environment(format!("target `{}`: {e}", t.name)))?;
                step.keyed_command.platform = Some(reapi::Platform { properties });
            }
        }
        // Nothing runs in a `copy` step.
        Work::Stage {
            step: StageStep::Run(_),
            runs_on,
            ..
        } => *runs_on = emulated(runs_on),
        _ => {}
    }
    Ok(work)
}

/// The nodes `names` ask for (empty: the workspace's `default:`, else every
/// target that is not a hidden stage step).
pub(crate) fn requested(
    ws: &Workspace,
    graph: &Graph,
    names: &[String],
) -> Result<Vec<NodeIndex>, BuildError> {
    if names.is_empty()
        && let Some(defaults) = &ws.defaults
    {
        return Ok(defaults
            .iter()
            .map(|name| graph.node(name).expect("`default` names loaded targets"))
            .collect());
    }
    if names.is_empty() {
        return Ok(ws
            .targets
            .iter()
            .filter(|t| !t.hidden)
            .map(|t| graph.node(&t.name).expect("every target is a node"))
            .collect());
    }
    names
        .iter()
        .map(|name| {
            graph.node(name).ok_or_else(|| {
                if let Some(loc) = ws.switched_off.get(name) {
                    let place = At {
                        sources: &ws.sources,
                    }
                    .error(*loc, "", "", None)
                    .place
                    .unwrap_or_default();
                    return BuildError::Usage(format!(
                        "target `{name}` is switched off by its `when:` at {place}"
                    ));
                }
                let hint = did_you_mean(name, ws.targets.iter().map(|t| t.name.as_str()))
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                BuildError::Usage(format!(
                    "no target named `{name}` in {}{hint}",
                    strata_load::source::shown(&ws.build_file)
                ))
            })
        })
        .collect()
}
