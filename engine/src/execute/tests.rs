//! Which layers each policy gives a build, seen from the store and a
//! remote cache that records what it is asked.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use strata_exec::{BoxFuture, Executor, Failure, LocalExecutor, StepEvents, StepSuccess};
use strata_rules::Work;
use strata_rules::data_root::DataRootParams;
use strata_rules::image_pull::PullParams;
use strata_store::remote_cache::{OutputCheck, RemoteStats};
use strata_store::tree::TreeBuilder;
use strata_store::{DigestFunction, reapi};

use super::*;

/// Runs image pulls and data roots (work the local executor leaves to
/// others): each run stores an empty tree, or fails.
#[derive(Default)]
struct Fake {
    runs: AtomicUsize,
    fails: bool,
}

impl Executor for Fake {
    fn runs(&self, work: &Work) -> bool {
        matches!(work, Work::ImagePull(_) | Work::DataRoot(_))
    }

    fn execute(&self, request: Request) -> BoxFuture<'_, Result<StepSuccess, StepFailure>> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if self.fails {
                return Err(step_failure(Failure::Exit(1)));
            }
            let output = TreeBuilder::new().store(request.store.cas()).unwrap();
            let now = std::time::SystemTime::now();
            Ok(StepSuccess::whole(
                output,
                strata_exec::step::action_result(output, None, now, now),
            ))
        })
    }
}

/// A remote cache that holds nothing and records what it is asked.
#[derive(Default)]
struct Recording {
    lookups: AtomicUsize,
    uploads: Mutex<Vec<Digest>>,
    finished: AtomicUsize,
}

impl RemoteCache for Recording {
    fn function(&self) -> DigestFunction {
        DigestFunction::Blake3
    }

    fn remember_function(&self, _: &Store) -> std::io::Result<()> {
        Ok(())
    }

    fn lookup<'a>(
        &'a self,
        _: &'a Store,
        _: &'a Digest,
        _: Option<&'a dyn OutputCheck>,
    ) -> BoxFuture<'a, Option<Digest>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { None })
    }

    fn upload(&self, _: &Store, key: Digest, _: reapi::ActionResult) {
        self.uploads.lock().unwrap().push(key);
    }

    fn finish(&self) -> BoxFuture<'_, ()> {
        self.finished.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }

    fn stats(&self) -> RemoteStats {
        RemoteStats::default()
    }
}

struct Quiet;

impl StepEvents for Quiet {
    fn log(&self, _: &str) {}
    fn warn(&self, _: &str) {}
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    remote: Arc<Recording>,
    executor: Arc<Fake>,
}

impl Setup {
    fn new(fails: bool) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), DigestFunction::Blake3).unwrap();
        Setup {
            _dir: dir,
            store,
            remote: Arc::default(),
            executor: Arc::new(Fake {
                fails,
                ..Fake::default()
            }),
        }
    }

    fn layers(&self, policy: Policy) -> Layers {
        let executors = Executors::new(Arc::new(LocalExecutor::new())).with(self.executor.clone());
        let remote: Arc<dyn RemoteCache> = self.remote.clone();
        Layers::new(
            self.store.clone(),
            executors,
            Some(remote),
            policy,
            None,
            Arc::new(|_: &str| {}),
        )
    }

    fn lookups(&self) -> usize {
        self.remote.lookups.load(Ordering::SeqCst)
    }

    fn runs(&self) -> usize {
        self.executor.runs.load(Ordering::SeqCst)
    }

    fn cached(&self, work: &Work) -> bool {
        let key = prepared(&self.store, work).key();
        self.store.action_cache().get(&key).unwrap().is_some()
    }
}

/// A data root of no images: work whose output is not pinned.
fn unpinned() -> Work {
    Work::DataRoot(DataRootParams {
        images: Vec::new(),
        platforms: Vec::new(),
        references: Vec::new(),
    })
}

/// An image pull: its output is pinned by its digest.
fn pinned() -> Work {
    Work::ImagePull(PullParams {
        reference: format!("127.0.0.1:5000/base@sha256:{}", "0".repeat(64)),
        digest: format!("sha256:{}", "0".repeat(64)),
        platform: "linux/amd64".into(),
        auth_env: None,
    })
}

fn prepared(store: &Store, work: &Work) -> PreparedAction {
    let keyed = crate::key::of_work(
        store.function(),
        store.cas(),
        "t",
        work,
        true,
        &[],
        &[],
        &BTreeMap::new(),
    );
    PreparedAction {
        name: "t".into(),
        keyed,
        declared: DeclaredOutputs::of(work),
        pinned: work.pinned(),
    }
}

