//! `strata build --remote-executor`: `run` steps executed by a REAPI
//! execution service (BuildGrid, with `strata worker`s), behind
//! `strata_exec::Executor`.
//!
//! The service is asked once, before the store opens ([`RemoteExecutor::open`],
//! called by the [`crate::Opener`]): what it executes and in which digest
//! function, which the build's store then uses. A service that cannot be
//! reached costs one warning and the build runs locally (with
//! `--remote-only`, an error); one that refuses (a wrong instance name) or
//! hashes with nothing Strata knows is an error.
//!
//! For each step: the action ([`action`]) is stored, what the service lacks
//! of it and its input root is uploaded (FindMissingBlobs, then batches or
//! ByteStream), it is executed and followed ([`operation`]), and its result
//! checked and its folder records fetched ([`outputs`]); its files stay on
//! the service (`StepSuccess::held_remotely`) until the build needs them,
//! fetched then through this executor as a `strata_exec::BlobSource`. A step the service cannot run
//! because it went away runs locally, with one warning; any other failure
//! of the service fails the step, never with a wrong output.

mod action;
pub(crate) mod operation;
pub(crate) mod outputs;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;
use strata_exec::step::{self, Failure, StepFailure, StepSuccess};
use strata_exec::{BoxFuture, Executor, Request};
use strata_rules::Work;
use strata_rules::run::{Container, ImageRef, RunStep};
use strata_store::{Digest, DigestFunction, Store};

use crate::client::{GrpcRemote, Remote, RemoteError};
use crate::config::{self, ExecutorCli};
use action::RemoteAction;
use outputs::Unusable;

/// REAPI's usual names (BuildGrid's and buildbox's) for Rust's
/// architecture names.
pub fn isa(arch: &str) -> &str {
    match arch {
        "x86_64" => "x86-64",
        other => other,
    }
}

/// The platform property naming the image an action runs in, as
/// `docker://NAME@sha256:<hex>` (or `docker://sha256:<hex>`, an image ID):
/// the REAPI convention of Bazel, BuildGrid and buildbox.
pub const CONTAINER_IMAGE: &str = "container-image";

/// The platform property a worker that runs `container-image` actions
/// advertises, and such an action asks for, so that a scheduler matching
/// it (BuildGrid's `match-property-keys`) hands them only to such workers.
pub const CONTAINER_RUNTIME: (&str, &str) = ("container-runtime", "docker");

/// REAPI's `ISA` for an OCI architecture (`amd64`, `arm64`).
pub fn isa_of_architecture(architecture: &str) -> &str {
    match architecture {
        "amd64" => "x86-64",
        "arm64" => "aarch64",
        other => other,
    }
}

/// What the remote executor did in one build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecutionStats {
    /// Steps a worker of the service ran.
    pub executed: u64,
    /// Steps the service answered from its action cache.
    pub cached: u64,
    /// Steps run locally after the service went away mid-build.
    pub fell_back: u64,
    /// Blobs and bytes sent (what the service lacked).
    pub uploaded_blobs: u64,
    pub uploaded_bytes: u64,
    /// Bytes fetched: folder records and logs of results, and the files
    /// of those something needed (`out/`, a step run here).
    pub downloaded_bytes: u64,
}

/// Runs `run` steps on a remote execution service, once [`open`]ed.
///
/// [`open`]: RemoteExecutor::open
pub struct RemoteExecutor {
    cli: ExecutorCli,
    /// Runs what the service cannot, once it went away mid-build.
    local: Arc<dyn Executor>,
    service: OnceLock<Service>,
    /// Set when the service went away mid-build: later steps run locally.
    gone: AtomicBool,
    counters: Counters,
}

/// A service that answered GetCapabilities.
struct Service {
    remote: Remote,
    grpc: GrpcRemote,
    url: String,
    function: DigestFunction,
    platform: Vec<(String, String)>,
    remote_only: bool,
}

#[derive(Default)]
struct Counters {
    executed: AtomicU64,
    cached: AtomicU64,
    fell_back: AtomicU64,
    uploaded_blobs: AtomicU64,
    uploaded_bytes: AtomicU64,
    downloaded_bytes: AtomicU64,
}

