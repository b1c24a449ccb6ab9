use std::time::Duration;

use super::fake_grpc::{Call, Fake};
use super::{corrupt, large_bytes, store_in};
use crate::client::{Remote, RemoteConfig, RemoteError};
use strata_store::{Digest, DigestFunction, StoreError, reapi};

const BLAKE3: i32 = 9;
const SHA256: i32 = 1;

async fn remote(fake: &Fake) -> Remote {
    let addr = fake.start().await;
    let mut cfg = RemoteConfig::new(format!("grpc://{addr}/ci/main"));
    cfg.headers = vec![("x-team".to_string(), "ci".to_string())];
    cfg.bearer_token = Some("t0ken".to_string());
    cfg.timeout = Duration::from_secs(20);
    Remote::connect(&cfg).await.unwrap()
}

/// What every call must carry: the instance, the credentials and, where the
/// message has the field, the digest function.
fn assert_well_formed(calls: &[Call], function: i32) {
    assert!(!calls.is_empty());
    for call in calls {
        if let Some(instance) = &call.instance {
            assert_eq!(instance, "ci/main", "{call:?}");
        }
        if let Some(f) = call.digest_function {
            assert_eq!(f, function, "{call:?}");
        }
        assert_eq!(
            call.authorization.as_deref(),
            Some("Bearer t0ken"),
            "{call:?}"
        );
        assert_eq!(call.team.as_deref(), Some("ci"), "{call:?}");
    }
}

fn names(calls: &[Call], hex: &str) -> Vec<&'static str> {
    calls
        .iter()
        .filter(|c| c.hashes.iter().any(|h| h == hex))
        .map(|c| c.rpc)
        .collect()
}

/// `ci/main/uploads/<uuid v4>/blobs/<rest>`, checked, with `<rest>` returned.
fn upload_rest(resource: &str) -> &str {
    let rest = resource
        .strip_prefix("ci/main/uploads/")
        .unwrap_or_else(|| panic!("{resource}"));
    let (id, rest) = rest.split_once('/').unwrap();
    let id = uuid::Uuid::parse_str(id).unwrap();
    assert_eq!(id.get_version_num(), 4, "{resource}");
    rest
}

#[tokio::test]
async fn remote_grpc_small_blobs_batch_and_large_ones_stream_under_blake3_names() {
    let fake = Fake::default();
    let remote = remote(&fake).await;
    let (_d, store) = store_in(DigestFunction::Blake3);
    let small_bytes = b"a small blob".to_vec();
    let large_bytes = large_bytes(3 * 1024 * 1024 + 17);
    let small = store.cas().put_bytes(&small_bytes).unwrap();
    let large = store.cas().put_bytes(&large_bytes).unwrap();

    let b3 = DigestFunction::Blake3;
    remote.upload(b3, &small, store.cas()).await.unwrap();
    remote.upload(b3, &large, store.cas()).await.unwrap();
    assert_eq!(fake.state().blobs[&small.hex()], small_bytes);
    assert_eq!(fake.state().blobs[&large.hex()], large_bytes);

    let (_d2, other) = store_in(DigestFunction::Blake3);
    remote.download(b3, &small, other.cas()).await.unwrap();
    remote.download(b3, &large, other.cas()).await.unwrap();
    assert_eq!(other.cas().read(&small).unwrap(), small_bytes);
    assert_eq!(other.cas().read(&large).unwrap(), large_bytes);

    let calls = fake.state().calls.clone();
    assert_well_formed(&calls, BLAKE3);
    assert_eq!(
        names(&calls, &small.hex()),
        ["BatchUpdateBlobs", "BatchReadBlobs"]
    );
    assert_eq!(names(&calls, &large.hex()), ["Write", "Read"]);
    let write = &fake.calls("Write")[0];
    assert_eq!(
        upload_rest(write.resource.as_deref().unwrap()),
        format!("blobs/blake3/{}/{}", large.hex(), large.size_bytes)
    );
    let read = &fake.calls("Read")[0];
    assert_eq!(
        read.resource.as_deref().unwrap(),
        format!("ci/main/blobs/blake3/{}/{}", large.hex(), large.size_bytes)
    );
}