fn request(store: &Store, work: &Work) -> Request {
    Request {
        name: "t".into(),
        work: work.clone(),
        store: store.clone(),
        input_root: None,
        sources: Vec::new(),
        deps: Vec::new(),
        dep_keys: BTreeMap::new(),
        scratch_prefix: "test-t-".into(),
        perturb: None,
        events: Arc::new(Quiet),
    }
}

async fn look_up(layers: &Layers, store: &Store, work: &Work) -> ControlFlow<Digest> {
    layers.look_up(&prepared(store, work)).await
}

async fn execute(layers: &Layers, store: &Store, work: &Work) -> Result<Digest, StepFailure> {
    layers
        .execute(prepared(store, work), request(store, work))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_asks_the_remote_on_a_local_miss_and_publishes_everywhere() {
    let s = Setup::new(false);
    let layers = s.layers(Policy::Build);
    let work = unpinned();
    assert_eq!(
        look_up(&layers, &s.store, &work).await,
        ControlFlow::Continue(())
    );
    assert_eq!(s.lookups(), 1, "a local miss asks the remote");

    let output = execute(&layers, &s.store, &work).await.unwrap();
    let key = prepared(&s.store, &work).key();
    assert!(s.store.cas().contains(&key), "the action is stored");
    assert!(s.cached(&work), "the result is in the action cache");
    assert_eq!(*s.remote.uploads.lock().unwrap(), vec![key]);

    assert_eq!(
        look_up(&layers, &s.store, &work).await,
        ControlFlow::Break(output)
    );
    assert_eq!(s.lookups(), 1, "a local hit never reaches the remote");
    layers.finish().await;
    assert_eq!(s.remote.finished.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_cache_looks_nothing_up_but_publishes() {
    let s = Setup::new(false);
    let work = unpinned();
    execute(&s.layers(Policy::Build), &s.store, &work)
        .await
        .unwrap();
    let layers = s.layers(Policy::NoCache);
    assert_eq!(
        look_up(&layers, &s.store, &work).await,
        ControlFlow::Continue(())
    );
    assert_eq!(s.lookups(), 0, "the remote is not asked either");

    execute(&layers, &s.store, &work).await.unwrap();
    assert_eq!(s.runs(), 2);
    assert!(s.cached(&work));
    assert_eq!(s.remote.uploads.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_audit_looks_up_only_pinned_outputs_and_writes_no_entry() {
    let s = Setup::new(false);
    let build = s.layers(Policy::Build);
    let (unpinned, pinned) = (unpinned(), pinned());
    let output = execute(&build, &s.store, &pinned).await.unwrap();
    execute(&build, &s.store, &unpinned).await.unwrap();

    let audit = s.layers(Policy::Audit);
    assert_eq!(
        look_up(&audit, &s.store, &pinned).await,
        ControlFlow::Break(output)
    );
    assert_eq!(
        look_up(&audit, &s.store, &unpinned).await,
        ControlFlow::Continue(())
    );
    assert_eq!(s.lookups(), 0, "an audit never asks the remote");

    // Rebuilt: the action enters the store, nothing else is written.
    s.store
        .action_cache()
        .remove(&prepared(&s.store, &unpinned).key())
        .unwrap();
    execute(&audit, &s.store, &unpinned).await.unwrap();
    assert!(
        !s.cached(&unpinned),
        "an audit writes no action-cache entry"
    );
    assert_eq!(s.remote.uploads.lock().unwrap().len(), 2, "nor uploads");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_step_writes_nothing() {
    let s = Setup::new(true);
    let layers = s.layers(Policy::Build);
    let work = unpinned();
    let failure = execute(&layers, &s.store, &work).await.unwrap_err();
    assert!(matches!(failure.failure, Failure::Exit(1)));
    assert!(!s.cached(&work));
    assert!(s.remote.uploads.lock().unwrap().is_empty());
    assert!(!s.store.cas().contains(&prepared(&s.store, &work).key()));
}

#[test]
fn an_audit_is_an_audit_with_or_without_no_cache() {
    assert_eq!(Policy::of(false, false), Policy::Build);
    assert_eq!(Policy::of(true, false), Policy::NoCache);
    assert_eq!(Policy::of(true, true), Policy::Audit);
    assert_eq!(Policy::of(false, true), Policy::Audit);
}