/// Why a step did not come back from the service.
enum Miss {
    /// The step ran and failed, as it would have locally.
    Step(StepFailure),
    /// The service could not be reached: the step may run locally.
    Unavailable(String),
    /// The service refused or broke the protocol.
    Remote(String),
}

impl From<RemoteError> for Miss {
    fn from(e: RemoteError) -> Miss {
        if e.is_transient() {
            Miss::Unavailable(described(&e))
        } else {
            Miss::Remote(described(&e))
        }
    }
}

impl RemoteExecutor {
    /// `cli`: `--remote-executor`, `--remote-only`, over `strata.yaml`;
    /// `local` runs steps once the service went away.
    pub fn new(cli: ExecutorCli, local: Arc<dyn Executor>) -> RemoteExecutor {
        RemoteExecutor {
            cli,
            local,
            service: OnceLock::new(),
            gone: AtomicBool::new(false),
            counters: Counters::default(),
        }
    }

    /// Reads the workspace's settings and asks the service what it
    /// executes. `Ok(Some(function))`: steps run there, and the store must
    /// use `function`; `Ok(None)`: no service is configured, or it cannot
    /// be reached (said through `warn`); `Err`: a configuration that
    /// cannot work (exit 2).
    pub async fn open(
        &self,
        workspace_root: &std::path::Path,
        warn: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Option<DigestFunction>, String> {
        let Some(settings) = config::executor_settings(workspace_root, &self.cli)? else {
            return Ok(None);
        };
        let url = crate::client::without_credentials(&settings.config.url);
        let unreachable = |e: &RemoteError| {
            if settings.remote_only {
                Err(format!(
                    "remote executor {url} cannot be reached ({}), and --remote-only forbids building locally",
                    described(e)
                ))
            } else {
                warn(&format!(
                    "remote executor {url} cannot be reached ({}); building locally",
                    described(e)
                ));
                Ok(None)
            }
        };
        let connected =
            tokio::time::timeout(settings.config.timeout, Remote::connect(&settings.config)).await;
        let remote = match connected {
            Ok(Ok(remote)) => remote,
            Ok(Err(e)) if e.is_transient() => return unreachable(&e),
            Ok(Err(e)) => return Err(format!("remote executor {url}: {}", described(&e))),
            Err(_) => {
                return unreachable(&RemoteError::Unavailable {
                    server: url.clone(),
                    what: "connecting".into(),
                    reason: "timed out".into(),
                });
            }
        };
        let Remote::Grpc(grpc) = remote.clone() else {
            return Err(format!("remote executor {url}: not a gRPC address"));
        };
        let capabilities = match grpc.execution_capabilities().await {
            Ok(c) => c,
            Err(e) if e.is_transient() => return unreachable(&e),
            Err(e) => {
                return Err(format!(
                    "remote executor {url} refused to say what it executes ({}); check the instance name after the port",
                    described(&e)
                ));
            }
        };
        if !capabilities.enabled {
            return Err(format!(
                "remote executor {url} does not execute actions (its capabilities say so): is it a cache only?"
            ));
        }
        let function = if capabilities.functions.contains(&DigestFunction::Blake3) {
            DigestFunction::Blake3
        } else if capabilities.functions.contains(&DigestFunction::Sha256) {
            DigestFunction::Sha256
        } else {
            return Err(format!(
                "remote executor {url} executes in no digest function Strata knows (Strata speaks BLAKE3 and SHA-256)"
            ));
        };
        let platform = vec![
            ("OSFamily".to_string(), "linux".to_string()),
            ("ISA".to_string(), isa(std::env::consts::ARCH).to_string()),
        ];
        let _ = self.service.set(Service {
            remote,
            grpc,
            url,
            function,
            platform,
            remote_only: settings.remote_only,
        });
        Ok(Some(function))
    }

    /// What it did so far.
    pub fn stats(&self) -> ExecutionStats {
        let c = &self.counters;
        ExecutionStats {
            executed: c.executed.load(Ordering::Relaxed),
            cached: c.cached.load(Ordering::Relaxed),
            fell_back: c.fell_back.load(Ordering::Relaxed),
            uploaded_blobs: c.uploaded_blobs.load(Ordering::Relaxed),
            uploaded_bytes: c.uploaded_bytes.load(Ordering::Relaxed),
            downloaded_bytes: c.downloaded_bytes.load(Ordering::Relaxed),
        }
    }

    /// Whether the build uses a service (it was configured and answered).
    pub fn is_open(&self) -> bool {
        self.service.get().is_some()
    }

    async fn run(&self, request: Request) -> Result<StepSuccess, StepFailure> {
        let service = self.service.get().expect("runs only once open");
        let (Work::Run(step), Some(input_root)) = (&request.work, request.input_root) else {
            return Err(StepFailure::without_logs(Failure::Io(format!(
                "`{}` was handed to the remote executor without its inputs in the store",
                request.name
            ))));
        };
        match self
            .remote_run(service, &request.store, step, input_root, &request.deps)
            .await
        {
            Ok(success) => Ok(success),
            Err(Miss::Step(failure)) => Err(failure),
            Err(Miss::Unavailable(why)) if !service.remote_only => {
                if !self.gone.swap(true, Ordering::Relaxed) {
                    request.events.warn(&format!(
                        "remote executor {} went away ({why}); running this and the remaining steps locally",
                        service.url
                    ));
                }
                self.counters.fell_back.fetch_add(1, Ordering::Relaxed);
                // Its dependencies' outputs must be whole to run here; those
                // the service held went away with it.
                if let Some(name) = held_dependency(&request) {
                    return Err(StepFailure::without_logs(Failure::Io(format!(
                        "remote executor {} went away holding the output of its dependency `{name}`; build again",
                        service.url
                    ))));
                }
                self.local.execute(request).await
            }
            Err(Miss::Unavailable(why) | Miss::Remote(why)) => Err(StepFailure::without_logs(
                Failure::Io(format!("remote execution failed: {why}")),
            )),
        }
    }

    /// Uploads, executes and fetches one step.
    async fn remote_run(
        &self,
        service: &Service,
        store: &Store,
        step: &RunStep,
        input_root: Digest,
        deps: &[(String, Digest)],
    ) -> Result<StepSuccess, Miss> {
        let function = service.function;
        let cas = store.cas().clone();
        let (store2, step2, deps, host) = (
            store.clone(),
            step.clone(),
            deps.to_vec(),
            service.platform.clone(),
        );
        let (action, blobs) = tokio::task::spawn_blocking(move || {
            let platform = platform_for(&store2, &step2, &deps, &host)?;
            let remote = RemoteAction::of(function, &step2, input_root, &platform);
            let command = cas.put_message(&remote.command).map_err(Failure::Store)?;
            let action = cas.put_message(&remote.action).map_err(Failure::Store)?;
            let mut blobs = crate::client::tree_blobs(&cas, &input_root).map_err(|e| {
                Failure::Io(format!(
                    "cannot read the step's input root {input_root}: {e}"
                ))
            })?;
            blobs.extend([command, action]);
            Ok::<_, Failure>((action, blobs))
        })
        .await
        .map_err(|e| Miss::Remote(e.to_string()))?
        .map_err(|f| Miss::Step(StepFailure::without_logs(f)))?;
        let started = SystemTime::now();
        // The service's action cache first: a hit needs no upload and no
        // operation. Anything wrong with it (absent, failed, unusable)
        // leaves the step to Execute; an unusable hit (its files lost)
        // must not come back from Execute's own cache lookup.
        let mut skip_cache_lookup = false;
        if let Some(hit) = self.cached(service, &action).await {
            match self
                .finish(service, store, step, hit, started, SystemTime::now())
                .await
            {
                Ok(success) => return Ok(success),
                Err(_) => skip_cache_lookup = true,
            }
        }
        let mut uploaded_again = false;
        let response = loop {
            self.upload(service, store, &blobs).await?;
            let response =
                match operation::execute(&service.grpc, function, &action, skip_cache_lookup)
                    .await?
                {
                    operation::Ended::Response(r) => *r,
                    operation::Ended::Error(status)
                        if status.code == tonic::Code::DeadlineExceeded as i32 =>
                    {
                        return Err(Miss::Step(StepFailure::without_logs(timed_out(
                            step,
                            &status.message,
                        ))));
                    }
                    operation::Ended::Error(status) => {
                        return Err(Miss::Remote(format!(
                            "the operation failed: {}",
                            status_text(status.code, &status.message)
                        )));
                    }
                };
            let code = response.status.as_ref().map_or(0, |s| s.code);
            // Blobs the service lost between the upload and the run: once more.
            if code == tonic::Code::FailedPrecondition as i32 && !uploaded_again {
                uploaded_again = true;
                continue;
            }
            break response;
        };
        let finished = SystemTime::now();
        self.finish(service, store, step, response, started, finished)
            .await
    }

    /// The service's cached result of `action`, as Execute would answer
    /// it, if it holds one of exit code 0.
    async fn cached(&self, service: &Service, action: &Digest) -> Option<pb::ExecuteResponse> {
        let cached = service
            .remote
            .get_action_result(service.function, action)
            .await
            .ok()??;
        if cached.exit_code != 0 {
            return None;
        }
        Some(pb::ExecuteResponse {
            result: Some(crate::client::names::convert(&cached).ok()?),
            cached_result: true,
            ..Default::default()
        })
    }

    /// Sends what the service lacks of `blobs`. An input the service lacks
    /// and this store does not hold is a dependency's output the service
    /// held for this build and has lost since.
    async fn upload(&self, service: &Service, store: &Store, blobs: &[Digest]) -> Result<(), Miss> {
        let missing = service.remote.find_missing(service.function, blobs).await?;
        if let Some(lost) = missing.iter().find(|d| !store.cas().contains(d)) {
            return Err(Miss::Remote(format!(
                "remote executor {} no longer holds blob {lost} of a dependency's output it made in this build (evicted from its storage); building again runs that step again",
                service.url
            )));
        }
        service
            .remote
            .upload_many(service.function, &missing, store.cas())
            .await?;
        let c = &self.counters;
        c.uploaded_blobs
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        c.uploaded_bytes.fetch_add(
            missing.iter().map(|d| d.size_bytes).sum::<u64>(),
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// A step's outcome from the service's answer.
    async fn finish(
        &self,
        service: &Service,
        store: &Store,
        step: &RunStep,
        response: pb::ExecuteResponse,
        started: SystemTime,
        finished: SystemTime,
    ) -> Result<StepSuccess, Miss> {
        let cas = store.cas();
        let status = response.status.clone().unwrap_or_default();
        let timed_out = status.code == tonic::Code::DeadlineExceeded as i32;
        if status.code != 0 && !timed_out {
            return Err(Miss::Remote(format!(
                "the service answered {}",
                status_text(status.code, &status.message)
            )));
        }
        let Some(result) = response.result else {
            if timed_out {
                // Stopped without its logs.
                return Err(Miss::Step(StepFailure::without_logs(self::timed_out(
                    step,
                    &status.message,
                ))));
            }
            return Err(Miss::Remote("the service's answer holds no result".into()));
        };
        let unusable = |u: Unusable| match u {
            Unusable::Step(f) => Miss::Step(StepFailure::without_logs(f)),
            Unusable::Remote(why) => Miss::Remote(why),
        };
        if timed_out || result.exit_code != 0 {
            let (stdout, stderr, bytes) = outputs::logs(&service.remote, cas, &result)
                .await
                .map_err(unusable)?;
            self.counters
                .downloaded_bytes
                .fetch_add(bytes, Ordering::Relaxed);
            let failure = if timed_out {
                self::timed_out(step, &status.message)
            } else if result.exit_code > 128 {
                Failure::Signal(result.exit_code - 128)
            } else {
                Failure::Exit(result.exit_code)
            };
            return Err(Miss::Step(StepFailure {
                failure,
                stdout: step::tail(&cas.path(&stdout)),
                stderr: step::tail(&cas.path(&stderr)),
                scratch: None,
            }));
        }
        let fetched =
            match outputs::fetch(&service.remote, cas, step, &result, response.cached_result).await
            {
                Ok(f) => f,
                Err(Unusable::Step(failure)) => {
                    // As a local step's: with its logs.
                    let logs = outputs::logs(&service.remote, cas, &result).await.ok();
                    return Err(Miss::Step(StepFailure {
                        failure,
                        stdout: logs
                            .map(|l| step::tail(&cas.path(&l.0)))
                            .unwrap_or_default(),
                        stderr: logs
                            .map(|l| step::tail(&cas.path(&l.1)))
                            .unwrap_or_default(),
                        scratch: None,
                    }));
                }
                Err(u) => return Err(unusable(u)),
            };
        let c = &self.counters;
        c.downloaded_bytes
            .fetch_add(fetched.bytes, Ordering::Relaxed);
        if response.cached_result {
            c.cached.fetch_add(1, Ordering::Relaxed);
        } else {
            c.executed.fetch_add(1, Ordering::Relaxed);
        }
        let mut action_result = step::action_result(
            fetched.output,
            Some((fetched.stdout, fetched.stderr)),
            started,
            finished,
        );
        if let (Some(ours), Some(theirs)) = (
            action_result.execution_metadata.as_mut(),
            result.execution_metadata.as_ref(),
        ) {
            ours.worker = theirs.worker.clone();
        }
        Ok(StepSuccess {
            output: fetched.output,
            result: action_result,
            held_remotely: !fetched.held.is_empty(),
        })
    }

    /// Fetches held blobs from the service, in batches.
    async fn fetch_held(&self, store: &Store, blobs: Vec<Digest>) -> Result<(), String> {
        let Some(service) = self.service.get() else {
            return Err("no remote executor is open".into());
        };
        let missing: Vec<Digest> = blobs
            .into_iter()
            .filter(|d| !store.cas().contains(d))
            .collect();
        match service
            .remote
            .download_many(service.function, &missing, store.cas())
            .await
        {
            Ok(()) => {
                self.counters.downloaded_bytes.fetch_add(
                    missing.iter().map(|d| d.size_bytes).sum::<u64>(),
                    Ordering::Relaxed,
                );
                Ok(())
            }
            Err(e @ RemoteError::NotFound { .. }) => Err(format!(
                "remote executor {} no longer holds it ({}): it was evicted from the service's storage; building again runs the step again",
                service.url,
                described(&e)
            )),
            Err(e) => Err(format!(
                "fetching it from remote executor {} failed: {}",
                service.url,
                described(&e)
            )),
        }
    }
}

/// The files of outputs a step returned held (`StepSuccess::held_remotely`)
/// come from the service that made them.
impl strata_exec::BlobSource for RemoteExecutor {
    fn fetch<'a>(
        &'a self,
        store: &'a Store,
        blobs: Vec<Digest>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.fetch_held(store, blobs))
    }
}

/// A dependency of `request` whose output's files are not all stored.
fn held_dependency(request: &Request) -> Option<&str> {
    request
        .deps
        .iter()
        .find(|(_, tree)| strata_store::tree::first_missing(request.store.cas(), tree).is_some())
        .map(|(name, _)| name.as_str())
}

/// Whether a step in this image may run on a worker: as linux/amd64 or
/// linux/arm64 (the `ISA`s workers advertise), as the image's own user
/// (REAPI has no property for another), without caches (named folders of
/// this machine's store).
fn goes_remote(container: &Container) -> bool {
    let platform = &container.runs_on.platform;
    platform.os == "linux"
        && platform.variant.is_none()
        && matches!(platform.architecture.as_str(), "amd64" | "arm64")
        && container.user.is_none()
        && container.caches.is_empty()
}

/// The platform an action asks for: `OSFamily` and `ISA` (the image's
/// architecture for a step in an image, this machine's otherwise), and for
/// a step in an image its `container-image` by digest and the
/// `container-runtime` workers that run images advertise. Reads an image
/// target's layout from the store: blocking.
fn platform_for(
    store: &Store,
    step: &RunStep,
    deps: &[(String, Digest)],
    host: &[(String, String)],
) -> Result<Vec<(String, String)>, Failure> {
    let Some(container) = &step.container else {
        return Ok(host.to_vec());
    };
    let platform = &container.runs_on.platform;
    let image = match &container.image {
        ImageRef::Pinned { name, digest } => format!("docker://{name}@{digest}"),
        // An image Strata made is known to an engine by its ID, the digest
        // of its config: a loaded archive has no registry digest.
        ImageRef::Target(target) => {
            let layout = deps
                .iter()
                .find(|(n, _)| n == target)
                .map(|(_, d)| *d)
                .ok_or_else(|| Failure::Io(format!("image `{target}` is not a dependency")))?;
            let image =
                strata_formats::oci::layout::read(store.cas(), &layout, &platform.to_string())
                    .map_err(|e| Failure::Rule(format!("`{target}` is not an image: {e}")))?;
            format!("docker://{}", image.config.sha256)
        }
    };
    Ok(vec![
        ("OSFamily".to_string(), "linux".to_string()),
        (
            "ISA".to_string(),
            isa_of_architecture(&platform.architecture).to_string(),
        ),
        (CONTAINER_IMAGE.to_string(), image),
        (
            CONTAINER_RUNTIME.0.to_string(),
            CONTAINER_RUNTIME.1.to_string(),
        ),
    ])
}

/// A step the service stopped at its deadline (DEADLINE_EXCEEDED): past
/// its own time limit, as locally, or past one of the service's.
fn timed_out(step: &RunStep, message: &str) -> Failure {
    match step.limits.time {
        Some(limit) => Failure::TimedOut { limit },
        None => Failure::Io(format!(
            "the step passed a time limit of the remote executor's: {}",
            status_text(tonic::Code::DeadlineExceeded as i32, message)
        )),
    }
}

/// What failed and why, without the "remote cache" the error's own text
/// starts with.
fn described(e: &RemoteError) -> String {
    match e {
        RemoteError::Unavailable { what, reason, .. }
        | RemoteError::Refused { what, reason, .. }
        | RemoteError::Protocol { what, reason, .. } => format!("{what}: {reason}"),
        RemoteError::NotFound { what, .. } => format!("{what}: not found"),
        other => other.to_string(),
    }
}

fn status_text(code: i32, message: &str) -> String {
    let code = tonic::Code::from_i32(code);
    let message = crate::client::server_text(message);
    if message.is_empty() {
        format!("{code:?}")
    } else {
        format!("{code:?}: {message}")
    }
}

impl Executor for RemoteExecutor {
    /// `run` steps that need nothing this machine alone has: no network,
    /// no secret, no memory limit, not marked `local: true`; in an image,
    /// one of linux/amd64 or linux/arm64, without `user:` or `caches:`.
    fn runs(&self, work: &Work) -> bool {
        let Work::Run(step) = work else { return false };
        self.service.get().is_some()
            && !self.gone.load(Ordering::Relaxed)
            && step.container.as_ref().is_none_or(goes_remote)
            && !step.local
            && !step.network
            && step.fixed_output.is_none()
            && step.secrets.is_empty()
            && step.limits.memory.is_none()
    }

