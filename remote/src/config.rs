//! Where the remote cache is and how to talk to it: `remote_cache:` in the
//! workspace's `strata.yaml`, overridden by `--remote-cache`,
//! `--remote-upload` and `--sign-key`. Credentials (a bearer token, extra
//! headers) come from environment variables or files, never from the
//! command line, where other users could read them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::RemoteConfig;
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;
use strata_store::DigestFunction;

use crate::sign::{Signer, parse_public_key};

/// The workspace configuration file, beside the root BUILD.yaml.
pub const FILE: &str = "strata.yaml";
/// The bearer token, when `token_file` is not given.
pub const TOKEN_ENV: &str = "STRATA_REMOTE_TOKEN";
/// Extra headers, one `Name: value` per line.
pub const HEADERS_ENV: &str = "STRATA_REMOTE_HEADERS";

/// Remote options given on the command line.
#[derive(Clone, Default)]
pub struct RemoteCli {
    pub url: Option<String>,
    pub upload: Option<bool>,
    pub sign_key: Option<PathBuf>,
}

/// Shows the URL without its user info, which is a credential.
impl std::fmt::Debug for RemoteCli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCli")
            .field(
                "url",
                &self.url.as_deref().map(crate::client::without_credentials),
            )
            .field("upload", &self.upload)
            .field("sign_key", &self.sign_key)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkspaceConfig {
    #[serde(default)]
    remote_cache: Option<RawRemote>,
    #[serde(default)]
    remote_executor: Option<RawExecutor>,
}

/// `remote_executor:` is a URL, or a map with the URL and more.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawExecutor {
    Url(String),
    Full(RawExecutorFields),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExecutorFields {
    url: String,
    #[serde(default)]
    remote_only: Option<bool>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
}

/// Remote execution options given on the command line.
#[derive(Clone, Debug, Default)]
pub struct ExecutorCli {
    /// `--remote-executor URL`.
    pub url: Option<String>,
    /// `--remote-only`: fail rather than build locally when the service
    /// cannot be used.
    pub remote_only: bool,
}

/// Where the remote execution service is, and what to do without it.
#[derive(Debug)]
pub struct ExecutorSettings {
    /// Credentials as the remote cache's: `$STRATA_REMOTE_TOKEN`,
    /// `$STRATA_REMOTE_HEADERS`.
    pub config: RemoteConfig,
    pub remote_only: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemote {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    upload: Option<bool>,
    /// For HTTP caches, which cannot tell: `sha256` (bazel-remote) or `blake3`.
    #[serde(default)]
    digest_function: Option<String>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    headers_file: Option<PathBuf>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
    #[serde(default)]
    concurrency: Option<usize>,
    #[serde(default)]
    trusted_keys: Vec<String>,
    #[serde(default)]
    sign_key_file: Option<PathBuf>,
}

/// Everything the build needs to use a remote cache.
pub struct RemoteSettings {
    pub config: RemoteConfig,
    pub upload: bool,
    /// Set for HTTP caches; gRPC caches are asked (GetCapabilities).
    pub digest_function: Option<DigestFunction>,
    pub signer: Option<Signer>,
    pub trusted_keys: Vec<VerifyingKey>,
    /// Transfers in flight at once.
    pub concurrency: usize,
}

impl RemoteSettings {
    pub fn is_http(&self) -> bool {
        self.config.url.starts_with("http://") || self.config.url.starts_with("https://")
    }
}

/// Relative paths in the file are relative to its folder; `~/` is $HOME.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    base.join(p)
}