#[tokio::test]
async fn remote_grpc_sha256_uses_the_classic_resource_names() {
    let fake = Fake::default();
    let remote = remote(&fake).await;
    let (_d, store) = store_in(DigestFunction::Sha256);
    let large = store
        .cas()
        .put_bytes(&large_bytes(2 * 1024 * 1024))
        .unwrap();
    let small = store.cas().put_bytes(b"small").unwrap();
    let sha = DigestFunction::Sha256;
    remote
        .upload_many(sha, &[large, small, large], store.cas())
        .await
        .unwrap();
    let (_d2, other) = store_in(DigestFunction::Sha256);
    remote
        .download_many(sha, &[small, large], other.cas())
        .await
        .unwrap();
    assert!(other.cas().contains(&small) && other.cas().contains(&large));

    let calls = fake.state().calls.clone();
    assert_well_formed(&calls, SHA256);
    assert_eq!(
        fake.calls("Write").len(),
        1,
        "one upload of the repeated blob"
    );
    let write = &fake.calls("Write")[0];
    assert_eq!(
        upload_rest(write.resource.as_deref().unwrap()),
        format!("blobs/{}/{}", large.hex(), large.size_bytes)
    );
    assert_eq!(
        fake.calls("Read")[0].resource.as_deref().unwrap(),
        format!("ci/main/blobs/{}/{}", large.hex(), large.size_bytes)
    );
}

#[tokio::test]
async fn remote_grpc_action_results_round_trip_and_not_found_is_a_miss() {
    let fake = Fake::default();
    let remote = remote(&fake).await;
    let b3 = DigestFunction::Blake3;
    let key = b3.of_bytes(b"an action");
    assert_eq!(remote.get_action_result(b3, &key).await.unwrap(), None);
    let result = reapi::ActionResult {
        exit_code: 0,
        stdout_digest: Some(b3.of_bytes(b"hello\n").to_proto()),
        output_directories: vec![reapi::OutputDirectory {
            path: "out".to_string(),
            root_directory_digest: Some(b3.of_bytes(b"tree").to_proto()),
            ..Default::default()
        }],
        ..Default::default()
    };
    remote
        .update_action_result(b3, &key, &result)
        .await
        .unwrap();
    assert_eq!(
        remote.get_action_result(b3, &key).await.unwrap(),
        Some(result)
    );
    let calls = fake.state().calls.clone();
    assert_well_formed(&calls, BLAKE3);
    assert_eq!(
        names(&calls, &key.hex()),
        ["GetActionResult", "UpdateActionResult", "GetActionResult"]
    );
}

#[tokio::test]
async fn remote_grpc_find_missing_names_each_absent_blob_once() {
    let fake = Fake::default();
    let remote = remote(&fake).await;
    let (_d, store) = store_in(DigestFunction::Blake3);
    let b3 = DigestFunction::Blake3;
    let present = store.cas().put_bytes(b"present").unwrap();
    let absent = b3.of_bytes(b"absent");
    remote.upload(b3, &present, store.cas()).await.unwrap();
    let missing = remote
        .find_missing(b3, &[absent, present, absent])
        .await
        .unwrap();
    assert_eq!(missing, vec![absent]);
    assert_well_formed(&fake.state().calls, BLAKE3);
    assert_eq!(fake.calls("FindMissingBlobs")[0].hashes.len(), 2);
}

