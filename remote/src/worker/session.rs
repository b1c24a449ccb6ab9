//! The bot session: one `CreateBotSession`, then `UpdateBotSession` calls
//! that report how each lease stands and receive new ones.
//!
//! Each call carries every lease this worker holds: running ones as
//! `ACTIVE`, finished ones as `COMPLETED` with their status and result.
//! When it has room for more leases, BuildGrid holds the call open until it
//! assigns one (or most of the session's keepalive passes); when it has
//! none, the worker calls back before the session would expire. A lease
//! that finishes cuts a waiting call short, so its result is reported at
//! once; a call cut short is harmless, as the protocol is built for calls
//! lost on the way: a finished lease is forgotten only once an answer to a
//! call reporting it has come back. A running lease the service stops
//! listing (cancelled, or given to another bot) is killed. When the
//! service no longer knows the session (it expired: its leases went back
//! to the queue), the worker drops its leases and starts a new one.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Code;

use super::bots::{
    BOT_STATUS_OK, BOT_STATUS_TERMINATING, BotSession, BotsClient, CreateBotSessionRequest, Lease,
    UpdateBotSessionRequest, lease_state,
};
use super::lease::{self, Outcome};
use super::{Worker, WorkerError};

/// The longest a call may wait for a lease; BuildGrid answers sooner (at
/// most 80% of its bot keepalive).
const POLL: Duration = Duration::from_secs(60);
/// The deadline of CreateBotSession: BuildGrid holds a call open waiting
/// for work only when more than 3 s of its deadline are left, so the
/// session opens at once (leases come with the next call).
const CREATE: Duration = Duration::from_secs(3);
/// How long to wait after a failed call, doubled per failure up to the max.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// A call that reported nothing and was answered this fast without news is
/// followed by a pause, so a service that does not hold calls open is not
/// asked in a loop. (A call reporting a finished lease is answered at once
/// by BuildGrid: the next call follows without a pause.)
const QUICK: Duration = Duration::from_millis(500);

enum Slot {
    Running {
        task: JoinHandle<()>,
        started: Instant,
    },
    Done(Outcome),
}

pub(crate) struct Session {
    worker: Arc<Worker>,
    bots: BotsClient,
    /// The session as the service last described it.
    current: BotSession,
    /// The bot's shape: its platform and capacity, sent with every call.
    shape: super::bots::Worker,
    capacity: usize,
    instance: String,
    leases: BTreeMap<String, Slot>,
    done_tx: mpsc::UnboundedSender<(String, Outcome)>,
    done_rx: mpsc::UnboundedReceiver<(String, Outcome)>,
}

