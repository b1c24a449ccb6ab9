//! `Work`: what a target does when it runs, the one definition the
//! loader, keys, the scheduler and the executors share.

use crate::Text;
use crate::builtin::Builtin;
use crate::data_root::DataRootParams;
use crate::image_pull::PullParams;
use crate::platform::RunsOn;
use crate::run::RunStep;
use crate::stage::StageStep;

/// What a target does when it runs.
#[derive(Clone, Debug)]
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