fn headers(text: &str, origin: &str) -> Result<Vec<(String, String)>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l
                .split_once(':')
                .ok_or_else(|| format!("{origin}: a header line is not `Name: value`"))?;
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(format!("{origin}: `{name}` is not a header name"));
            }
            Ok((name.to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect()
}

/// The remote execution settings of the workspace in `root`, if a service
/// is configured (`remote_executor:` in `strata.yaml`, or
/// `--remote-executor`).
pub fn executor_settings(
    root: &Path,
    cli: &ExecutorCli,
) -> Result<Option<ExecutorSettings>, String> {
    let path = root.join(FILE);
    let file = workspace_config(&path)?;
    let (url, remote_only, timeout) = match (&cli.url, file.remote_executor) {
        (Some(url), raw) => {
            let (remote_only, timeout) = match raw {
                Some(RawExecutor::Full(f)) => (f.remote_only, f.timeout_seconds),
                _ => (None, None),
            };
            (url.clone(), remote_only, timeout)
        }
        (None, Some(RawExecutor::Url(url))) => (url, None, None),
        (None, Some(RawExecutor::Full(f))) => (f.url, f.remote_only, f.timeout_seconds),
        (None, None) if cli.remote_only => {
            return Err(
                "--remote-only needs a remote executor: --remote-executor URL, or `remote_executor:` in strata.yaml"
                    .into(),
            );
        }
        (None, None) => return Ok(None),
    };
    if !url.starts_with("grpc://") && !url.starts_with("grpcs://") {
        return Err(format!(
            "`{}` is not a remote execution service: use grpc://HOST:PORT[/INSTANCE] or grpcs://",
            crate::client::without_credentials(&url)
        ));
    }
    let mut config = RemoteConfig::new(url);
    config.timeout = Duration::from_secs(timeout.unwrap_or(10).max(1));
    if let Ok(t) = std::env::var(TOKEN_ENV)
        && !t.trim().is_empty()
    {
        config.bearer_token = Some(t.trim().to_string());
    }
    if let Ok(text) = std::env::var(HEADERS_ENV) {
        config.headers.extend(headers(&text, HEADERS_ENV)?);
    }
    Ok(Some(ExecutorSettings {
        config,
        remote_only: cli.remote_only || remote_only.unwrap_or(false),
    }))
}

fn workspace_config(path: &Path) -> Result<WorkspaceConfig, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            strata_load::settings_from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(WorkspaceConfig::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The remote settings of the workspace in `root`, if a remote is
/// configured (in `strata.yaml` or with `--remote-cache`).
pub fn settings(root: &Path, cli: &RemoteCli) -> Result<Option<RemoteSettings>, String> {
    let path = root.join(FILE);
    let file = workspace_config(&path)?;
    let raw = file.remote_cache.unwrap_or_default();
    let Some(url) = cli.url.clone().or(raw.url.clone()) else {
        return Ok(None);
    };
    let scheme_ok = ["grpc://", "grpcs://", "http://", "https://"]
        .iter()
        .any(|s| url.starts_with(s));
    if !scheme_ok {
        return Err(format!(
            "`{}` is not a remote cache address: use grpc://, grpcs://, http:// or https://",
            crate::client::without_credentials(&url)
        ));
    }
    let bearer_token = match (&raw.token_file, std::env::var(TOKEN_ENV)) {
        (Some(f), _) => {
            let f = resolve(root, f);
            let t = std::fs::read_to_string(&f)
                .map_err(|e| format!("cannot read the token file {}: {e}", f.display()))?;
            Some(t.trim().to_string())
        }
        (None, Ok(t)) if !t.trim().is_empty() => Some(t.trim().to_string()),
        _ => None,
    };
    let mut header_list = Vec::new();
    if let Some(f) = &raw.headers_file {
        let f = resolve(root, f);
        let text = std::fs::read_to_string(&f)
            .map_err(|e| format!("cannot read the headers file {}: {e}", f.display()))?;
        header_list.extend(headers(&text, &f.display().to_string())?);
    }
    if let Ok(text) = std::env::var(HEADERS_ENV) {
        header_list.extend(headers(&text, HEADERS_ENV)?);
    }
    let digest_function = match raw.digest_function.as_deref() {
        None => None,
        Some(f) => Some(
            f.parse::<DigestFunction>()
                .map_err(|e| format!("{}: remote_cache.digest_function: {e}", path.display()))?,
        ),
    };
    let trusted_keys = raw
        .trusted_keys
        .iter()
        .map(|k| parse_public_key(k).map_err(|e| format!("{}: trusted_keys: {e}", path.display())))
        .collect::<Result<Vec<_>, _>>()?;
    let sign_key = cli
        .sign_key
        .clone()
        .or_else(|| raw.sign_key_file.as_ref().map(|f| resolve(root, f)));
    let signer = sign_key.as_deref().map(Signer::from_file).transpose()?;
    let mut settings = RemoteSettings {
        config: RemoteConfig {
            url: url.clone(),
            headers: header_list,
            bearer_token,
            ca_file: raw.ca_file.as_ref().map(|f| resolve(root, f)),
            timeout: Duration::from_secs(raw.timeout_seconds.unwrap_or(10).max(1)),
        },
        upload: cli.upload.or(raw.upload).unwrap_or(true),
        digest_function,
        signer,
        trusted_keys,
        concurrency: raw.concurrency.unwrap_or(8).clamp(1, 256),
    };
    if settings.is_http() && settings.digest_function.is_none() {
        // The HTTP protocol cannot say; bazel-remote only speaks SHA-256.
        settings.digest_function = Some(DigestFunction::Sha256);
    }
    Ok(Some(settings))
}