#[tokio::test]
async fn remote_grpc_wrong_bytes_are_refused_and_nothing_is_stored() {
    let fake = Fake::default();
    let remote = remote(&fake).await;
    let b3 = DigestFunction::Blake3;
    let small_bytes = b"small and tampered".to_vec();
    let large_bytes = large_bytes(1536 * 1024);
    let small = b3.of_bytes(&small_bytes);
    let large = b3.of_bytes(&large_bytes);
    {
        let mut state = fake.state();
        state.blobs.insert(small.hex(), small_bytes);
        state.blobs.insert(large.hex(), large_bytes);
        state.tampered.insert(small.hex());
        state.tampered.insert(large.hex());
    }
    let (_d, store) = store_in(b3);
    for digest in [small, large] {
        let err = remote.download(b3, &digest, store.cas()).await.unwrap_err();
        assert!(
            matches!(err, RemoteError::DigestMismatch { expected, actual: Some(_), .. } if expected == digest),
            "{err}"
        );
        assert!(!err.is_transient());
        assert!(!store.cas().contains(&digest));
    }
    assert_eq!(store.cas().list().count(), 0);
    assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    assert_eq!(names(&fake.state().calls, &large.hex()), ["Read"]);
    assert_eq!(names(&fake.state().calls, &small.hex()), ["BatchReadBlobs"]);
}

#[tokio::test]
async fn remote_grpc_a_blob_the_server_lacks_is_not_found() {
    let fake = Fake::default();
    let remote = remote(&fake).await;
    let b3 = DigestFunction::Blake3;
    let (_d, store) = store_in(b3);
    for digest in [b3.of_bytes(b"nowhere"), b3.of_bytes(&large_bytes(1 << 21))] {
        let err = remote.download(b3, &digest, store.cas()).await.unwrap_err();
        assert!(matches!(err, RemoteError::NotFound { .. }), "{err}");
        assert!(!err.is_transient());
    }
}

