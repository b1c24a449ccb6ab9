use std::time::Duration;

use super::fake_http::{FakeHttp, Tamper};
use super::{corrupt, large_bytes, store_in};
use crate::client::{Remote, RemoteConfig, RemoteError};
use strata_store::{DigestFunction, StoreError, reapi};

const B3: DigestFunction = DigestFunction::Blake3;

fn config(fake: &FakeHttp) -> RemoteConfig {
    let addr = fake.start();
    let mut cfg = RemoteConfig::new(format!("http://{addr}/team/cache/"));
    cfg.headers = vec![("x-team".to_string(), "ci".to_string())];
    cfg.bearer_token = Some("t0ken".to_string());
    cfg.timeout = Duration::from_secs(20);
    cfg
}

async fn remote(fake: &FakeHttp) -> Remote {
    Remote::connect(&config(fake)).await.unwrap()
}

#[tokio::test]
async fn remote_http_action_results_round_trip_and_404_or_204_are_misses() {
    let fake = FakeHttp::new();
    let remote = remote(&fake).await;
    assert_eq!(remote.digest_functions().await.unwrap(), None);
    let key = B3.of_bytes(b"an action");
    assert_eq!(remote.get_action_result(B3, &key).await.unwrap(), None);
    fake.state().miss = 204;
    assert_eq!(remote.get_action_result(B3, &key).await.unwrap(), None);

    let result = reapi::ActionResult {
        stdout_digest: Some(B3.of_bytes(b"hello\n").to_proto()),
        ..Default::default()
    };
    remote
        .update_action_result(B3, &key, &result)
        .await
        .unwrap();
    let path = format!("/team/cache/ac/{}", key.hex());
    assert_eq!(
        fake.state().objects[&path],
        prost::Message::encode_to_vec(&result)
    );
    assert_eq!(
        remote.get_action_result(B3, &key).await.unwrap(),
        Some(result)
    );
    let seen = fake.state().seen.clone();
    let methods: Vec<&str> = seen.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(methods, ["GET", "GET", "PUT", "GET"]);
    for s in &seen {
        assert_eq!(s.path, path);
        assert_eq!(s.authorization.as_deref(), Some("Bearer t0ken"));
        assert_eq!(s.team.as_deref(), Some("ci"));
    }
}

