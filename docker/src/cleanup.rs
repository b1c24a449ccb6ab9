//! Making sure no container outlives the build that started it.
//!
//! Three nets, for three ways a build ends:
//! - a step's future is dropped (fail-fast, Ctrl-C): its handle's `Drop`
//!   schedules a forced removal on the runtime;
//! - the process is about to exit (Ctrl-C): [`remove_all`] removes every
//!   container an [`Engine`] connection still has, whatever is scheduled;
//! - the process was killed outright: the next build's [`reap_stale`] removes
//!   containers whose owner no longer runs.
//!
//! The containers still to remove are the connection's
//! ([`LiveContainers`]), not the process's: two executors in one process
//! each connect, so one's shutdown never waits on or removes the other's
//! containers.
//!
//! Owners are identified by PID, the PID's start time (a reused PID is a
//! different owner), and the boot and PID namespace the PID belongs to: a
//! container started by a build on another machine sharing the engine, or in
//! another PID namespace, is never judged by our process table.

use std::collections::{BTreeSet, HashMap};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};

use super::error::status;
use super::{DockerError, Engine};

pub(crate) const LABEL: &str = "strata";
pub(crate) const LABEL_PID: &str = "strata.pid";
pub(crate) const LABEL_START: &str = "strata.start";
pub(crate) const LABEL_BOOT: &str = "strata.boot";
pub(crate) const LABEL_PIDNS: &str = "strata.pidns";

/// Names of the containers made through one connection (and its clones)
/// and not yet removed: what [`remove_all`] removes. Owned by whoever
/// connected (an executor, a test), shared by the connection's clones and
/// the handles of its containers.
#[derive(Debug, Default)]
pub(crate) struct LiveContainers(Mutex<BTreeSet<String>>);

impl LiveContainers {
    fn names(&self) -> MutexGuard<'_, BTreeSet<String>> {
        // The set stays consistent whatever panicked while holding it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `name` before its creation is asked for, so a Ctrl-C at any
    /// instant finds it.
    pub(crate) fn register(&self, name: &str) {
        self.names().insert(name.to_string());
    }

    fn forget(&self, name: &str) {
        self.names().remove(name);
    }
}

/// Force-removes the container `name` (running or not) and forgets it.
/// A container that does not exist counts as removed.
pub(crate) async fn remove(engine: &Engine, name: &str) -> Result<(), DockerError> {
    force_remove(engine.quick(), name).await?;
    engine.live().forget(name);
    Ok(())
}

/// Force-removes the container `name`, and waits until it is gone.
async fn force_remove(docker: &Docker, name: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if status(&e) == Some(404) => Ok(()),
        // Another removal (a dropped handle's, or remove_all's) is under
        // way: wait for it to finish, so "removed" means gone.
        Err(e) if status(&e) == Some(409) => wait_gone(docker, name).await,
        Err(e) => Err(DockerError::api(format!("removing container {name}"))(e)),
    }
}

async fn wait_gone(docker: &Docker, name: &str) -> Result<(), DockerError> {
    for _ in 0..600 {
        match docker.inspect_container(name, None).await {
            Err(e) if status(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(DockerError::api(format!("removing container {name}"))(e)),
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Err(DockerError::refused(
        format!("removing container {name}"),
        "its removal did not finish within a minute",
    ))
}

/// Removes `name` without waiting: on the current runtime if there is one,
/// else on a thread of its own. `maybe_uncreated` is for a name whose
/// creation request was cut short: the engine may still be creating it, so
/// a container not found yet is looked for again briefly.
pub(crate) fn remove_in_background(engine: Engine, name: String, maybe_uncreated: bool) {
    let task = async move {
        let tries = if maybe_uncreated { 5 } else { 1 };
        for attempt in 0..tries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            let existed = engine
                .quick()
                .inspect_container(&name, None)
                .await
                .map_or_else(|e| status(&e) != Some(404), |_| true);
            if remove(&engine, &name).await.is_err() {
                // Left in the live set for remove_all and reap_stale.
                return;
            }
            if existed {
                return;
            }
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(task);
        }
        Err(_) => {
            std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(task);
                }
            });
        }
    }
}