#[tokio::test]
async fn remote_grpc_unavailable_is_transient_and_refusal_is_not() {
    let fake = Fake::default();
    let remote = remote(&fake).await;
    let b3 = DigestFunction::Blake3;
    let key = b3.of_bytes(b"key");
    fake.state().unavailable = true;
    let err = remote.get_action_result(b3, &key).await.unwrap_err();
    assert!(matches!(err, RemoteError::Unavailable { .. }), "{err}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("down for maintenance"), "{err}");
    assert!(!err.to_string().contains("t0ken"), "{err}");

    fake.state().unavailable = false;
    fake.state().denied = true;
    let err = remote
        .update_action_result(b3, &key, &reapi::ActionResult::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::Refused { .. }), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn remote_grpc_a_closed_port_or_a_silent_server_is_transient() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = RemoteConfig::new(format!("grpc://127.0.0.1:{port}"));
    cfg.timeout = Duration::from_secs(5);
    let err = Remote::connect(&cfg).await.unwrap_err();
    assert!(err.is_transient(), "{err}");

    let fake = Fake::default();
    fake.state().silent = true;
    let addr = fake.start().await;
    let mut cfg = RemoteConfig::new(format!("grpc://{addr}"));
    cfg.timeout = Duration::from_millis(300);
    let remote = Remote::connect(&cfg).await.unwrap();
    let b3 = DigestFunction::Blake3;
    let started = std::time::Instant::now();
    let err = remote
        .get_action_result(b3, &b3.of_bytes(b"k"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn remote_grpc_capabilities_give_functions_and_the_batch_limit() {
    let fake = Fake::default();
    let remote = remote(&fake).await;
    assert_eq!(
        remote.digest_functions().await.unwrap(),
        Some(vec![DigestFunction::Sha256])
    );
    {
        let mut state = fake.state();
        state.digest_functions = vec![BLAKE3, SHA256, 4];
        state.max_batch = 1000;
    }
    assert_eq!(
        remote.digest_functions().await.unwrap(),
        Some(vec![DigestFunction::Blake3, DigestFunction::Sha256])
    );
    // Over the server's batch limit, a 2 KiB blob takes ByteStream.
    let (_d, store) = store_in(DigestFunction::Blake3);
    let blob = store.cas().put_bytes(&large_bytes(2048)).unwrap();
    let b3 = DigestFunction::Blake3;
    remote.upload(b3, &blob, store.cas()).await.unwrap();
    let (_d2, other) = store_in(b3);
    remote.download(b3, &blob, other.cas()).await.unwrap();
    assert!(other.cas().contains(&blob));
    assert_eq!(names(&fake.state().calls, &blob.hex()), ["Write", "Read"]);
    assert_well_formed(&fake.state().calls, BLAKE3);
}

#[tokio::test]
async fn remote_grpc_a_corrupt_local_blob_is_never_uploaded() {
    let fake = Fake::default();
    let remote = remote(&fake).await;
    let b3 = DigestFunction::Blake3;
    let (_d, store) = store_in(b3);
    let small = store.cas().put_bytes(b"small, soon corrupt").unwrap();
    let large = store.cas().put_bytes(&large_bytes(3 << 20)).unwrap();
    for digest in [small, large] {
        corrupt(store.cas(), &digest);
        let err = remote.upload(b3, &digest, store.cas()).await.unwrap_err();
        assert!(
            matches!(err, RemoteError::Store(StoreError::Corrupt { digest: d, .. }) if d == digest),
            "{err}"
        );
        assert!(!fake.state().blobs.contains_key(&digest.hex()));
    }
}

#[tokio::test]
async fn remote_grpc_the_empty_blob_is_never_transferred() {
    let fake = Fake::default();
    let remote = remote(&fake).await;
    let (_d, store) = store_in(DigestFunction::Blake3);
    let empty = store.cas().put_bytes(b"").unwrap();
    let small = store.cas().put_bytes(b"small").unwrap();
    let b3 = DigestFunction::Blake3;
    remote.upload(b3, &empty, store.cas()).await.unwrap();
    remote
        .upload_many(b3, &[empty, small], store.cas())
        .await
        .unwrap();
    let (_d1, one) = store_in(DigestFunction::Blake3);
    remote.download(b3, &empty, one.cas()).await.unwrap();
    let (_d2, many) = store_in(DigestFunction::Blake3);
    remote
        .download_many(b3, &[small, empty], many.cas())
        .await
        .unwrap();
    assert!(one.cas().contains(&empty));
    assert!(many.cas().contains(&empty) && many.cas().contains(&small));
    let hex = empty.hex();
    assert!(
        !fake.state().blobs.contains_key(&hex),
        "the empty blob was sent"
    );
    for call in &fake.state().calls {
        assert!(
            !call.hashes.contains(&hex),
            "a call named the empty blob: {call:?}"
        );
    }
    // Asked for under a wrong size-0 digest, it is refused.
    let wrong = Digest::new([1; 32], 0);
    let err = remote
        .download_many(b3, &[wrong], many.cas())
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn remote_grpc_refuses_a_store_of_another_function() {
    let fake = Fake::default();
    let remote = remote(&fake).await;
    let (_d, store) = store_in(DigestFunction::Sha256);
    let digest: Digest = store.cas().put_bytes(b"x").unwrap();
    let err = remote
        .upload(DigestFunction::Blake3, &digest, store.cas())
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::Config { .. }), "{err}");
    assert!(fake.state().calls.is_empty());
}

#[test]
fn remote_grpc_a_server_gone_mid_session_is_transient() {
    let fake = Fake::default();
    // The server gets its own runtime, so that shutting it down cuts the
    // connection the client already holds.
    let server = tokio::runtime::Runtime::new().unwrap();
    let addr = server.block_on(fake.start());
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    client.block_on(async {
        let mut cfg = RemoteConfig::new(format!("grpc://{addr}/ci/main"));
        cfg.timeout = Duration::from_secs(5);
        let remote = Remote::connect(&cfg).await.unwrap();
        let b3 = DigestFunction::Blake3;
        let key = b3.of_bytes(b"key");
        assert_eq!(remote.get_action_result(b3, &key).await.unwrap(), None);
        server.shutdown_background();
        for _ in 0..2 {
            let err = remote.get_action_result(b3, &key).await.unwrap_err();
            assert!(matches!(err, RemoteError::Unavailable { .. }), "{err}");
        }
    });
}
