//! `registry::pull` against a real `docker-registry`: what `docker push` put
//! there comes back byte for byte, anything that does not match its digest
//! is refused and left out of the store, and each way of authenticating works.

#[path = "../../tests/common/docker.rs"]
mod docker;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use docker::{Registry, docker_available, mini_image, sh};
use sha2::{Digest as _, Sha256};
use strata_registry::{
    Client, ClientOptions, Credentials, Pulled, Reference, RegistryError, manifest, pull,
};
use strata_store::{Cas, DigestFunction, Store};

/// A local image removed when the test ends, however it ends.
struct Image {
    tag: String,
    id: String,
}

impl Image {
    fn new(tag: &str) -> Image {
        let id = mini_image(tag);
        Image {
            tag: tag.to_string(),
            id,
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), DigestFunction::Blake3).unwrap();
    (dir, store)
}

fn options() -> ClientOptions {
    ClientOptions {
        backoff: Duration::from_millis(20),
        ..ClientOptions::default()
    }
}

fn client() -> Client {
    Client::new(options()).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn reference(host: &str, name: &str, digest: &str) -> Reference {
    Reference::parse(&format!("{host}/{name}@{digest}")).unwrap()
}

/// Reads a stored blob and checks it is what the pull says it is.
fn stored_bytes(cas: &Cas, blob: &strata_registry::PulledBlob) -> Vec<u8> {
    let bytes = cas.read(&blob.stored).unwrap();
    assert_eq!(sha256(&bytes), blob.sha256);
    assert_eq!(bytes.len() as u64, blob.size);
    bytes
}

/// The layer digests of a manifest as the registry stores it.
fn registry_layers(registry: &Registry, manifest_digest: &str) -> Vec<String> {
    let bytes = std::fs::read(registry.blob_path(manifest_digest)).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    json["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn inspect(image: &str, format: &str) -> String {
    sh(
        Path::new("/"),
        &format!("docker image inspect --format '{format}' {image}"),
    )
    .trim()
    .to_string()
}

#[tokio::test]
async fn pulls_by_digest_exactly_what_docker_pushed() {
    if !docker_available() {
        return;
    }
    let image = Image::new("strata-registry-test/pull:1");
    let registry = Registry::start(None);
    let digest = registry.push(&image.tag, "strata/mini", "v1");
    let (_dir, store) = new_store();
    let cas = store.cas();

    let r = reference(&registry.host(), "strata/mini", &digest);
    let pulled = pull(&client(), &r, "linux/amd64", cas).await.unwrap();

    assert_eq!(pulled.index, None);
    assert_eq!(pulled.manifest.sha256, digest);
    assert_eq!(pulled.manifest.media_type, manifest::DOCKER_MANIFEST);
    let manifest_bytes = stored_bytes(cas, &pulled.manifest);
    assert_eq!(
        manifest_bytes,
        std::fs::read(registry.blob_path(&digest)).unwrap()
    );

    // The config is the image: its digest is the image ID Docker shows.
    assert_eq!(pulled.config.sha256, image.id);
    stored_bytes(cas, &pulled.config);

    // Each layer is the registry's blob, and unpacks to the layer Docker has.
    let diff_ids: Vec<String> = inspect(&image.tag, "{{range .RootFS.Layers}}{{.}} {{end}}")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let layer_digests = registry_layers(&registry, &digest);
    assert_eq!(pulled.layers.len(), diff_ids.len());
    assert_eq!(
        pulled
            .layers
            .iter()
            .map(|l| l.sha256.clone())
            .collect::<Vec<_>>(),
        layer_digests
    );
    for (layer, diff_id) in pulled.layers.iter().zip(&diff_ids) {
        let bytes = stored_bytes(cas, layer);
        assert_eq!(
            bytes,
            std::fs::read(registry.blob_path(&layer.sha256)).unwrap()
        );
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(&sha256(&tar), diff_id);
    }

    // Pulling again into the same store is harmless and says the same.
    let again = pull(&client(), &r, "linux/amd64", cas).await.unwrap();
    assert_eq!(again, pulled);
}

#[tokio::test]
async fn tampered_blobs_are_refused_and_not_stored() {
    if !docker_available() {
        return;
    }
    let image = Image::new("strata-registry-test/tamper:1");
    let registry = Registry::start(None);
    let digest = registry.push(&image.tag, "strata/tamper", "v1");
    let layers = registry_layers(&registry, &digest);
    let r = reference(&registry.host(), "strata/tamper", &digest);

    // Same size, different bytes: only the hash can tell.
    let layer_path = registry.blob_path(&layers[0]);
    let mut tampered = std::fs::read(&layer_path).unwrap();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    overwrite(&layer_path, &tampered);

    let (_dir, store) = new_store();
    let err = pull(&client(), &r, "linux/amd64", store.cas())
        .await
        .unwrap_err();
    let RegistryError::DigestMismatch {
        what,
        expected,
        actual,
        ..
    } = &err
    else {
        panic!("expected a digest mismatch, got: {err}");
    };
    assert!(what.starts_with("layer 1 of 1"), "{what}");
    assert!(expected.contains(&layers[0]), "{expected}");
    assert!(actual.contains(&sha256(&tampered)), "{actual}");
    let message = err.to_string();
    assert!(message.contains(&registry.host()), "{message}");
    assert!(
        !store
            .cas()
            .contains(&DigestFunction::Blake3.of_bytes(&tampered)),
        "a refused layer must not be in the store"
    );

    // A blob longer than its descriptor says is refused for its size.
    let longer = [
        std::fs::read(registry.blob_path(&layers[0])).unwrap(),
        b"x".to_vec(),
    ]
    .concat();
    overwrite(&layer_path, &longer);
    let err = pull(&client(), &r, "linux/amd64", store.cas())
        .await
        .unwrap_err();
    let RegistryError::DigestMismatch { what, actual, .. } = &err else {
        panic!("expected a digest mismatch, got: {err}");
    };
    assert!(what.starts_with("layer 1 of 1"), "{what}");
    assert!(
        actual.contains(&format!("{} bytes", longer.len())),
        "{actual}"
    );
    assert!(
        !store
            .cas()
            .contains(&DigestFunction::Blake3.of_bytes(&longer))
    );

    // A manifest that does not hash to the reference is refused before
    // anything it lists is fetched.
    let manifest_path = registry.blob_path(&digest);
    let mut manifest = std::fs::read(&manifest_path).unwrap();
    let last = manifest.iter().rposition(|&b| b == b'}').unwrap();
    manifest.insert(last, b' ');
    overwrite(&manifest_path, &manifest);
    let (_dir2, store2) = new_store();
    let err = pull(&client(), &r, "linux/amd64", store2.cas())
        .await
        .unwrap_err();
    let RegistryError::DigestMismatch {
        what,
        expected,
        actual,
        ..
    } = &err
    else {
        panic!("expected a digest mismatch, got: {err}");
    };
    assert_eq!(what, "manifest");
    assert_eq!(expected, &digest);
    assert!(actual.contains(&sha256(&manifest)), "{actual}");
    assert_eq!(store2.cas().list().count(), 0, "nothing may be stored");
}

fn overwrite(path: &Path, bytes: &[u8]) {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn a_missing_manifest_is_a_clear_not_found() {
    if !docker_available() {
        return;
    }
    let registry = Registry::start(None);
    let digest = format!("sha256:{}", "ab".repeat(32));
    let r = reference(&registry.host(), "strata/absent", &digest);
    let (_dir, store) = new_store();
    let err = pull(&client(), &r, "linux/amd64", store.cas())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "manifest {digest} not found in {}/strata/absent",
            registry.host()
        )
    );
}

#[tokio::test]
async fn an_unreachable_registry_is_named_after_bounded_retries() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let r = reference(&host, "strata/x", &format!("sha256:{}", "cd".repeat(32)));
    let (_dir, store) = new_store();
    let started = std::time::Instant::now();
    let err = pull(&client(), &r, "linux/amd64", store.cas())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("cannot reach registry {host}: ")),
        "{message}"
    );
    assert!(message.to_lowercase().contains("refused"), "{message}");
    // Three retries at 20, 40 and 80 ms.
    assert!(started.elapsed() >= Duration::from_millis(140));
}

