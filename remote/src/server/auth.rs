//! Bearer tokens: who may read and who may write.
//!
//! Tokens are read from files or the environment, never from the command
//! line, where any user of the machine could see them in `ps`. Only their
//! BLAKE3 hashes are kept, and those are compared in constant time, so the
//! time a refusal takes says nothing about how much of a guess was right.

use std::fmt;
use std::path::Path;

/// Environment variable holding the read token when no file is given.
pub const READ_TOKEN_ENV: &str = "STRATA_CACHE_READ_TOKEN";
/// Environment variable holding the write token when no file is given.
pub const WRITE_TOKEN_ENV: &str = "STRATA_CACHE_WRITE_TOKEN";

/// Longest token accepted; a header line of a few KiB is already unusual.
const MAX_TOKEN_LEN: usize = 4096;

/// What a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No token, or one the server does not know: 401.
    Unauthenticated,
    /// A read token used to write: 403.
    ReadOnly,
}

/// The configured tokens. `Debug` shows only whether each is set.
#[derive(Clone, Default)]
pub struct Tokens {
    read: Option<blake3::Hash>,
    write: Option<blake3::Hash>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("read", &self.read.is_some())
            .field("write", &self.write.is_some())
            .finish()
    }
}

impl Tokens {
    pub fn new(read: Option<&str>, write: Option<&str>) -> Tokens {
        let hash = |t: &str| blake3::hash(t.as_bytes());
        Tokens {
            read: read.map(hash),
            write: write.map(hash),
        }
    }

    /// Tokens from `--read-token-file`/`--write-token-file`, else from
    /// [`READ_TOKEN_ENV`]/[`WRITE_TOKEN_ENV`]. The error never contains a
    /// token.
    pub fn load(read_file: Option<&Path>, write_file: Option<&Path>) -> Result<Tokens, String> {
        let read = load_one(read_file, READ_TOKEN_ENV)?;
        let write = load_one(write_file, WRITE_TOKEN_ENV)?;
        Ok(Tokens::new(read.as_deref(), write.as_deref()))
    }

    pub fn is_open(&self) -> bool {
        self.read.is_none() && self.write.is_none()
    }

    pub fn has_read(&self) -> bool {
        self.read.is_some()
    }

    pub fn has_write(&self) -> bool {
        self.write.is_some()
    }

    /// Decides a request from its `Authorization` header.
    ///
    /// Reads are open unless a read token is set; the write token also
    /// reads. Without a write token, whoever may read may write, so a
    /// server with only a read token is closed to strangers both ways.
    pub fn check(&self, authorization: Option<&[u8]>, access: Access) -> Result<(), Denied> {
        let presented = authorization.and_then(bearer).map(blake3::hash);
        // `blake3::Hash` compares in constant time.
        let is = |t: Option<blake3::Hash>| matches!((t, presented), (Some(t), Some(p)) if t == p);
        let can_read = self.read.is_none() || is(self.read) || is(self.write);
        match access {
            Access::Read if can_read => Ok(()),
            Access::Read => Err(Denied::Unauthenticated),
            Access::Write => {
                let can_write = if self.write.is_some() {
                    is(self.write)
                } else {
                    can_read
                };
                if can_write {
                    Ok(())
                } else if is(self.read) {
                    Err(Denied::ReadOnly)
                } else {
                    Err(Denied::Unauthenticated)
                }
            }
        }
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive).
fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn load_one(file: Option<&Path>, env: &str) -> Result<Option<String>, String> {
    let (text, origin) = match file {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => (bytes, path.display().to_string()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        },
        None => match std::env::var_os(env) {
            Some(v) => (v.into_encoded_bytes(), format!("${env}")),
            None => return Ok(None),
        },
    };
    // Files usually end with a newline that is not part of the token.
    let token = text.trim_ascii();
    if token.is_empty() {
        return Err(format!("the token in {origin} is empty"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "the token in {origin} is longer than {MAX_TOKEN_LEN} bytes"
        ));
    }
    // A token must fit in a header value as clients send it.
    if !token.iter().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the token in {origin} must be printable ASCII without spaces"
        ));
    }
    Ok(Some(String::from_utf8_lossy(token).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &[u8] = b"Bearer r-token";
    const W: &[u8] = b"bearer w-token";

    #[test]
    fn without_tokens_everything_is_open() {
        let t = Tokens::new(None, None);
        assert_eq!(t.check(None, Access::Read), Ok(()));
        assert_eq!(t.check(None, Access::Write), Ok(()));
        assert_eq!(t.check(Some(b"Bearer junk"), Access::Write), Ok(()));
    }

    #[test]
    fn a_read_token_closes_reads_and_the_write_token_reads_too() {
        let t = Tokens::new(Some("r-token"), Some("w-token"));
        assert_eq!(t.check(None, Access::Read), Err(Denied::Unauthenticated));
        assert_eq!(
            t.check(Some(b"Bearer r-tokem"), Access::Read),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            t.check(Some(b"Basic r-token"), Access::Read),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(t.check(Some(R), Access::Read), Ok(()));
        assert_eq!(t.check(Some(W), Access::Read), Ok(()));
        assert_eq!(t.check(Some(R), Access::Write), Err(Denied::ReadOnly));
        assert_eq!(t.check(Some(W), Access::Write), Ok(()));
        assert_eq!(t.check(None, Access::Write), Err(Denied::Unauthenticated));
    }

    #[test]
    fn a_write_token_alone_leaves_reads_open() {
        let t = Tokens::new(None, Some("w-token"));
        assert_eq!(t.check(None, Access::Read), Ok(()));
        assert_eq!(t.check(None, Access::Write), Err(Denied::Unauthenticated));
        assert_eq!(t.check(Some(W), Access::Write), Ok(()));
    }

    #[test]
    fn a_read_token_alone_also_writes() {
        let t = Tokens::new(Some("r-token"), None);
        assert_eq!(t.check(Some(R), Access::Write), Ok(()));
        assert_eq!(t.check(None, Access::Write), Err(Denied::Unauthenticated));
    }

    #[test]
    fn debug_never_shows_a_token() {
        let t = Tokens::new(Some("r-token"), Some("w-token"));
        assert!(!format!("{t:?}").contains("token\""));
        assert!(!format!("{t:?}").contains("r-token"));
    }

    #[test]
    fn token_files_are_trimmed_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("t");
        std::fs::write(&f, "s3cret\n").unwrap();
        let t = Tokens::load(Some(&f), Some(&f)).unwrap();
        assert_eq!(t.check(Some(b"Bearer s3cret"), Access::Write), Ok(()));
        std::fs::write(&f, "\n").unwrap();
        assert!(Tokens::load(Some(&f), None).unwrap_err().contains("empty"));
        std::fs::write(&f, "two words").unwrap();
        let e = Tokens::load(Some(&f), None).unwrap_err();
        assert!(!e.contains("two words"), "{e}");
        assert!(Tokens::load(Some(&d.path().join("absent")), None).is_err());
    }
}
