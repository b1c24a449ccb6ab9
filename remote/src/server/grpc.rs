//! What a gRPC client (Bazel's `--remote_cache=grpc://`, any REAPI client)
//! gets from this server, which speaks only Bazel's HTTP cache protocol: a
//! gRPC status UNIMPLEMENTED naming the URL to use instead, rather than a
//! reset connection it cannot explain.

use hyper::header::{self, HeaderValue};
use hyper::{Request, Response};

use super::body::{Body, empty};

/// gRPC's status code UNIMPLEMENTED.
const UNIMPLEMENTED: &str = "12";

/// Whether `req` is a gRPC call (gRPC always says so in its content type).
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A trailers-only gRPC answer: UNIMPLEMENTED, with the HTTP URL of this
/// server as the client addressed it.
pub fn refusal<B>(req: &Request<B>) -> Response<Body> {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "HOST:PORT".to_string());
    let message = format!(
        "strata cache serve speaks Bazel's HTTP cache protocol, not gRPC: use --remote_cache=http://{authority}"
    );
    let mut r = Response::new(empty());
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from_static(UNIMPLEMENTED));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(&message)) {
        headers.insert("grpc-message", value);
    }
    r
}

/// gRPC's encoding of `grpc-message`: bytes outside printable ASCII, and
/// `%` itself, as `%XX`. The authority comes from the client, so it may
/// hold anything.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_call_gets_unimplemented_with_the_http_url() {
        let req = Request::post(
            "http://127.0.0.1:9092/build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
        )
        .header(header::CONTENT_TYPE, "application/grpc+proto")
        .body(())
        .unwrap();
        assert!(is_grpc(&req));
        let r = refusal(&req);
        assert_eq!(r.status(), 200, "gRPC carries its status in headers");
        assert_eq!(r.headers()["grpc-status"], "12");
        assert_eq!(
            r.headers()["grpc-message"],
            "strata cache serve speaks Bazel's HTTP cache protocol, not gRPC: use --remote_cache=http://127.0.0.1:9092"
        );
        let plain = Request::get("/cas/00").body(()).unwrap();
        assert!(!is_grpc(&plain));
    }

    #[test]
    fn the_message_is_percent_encoded() {
        assert_eq!(percent_encode("a%b\u{e9}\n"), "a%25b%C3%A9%0A");
    }
}
