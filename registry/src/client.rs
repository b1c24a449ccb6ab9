//! The HTTP side of a pull: one `reqwest` client (rustls with the ring
//! provider and the platform's roots, no OpenSSL) and, per pull, a
//! [`Session`] that knows the registry, the repository, the credentials and
//! the token obtained for them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use strata_formats::oci::reference::{DOCKER_HUB, Reference, host_without_port};

use super::challenge::{self, Challenge};
use super::error::{Detail, RegistryError};

/// Largest token-service answer read; real ones are a few KiB.
const TOKEN_LIMIT: u64 = 1024 * 1024;
/// How much of an error body is read for the registry's explanation.
const ERROR_BODY_LIMIT: u64 = 16 * 1024;

/// A username and password for one registry. `Debug` hides the password;
/// nothing in this module logs or prints either.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How a [`Client`] talks to registries.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Registries (`host[:port]` or just `host`) reached over plain HTTP.
    /// Loopback hosts always are, as with Docker.
    pub insecure: BTreeSet<String>,
    /// Credentials by registry `host[:port]`; see [`ClientOptions::with_credentials`].
    pub credentials: BTreeMap<String, Credentials>,
    pub connect_timeout: Duration,
    /// Longest wait for any single read of a response.
    pub read_timeout: Duration,
    /// Further attempts after a network failure or a 5xx/429 answer.
    pub retries: u32,
    /// Wait before the first retry; doubled for each later one.
    pub backoff: Duration,
    /// Blobs downloaded at once in one pull.
    pub concurrent_blobs: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure: BTreeSet::new(),
            credentials: BTreeMap::new(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            retries: 3,
            backoff: Duration::from_millis(500),
            concurrent_blobs: 4,
        }
    }
}

impl ClientOptions {
    /// Adds credentials for `registry` (`host[:port]`); `docker.io` and
    /// `index.docker.io` mean Docker Hub, as in a reference.
    pub fn with_credentials(mut self, registry: &str, credentials: Credentials) -> Self {
        self.credentials
            .insert(normalize_registry(registry).to_string(), credentials);
        self
    }

    /// Allows plain HTTP to `registry` (`host[:port]` or `host`).
    pub fn with_insecure(mut self, registry: &str) -> Self {
        self.insecure.insert(registry.to_string());
        self
    }
}

fn normalize_registry(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => DOCKER_HUB,
        other => other,
    }
}

/// A registry client; cheap to clone, shareable between pulls.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    options: ClientOptions,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("options", &self.inner.options)
            .finish()
    }
}

