//! Following an execution (`crate::execution::operation`) against the fake
//! server: a broken stream resumed with WaitExecution, an operation the
//! server forgot executed again, a done operation's answer read.

use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;
use bazel_remote_apis::google::longrunning::{Operation, operation as op};
use prost::Message;
use tonic::Status;

use super::fake_grpc::{Fake, Streamed};
use crate::client::{Remote, RemoteConfig};
use crate::execution::operation::{self, Ended};
use strata_store::DigestFunction;

const SHA256: i32 = 1;

async fn grpc(fake: &Fake) -> crate::client::GrpcRemote {
    let addr = fake.start().await;
    let mut cfg = RemoteConfig::new(format!("grpc://{addr}/main"));
    cfg.timeout = Duration::from_secs(20);
    match Remote::connect(&cfg).await.unwrap() {
        Remote::Grpc(g) => g,
        Remote::Http(_) => unreachable!(),
    }
}

fn running(name: &str) -> Operation {
    Operation {
        name: name.to_string(),
        done: false,
        ..Default::default()
    }
}

fn done(name: &str, exit_code: i32) -> Operation {
    let response = pb::ExecuteResponse {
        result: Some(pb::ActionResult {
            exit_code,
            ..Default::default()
        }),
        ..Default::default()
    };
    Operation {
        name: name.to_string(),
        done: true,
        metadata: None,
        result: Some(op::Result::Response(prost_types_any(
            response.encode_to_vec(),
        ))),
    }
}

fn prost_types_any(value: Vec<u8>) -> bazel_remote_apis::google::protobuf::Any {
    bazel_remote_apis::google::protobuf::Any {
        type_url: "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteResponse".into(),
        value,
    }
}

fn exit_code(ended: Ended) -> i32 {
    match ended {
        Ended::Response(r) => r.result.unwrap().exit_code,
        Ended::Error(s) => panic!("the operation failed: {s:?}"),
    }
}

#[tokio::test]
async fn execution_a_broken_stream_is_resumed_with_wait_execution() {
    let fake = Fake::default();
    fake.state().executions.extend([
        Streamed::Operations(vec![running("op-1")], Some(Status::unavailable("broken"))),
        Streamed::Operations(vec![running("op-1"), done("op-1", 7)], None),
    ]);
    let remote = grpc(&fake).await;
    let action = DigestFunction::Sha256.of_bytes(b"action");
    let ended = operation::execute(&remote, DigestFunction::Sha256, &action, false)
        .await
        .unwrap();
    assert_eq!(exit_code(ended), 7);
    let execute = fake.calls("Execute");
    assert_eq!(execute.len(), 1);
    assert_eq!(execute[0].hashes, [action.hex()]);
    assert_eq!(execute[0].digest_function, Some(SHA256));
    assert_eq!(execute[0].instance.as_deref(), Some("main"));
    let wait = fake.calls("WaitExecution");
    assert_eq!(wait.len(), 1);
    assert_eq!(wait[0].resource.as_deref(), Some("op-1"));
}

#[tokio::test]
async fn execution_an_operation_the_server_forgot_is_executed_again() {
    let fake = Fake::default();
    fake.state().executions.extend([
        // The stream ends before the operation is done...
        Streamed::Operations(vec![running("op-1")], None),
        // ...and the server no longer knows it.
        Streamed::Refused(Status::not_found("no such operation")),
        Streamed::Operations(vec![done("op-2", 0)], None),
    ]);
    let remote = grpc(&fake).await;
    let action = DigestFunction::Sha256.of_bytes(b"action");
    let ended = operation::execute(&remote, DigestFunction::Sha256, &action, false)
        .await
        .unwrap();
    assert_eq!(exit_code(ended), 0);
    assert_eq!(fake.calls("Execute").len(), 2);
    assert_eq!(fake.calls("WaitExecution").len(), 1);
}

#[tokio::test]
async fn execution_a_refusal_is_an_error_not_a_retry() {
    let fake = Fake::default();
    fake.state()
        .executions
        .push_back(Streamed::Refused(Status::invalid_argument("bad instance")));
    let remote = grpc(&fake).await;
    let action = DigestFunction::Sha256.of_bytes(b"action");
    let Err(e) = operation::execute(&remote, DigestFunction::Sha256, &action, false).await else {
        panic!("a refusal must fail");
    };
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("bad instance"), "{e}");
    assert_eq!(fake.calls("Execute").len(), 1);
}

#[tokio::test]
async fn execution_a_service_that_keeps_breaking_fails_after_a_few_attempts() {
    let fake = Fake::default();
    for _ in 0..10 {
        fake.state()
            .executions
            .push_back(Streamed::Refused(Status::unavailable("down")));
    }
    let remote = grpc(&fake).await;
    let action = DigestFunction::Sha256.of_bytes(b"action");
    let Err(e) = operation::execute(&remote, DigestFunction::Sha256, &action, false).await else {
        panic!("must fail");
    };
    assert!(e.is_transient(), "{e}");
    assert_eq!(fake.calls("Execute").len(), 5);
}

/// What `RemoteExecutor::open` makes of a service that executes `execution`
/// (see `State::execution`).
async fn open(execution: Option<(bool, Vec<i32>)>) -> Result<Option<DigestFunction>, String> {
    let fake = Fake::default();
    fake.state().execution = execution;
    let addr = fake.start().await;
    let workspace = tempfile::tempdir().unwrap();
    let cli = crate::config::ExecutorCli {
        url: Some(format!("grpc://{addr}/main")),
        remote_only: false,
    };
    struct Nothing;
    impl strata_exec::Executor for Nothing {
        fn runs(&self, _: &strata_rules::Work) -> bool {
            false
        }
        fn execute(
            &self,
            _: strata_exec::Request,
        ) -> strata_exec::BoxFuture<'_, Result<strata_exec::StepSuccess, strata_exec::StepFailure>>
        {
            unreachable!()
        }
    }
    let executor = crate::execution::RemoteExecutor::new(cli, std::sync::Arc::new(Nothing));
    let warned = std::sync::Mutex::new(Vec::<String>::new());
    let result = executor
        .open(workspace.path(), &|m: &str| {
            warned.lock().unwrap().push(m.to_string())
        })
        .await;
    assert!(warned.lock().unwrap().is_empty(), "{warned:?}");
    result
}

