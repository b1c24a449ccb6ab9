//! What a target does: the one definition the loader produces and the
//! scheduler executes.

use crate::Text;
use crate::builtin::Builtin;
use crate::data_root::DataRootParams;
use crate::image_pull::PullParams;
use crate::platform::RunsOn;
use crate::run::RunStep;
use crate::stage::StageStep;

/// What a target does when it runs. Equal work (with equal sources and
/// dependencies) has equal keys: `plan` shares such targets between
/// configurations.
#[derive(Clone, Debug, PartialEq)]
pub enum Work {
    Run(RunStep),
    Builtin {
        rule: Builtin,
        source_date_epoch: Text,
    },
    /// A stage step on its parent's tree (`None`: an empty tree), on its
    /// platform (through the emulator it is keyed with).
    Stage {
        parent: Option<String>,
        step: StageStep,
        runs_on: RunsOn,
    },
    ImagePull(PullParams),
    DataRoot(DataRootParams),
}

impl Work {
    /// The rule's name as written in BUILD.yaml.
    pub fn rule_name(&self) -> &'static str {
        match self {
            Work::Run(_) => "run",
            Work::Builtin { rule, .. } => rule.name(),
            Work::Stage { .. } => "stage",
            Work::ImagePull(_) => "image-pull",
            Work::DataRoot(_) => "docker-data-root",
        }
    }

    /// Whether the rule promises byte-identical outputs for one key.
    pub fn reproducible(&self) -> bool {
        !matches!(self, Work::DataRoot(_))
    }

    /// The platform (and emulator) of work that runs an image's programs:
    /// `run` in an image, a stage's command; `None` for everything else.
    pub fn runs_on(&self) -> Option<&RunsOn> {
        match self {
            Work::Run(step) => step.container.as_ref().map(|c| &c.runs_on),
            Work::Stage {
                step: StageStep::Run(_),
                runs_on,
                ..
            } => Some(runs_on),
            _ => None,
        }
    }

    /// Whether the output is named in advance (`output_digest`,
    /// `image-pull`): rebuilding it can only give those bytes or fail.
    pub fn pinned(&self) -> bool {
        match self {
            Work::Run(step) => step.fixed_output.is_some(),
            Work::ImagePull(_) => true,
            _ => false,
        }
    }
}
