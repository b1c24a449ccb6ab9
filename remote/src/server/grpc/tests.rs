//! The gRPC services on a real listener, as `strata cache serve` runs them
//! (same connection handling, same folder), spoken to with the generated
//! tonic clients and with Strata's own remote client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;
use bazel_remote_apis::google::bytestream::byte_stream_client::ByteStreamClient;
use bazel_remote_apis::google::bytestream::{QueryWriteStatusRequest, ReadRequest, WriteRequest};
use pb::action_cache_client::ActionCacheClient;
use pb::capabilities_client::CapabilitiesClient;
use pb::content_addressable_storage_client::ContentAddressableStorageClient;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request};

use super::super::auth::Tokens;
use super::super::cache::Cache;
use super::super::disk::Storage;
use super::super::serve_connections;
use super::MAX_BATCH;
use crate::client::{Remote, RemoteConfig};
use strata_store::{Digest, DigestFunction, Store, reapi};

const SHA256: DigestFunction = DigestFunction::Sha256;

/// A server on a free port over a fresh folder; stopped when dropped.
struct Served {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    function: DigestFunction,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

struct Options {
    function: DigestFunction,
    tokens: Tokens,
    max_blob: u64,
    instance: &'static str,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            function: SHA256,
            tokens: Tokens::default(),
            max_blob: 64 * 1024 * 1024,
            instance: "",
        }
    }
}

impl Served {
    async fn start(opts: Options) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) =
            Storage::open(&dir.path().join("cache"), opts.function, 1 << 30).unwrap();
        let cache = Arc::new(Cache::new(storage, opts.tokens, opts.max_blob));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_connections(
            listener,
            cache,
            opts.instance.to_string(),
            async move {
                let _ = stopped.await;
            },
        ));
        Served {
            addr,
            dir,
            function: opts.function,
            stop: Some(stop),
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn cas(&self) -> ContentAddressableStorageClient<Channel> {
        ContentAddressableStorageClient::new(self.channel().await)
    }

    async fn ac(&self) -> ActionCacheClient<Channel> {
        ActionCacheClient::new(self.channel().await)
    }

    async fn bytestream(&self) -> ByteStreamClient<Channel> {
        ByteStreamClient::new(self.channel().await)
    }

    /// Strata's own client of this server, over gRPC or HTTP.
    async fn remote(&self, scheme: &str, instance: &str) -> Remote {
        let mut cfg = RemoteConfig::new(format!("{scheme}://{}/{instance}", self.addr));
        cfg.timeout = Duration::from_secs(20);
        Remote::connect(&cfg).await.unwrap()
    }

    fn path(&self, kind: &str, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.dir
            .path()
            .join("cache")
            .join(kind)
            .join(&hex[..2])
            .join(hex)
    }

    /// Files under `cas/` and `ac/`: what the server has published.
    fn published(&self) -> usize {
        ["cas", "ac"]
            .iter()
            .map(|k| walk(&self.dir.path().join("cache").join(k)))
            .sum()
    }

    fn digest(&self, bytes: &[u8]) -> Digest {
        self.function.of_bytes(bytes)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn walk(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path())
            } else {
                1
            }
        })
        .sum()
}

