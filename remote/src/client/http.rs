//! Bazel's HTTP cache protocol: `GET`/`PUT`/`HEAD` of `<base>/ac/<hex>`
//! (a serialized ActionResult) and `<base>/cas/<hex>` (the blob). Spoken by
//! bazel-remote, nginx WebDAV and `strata cache serve`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue,
};
use reqwest::{Response, StatusCode};

use super::blob_io::{self, Incoming, Outgoing};
use super::error::{chain, server_text};
use super::stall::{self, Progress};
use super::{RemoteConfig, RemoteError};
use crate::layout::{self, ACTION_RESULT_LIMIT, Kind};
use strata_store::{Cas, Digest, DigestFunction, reapi};

/// Blobs up to this size are read whole and sent in one body.
const SMALL_BLOB: u64 = 1024 * 1024;
/// HEAD, GET or PUT requests of blobs in flight at once.
const CONCURRENCY: usize = 8;
/// How much of an error body is read for the server's explanation.
const ERROR_BODY_LIMIT: usize = 4 * 1024;

/// A client of one HTTP cache; cheap to clone.
#[derive(Clone)]
pub struct HttpRemote {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    base: String,
    server: String,
    timeout: Duration,
}

impl fmt::Debug for HttpRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRemote")
            .field("server", &self.inner.server)
            .finish()
    }
}