/// Removes every container made through `engine` (or a clone of it) and
/// not removed yet; other connections' containers, even this process's,
/// are left to their owners. For a Ctrl-C handler to await before exiting:
/// dropped steps only schedule their removal, which would not run once the
/// process exits.
pub async fn remove_all(engine: &Engine) -> Result<(), DockerError> {
    let names: Vec<String> = engine.live().names().iter().cloned().collect();
    let results = futures_util::future::join_all(names.iter().map(|n| remove(engine, n))).await;
    results.into_iter().collect()
}

/// Removes containers labelled by a Strata process of this machine and PID
/// namespace that no longer runs (a build killed with SIGKILL). Returns how
/// many were removed. Meant for the start of a build.
pub async fn reap_stale(engine: &Engine) -> Result<usize, DockerError> {
    let Some(me) = &*OWNER else {
        // Without /proc nothing can be judged dead safely.
        return Ok(0);
    };
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![LABEL_PID.to_string()],
        )])),
        ..Default::default()
    };
    let containers = engine
        .quick()
        .list_containers(Some(options))
        .await
        .map_err(DockerError::api("listing Strata's containers"))?;
    let mut removed = 0;
    for c in containers {
        let (Some(id), Some(labels)) = (c.id, c.labels) else {
            continue;
        };
        let label = |k: &str| labels.get(k).map(String::as_str);
        if label(LABEL_BOOT) != Some(me.boot.as_str())
            || label(LABEL_PIDNS) != Some(me.pidns.as_str())
        {
            continue;
        }
        let Some(pid) = label(LABEL_PID).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive = start_time(pid).is_some_and(|t| Some(t.as_str()) == label(LABEL_START));
        if !alive {
            // Not ours: no live set holds it.
            force_remove(engine.quick(), &id).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// This process as an owner of containers.
pub(crate) struct Owner {
    pub start: String,
    pub boot: String,
    pub pidns: String,
}

/// A fact about the process, not state: it is read once and never changes,
/// and every connection of the process must label its containers alike,
/// since [`reap_stale`] judges a container by the process (PID and start
/// time) named on it, not by the connection that made it.
pub(crate) static OWNER: LazyLock<Option<Owner>> = LazyLock::new(|| {
    Some(Owner {
        start: start_time(std::process::id())?,
        boot: strata_store::boot_id()?,
        pidns: std::fs::read_link("/proc/self/ns/pid")
            .ok()?
            .to_str()?
            .to_string(),
    })
});

/// The labels that name this process as a container's owner.
pub(crate) fn owner_labels() -> HashMap<String, String> {
    let mut labels = HashMap::from([
        (LABEL.to_string(), "1".to_string()),
        (LABEL_PID.to_string(), std::process::id().to_string()),
    ]);
    if let Some(me) = &*OWNER {
        labels.insert(LABEL_START.into(), me.start.clone());
        labels.insert(LABEL_BOOT.into(), me.boot.clone());
        labels.insert(LABEL_PIDNS.into(), me.pidns.clone());
    }
    labels
}

/// When process `pid` started (clock ticks since boot, field 22 of
/// `/proc/<pid>/stat`), or `None` if there is no such process.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted after its closing parenthesis, which starts at field 3.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(22 - 3).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_process_has_a_start_time_and_a_reaped_one_has_none() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id();
        let t = start_time(pid).expect("a running child has a start time");
        assert!(t.parse::<u64>().is_ok(), "{t}");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(start_time(pid), None);
    }

    #[test]
    fn this_process_is_labelled_with_its_identity() {
        let labels = owner_labels();
        let me = OWNER.as_ref().expect("/proc is readable in tests");
        assert_eq!(labels[LABEL_PID], std::process::id().to_string());
        assert_eq!(labels[LABEL_START], me.start);
        assert!(me.pidns.starts_with("pid:["), "{}", me.pidns);
    }
}
