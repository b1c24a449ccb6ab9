//! What a remote cache URL names: the protocol, where to connect, and the
//! form of the server shown in messages.

use reqwest::Url;

use super::RemoteError;

/// A parsed remote cache URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// Bazel's HTTP cache protocol below `base` (no trailing `/`; user info,
    /// if any, kept for reqwest to turn into basic authentication).
    Http { base: String, shown: String },
    /// REAPI over gRPC: `origin` is `http(s)://host:port` for tonic.
    Grpc {
        origin: String,
        tls: bool,
        instance: String,
        shown: String,
    },
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Endpoint, RemoteError> {
        // The URL itself is never repeated in these errors: it may carry a
        // password.
        let parsed = Url::parse(url)
            .map_err(|e| RemoteError::config(format!("the URL does not parse: {e}")))?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(RemoteError::config(
                "the URL may not have a query or a fragment",
            ));
        }
        let host = match parsed.host_str() {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => return Err(RemoteError::config("the URL has no host")),
        };
        let path = parsed.path().trim_matches('/').to_string();
        let scheme = parsed.scheme().to_ascii_lowercase();
        match scheme.as_str() {
            "http" | "https" => {
                let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
                let slash_path = if path.is_empty() {
                    String::new()
                } else {
                    format!("/{path}")
                };
                Ok(Endpoint::Http {
                    base: parsed.as_str().trim_end_matches('/').to_string(),
                    shown: format!("{scheme}://{host}{port}{slash_path}"),
                })
            }
            "grpc" | "grpcs" => {
                if !parsed.username().is_empty() || parsed.password().is_some() {
                    return Err(RemoteError::config(
                        "a grpc URL cannot carry credentials: use a bearer token or a header",
                    ));
                }
                let tls = scheme == "grpcs";
                let port = parsed.port().unwrap_or(if tls { 443 } else { 80 });
                // An IPv6 host keeps its brackets in host_str.
                let http = if tls { "https" } else { "http" };
                let shown = if path.is_empty() {
                    format!("{scheme}://{host}:{port}")
                } else {
                    format!("{scheme}://{host}:{port}/{path}")
                };
                Ok(Endpoint::Grpc {
                    origin: format!("{http}://{host}:{port}"),
                    tls,
                    instance: path,
                    shown,
                })
            }
            other => Err(RemoteError::config(format!(
                "unknown URL scheme `{other}` (expected grpc, grpcs, http or https)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_keep_their_path_as_a_prefix_and_hide_user_info() {
        let e = Endpoint::parse("https://ci:s3cret@cache.example:8443/team/a/").unwrap();
        assert_eq!(
            e,
            Endpoint::Http {
                base: "https://ci:s3cret@cache.example:8443/team/a".to_string(),
                shown: "https://cache.example:8443/team/a".to_string(),
            }
        );
        let e = Endpoint::parse("http://127.0.0.1:9090").unwrap();
        assert_eq!(
            e,
            Endpoint::Http {
                base: "http://127.0.0.1:9090".to_string(),
                shown: "http://127.0.0.1:9090".to_string(),
            }
        );
    }

    #[test]
    fn grpc_urls_name_an_instance_and_a_default_port() {
        let e = Endpoint::parse("grpcs://remote.example/ci/main").unwrap();
        assert_eq!(
            e,
            Endpoint::Grpc {
                origin: "https://remote.example:443".to_string(),
                tls: true,
                instance: "ci/main".to_string(),
                shown: "grpcs://remote.example:443/ci/main".to_string(),
            }
        );
        let e = Endpoint::parse("grpc://[::1]:8980").unwrap();
        assert_eq!(
            e,
            Endpoint::Grpc {
                origin: "http://[::1]:8980".to_string(),
                tls: false,
                instance: String::new(),
                shown: "grpc://[::1]:8980".to_string(),
            }
        );
    }

    #[test]
    fn bad_remote_urls_are_refused_without_repeating_them() {
        for url in [
            "ftp://host/x",
            "grpc://user:pw@host:1",
            "https://host/x?token=pw",
            "not a url pw",
        ] {
            let err = Endpoint::parse(url).unwrap_err();
            assert!(matches!(err, RemoteError::Config { .. }), "{url}: {err}");
            assert!(!err.to_string().contains("pw"), "{url}: {err}");
        }
    }
}
