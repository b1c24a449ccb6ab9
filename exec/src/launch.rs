//! Starting the children that must die with strata, from one thread that
//! lives as long as strata does.
//!
//! A parent-death signal (`PR_SET_PDEATHSIG`) is sent when the *thread*
//! that created the child exits, not the process. The async runtime's
//! threads come and go: `block_in_place` retires a worker, and an idle
//! blocking thread exits after ten seconds. A step started from such a
//! thread was killed (SIGKILL) in the middle of its run, seconds after a
//! neighbour's publish had retired the thread. Every child that asks for the
//! signal (the sandbox helper, an unsandboxed step, the ephemeral dockerd)
//! is started here instead.

use std::io;
use std::sync::OnceLock;
use std::sync::mpsc;

type Job = Box<dyn FnOnce() + Send>;

/// The launcher thread's queue; the thread is started on first use and never
/// exits (it only ends with the process).
fn queue() -> &'static mpsc::Sender<Job> {
    static QUEUE: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (send, receive) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("strata-launcher".into())
            .spawn(move || {
                for job in receive {
                    job();
                }
            })
            .expect("cannot start the launcher thread");
        send
    })
}

/// Starts `command` on the launcher thread, registered with the calling
/// task's runtime (which reaps it and drives its `wait`).
pub async fn spawn(mut command: tokio::process::Command) -> io::Result<tokio::process::Child> {
    let runtime = tokio::runtime::Handle::current();
    let (answer, answered) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _entered = runtime.enter();
        let _ = answer.send(command.spawn());
    });
    queue()
        .send(job)
        .map_err(|_| io::Error::other("the launcher thread has stopped"))?;
    answered
        .await
        .map_err(|_| io::Error::other("the launcher thread has stopped"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    /// A child that asks to die with its parent, as the sandbox helper does.
    fn dies_with_its_parent(script: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("sh");
        command.args(["-c", script]);
        // SAFETY: prctl(2) is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        command
    }

    #[test]
    fn a_child_outlives_the_thread_that_asked_for_it() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        // The asking thread exits before the child does, as a retired
        // runtime worker would.
        let mut child = std::thread::spawn(move || {
            handle.block_on(spawn(dies_with_its_parent("sleep 0.5; exit 7")))
        })
        .join()
        .unwrap()
        .expect("the child starts");
        let status = runtime.block_on(child.wait()).unwrap();
        assert_eq!(status.signal(), None, "killed: {status:?}");
        assert_eq!(status.code(), Some(7));
    }

    #[test]
    fn a_command_that_cannot_start_is_an_error() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = runtime
            .block_on(spawn(tokio::process::Command::new(
                "/nonexistent/strata-test-program",
            )))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