#[tokio::test]
async fn remote_http_a_body_that_is_no_action_result_is_refused() {
    let fake = FakeHttp::new();
    let remote = remote(&fake).await;
    let key = B3.of_bytes(b"an action");
    fake.state().objects.insert(
        format!("/team/cache/ac/{}", key.hex()),
        b"\xff\xff\xff not protobuf".to_vec(),
    );
    let err = remote.get_action_result(B3, &key).await.unwrap_err();
    assert!(matches!(err, RemoteError::Protocol { .. }), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn remote_http_blobs_travel_by_hex_under_the_prefix() {
    let fake = FakeHttp::new();
    let remote = remote(&fake).await;
    let (_d, store) = store_in(B3);
    let small_bytes = b"a small blob".to_vec();
    let large_bytes = large_bytes(3 * 1024 * 1024 + 5);
    let small = store.cas().put_bytes(&small_bytes).unwrap();
    let large = store.cas().put_bytes(&large_bytes).unwrap();
    let absent = B3.of_bytes(b"absent");

    assert_eq!(
        remote.find_missing(B3, &[small, absent]).await.unwrap(),
        vec![small, absent]
    );
    remote.upload(B3, &small, store.cas()).await.unwrap();
    remote.upload(B3, &large, store.cas()).await.unwrap();
    let small_path = format!("/team/cache/cas/{}", small.hex());
    let large_path = format!("/team/cache/cas/{}", large.hex());
    assert_eq!(fake.state().objects[&small_path], small_bytes);
    assert_eq!(fake.state().objects[&large_path], large_bytes);
    assert_eq!(
        remote
            .find_missing(B3, &[small, absent, large, absent])
            .await
            .unwrap(),
        vec![absent]
    );
    // A stored copy of the wrong length counts as missing.
    fake.state()
        .objects
        .insert(small_path.clone(), b"short".to_vec());
    assert_eq!(
        remote.find_missing(B3, &[small]).await.unwrap(),
        vec![small]
    );
    fake.state()
        .objects
        .insert(small_path.clone(), small_bytes.clone());

    let (_d2, other) = store_in(B3);
    remote
        .download_many(B3, &[small, large, small], other.cas())
        .await
        .unwrap();
    assert_eq!(other.cas().read(&small).unwrap(), small_bytes);
    assert_eq!(other.cas().read(&large).unwrap(), large_bytes);

    let seen = fake.state().seen.clone();
    let puts: Vec<&str> = seen
        .iter()
        .filter(|s| s.method == "PUT")
        .map(|s| s.path.as_str())
        .collect();
    assert_eq!(puts, [small_path.as_str(), large_path.as_str()]);
    let gets = seen.iter().filter(|s| s.method == "GET").count();
    assert_eq!(gets, 2, "each blob fetched once");
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer t0ken"))
    );
}

#[tokio::test]
async fn remote_http_wrong_or_excess_bytes_are_refused_and_nothing_is_stored() {
    let fake = FakeHttp::new();
    let remote = remote(&fake).await;
    let cases = [
        (b"small tampered".to_vec(), Tamper::FlipFirstByte),
        (large_bytes(2 << 20), Tamper::FlipFirstByte),
        (b"small extended".to_vec(), Tamper::AppendByte),
        (large_bytes((2 << 20) + 1), Tamper::AppendByte),
    ];
    let (_d, store) = store_in(B3);
    for (bytes, tamper) in cases {
        let digest = B3.of_bytes(&bytes);
        let path = format!("/team/cache/cas/{}", digest.hex());
        fake.state().objects.insert(path.clone(), bytes);
        fake.state().tampered.insert(path, tamper);
        let err = remote.download(B3, &digest, store.cas()).await.unwrap_err();
        match (&err, tamper) {
            (
                RemoteError::DigestMismatch {
                    expected,
                    actual: Some(_),
                    ..
                },
                Tamper::FlipFirstByte,
            )
            | (
                RemoteError::DigestMismatch {
                    expected,
                    actual: None,
                    ..
                },
                Tamper::AppendByte,
            ) => assert_eq!(*expected, digest),
            _ => panic!("{tamper:?}: {err}"),
        }
        assert!(!err.is_transient());
        assert!(!store.cas().contains(&digest));
    }
    assert_eq!(store.cas().list().count(), 0);
    // Writers may still be removing their temporary files.
    for _ in 0..100 {
        if std::fs::read_dir(store.tmp_dir()).unwrap().count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
}

#[tokio::test]
async fn remote_http_server_errors_are_transient_and_refusals_are_not() {
    let fake = FakeHttp::new();
    let remote = remote(&fake).await;
    let (_d, store) = store_in(B3);
    let blob = store.cas().put_bytes(b"blob").unwrap();
    let key = B3.of_bytes(b"key");

    fake.state().fail = Some(503);
    let err = remote.get_action_result(B3, &key).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("the cache is on fire"), "{err}");
    fake.state().fail = Some(500);
    let err = remote.upload(B3, &blob, store.cas()).await.unwrap_err();
    assert!(matches!(err, RemoteError::Unavailable { .. }), "{err}");

    fake.state().fail = Some(403);
    for err in [
        remote.upload(B3, &blob, store.cas()).await.unwrap_err(),
        remote.find_missing(B3, &[blob]).await.unwrap_err(),
        remote
            .update_action_result(B3, &key, &reapi::ActionResult::default())
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(err, RemoteError::Refused { .. }), "{err}");
        assert!(!err.is_transient());
    }

    fake.state().fail = None;
    let err = remote.download(B3, &key, store.cas()).await.unwrap_err();
    assert!(matches!(err, RemoteError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn remote_http_a_closed_port_or_a_silent_server_is_transient() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = RemoteConfig::new(format!("http://127.0.0.1:{port}"));
    cfg.timeout = Duration::from_secs(5);
    let remote = Remote::connect(&cfg).await.unwrap();
    let key = B3.of_bytes(b"key");
    let err = remote.get_action_result(B3, &key).await.unwrap_err();
    assert!(matches!(err, RemoteError::Unavailable { .. }), "{err}");

    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let mut cfg = RemoteConfig::new(format!("http://{addr}"));
    cfg.timeout = Duration::from_millis(300);
    let remote = Remote::connect(&cfg).await.unwrap();
    let (_d, store) = store_in(B3);
    let started = std::time::Instant::now();
    let err = remote.get_action_result(B3, &key).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    let err = remote.download(B3, &key, store.cas()).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(silent);
}

#[tokio::test]
async fn remote_http_user_info_becomes_basic_auth_and_no_secret_is_shown() {
    let fake = FakeHttp::new();
    let addr = fake.start();
    let mut cfg = RemoteConfig::new(format!("http://ci:s3cret@{addr}/cache"));
    cfg.headers = vec![("x-team".to_string(), "hush-hush".to_string())];
    let remote = Remote::connect(&cfg).await.unwrap();
    let key = B3.of_bytes(b"key");
    fake.state().fail = Some(403);
    let err = remote.get_action_result(B3, &key).await.unwrap_err();
    let seen = fake.state().seen[0].clone();
    assert_eq!(seen.authorization.as_deref(), Some("Basic Y2k6czNjcmV0"));
    assert_eq!(seen.team.as_deref(), Some("hush-hush"));
    assert_eq!(seen.path, format!("/cache/ac/{}", key.hex()));

    cfg.bearer_token = Some("t0ken".to_string());
    let shown = [
        err.to_string(),
        format!("{err:?}"),
        format!("{cfg:?}"),
        format!("{remote:?}"),
    ];
    for text in shown {
        for secret in ["s3cret", "hush-hush", "t0ken"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    assert!(
        err.to_string().contains(&format!("http://{addr}/cache")),
        "{err}"
    );
}

#[tokio::test]
async fn remote_http_a_corrupt_local_blob_is_never_uploaded() {
    let fake = FakeHttp::new();
    let remote = remote(&fake).await;
    let (_d, store) = store_in(B3);
    let small = store.cas().put_bytes(b"small, soon corrupt").unwrap();
    let large = store.cas().put_bytes(&large_bytes(3 << 20)).unwrap();
    for digest in [small, large] {
        corrupt(store.cas(), &digest);
        let err = remote.upload(B3, &digest, store.cas()).await.unwrap_err();
        assert!(
            matches!(err, RemoteError::Store(StoreError::Corrupt { digest: d, .. }) if d == digest),
            "{err}"
        );
        let path = format!("/team/cache/cas/{}", digest.hex());
        assert!(!fake.state().objects.contains_key(&path));
    }
}