impl HttpRemote {
    pub(crate) fn new(
        cfg: &RemoteConfig,
        base: String,
        server: String,
    ) -> Result<Self, RemoteError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| RemoteError::config(format!("`{name}` is not a valid header name")))?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                RemoteError::config(format!("the value of header `{name}` is not valid"))
            })?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        if let Some(token) = &cfg.bearer_token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| RemoteError::config("the bearer token is not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(super::tls::http_config(cfg.ca_file.as_deref())?)
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            // A cache has no reason to redirect, and reqwest would carry our
            // custom (secret) headers to wherever a redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.timeout)
            // Bounds each wait for response bytes, so a download of any
            // size goes on while bytes flow.
            .read_timeout(cfg.timeout)
            .build()
            .map_err(|e| {
                RemoteError::config(format!("cannot set up the HTTP client: {}", chain(&e)))
            })?;
        Ok(HttpRemote {
            inner: Arc::new(Inner {
                client,
                base,
                server,
                timeout: cfg.timeout,
            }),
        })
    }

    pub(crate) fn server(&self) -> &str {
        &self.inner.server
    }

    fn url(&self, kind: Kind, digest: &Digest) -> String {
        layout::url(&self.inner.base, kind, digest)
    }

    pub(crate) async fn get_action_result(
        &self,
        key: &Digest,
    ) -> Result<Option<reapi::ActionResult>, RemoteError> {
        let what = format!("action result {key}");
        let request = self
            .inner
            .client
            .get(self.url(Kind::Ac, key))
            .timeout(self.inner.timeout);
        let response = self.send(request, &what).await?;
        match response.status() {
            StatusCode::NOT_FOUND | StatusCode::NO_CONTENT => return Ok(None),
            s if s.is_success() => {}
            _ => return Err(self.status_error(response, &what).await),
        }
        let body = self
            .bounded_body(response, ACTION_RESULT_LIMIT, &what)
            .await?;
        let result =
            prost::Message::decode(body.as_slice()).map_err(|e| RemoteError::Protocol {
                server: self.server().to_string(),
                what: what.clone(),
                reason: format!("the body is no ActionResult: {e}"),
            })?;
        Ok(Some(result))
    }

    pub(crate) async fn update_action_result(
        &self,
        key: &Digest,
        result: &reapi::ActionResult,
    ) -> Result<(), RemoteError> {
        let what = format!("storing action result {key}");
        let request = self
            .inner
            .client
            .put(self.url(Kind::Ac, key))
            .header(CONTENT_TYPE, "application/octet-stream")
            .timeout(self.inner.timeout)
            .body(prost::Message::encode_to_vec(result));
        let response = self.send(request, &what).await?;
        self.expect_success(response, &what).await
    }

    pub(crate) async fn find_missing(
        &self,
        digests: &[Digest],
    ) -> Result<Vec<Digest>, RemoteError> {
        let unique = super::dedup(digests);
        let present: Vec<bool> =
            // Owned digests: a closure over `&Digest` would make this future
            // not `Send` for every lifetime, and callers spawn it.
            futures_util::stream::iter(unique.iter().copied().map(|d| async move {
                self.has_blob(&d).await
            }))
                .buffered(CONCURRENCY)
                .try_collect()
                .await?;
        Ok(unique
            .into_iter()
            .zip(present)
            .filter_map(|(d, present)| (!present).then_some(d))
            .collect())
    }

    /// A blob whose stored length differs from its digest's counts as
    /// missing, so a truncated copy gets replaced.
    async fn has_blob(&self, digest: &Digest) -> Result<bool, RemoteError> {
        let what = format!("looking up blob {digest}");
        let request = self
            .inner
            .client
            .head(self.url(Kind::Cas, digest))
            .timeout(self.inner.timeout);
        let response = self.send(request, &what).await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => {
                let length = response
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                Ok(length.is_none_or(|n| n == digest.size_bytes))
            }
            _ => Err(self.status_error(response, &what).await),
        }
    }

    pub(crate) async fn download(
        &self,
        function: DigestFunction,
        digest: &Digest,
        cas: &Cas,
    ) -> Result<(), RemoteError> {
        blob_io::check_function(cas, function)?;
        if cas.contains(digest) {
            return Ok(());
        }
        let what = format!("blob {digest}");
        let request = self.inner.client.get(self.url(Kind::Cas, digest));
        let mut response = self.send(request, &what).await?;
        match response.status() {
            StatusCode::NOT_FOUND | StatusCode::NO_CONTENT => {
                return Err(RemoteError::NotFound {
                    server: self.server().to_string(),
                    what,
                });
            }
            s if s.is_success() => {}
            _ => return Err(self.status_error(response, &what).await),
        }
        let mut incoming = Incoming::start(cas, *digest, self.server());
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => incoming.push(chunk).await?,
                Ok(None) => break,
                Err(e) => return Err(self.transport_error(&e, &what)),
            }
        }
        incoming.finish().await
    }

    pub(crate) async fn download_many(
        &self,
        function: DigestFunction,
        digests: &[Digest],
        cas: &Cas,
    ) -> Result<(), RemoteError> {
        futures_util::stream::iter(super::dedup(digests))
            .map(|d| async move { self.download(function, &d, cas).await })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    pub(crate) async fn upload(
        &self,
        function: DigestFunction,
        digest: &Digest,
        cas: &Cas,
    ) -> Result<(), RemoteError> {
        blob_io::check_function(cas, function)?;
        let what = format!("storing blob {digest}");
        let request = self
            .inner
            .client
            .put(self.url(Kind::Cas, digest))
            .header(CONTENT_TYPE, "application/octet-stream");
        if digest.size_bytes <= SMALL_BLOB {
            let bytes = blob_io::read_verified(cas, *digest).await?;
            let response = self
                .send(request.timeout(self.inner.timeout).body(bytes), &what)
                .await?;
            return self.expect_success(response, &what).await;
        }
        let outgoing = Outgoing::open(cas, *digest).await?;
        let failure = outgoing.failure();
        let progress = Progress::new();
        let request = request
            .header(CONTENT_LENGTH, digest.size_bytes)
            .body(body_of(outgoing, progress.clone()));
        let sent = stall::watch(self.inner.timeout, &progress, self.send(request, &what)).await;
        // A local blob found corrupt cut the body short; that is the failure
        // to report, whatever the server made of the truncated request.
        if let Some(e) = failure.take() {
            return Err(RemoteError::Store(e));
        }
        let response = match sent {
            Some(result) => result?,
            None => return Err(self.stalled(&what)),
        };
        self.expect_success(response, &what).await
    }

    pub(crate) async fn upload_many(
        &self,
        function: DigestFunction,
        digests: &[Digest],
        cas: &Cas,
    ) -> Result<(), RemoteError> {
        futures_util::stream::iter(super::dedup(digests))
            .map(|d| async move { self.upload(function, &d, cas).await })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Response, RemoteError> {
        request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, what))
    }

    async fn expect_success(&self, response: Response, what: &str) -> Result<(), RemoteError> {
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(response, what).await)
        }
    }

    async fn bounded_body(
        &self,
        mut response: Response,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, RemoteError> {
        let too_large = || RemoteError::Protocol {
            server: self.server().to_string(),
            what: what.to_string(),
            reason: format!("the body is larger than {limit} bytes"),
        };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(&e, what))?
        {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// An unexpected status, with the start of the server's explanation.
    async fn status_error(&self, mut response: Response, what: &str) -> RemoteError {
        let status = response.status();
        let mut text = Vec::new();
        while text.len() < ERROR_BODY_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => text.extend_from_slice(&chunk),
                _ => break,
            }
        }
        text.truncate(ERROR_BODY_LIMIT);
        let body = server_text(&String::from_utf8_lossy(&text));
        let reason = if body.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {body}")
        };
        let server = self.server().to_string();
        let what = what.to_string();
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            RemoteError::Unavailable {
                server,
                what,
                reason,
            }
        } else if status == StatusCode::NOT_FOUND {
            RemoteError::NotFound { server, what }
        } else {
            RemoteError::Refused {
                server,
                what,
                reason,
            }
        }
    }

    fn transport_error(&self, e: &reqwest::Error, what: &str) -> RemoteError {
        // reqwest's own text repeats the URL; its sources say what happened.
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else if e.is_body() || e.is_decode() {
            "the transfer broke off"
        } else {
            "the request failed"
        };
        let reason = match std::error::Error::source(e) {
            Some(source) => format!("{kind}: {}", chain(source)),
            None => kind.to_string(),
        };
        if e.is_builder() {
            RemoteError::config(format!("{what} at {}: {reason}", self.server()))
        } else {
            RemoteError::Unavailable {
                server: self.server().to_string(),
                what: what.to_string(),
                reason,
            }
        }
    }

    fn stalled(&self, what: &str) -> RemoteError {
        RemoteError::Unavailable {
            server: self.server().to_string(),
            what: what.to_string(),
            reason: format!("no progress for {:?}", self.inner.timeout),
        }
    }
}

/// A request body streaming `outgoing`'s chunks, each one counted as
/// progress; a corrupt blob ends it with an error, which aborts the request.
fn body_of(outgoing: Outgoing, progress: Progress) -> reqwest::Body {
    let chunks = futures_util::stream::unfold(Some(outgoing), move |state| {
        let progress = progress.clone();
        async move {
            let mut outgoing = state?;
            progress.tick();
            match outgoing.next().await {
                Some(chunk) if chunk.last => Some((Ok(chunk.data), None)),
                Some(chunk) => Some((Ok(chunk.data), Some(outgoing))),
                None => {
                    let error = std::io::Error::other("the local blob is unreadable or corrupt");
                    Some((Err(error), None))
                }
            }
        }
    });
    reqwest::Body::wrap_stream(chunks)
}