    fn reads_inputs_from_store(&self, work: &Work) -> bool {
        self.runs(work)
    }

    /// The service needs only its inputs' digests: it holds what it made.
    fn takes_held_inputs(&self, work: &Work) -> bool {
        self.runs(work)
    }

    fn execute(&self, request: Request) -> BoxFuture<'_, Result<StepSuccess, StepFailure>> {
        Box::pin(self.run(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_rules::platform::{Platform, RunsOn};

    fn container(platform: &str) -> Container {
        Container {
            image: ImageRef::Target("base".into()),
            user: None,
            caches: Default::default(),
            runs_on: RunsOn::native(Platform::parse_known(platform).unwrap()),
        }
    }

    #[test]
    fn steps_in_images_go_remote_as_amd64_or_arm64_without_user_or_caches() {
        assert!(goes_remote(&container("linux/amd64")));
        assert!(goes_remote(&container("linux/arm64")));
        assert!(!goes_remote(&container("linux/arm/v7")));
        assert!(!goes_remote(&container("linux/riscv64")));
        let user = Container {
            user: Some("1000:1000".into()),
            ..container("linux/amd64")
        };
        assert!(!goes_remote(&user));
        let mut caches = container("linux/amd64");
        caches.caches.insert("apt".into(), "/var/cache/apt".into());
        assert!(!goes_remote(&caches));
        assert_eq!(isa_of_architecture("arm64"), "aarch64");
        assert_eq!(isa_of_architecture("amd64"), "x86-64");
    }
}
