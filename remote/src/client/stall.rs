//! Time limits that suit transfers of any size: a request fails when nothing
//! has moved for the configured time, not when a large blob takes long.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When a transfer last moved; cloned into whatever moves it.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    start: Instant,
    /// Milliseconds from `start` to the last movement.
    last: Arc<AtomicU64>,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Progress {
            start: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn tick(&self) {
        let now = self.start.elapsed().as_millis().min(u64::MAX as u128) as u64;
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Runs `fut` until it ends (`Some`) or `progress` has not ticked for
/// `limit` (`None`, and `fut` is dropped, which cancels the request).
pub(crate) async fn watch<F: Future>(
    limit: Duration,
    progress: &Progress,
    fut: F,
) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        let idle = progress.idle();
        if idle >= limit {
            return None;
        }
        tokio::select! {
            out = &mut fut => return Some(out),
            () = tokio::time::sleep(limit - idle) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_moving_transfer_outlives_the_limit_and_a_stalled_one_does_not() {
        let progress = Progress::new();
        let ticker = progress.clone();
        let moving = async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                ticker.tick();
            }
            "done"
        };
        assert_eq!(
            watch(Duration::from_millis(100), &progress, moving).await,
            Some("done")
        );
        let stalled = Progress::new();
        let started = Instant::now();
        let never = std::future::pending::<()>();
        assert_eq!(
            watch(Duration::from_millis(100), &stalled, never).await,
            None
        );
        assert_eq!(started.elapsed(), Duration::from_millis(100));
    }
}