#[tokio::test]
async fn basic_auth_is_required_and_used() {
    if !docker_available() {
        return;
    }
    let image = Image::new("strata-registry-test/basic:1");
    let mut registry = Registry::start(None);
    let digest = registry.push(&image.tag, "strata/private", "v1");
    registry.restart(Some(("strata", "open-sesame-42")));
    let host = registry.host();
    let r = reference(&host, "strata/private", &digest);
    let (_dir, store) = new_store();

    let err = pull(&client(), &r, "linux/amd64", store.cas())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("registry {host} refused access to strata/private")),
        "{message}"
    );
    assert!(message.contains("none were given"), "{message}");

    let wrong = Client::new(
        options().with_credentials(&host, Credentials::new("strata", "not-the-password")),
    )
    .unwrap();
    let err = pull(&wrong, &r, "linux/amd64", store.cas())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("refused"), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");
    assert!(!format!("{err:?}").contains("not-the-password"));

    let right = Client::new(
        options().with_credentials(&host, Credentials::new("strata", "open-sesame-42")),
    )
    .unwrap();
    let pulled = pull(&right, &r, "linux/amd64", store.cas()).await.unwrap();
    assert_eq!(pulled.config.sha256, image.id);
    assert_eq!(
        pulled.layers.len(),
        registry_layers(&registry, &digest).len()
    );
}