impl Client {
    pub fn new(options: ClientOptions) -> Result<Client, RegistryError> {
        use rustls_platform_verifier::BuilderVerifierExt;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| RegistryError::Client(e.to_string()))?
            .with_platform_verifier()
            .map_err(|e| RegistryError::Client(e.to_string()))?
            .with_no_client_auth();
        // This client speaks HTTP/1.1 only (reqwest built without http2).
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .build()
            .map_err(|e| RegistryError::Client(error_chain(&e)))?;
        Ok(Client {
            inner: Arc::new(Inner { http, options }),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Whether `registry` is spoken to over plain HTTP.
    pub fn is_plain_http(&self, registry: &str) -> bool {
        let host = host_without_port(registry);
        is_loopback(host)
            || self.inner.options.insecure.contains(registry)
            || self.inner.options.insecure.contains(host)
    }
}

fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[derive(Clone)]
enum Auth {
    Anonymous,
    Basic,
    Bearer(HeaderValue),
}

/// One pull's conversation with one repository.
pub(crate) struct Session {
    client: Client,
    pub(crate) registry: String,
    pub(crate) repository: String,
    base: String,
    credentials: Option<Credentials>,
    auth: Mutex<Auth>,
}

impl Session {
    pub(crate) fn new(client: &Client, reference: &Reference) -> Session {
        let registry = reference.registry().to_string();
        let scheme = if client.is_plain_http(&registry) {
            "http"
        } else {
            "https"
        };
        Session {
            credentials: client.inner.options.credentials.get(&registry).cloned(),
            base: format!("{scheme}://{registry}/v2/{}", reference.repository()),
            repository: reference.repository().to_string(),
            registry,
            client: client.clone(),
            auth: Mutex::new(Auth::Anonymous),
        }
    }

    pub(crate) fn options(&self) -> &ClientOptions {
        &self.client.inner.options
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries
    /// are spent; only transient failures are retried.
    pub(crate) async fn retry<T, F, Fut>(&self, mut attempt: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let options = self.options();
        let mut delay = options.backoff;
        let mut tries = 0;
        loop {
            match attempt().await {
                Err(e) if e.is_transient() && tries < options.retries => {
                    tracing::debug!("registry {}: {e}; retrying in {delay:?}", self.registry);
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                    tries += 1;
                }
                result => return result,
            }
        }
    }

    /// GETs `<base>/<path>` (`manifests/<digest>`, `blobs/<digest>`),
    /// authenticating when challenged; returns a 2xx response. `what` names
    /// the object in errors.
    pub(crate) async fn get(
        &self,
        path: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let url = format!("{}/{path}", self.base);
        let mut negotiations = 0;
        loop {
            let auth = self.auth.lock().expect("auth lock").clone();
            let mut request = self.client.inner.http.get(&url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            request = match (&auth, &self.credentials) {
                (Auth::Bearer(token), _) => request.header(AUTHORIZATION, token.clone()),
                (Auth::Basic, Some(c)) => request.basic_auth(&c.username, Some(&c.password)),
                _ => request,
            };
            tracing::debug!("GET {url}");
            let response = request
                .send()
                .await
                .map_err(|e| self.unreachable(&e, what))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            match status {
                StatusCode::UNAUTHORIZED => {
                    if negotiations == 2 {
                        return Err(self.unauthorized(match self.credentials {
                            Some(_) => "the credentials given were refused (HTTP 401)".into(),
                            None => "it requires credentials and none were given".into(),
                        }));
                    }
                    negotiations += 1;
                    let challenges: Vec<Challenge> = response
                        .headers()
                        .get_all(WWW_AUTHENTICATE)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .flat_map(challenge::parse)
                        .collect();
                    self.negotiate(&challenges).await?;
                }
                StatusCode::FORBIDDEN => {
                    let detail = error_detail(response).await;
                    return Err(self.unauthorized(format!("access denied (HTTP 403){detail}")));
                }
                StatusCode::NOT_FOUND => {
                    return Err(RegistryError::NotFound {
                        registry: self.registry.clone(),
                        repository: self.repository.clone(),
                        what: what.to_string(),
                    });
                }
                _ => {
                    return Err(RegistryError::Status {
                        registry: self.registry.clone(),
                        repository: self.repository.clone(),
                        what: what.to_string(),
                        status: status.as_u16(),
                        detail: error_detail(response).await,
                    });
                }
            }
        }
    }

    /// Answers a 401: obtains a bearer token, or switches to basic auth.
    async fn negotiate(&self, challenges: &[Challenge]) -> Result<(), RegistryError> {
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let token = self.retry(|| self.fetch_token(bearer)).await?;
            *self.auth.lock().expect("auth lock") = Auth::Bearer(token);
            return Ok(());
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            if self.credentials.is_none() {
                return Err(self.unauthorized(
                    "it requires credentials (HTTP basic) and none were given".into(),
                ));
            }
            *self.auth.lock().expect("auth lock") = Auth::Basic;
            return Ok(());
        }
        Err(self.unauthorized(
            "it answered 401 without an authentication challenge this client supports \
             (Bearer or Basic)"
                .into(),
        ))
    }

    /// The token flow of the distribution spec: GET the realm with service
    /// and scope (with basic credentials if any), read `token` or
    /// `access_token`.
    async fn fetch_token(&self, challenge: &Challenge) -> Result<HeaderValue, RegistryError> {
        let token_error = |reason: String| RegistryError::Token {
            registry: self.registry.clone(),
            reason,
        };
        let realm = challenge
            .param("realm")
            .ok_or_else(|| token_error("its Bearer challenge has no realm".into()))?;
        let mut url = reqwest::Url::parse(realm)
            .map_err(|e| token_error(format!("its token realm `{realm}` is not a URL: {e}")))?;
        let realm_host = url.host_str().unwrap_or_default().to_string();
        let realm_authority = match url.port() {
            Some(port) => format!("{realm_host}:{port}"),
            None => realm_host.clone(),
        };
        match url.scheme() {
            "https" => {}
            "http" if self.client.is_plain_http(&realm_authority) => {}
            // Credentials would cross the network in clear text.
            "http" if self.credentials.is_some() => {
                return Err(token_error(format!(
                    "its token realm {realm} is plain HTTP on a host that is neither loopback \
                     nor listed as insecure; credentials are not sent there"
                )));
            }
            "http" => {}
            other => {
                return Err(token_error(format!(
                    "its token realm uses the unsupported scheme `{other}`"
                )));
            }
        }
        {
            let default_scope = format!("repository:{}:pull", self.repository);
            let mut query = url.query_pairs_mut();
            if let Some(service) = challenge.param("service") {
                query.append_pair("service", service);
            }
            query.append_pair("scope", challenge.param("scope").unwrap_or(&default_scope));
        }
        let mut request = self.client.inner.http.get(url.clone());
        if let Some(c) = &self.credentials {
            request = request.basic_auth(&c.username, Some(&c.password));
        }
        tracing::debug!("GET token from {realm_authority}");
        let response = request
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable {
                registry: self.registry.clone(),
                reason: format!("token service {realm_authority}: {}", error_chain(&e)),
            })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.unauthorized(match self.credentials {
                Some(_) => format!(
                    "the token service {realm_authority} refused the credentials given (HTTP {})",
                    status.as_u16()
                ),
                None => format!(
                    "the token service {realm_authority} requires credentials and none were given"
                ),
            }));
        }
        if !status.is_success() {
            let detail = error_detail(response).await;
            let error = RegistryError::Status {
                registry: self.registry.clone(),
                repository: self.repository.clone(),
                what: format!("a token from {realm_authority}"),
                status: status.as_u16(),
                detail,
            };
            return Err(error);
        }
        let body = read_limited(response, TOKEN_LIMIT, |limit| RegistryError::TooLarge {
            registry: self.registry.clone(),
            what: format!("the token answer of {realm_authority}"),
            limit,
        })
        .await
        .map_err(|e| self.body_error(e, "a token"))?;
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            token_error(format!(
                "the token service {realm_authority} answered with invalid JSON: {e}"
            ))
        })?;
        let token = answer
            .token
            .filter(|t| !t.is_empty())
            .or(answer.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| {
                token_error(format!(
                    "the token service {realm_authority} answered without a token"
                ))
            })?;
        // Never echo the token: it is a credential.
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            token_error(format!(
                "the token service {realm_authority} answered with a token that is not a \
                 valid header value"
            ))
        })?;
        value.set_sensitive(true);
        Ok(value)
    }

    fn unauthorized(&self, reason: String) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            reason,
        }
    }

    pub(crate) fn unreachable(&self, e: &reqwest::Error, what: &str) -> RegistryError {
        RegistryError::Unreachable {
            registry: self.registry.clone(),
            reason: format!("{} (fetching {what})", error_chain(e)),
        }
    }

    /// Maps a failed body read: limits stay as they are, network errors
    /// become (retryable) unreachability.
    pub(crate) fn body_error(&self, e: BodyError, what: &str) -> RegistryError {
        match e {
            BodyError::Limit(e) => e,
            BodyError::Network(e) => self.unreachable(&e, what),
        }
    }
}

