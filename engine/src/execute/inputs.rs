//! The inputs of work that reads them from the store (built-in rules,
//! `copy` steps), stored before its executor runs it.

use strata_exec::Failure;
use strata_rules::Work;
use strata_rules::stage::StageStep;
use strata_store::{Digest, Store};

use crate::inputs::SourceFile;
use crate::key::KeyedAction;

/// Whether `work` reads its inputs from the store, which then holds them
/// before it runs.
pub(super) fn read_from_store(work: &Work) -> bool {
    matches!(
        work,
        Work::Builtin { .. }
            | Work::Stage {
                step: StageStep::Copy(_),
                ..
            }
    )
}

pub(super) fn input_root(keyed: &KeyedAction) -> Digest {
    keyed
        .action
        .input_root_digest
        .as_ref()
        .and_then(Digest::from_proto)
        .expect("actions carry their input root")
}

/// Puts a step's sources and its action into the store (on the blocking
/// pool: sources are whole files), and hands the action back.
pub(super) async fn store(
    store: &Store,
    keyed: KeyedAction,
    sources: &[SourceFile],
) -> Result<KeyedAction, Failure> {
    let (store, sources) = (store.clone(), sources.to_vec());
    tokio::task::spawn_blocking(move || store_inputs(&store, &keyed, &sources).map(|()| keyed))
        .await
        .map_err(|e| Failure::Io(e.to_string()))?
}

fn store_inputs(store: &Store, keyed: &KeyedAction, sources: &[SourceFile]) -> Result<(), Failure> {
    for src in sources {
        let stored = store
            .cas()
            .put_file_copy(&src.abs)
            .map_err(Failure::Store)?;
        if stored != src.digest {
            return Err(Failure::SourceChanged {
                path: src.abs.clone(),
            });
        }
    }
    keyed.store(store.cas()).map_err(Failure::Store)
}
