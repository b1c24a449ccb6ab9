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
        .execute(prepared(store, work), request(store, work), false)
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

/// A remote executor as `strata build --remote-executor` has one: it runs
/// image pulls, returning an output of one file whose bytes it keeps
/// (`held_remotely`), and is where they are fetched from, unless it lost
/// them.
struct Holding {
    bytes: Vec<u8>,
    lost: bool,
    fetched: AtomicUsize,
}

impl Holding {
    fn new(lost: bool) -> Arc<Holding> {
        Arc::new(Holding {
            bytes: b"held remotely".to_vec(),
            lost,
            fetched: AtomicUsize::new(0),
        })
    }

    fn blob(&self, store: &Store) -> Digest {
        store.function().of_bytes(&self.bytes)
    }
}

impl Executor for Holding {
    fn runs(&self, work: &Work) -> bool {
        matches!(work, Work::ImagePull(_))
    }

    fn takes_held_inputs(&self, _: &Work) -> bool {
        true
    }

    fn execute(&self, request: Request) -> BoxFuture<'_, Result<StepSuccess, StepFailure>> {
        Box::pin(async move {
            let mut tree = TreeBuilder::new();
            let file = strata_store::tree::Node::File {
                digest: self.blob(&request.store),
                executable: false,
                meta: None,
            };
            tree.insert("held.txt", file).unwrap();
            let output = tree.store(request.store.cas()).unwrap();
            let now = std::time::SystemTime::now();
            Ok(StepSuccess {
                output,
                result: strata_exec::step::action_result(output, None, now, now),
                held_remotely: true,
            })
        })
    }
}

impl strata_exec::BlobSource for Holding {
    fn fetch<'a>(
        &'a self,
        store: &'a Store,
        blobs: Vec<Digest>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if self.lost {
                return Err("not found".into());
            }
            assert_eq!(blobs, vec![self.blob(store)], "only the missing file");
            self.fetched.fetch_add(1, Ordering::SeqCst);
            store
                .cas()
                .put_bytes(&self.bytes)
                .map_err(|e| e.to_string())?;
            Ok(())
        })
    }
}

fn holding_layers(s: &Setup, holding: &Arc<Holding>) -> Layers {
    let executors = Executors::new(Arc::new(LocalExecutor::new()))
        .preferring(holding.clone())
        .with(s.executor.clone())
        .with_blob_source(holding.clone());
    let remote: Arc<dyn RemoteCache> = s.remote.clone();
    Layers::new(
        s.store.clone(),
        executors,
        Some(remote),
        Policy::Build,
        None,
        Arc::new(|_: &str| {}),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_held_remotely_gets_no_entry_until_a_step_needs_it_whole() {
    let s = Setup::new(false);
    let holding = Holding::new(false);
    let layers = holding_layers(&s, &holding);
    let held = pinned();
    let output = execute(&layers, &s.store, &held).await.unwrap();
    let blob = holding.blob(&s.store);
    assert!(!s.store.cas().contains(&blob), "its file stays remote");
    assert!(!s.cached(&held), "no entry names a blob the store lacks");
    assert!(
        s.remote.uploads.lock().unwrap().is_empty(),
        "nor is it uploaded"
    );
    assert!(s.store.cas().contains(&prepared(&s.store, &held).key()));

    // A step on an executor that reads its inputs' bytes: fetched first.
    let work = unpinned();
    let mut req = request(&s.store, &work);
    req.deps = vec![("held".into(), output)];
    layers
        .execute(prepared(&s.store, &work), req, false)
        .await
        .unwrap();
    assert_eq!(holding.fetched.load(Ordering::SeqCst), 1);
    assert!(strata_store::tree::first_missing(s.store.cas(), &output).is_none());
    assert!(s.cached(&held), "whole now: its entry is written");
    assert_eq!(s.remote.uploads.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_held_remotely_and_placed_in_out_is_fetched_at_once() {
    let s = Setup::new(false);
    let holding = Holding::new(false);
    let layers = holding_layers(&s, &holding);
    let held = pinned();
    let output = layers
        .execute(prepared(&s.store, &held), request(&s.store, &held), true)
        .await
        .unwrap();
    assert_eq!(holding.fetched.load(Ordering::SeqCst), 1);
    assert!(strata_store::tree::first_missing(s.store.cas(), &output).is_none());
    assert!(s.cached(&held));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_the_remote_lost_fails_the_step_needing_it_and_writes_nothing() {
    let s = Setup::new(false);
    let holding = Holding::new(true);
    let layers = holding_layers(&s, &holding);
    let held = pinned();
    let output = execute(&layers, &s.store, &held).await.unwrap();
    let work = unpinned();
    let mut req = request(&s.store, &work);
    req.deps = vec![("held".into(), output)];
    let failure = layers
        .execute(prepared(&s.store, &work), req, false)
        .await
        .unwrap_err();
    let message = failure.failure.to_string();
    assert!(
        message.contains("cannot fetch the output of its dependency `held`")
            && message.contains("not found"),
        "{message}"
    );
    assert_eq!(s.runs(), 0, "the step did not run on a partial input");
    assert!(!s.cached(&held) && !s.cached(&work));
}

#[test]
fn an_audit_is_an_audit_with_or_without_no_cache() {
    assert_eq!(Policy::of(false, false), Policy::Build);
    assert_eq!(Policy::of(true, false), Policy::NoCache);
    assert_eq!(Policy::of(true, true), Policy::Audit);
    assert_eq!(Policy::of(false, true), Policy::Audit);
}