fn pb_digest(d: &Digest) -> pb::Digest {
    pb::Digest {
        hash: d.hex(),
        size_bytes: d.size_bytes as i64,
    }
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(message);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

fn update(blobs: &[(&Digest, &[u8])]) -> pb::BatchUpdateBlobsRequest {
    pb::BatchUpdateBlobsRequest {
        requests: blobs
            .iter()
            .map(|(d, data)| pb::batch_update_blobs_request::Request {
                digest: Some(pb_digest(d)),
                data: data.to_vec(),
                compressor: 0,
            })
            .collect(),
        ..Default::default()
    }
}

/// The per-blob status codes of a BatchUpdateBlobs answer, in order.
fn codes(r: &pb::BatchUpdateBlobsResponse) -> Vec<Code> {
    r.responses
        .iter()
        .map(|b| Code::from_i32(b.status.as_ref().map_or(0, |s| s.code)))
        .collect()
}

fn bytes_of(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}

fn write_stream(resource: String, data: &[u8], piece: usize, finish: bool) -> Vec<WriteRequest> {
    let mut out = Vec::new();
    let mut offset = 0;
    for (i, chunk) in data.chunks(piece.max(1)).enumerate() {
        out.push(WriteRequest {
            resource_name: if i == 0 {
                resource.clone()
            } else {
                String::new()
            },
            write_offset: offset as i64,
            finish_write: false,
            data: chunk.to_vec(),
        });
        offset += chunk.len();
    }
    if let Some(last) = out.last_mut() {
        last.finish_write = finish;
    }
    out
}

#[tokio::test]
async fn capabilities_announce_the_folders_function_and_who_may_update() {
    for function in [SHA256, DigestFunction::Blake3] {
        let s = Served::start(Options {
            function,
            ..Default::default()
        })
        .await;
        let caps = CapabilitiesClient::new(s.channel().await)
            .get_capabilities(pb::GetCapabilitiesRequest::default())
            .await
            .unwrap()
            .into_inner();
        let cache = caps.cache_capabilities.unwrap();
        let want = match function {
            DigestFunction::Sha256 => pb::digest_function::Value::Sha256,
            DigestFunction::Blake3 => pb::digest_function::Value::Blake3,
        };
        assert_eq!(cache.digest_functions, vec![want as i32]);
        assert_eq!(cache.max_batch_total_size_bytes, MAX_BATCH as i64);
        assert!(
            cache
                .action_cache_update_capabilities
                .unwrap()
                .update_enabled
        );
        assert!(cache.supported_compressors.is_empty());
        assert!(caps.execution_capabilities.is_none());
        let low = caps.low_api_version.unwrap();
        let high = caps.high_api_version.unwrap();
        assert_eq!((low.major, low.minor), (2, 0));
        assert_eq!((high.major, high.minor), (2, 3));
    }

    let s = Served::start(Options {
        tokens: Tokens::new(Some("r"), Some("w")),
        ..Default::default()
    })
    .await;
    let mut client = CapabilitiesClient::new(s.channel().await);
    let update_enabled = |caps: pb::ServerCapabilities| {
        caps.cache_capabilities
            .unwrap()
            .action_cache_update_capabilities
            .unwrap()
            .update_enabled
    };
    for (token, may) in [("r", false), ("w", true)] {
        let caps = client
            .get_capabilities(with_token(
                pb::GetCapabilitiesRequest::default(),
                Some(token),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(update_enabled(caps), may, "token {token}");
    }
    let denied = client
        .get_capabilities(pb::GetCapabilitiesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::Unauthenticated, "{denied:?}");
}

/// Strata's own client, over gRPC: small blobs in batches, a large one
/// through ByteStream, under BLAKE3 resource names; then every entry is a
/// hit through HTTP too, and one stored through HTTP a hit through gRPC.
#[tokio::test]
async fn strata_clients_share_entries_over_grpc_and_http() {
    let s = Served::start(Options {
        function: DigestFunction::Blake3,
        instance: "ci/main",
        ..Default::default()
    })
    .await;
    let b3 = DigestFunction::Blake3;
    let grpc = s.remote("grpc", "ci/main").await;
    assert_eq!(grpc.digest_functions().await.unwrap(), Some(vec![b3]));

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), b3).unwrap();
    let small = store.cas().put_bytes(b"a small blob").unwrap();
    let large_bytes = bytes_of(3 * 1024 * 1024 + 17);
    let large = store.cas().put_bytes(&large_bytes).unwrap();
    let missing = grpc.find_missing(b3, &[small, large]).await.unwrap();
    assert_eq!(missing, vec![small, large]);
    grpc.upload_many(b3, &[small, large], store.cas())
        .await
        .unwrap();
    assert!(
        grpc.find_missing(b3, &[small, large])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(std::fs::read(s.path("cas", &large)).unwrap(), large_bytes);

    let key = b3.of_bytes(b"an action");
    let result = reapi::ActionResult {
        stdout_digest: Some(small.to_proto()),
        output_directories: vec![reapi::OutputDirectory {
            path: "out".into(),
            tree_digest: None,
            root_directory_digest: Some(
                store
                    .cas()
                    .put_bytes(
                        &reapi::Directory {
                            files: vec![reapi::FileNode {
                                name: "big".into(),
                                digest: Some(large.to_proto()),
                                is_executable: false,
                                ..Default::default()
                            }],
                            ..Default::default()
                        }
                        .encode_to_vec(),
                    )
                    .map(|d| d.to_proto())
                    .unwrap(),
            ),
            ..Default::default()
        }],
        ..Default::default()
    };
    // The directory is not uploaded yet: the entry is refused.
    let refused = grpc.update_action_result(b3, &key, &result).await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(!s.path("ac", &key).exists());
    let root = Digest::from_proto(
        result.output_directories[0]
            .root_directory_digest
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    grpc.upload(b3, &root, store.cas()).await.unwrap();
    grpc.update_action_result(b3, &key, &result).await.unwrap();
    assert_eq!(
        grpc.get_action_result(b3, &key).await.unwrap(),
        Some(result.clone())
    );

    // The same entries through Bazel's HTTP protocol.
    let http = s.remote("http", "").await;
    assert_eq!(
        http.get_action_result(b3, &key).await.unwrap(),
        Some(result)
    );
    let other_dir = tempfile::tempdir().unwrap();
    let other = Store::open(other_dir.path(), b3).unwrap();
    http.download_many(b3, &[small, large, root], other.cas())
        .await
        .unwrap();
    assert_eq!(other.cas().read(&large).unwrap(), large_bytes);

    // And the other way round, through gRPC's batch and stream reads.
    let via_http = store.cas().put_bytes(&bytes_of(2 * 1024 * 1024)).unwrap();
    let tiny = store.cas().put_bytes(b"tiny, via http").unwrap();
    http.upload_many(b3, &[via_http, tiny], store.cas())
        .await
        .unwrap();
    let third_dir = tempfile::tempdir().unwrap();
    let third = Store::open(third_dir.path(), b3).unwrap();
    grpc.download_many(b3, &[via_http, tiny, large], third.cas())
        .await
        .unwrap();
    assert_eq!(third.cas().read(&tiny).unwrap(), b"tiny, via http");
    assert_eq!(
        third.cas().read(&via_http).unwrap(),
        bytes_of(2 * 1024 * 1024)
    );
}

#[tokio::test]
async fn batch_uploads_are_checked_blob_by_blob_and_nothing_wrong_is_stored() {
    let s = Served::start(Options {
        max_blob: 1000,
        ..Default::default()
    })
    .await;
    let mut cas = s.cas().await;
    let good = s.digest(b"good");
    let lying = s.digest(b"what the digest says");
    // Of the same length, so only the hash tells them apart.
    let other: &[u8] = b"what the data say ..";
    assert_eq!(other.len() as u64, lying.size_bytes);
    let short = Digest::new(s.digest(b"four").hash, 5);
    let big = bytes_of(1001);
    let big_digest = s.digest(&big);
    let answer = cas
        .batch_update_blobs(update(&[
            (&good, b"good"),
            (&lying, other),
            (&short, b"four"),
            (&big_digest, &big),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        codes(&answer),
        vec![
            Code::Ok,
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::InvalidArgument
        ]
    );
    let message = |i: usize| answer.responses[i].status.as_ref().unwrap().message.clone();
    assert!(message(1).contains("not to its digest"), "{}", message(1));
    assert!(
        message(2).contains("not the 5 its digest gives"),
        "{}",
        message(2)
    );
    assert!(
        message(3).contains("larger than 1000 bytes"),
        "{}",
        message(3)
    );
    assert!(s.path("cas", &good).is_file());
    assert_eq!(s.published(), 1, "only the good blob is stored");

    // A batch above the announced limit is refused whole.
    let s = Served::start(Options::default()).await;
    let mut cas = s.cas().await;
    let half = bytes_of(MAX_BATCH as usize / 2 + 1);
    let d = s.digest(&half);
    let e = cas
        .batch_update_blobs(update(&[(&d, &half), (&d, &half)]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("max_batch_total_size_bytes"), "{e:?}");
    assert_eq!(s.published(), 0);
}

#[tokio::test]
async fn requests_with_a_wrong_instance_function_or_digest_are_invalid_arguments() {
    let s = Served::start(Options {
        instance: "team",
        ..Default::default()
    })
    .await;
    let mut cas = s.cas().await;
    let d = s.digest(b"x");
    let find = |instance: &str, function: i32, hash: String| pb::FindMissingBlobsRequest {
        instance_name: instance.to_string(),
        blob_digests: vec![pb::Digest {
            hash,
            size_bytes: 1,
        }],
        digest_function: function,
    };
    let sha = pb::digest_function::Value::Sha256 as i32;
    let blake3 = pb::digest_function::Value::Blake3 as i32;
    let ok = cas.find_missing_blobs(find("team", sha, d.hex())).await;
    assert_eq!(ok.unwrap().into_inner().missing_blob_digests.len(), 1);
    for (request, says) in [
        (find("", sha, d.hex()), "unknown instance name \"\""),
        (find("other", 0, d.hex()), "serves the instance \"team\""),
        (
            find("team", blake3, d.hex()),
            "hashes with sha256, not blake3",
        ),
        (
            find("team", sha, d.hex()[..40].to_string()),
            "64 lower-case hex",
        ),
        (
            find("team", sha, d.hex().to_uppercase()),
            "64 lower-case hex",
        ),
    ] {
        let e = cas.find_missing_blobs(request).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(says), "{e:?} should say {says}");
    }
    let mut ac = s.ac().await;
    let e = ac
        .get_action_result(pb::GetActionResultRequest {
            instance_name: "team".into(),
            action_digest: Some(pb::Digest {
                hash: d.hex(),
                size_bytes: -1,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = ac
        .get_action_result(pb::GetActionResultRequest {
            instance_name: "team".into(),
            action_digest: Some(pb_digest(&d)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let mut bs = s.bytestream().await;
    let e = bs
        .query_write_status(QueryWriteStatusRequest {
            resource_name: format!("other/uploads/u/blobs/{}/1", d.hex()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}

#[tokio::test]
async fn an_action_result_is_admitted_only_when_its_blobs_are_stored() {
    let s = Served::start(Options::default()).await;
    let mut ac = s.ac().await;
    let log = s.digest(b"the log");
    let key = s.digest(b"action");
    let result = pb::ActionResult {
        output_files: vec![pb::OutputFile {
            path: "a".into(),
            digest: Some(pb_digest(&log)),
            ..Default::default()
        }],
        exit_code: 0,
        ..Default::default()
    };
    let request = pb::UpdateActionResultRequest {
        action_digest: Some(pb_digest(&key)),
        action_result: Some(result.clone()),
        ..Default::default()
    };
    let e = ac.update_action_result(request.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(&log.hex()), "{e:?}");
    assert!(!s.path("ac", &key).exists());

    let mut cas = s.cas().await;
    let stored = cas
        .batch_update_blobs(update(&[(&log, b"the log")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(codes(&stored), vec![Code::Ok]);
    let echoed = ac.update_action_result(request).await.unwrap().into_inner();
    assert_eq!(echoed, result);
    // Stored as the HTTP protocol stores it: the serialized ActionResult.
    let on_disk = std::fs::read(s.path("ac", &key)).unwrap();
    assert_eq!(
        pb::ActionResult::decode(on_disk.as_slice()).unwrap(),
        result
    );
    let got = ac
        .get_action_result(pb::GetActionResultRequest {
            action_digest: Some(pb_digest(&key)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, result);
    let read = cas
        .batch_read_blobs(pb::BatchReadBlobsRequest {
            digests: vec![pb_digest(&log), pb_digest(&s.digest(b"absent"))],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.responses[0].data, b"the log");
    assert_eq!(
        read.responses[1].status.as_ref().unwrap().code,
        Code::NotFound as i32
    );
}

#[tokio::test]
async fn tokens_guard_grpc_calls_as_they_guard_http() {
    let s = Served::start(Options {
        tokens: Tokens::new(Some("r-token"), Some("w-token")),
        ..Default::default()
    })
    .await;
    let mut cas = s.cas().await;
    let d = s.digest(b"guarded");
    let find = || pb::FindMissingBlobsRequest {
        blob_digests: vec![pb_digest(&d)],
        ..Default::default()
    };
    for token in [None, Some("wrong")] {
        let e = cas
            .find_missing_blobs(with_token(find(), token))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{token:?}: {e:?}");
    }
    cas.find_missing_blobs(with_token(find(), Some("r-token")))
        .await
        .unwrap();
    let e = cas
        .batch_update_blobs(with_token(update(&[(&d, b"guarded")]), Some("r-token")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut bs = s.bytestream().await;
    let resource = format!("uploads/u/blobs/{}/7", d.hex());
    let e = bs
        .write(with_token(
            futures_util::stream::iter(write_stream(resource.clone(), b"guarded", 3, true)),
            Some("r-token"),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(s.published(), 0);
    bs.write(with_token(
        futures_util::stream::iter(write_stream(resource, b"guarded", 3, true)),
        Some("w-token"),
    ))
    .await
    .unwrap();
    assert!(s.path("cas", &d).is_file());
}

#[tokio::test]
async fn bytestream_writes_are_verified_before_publication() {
    let s = Served::start(Options {
        max_blob: 100_000,
        ..Default::default()
    })
    .await;
    let mut bs = s.bytestream().await;
    let data = bytes_of(70_000);
    let d = s.digest(&data);
    let name = |d: &Digest| format!("uploads/5e1f/blobs/{}/{}", d.hex(), d.size_bytes);
    let write = |reqs: Vec<WriteRequest>| futures_util::stream::iter(reqs);

    // Content that does not match, the stream ended early, a wrong offset,
    // more bytes than the digest says, too large a blob: nothing stored.
    let mut wrong = data.clone();
    wrong[12_345] ^= 1;
    let mut skipped = write_stream(name(&d), &data, 10_000, true);
    skipped[2].write_offset += 1;
    let too_big = bytes_of(100_001);
    let cases: Vec<(Vec<WriteRequest>, &str)> = vec![
        (
            write_stream(name(&d), &wrong, 10_000, true),
            "not to its digest",
        ),
        (
            write_stream(name(&d), &data, 10_000, false),
            "without finish_write",
        ),
        (skipped, "write_offset"),
        (
            write_stream(name(&d), &[data.as_slice(), b"more"].concat(), 10_000, true),
            "more than the 70000 bytes",
        ),
        (
            write_stream(name(&s.digest(&too_big)), &too_big, 10_000, true),
            "larger than 100000 bytes",
        ),
    ];
    for (requests, says) in cases {
        let e = bs.write(write(requests)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(says), "{e:?} should say {says}");
    }
    assert_eq!(s.published(), 0);
    let status = bs
        .query_write_status(QueryWriteStatusRequest {
            resource_name: name(&d),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.committed_size, status.complete), (0, false));

    let done = bs
        .write(write(write_stream(name(&d), &data, 10_000, true)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.committed_size, 70_000);
    assert_eq!(std::fs::read(s.path("cas", &d)).unwrap(), data);
    let status = bs
        .query_write_status(QueryWriteStatusRequest {
            resource_name: name(&d),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.committed_size, status.complete), (70_000, true));

    // Reads from an offset, within a limit.
    let read = |offset: i64, limit: i64| ReadRequest {
        resource_name: format!("blobs/{}/{}", d.hex(), d.size_bytes),
        read_offset: offset,
        read_limit: limit,
    };
    let mut got = Vec::new();
    let mut stream = bs.read(read(60_000, 5_000)).await.unwrap().into_inner();
    while let Some(piece) = stream.message().await.unwrap() {
        got.extend_from_slice(&piece.data);
    }
    assert_eq!(got, data[60_000..65_000]);
    let e = bs.read(read(70_001, 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    let absent = s.digest(b"absent");
    let e = bs
        .read(ReadRequest {
            resource_name: format!("blobs/{}/6", absent.hex()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}

#[tokio::test]
async fn get_tree_returns_every_directory_in_pages() {
    let s = Served::start(Options::default()).await;
    let mut cas = s.cas().await;
    let leaf = pb::Directory {
        files: vec![pb::FileNode {
            name: "f".into(),
            digest: Some(pb_digest(&s.digest(b""))),
            ..Default::default()
        }],
        ..Default::default()
    };
    let leaf_bytes = leaf.encode_to_vec();
    let leaf_digest = s.digest(&leaf_bytes);
    let absent = s.digest(b"a directory never uploaded");
    let node = |name: &str, d: &Digest| pb::DirectoryNode {
        name: name.into(),
        digest: Some(pb_digest(d)),
    };
    let root = pb::Directory {
        directories: vec![
            node("a", &leaf_digest),
            node("b", &leaf_digest),
            node("gone", &absent),
        ],
        ..Default::default()
    };
    let root_bytes = root.encode_to_vec();
    let root_digest = s.digest(&root_bytes);
    let stored = cas
        .batch_update_blobs(update(&[
            (&leaf_digest, &leaf_bytes),
            (&root_digest, &root_bytes),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(codes(&stored), vec![Code::Ok, Code::Ok]);
    let tree = |page_size: i32, page_token: &str| pb::GetTreeRequest {
        root_digest: Some(pb_digest(&root_digest)),
        page_size,
        page_token: page_token.to_string(),
        ..Default::default()
    };
    let mut pages = Vec::new();
    let mut stream = cas.get_tree(tree(1, "")).await.unwrap().into_inner();
    while let Some(page) = stream.message().await.unwrap() {
        pages.push(page);
    }
    // The root and the shared leaf once; the missing one left out.
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0].directories, vec![root.clone()]);
    assert_eq!(pages[0].next_page_token, "1");
    assert_eq!(pages[1].directories, vec![leaf.clone()]);
    assert_eq!(pages[1].next_page_token, "");
    let mut resumed = cas.get_tree(tree(0, "1")).await.unwrap().into_inner();
    let page = resumed.message().await.unwrap().unwrap();
    assert_eq!(page.directories, vec![leaf]);
    let e = cas
        .get_tree(pb::GetTreeRequest {
            root_digest: Some(pb_digest(&absent)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}

#[tokio::test]
async fn other_services_are_unimplemented() {
    let s = Served::start(Options::default()).await;
    let mut exec = pb::execution_client::ExecutionClient::new(s.channel().await);
    let e = exec
        .execute(pb::ExecuteRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    let e = s
        .cas()
        .await
        .split_blob(pb::SplitBlobRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
}