#[tokio::test]
async fn an_index_resolves_to_the_platform_manifest() {
    if !docker_available() {
        return;
    }
    let amd = Image::new("strata-registry-test/index-amd:1");
    let arm = Image::new("strata-registry-test/index-arm:1");
    let registry = Registry::start(None);
    let amd_digest = registry.push(&amd.tag, "strata/multi", "amd");
    let arm_digest = registry.push(&arm.tag, "strata/multi", "arm");
    let size = |d: &str| std::fs::metadata(registry.blob_path(d)).unwrap().len();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_INDEX,
        "manifests": [
            {"mediaType": manifest::DOCKER_MANIFEST, "digest": arm_digest, "size": size(&arm_digest),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": manifest::DOCKER_MANIFEST, "digest": amd_digest, "size": size(&amd_digest),
             "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let index_digest = sha256(&index_bytes);
    let status = http_put(
        registry.port,
        "/v2/strata/multi/manifests/multi",
        manifest::OCI_INDEX,
        &index_bytes,
    );
    assert!(status.contains(" 201 "), "PUT index: {status}");

    let r = reference(&registry.host(), "strata/multi", &index_digest);
    let (_dir, store) = new_store();
    let pulled: Pulled = pull(&client(), &r, "linux/amd64", store.cas())
        .await
        .unwrap();
    let index_blob = pulled.index.as_ref().expect("the index is returned");
    assert_eq!(index_blob.sha256, index_digest);
    assert_eq!(index_blob.media_type, manifest::OCI_INDEX);
    assert_eq!(store.cas().read(&index_blob.stored).unwrap(), index_bytes);
    assert_eq!(pulled.manifest.sha256, amd_digest);
    assert_eq!(pulled.config.sha256, amd.id);

    // The index lists `arm` as arm64, but that image (made on this amd64
    // machine) says linux/amd64 in its config: it is refused with both
    // platforms named rather than pulled as arm64. (The amd64 pull above
    // shows the index is resolved by platform: its entry is the second.)
    let err = pull(&client(), &r, "linux/arm64", store.cas())
        .await
        .unwrap_err();
    match &err {
        RegistryError::WrongPlatform {
            digest,
            platform,
            actual,
            ..
        } => {
            assert_eq!(digest, &index_digest);
            assert_eq!(
                (platform.as_str(), actual.as_str()),
                ("linux/arm64", "linux/amd64")
            );
        }
        other => panic!("expected WrongPlatform, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("linux/arm64") && message.contains("linux/amd64"),
        "{message}"
    );

    let err = pull(&client(), &r, "linux/s390x", store.cas())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::NoMatchingPlatform { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("linux/s390x"), "{message}");
    assert!(
        message.ends_with("it has: linux/arm64/v8, linux/amd64"),
        "{message}"
    );
}

/// A plain-HTTP PUT to the loopback registry; returns the status line.
fn http_put(port: u16, path: &str, content_type: &str, body: &[u8]) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        conn,
        "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    conn.write_all(body).unwrap();
    let mut status = String::new();
    BufReader::new(conn).read_line(&mut status).unwrap();
    status
}

// A token service in front of a registry, as Docker Hub and most hosted
// registries work: 401 + `WWW-Authenticate: Bearer` until a request carries
// the token that `/token` hands out for the right basic credentials.

const TOKEN: &str = "tok-3f9a1c";
const SERVICE: &str = "strata-test";

struct TokenProxy {
    port: u16,
    token_requests: Arc<Mutex<Vec<String>>>,
    registry_requests: Arc<AtomicUsize>,
    /// Registry requests still to be answered with 503.
    fail_next: Arc<AtomicUsize>,
    /// Blob requests are sent to the registry itself with a 307, as Docker
    /// Hub sends them to its CDN.
    redirect_blobs: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl TokenProxy {
    fn start(upstream: u16, basic: &'static str) -> TokenProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = TokenProxy {
            port,
            token_requests: Arc::default(),
            registry_requests: Arc::default(),
            fail_next: Arc::default(),
            redirect_blobs: Arc::default(),
            stop: Arc::default(),
        };
        let state = Shared {
            port,
            upstream,
            basic,
            tokens: proxy.token_requests.clone(),
            requests: proxy.registry_requests.clone(),
            fail_next: proxy.fail_next.clone(),
            redirect_blobs: proxy.redirect_blobs.clone(),
        };
        let stop = proxy.stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let state = state.clone();
                std::thread::spawn(move || serve(conn, &state));
            }
        });
        proxy
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TokenProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[derive(Clone)]
struct Shared {
    port: u16,
    upstream: u16,
    basic: &'static str,
    tokens: Arc<Mutex<Vec<String>>>,
    requests: Arc<AtomicUsize>,
    fail_next: Arc<AtomicUsize>,
    redirect_blobs: Arc<AtomicBool>,
}

fn serve(mut conn: TcpStream, state: &Shared) {
    let Shared {
        port,
        upstream,
        basic,
        ..
    } = *state;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let (name, value) = line.trim_end().split_once(':').unwrap_or((&line, ""));
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let reply = |conn: &mut TcpStream, status: &str, extra: &str, body: &str| {
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    };

    if let Some(query) = path.strip_prefix("/token?") {
        state.tokens.lock().unwrap().push(query.to_string());
        if header("authorization") == Some(&format!("Basic {basic}")) {
            let body = format!(r#"{{"token":"{TOKEN}","expires_in":300}}"#);
            reply(
                &mut conn,
                "200 OK",
                "Content-Type: application/json\r\n",
                &body,
            );
        } else {
            reply(&mut conn, "401 Unauthorized", "", "");
        }
        return;
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    if state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        reply(&mut conn, "503 Service Unavailable", "", "");
        return;
    }
    if header("authorization") != Some(&format!("Bearer {TOKEN}")) {
        let repo = path
            .strip_prefix("/v2/")
            .and_then(|p| p.split("/manifests/").next())
            .and_then(|p| p.split("/blobs/").next())
            .unwrap_or("");
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"{SERVICE}\",scope=\"repository:{repo}:pull\"\r\n"
        );
        reply(&mut conn, "401 Unauthorized", &challenge, "");
        return;
    }
    if path.contains("/blobs/") && state.redirect_blobs.load(Ordering::SeqCst) {
        let location = format!("Location: http://127.0.0.1:{upstream}{path}\r\n");
        reply(&mut conn, "307 Temporary Redirect", &location, "");
        return;
    }
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
        reply(&mut conn, "502 Bad Gateway", "", "");
        return;
    };
    let mut forwarded = format!(
        "{}Host: 127.0.0.1:{upstream}\r\nConnection: close\r\n",
        request_line
    );
    for (name, value) in &headers {
        if !matches!(name.as_str(), "authorization" | "host" | "connection") {
            forwarded.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    forwarded.push_str("\r\n");
    if up.write_all(forwarded.as_bytes()).is_err() {
        return;
    }
    let _ = std::io::copy(&mut up, &mut conn);
}

/// `user:password` in base64, as an `Authorization: Basic` header has it.
fn base64(input: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_matches_the_standard_encoding() {
    assert_eq!(
        base64("Aladdin:open sesame"),
        "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    );
    assert_eq!(base64("ab"), "YWI=");
    assert_eq!(base64("abc"), "YWJj");
}

#[tokio::test]
async fn bearer_token_flow_fetches_one_token_per_pull() {
    if !docker_available() {
        return;
    }
    let image = Image::new("strata-registry-test/token:1");
    let registry = Registry::start(None);
    let digest = registry.push(&image.tag, "strata/tokened", "v1");
    let basic = Box::leak(base64("robot:hunter2-token").into_boxed_str());
    let proxy = TokenProxy::start(registry.port, basic);
    let r = reference(&proxy.host(), "strata/tokened", &digest);
    let (_dir, store) = new_store();
    proxy.redirect_blobs.store(true, Ordering::SeqCst);

    let err = pull(&client(), &r, "linux/amd64", store.cas())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("token service"), "{message}");
    assert!(message.contains("strata/tokened"), "{message}");
    proxy.token_requests.lock().unwrap().clear();

    let client = Client::new(
        options().with_credentials(&proxy.host(), Credentials::new("robot", "hunter2-token")),
    )
    .unwrap();
    let pulled = pull(&client, &r, "linux/amd64", store.cas()).await.unwrap();
    assert_eq!(pulled.config.sha256, image.id);
    assert_eq!(pulled.manifest.sha256, digest);

    // The blobs came through the redirects (the proxy itself serves none).
    assert_eq!(
        stored_bytes(store.cas(), &pulled.config).len() as u64,
        pulled.config.size
    );
    // One token for the manifest, the config and every layer.
    let tokens = proxy.token_requests.lock().unwrap().clone();
    assert_eq!(
        tokens,
        vec![format!(
            "service={SERVICE}&scope=repository%3Astrata%2Ftokened%3Apull"
        )]
    );
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    if !docker_available() {
        return;
    }
    let image = Image::new("strata-registry-test/retry:1");
    let registry = Registry::start(None);
    let digest = registry.push(&image.tag, "strata/flaky", "v1");
    let basic = Box::leak(base64("robot:pw").into_boxed_str());
    let proxy = TokenProxy::start(registry.port, basic);
    let r = reference(&proxy.host(), "strata/flaky", &digest);
    let client =
        Client::new(options().with_credentials(&proxy.host(), Credentials::new("robot", "pw")))
            .unwrap();
    let (_dir, store) = new_store();

    // Two 503s are absorbed by the retries.
    proxy.fail_next.store(2, Ordering::SeqCst);
    let pulled = pull(&client, &r, "linux/amd64", store.cas()).await.unwrap();
    assert_eq!(pulled.config.sha256, image.id);

    // A registry that keeps failing is given up on after 1 + 3 attempts.
    proxy.fail_next.store(100, Ordering::SeqCst);
    proxy.registry_requests.store(0, Ordering::SeqCst);
    let err = pull(&client, &r, "linux/amd64", store.cas())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Status { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(proxy.registry_requests.load(Ordering::SeqCst), 4);
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "registry {} answered 503 for manifest {digest} of strata/flaky",
            proxy.host()
        )),
        "{message}"
    );
}