impl Session {
    /// Opens a session; a first failure other than the service being
    /// unreachable for a moment is an error (a wrong instance name, no Bots
    /// service there).
    pub(crate) async fn open(
        worker: Arc<Worker>,
        bots: BotsClient,
        instance: String,
        shape: super::bots::Worker,
        capacity: usize,
    ) -> Result<Session, WorkerError> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut session = Session {
            worker,
            bots,
            current: BotSession::default(),
            shape,
            capacity,
            instance,
            leases: BTreeMap::new(),
            done_tx,
            done_rx,
        };
        session.begin().await?;
        Ok(session)
    }

    /// Serves leases until the service refuses a new session. Dropping the
    /// future leaves the session as it stands, for [`Session::close`].
    pub(crate) async fn serve(&mut self) -> Result<(), WorkerError> {
        let mut failures = 0u32;
        loop {
            self.take_finished();
            let (request, active, completed) = self.request();
            let started = Instant::now();
            let mut bots = self.bots.clone();
            let call = bots.update_bot_session(request);
            let answer = tokio::select! {
                answer = call => answer,
                Some((id, outcome)) = self.done_rx.recv() => {
                    self.finish(id, outcome);
                    continue;
                }
            };
            match answer {
                Ok(session) => {
                    failures = 0;
                    for id in &completed {
                        self.leases.remove(id);
                    }
                    let news = self.reconcile(&session, &active);
                    self.current = session;
                    let running = self.running();
                    if running >= self.capacity {
                        // BuildGrid answers at once when the bot is full:
                        // call back when a lease ends or before expiry.
                        self.wait(self.heartbeat()).await;
                    } else if completed.is_empty() && !news && started.elapsed() < QUICK {
                        self.wait(QUICK).await;
                    }
                }
                Err(status) if session_lost(&status) => {
                    eprintln!(
                        "strata worker: the service dropped the session ({}); its leases go back to the queue, starting a new one",
                        shown(&status)
                    );
                    for (_, slot) in std::mem::take(&mut self.leases) {
                        if let Slot::Running { task, .. } = slot {
                            task.abort();
                        }
                    }
                    self.begin().await?;
                }
                Err(status) => {
                    failures += 1;
                    let pause = RETRY_FIRST
                        .saturating_mul(1 << failures.min(6))
                        .min(RETRY_MAX);
                    if failures == 1 || failures.is_multiple_of(10) {
                        eprintln!(
                            "strata worker: UpdateBotSession failed ({}); trying again",
                            shown(&status)
                        );
                    }
                    self.wait(pause).await;
                }
            }
        }
    }

    /// Ends the session: running leases are killed and handed back (as
    /// UNAVAILABLE, which BuildGrid retries at once, elsewhere), finished
    /// ones reported, and the bot says it is terminating, so nothing more
    /// is assigned to it. A lease the service assigned meanwhile is handed
    /// back the same way. Best effort: what is not handed back is requeued
    /// when the session expires.
    pub(crate) async fn close(&mut self) {
        eprintln!(
            "strata worker: stopping; {} running lease(s) handed back",
            self.running()
        );
        for (id, slot) in std::mem::take(&mut self.leases) {
            let outcome = match slot {
                Slot::Running { task, .. } => {
                    task.abort();
                    lease::stopped()
                }
                Slot::Done(outcome) => outcome,
            };
            self.leases.insert(id, Slot::Done(outcome));
        }
        for _ in 0..3 {
            let (mut request, _, _) = self.request();
            if let Some(session) = &mut request.get_mut().bot_session {
                session.status = BOT_STATUS_TERMINATING;
            }
            request.set_timeout(CREATE);
            let Ok(answer) = self.bots.update_bot_session(request).await else {
                return;
            };
            self.leases.clear();
            for lease in &answer.leases {
                if matches!(lease.state, lease_state::PENDING | lease_state::ACTIVE) {
                    self.leases
                        .insert(lease.id.clone(), Slot::Done(lease::stopped()));
                }
            }
            self.current = answer;
            if self.leases.is_empty() {
                return;
            }
        }
    }

    /// Opens a new session and starts the leases it comes with (BuildGrid
    /// may assign some while the call waits).
    async fn begin(&mut self) -> Result<(), WorkerError> {
        let session = self.create().await?;
        self.reconcile(&session, &HashSet::new());
        self.current = session;
        Ok(())
    }

    async fn create(&mut self) -> Result<BotSession, WorkerError> {
        let mut failures = 0u32;
        loop {
            let mut request = tonic::Request::new(CreateBotSessionRequest {
                parent: self.instance.clone(),
                bot_session: Some(BotSession {
                    bot_id: self.worker.bot_id.clone(),
                    status: BOT_STATUS_OK,
                    worker: Some(self.shape.clone()),
                    ..Default::default()
                }),
            });
            request.set_timeout(CREATE);
            match self.bots.create_bot_session(request).await {
                Ok(session) => return Ok(session),
                Err(status) if is_transient(status.code()) && failures < 30 => {
                    failures += 1;
                    tokio::time::sleep(RETRY_FIRST.saturating_mul(failures).min(RETRY_MAX)).await;
                }
                Err(status) => {
                    return Err(WorkerError::Failed(format!(
                        "{} refused a bot session for instance `{}`: {}",
                        self.worker.server,
                        self.instance,
                        shown(&status)
                    )));
                }
            }
        }
    }

    /// The next UpdateBotSession, the running leases it reports and the
    /// finished ones.
    fn request(
        &self,
    ) -> (
        tonic::Request<UpdateBotSessionRequest>,
        HashSet<String>,
        Vec<String>,
    ) {
        let mut active = HashSet::new();
        let mut completed = Vec::new();
        let leases = self
            .leases
            .iter()
            .map(|(id, slot)| match slot {
                Slot::Running { .. } => {
                    active.insert(id.clone());
                    Lease {
                        id: id.clone(),
                        state: lease_state::ACTIVE,
                        ..Default::default()
                    }
                }
                Slot::Done(outcome) => {
                    completed.push(id.clone());
                    Lease {
                        id: id.clone(),
                        state: lease_state::COMPLETED,
                        status: Some(outcome.status.clone()),
                        result: outcome.result.clone(),
                        ..Default::default()
                    }
                }
            })
            .collect();
        let session = BotSession {
            status: BOT_STATUS_OK,
            worker: Some(self.shape.clone()),
            leases,
            ..self.current.clone()
        };
        let mut request = tonic::Request::new(UpdateBotSessionRequest {
            name: session.name.clone(),
            bot_session: Some(session),
        });
        request.set_timeout(POLL);
        (request, active, completed)
    }

    /// Starts the leases the answer brings and kills those it no longer
    /// lists though it was told they run. Whether a lease started.
    fn reconcile(&mut self, answer: &BotSession, reported_active: &HashSet<String>) -> bool {
        let listed: HashSet<&str> = answer.leases.iter().map(|l| l.id.as_str()).collect();
        let gone: Vec<String> = self
            .leases
            .iter()
            .filter(|(id, slot)| {
                matches!(slot, Slot::Running { .. })
                    && reported_active.contains(*id)
                    && !listed.contains(id.as_str())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(Slot::Running { task, .. }) = self.leases.remove(&id) {
                task.abort();
                eprintln!("strata worker: lease {id}: withdrawn by the service, stopped");
            }
        }
        let mut news = false;
        for lease in &answer.leases {
            let new = matches!(lease.state, lease_state::PENDING | lease_state::ACTIVE)
                && !self.leases.contains_key(&lease.id);
            if new {
                self.start(lease);
                news = true;
            }
        }
        news
    }

    fn start(&mut self, lease: &Lease) {
        let (worker, tx, id, payload) = (
            self.worker.clone(),
            self.done_tx.clone(),
            lease.id.clone(),
            lease.payload.clone(),
        );
        eprintln!("strata worker: lease {id}: started");
        let task = tokio::spawn(async move {
            let outcome = lease::execute(&worker, payload.as_ref()).await;
            let _ = tx.send((id, outcome));
        });
        self.leases.insert(
            lease.id.clone(),
            Slot::Running {
                task,
                started: Instant::now(),
            },
        );
    }

    fn take_finished(&mut self) {
        while let Ok((id, outcome)) = self.done_rx.try_recv() {
            self.finish(id, outcome);
        }
    }

    fn finish(&mut self, id: String, outcome: Outcome) {
        let Some(Slot::Running { started, .. }) = self.leases.get(&id) else {
            // Withdrawn meanwhile: nothing to report.
            return;
        };
        let took = started.elapsed();
        eprintln!("strata worker: lease {id}: {}", describe(&outcome, took));
        self.leases.insert(id, Slot::Done(outcome));
    }

    fn running(&self) -> usize {
        self.leases
            .values()
            .filter(|s| matches!(s, Slot::Running { .. }))
            .count()
    }

    /// Waits `pause`, or less if a lease finishes meanwhile.
    async fn wait(&mut self, pause: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            Some((id, outcome)) = self.done_rx.recv() => self.finish(id, outcome),
        }
    }

    /// How long a full bot may stay silent: half of what is left of its
    /// session, between 1 and 30 seconds.
    fn heartbeat(&self) -> Duration {
        let left = self
            .current
            .expire_time
            .as_ref()
            .and_then(|t| {
                let expires = SystemTime::UNIX_EPOCH
                    + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
                expires.duration_since(SystemTime::now()).ok()
            })
            .unwrap_or_default();
        (left / 2).clamp(Duration::from_secs(1), Duration::from_secs(30))
    }
}

/// Codes with which BuildGrid says it no longer knows the session.
fn session_lost(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument | Code::NotFound | Code::DataLoss
    )
}

fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown
    )
}

fn shown(status: &tonic::Status) -> String {
    let message = crate::client::server_text(status.message());
    if message.is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {message}", status.code())
    }
}

fn describe(outcome: &Outcome, took: Duration) -> String {
    let secs = took.as_secs_f64();
    if outcome.status.code != Code::Ok as i32 {
        return format!(
            "{:?} after {secs:.1}s: {}",
            Code::from_i32(outcome.status.code),
            crate::client::server_text(&outcome.status.message)
        );
    }
    let exit = outcome
        .result
        .as_ref()
        .and_then(|r| {
            <bazel_remote_apis::build::bazel::remote::execution::v2::ActionResult as prost::Message>::decode(
                r.value.as_slice(),
            )
            .ok()
        })
        .map_or(-1, |r| r.exit_code);
    format!("exit {exit} in {secs:.1}s")
}