/// Why a bounded body read stopped.
pub(crate) enum BodyError {
    Limit(RegistryError),
    Network(reqwest::Error),
}

/// Reads a whole body of at most `limit` bytes, refusing early on a larger
/// `Content-Length`.
pub(crate) async fn read_limited(
    mut response: Response,
    limit: u64,
    too_large: impl Fn(u64) -> RegistryError,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::Limit(too_large(limit)));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Network)? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(BodyError::Limit(too_large(limit)));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The response's media type, if it sent one that is text.
pub(crate) fn content_type(response: &Response) -> Option<String> {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The registry's explanation of an error, from its JSON error body
/// (`{"errors":[{"code":..,"message":..}]}`), or nothing.
async fn error_detail(response: Response) -> Detail {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let Ok(body) = read_limited(response, ERROR_BODY_LIMIT, |_| {
        RegistryError::Client(String::new())
    })
    .await
    else {
        return Detail(None);
    };
    let Ok(errors) = serde_json::from_slice::<Errors>(&body) else {
        return Detail(None);
    };
    let text: Vec<String> = errors
        .errors
        .iter()
        .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
            (false, false) => format!("{} ({})", e.message, e.code),
            (true, false) => e.message.clone(),
            (false, true) => e.code.clone(),
            (true, true) => String::new(),
        })
        .filter(|t| !t.is_empty())
        // Registry messages are untrusted text; keep them short and printable.
        .map(|t| t.chars().filter(|c| !c.is_control()).take(200).collect())
        .take(3)
        .collect();
    Detail((!text.is_empty()).then(|| text.join("; ")))
}

/// An error and its causes, without the URL reqwest puts first (the caller
/// says which registry and object).
pub(crate) fn error_chain(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_insecure_hosts_use_plain_http() {
        let client = Client::new(ClientOptions::default().with_insecure("reg.lan:5000")).unwrap();
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.8.9.1",
            "[::1]:5000",
            "[::1]",
            "reg.lan:5000",
        ] {
            assert!(client.is_plain_http(host), "{host}");
        }
        for host in [
            "reg.lan:5001",
            "example.com",
            "10.0.0.1:5000",
            DOCKER_HUB,
            "[::2]:5000",
        ] {
            assert!(!client.is_plain_http(host), "{host}");
        }
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let options = ClientOptions::default()
            .with_credentials("docker.io", Credentials::new("alice", "s3cret-pw"));
        assert!(options.credentials.contains_key(DOCKER_HUB));
        let client = Client::new(options).unwrap();
        let shown = format!("{client:?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
    }
}