#[tokio::test]
async fn execution_the_service_s_digest_function_is_the_store_s() {
    assert_eq!(
        open(Some((true, vec![SHA256]))).await,
        Ok(Some(DigestFunction::Sha256))
    );
    assert_eq!(
        open(Some((true, vec![SHA256, 9]))).await,
        Ok(Some(DigestFunction::Blake3))
    );
}

#[tokio::test]
async fn execution_a_service_hashing_with_nothing_strata_knows_is_refused() {
    // MD5 (2) only.
    let e = open(Some((true, vec![2]))).await.unwrap_err();
    assert!(e.contains("no digest function Strata knows"), "{e}");
}

#[tokio::test]
async fn execution_a_service_that_does_not_execute_is_refused() {
    let e = open(Some((false, vec![SHA256]))).await.unwrap_err();
    assert!(e.contains("does not execute actions"), "{e}");
    let e = open(None).await.unwrap_err();
    assert!(e.contains("does not execute actions"), "{e}");
}

/// A result as a worker reports it: its `out` folder (one declared file
/// `o`) as a `Tree` the fake holds, and the file itself only if `file_kept`.
/// Returns the store, the result and the file's digest.
fn held_result(
    fake: &Fake,
    file_kept: bool,
) -> (
    tempfile::TempDir,
    strata_store::Store,
    pb::ActionResult,
    strata_store::Digest,
) {
    use strata_store::{reapi, tree};
    let tmp = tempfile::tempdir().unwrap();
    let worker =
        strata_store::Store::open(&tmp.path().join("worker"), DigestFunction::Sha256).unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("o"), "held by the service").unwrap();
    std::fs::write(out.join("scratch"), "not declared").unwrap();
    let root = tree::capture(worker.cas(), &out, &["o".into(), "scratch".into()]).unwrap();
    let root_dir = tree::read_directory(worker.cas(), &root).unwrap();
    let file = worker.cas().function().of_bytes(b"held by the service");
    let message = reapi::Tree {
        root: Some(root_dir),
        children: Vec::new(),
    }
    .encode_to_vec();
    let tree_digest = worker.cas().function().of_bytes(&message);
    let mut state = fake.state();
    state.blobs.insert(tree_digest.hex(), message);
    if file_kept {
        state
            .blobs
            .insert(file.hex(), b"held by the service".to_vec());
    }
    drop(state);
    let result = pb::ActionResult {
        output_directories: vec![pb::OutputDirectory {
            path: "out".into(),
            tree_digest: Some(pb::Digest {
                hash: tree_digest.hex(),
                size_bytes: tree_digest.size_bytes as i64,
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let store =
        strata_store::Store::open(&tmp.path().join("client"), DigestFunction::Sha256).unwrap();
    (tmp, store, result, file)
}

fn declaring_o() -> strata_rules::run::RunStep {
    strata_rules::run::RunParams::shell("true", &["o"]).step()
}

#[tokio::test]
async fn execution_a_result_s_files_stay_on_the_service_until_needed() {
    use crate::execution::outputs::{self, Unusable};
    let fake = Fake::default();
    let remote = Remote::Grpc(grpc(&fake).await);
    let (_tmp, store, result, file) = held_result(&fake, true);
    let fetched = match outputs::fetch(&remote, store.cas(), &declaring_o(), &result, false).await {
        Ok(f) => f,
        Err(Unusable::Step(f)) => panic!("{f}"),
        Err(Unusable::Remote(e)) => panic!("{e}"),
    };
    assert_eq!(fetched.held, vec![file], "the declared file, held");
    assert!(!store.cas().contains(&file), "not downloaded");
    let read: Vec<String> = ["BatchReadBlobs", "Read"]
        .iter()
        .flat_map(|rpc| fake.calls(rpc))
        .flat_map(|c| c.hashes.into_iter().chain(c.resource))
        .collect();
    assert!(!read.is_empty(), "the tree was read");
    assert!(
        !read.iter().any(|r| r.contains(&file.hex())),
        "the file was not: {read:?}"
    );
    // The folder records are here: the output's digests are known.
    let files = strata_store::tree::walk(store.cas(), &fetched.output).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
}

#[tokio::test]
async fn execution_a_cached_result_whose_files_the_service_lost_is_unusable() {
    use crate::execution::outputs::{self, Unusable};
    let fake = Fake::default();
    let remote = Remote::Grpc(grpc(&fake).await);
    let (_tmp, store, result, _) = held_result(&fake, false);
    // Executed just now: its files are taken to be there.
    assert!(
        outputs::fetch(&remote, store.cas(), &declaring_o(), &result, false)
            .await
            .is_ok()
    );
    // From the action cache: asked, and found lost.
    match outputs::fetch(&remote, store.cas(), &declaring_o(), &result, true).await {
        Err(Unusable::Remote(why)) => assert!(why.contains("no longer holds"), "{why}"),
        Err(Unusable::Step(f)) => panic!("{f}"),
        Ok(_) => panic!("a result whose files are lost must not be used"),
    }
    assert_eq!(fake.calls("FindMissingBlobs").len(), 1);
}
