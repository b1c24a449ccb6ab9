//! `WWW-Authenticate` challenges (RFC 7235) as registries send them:
//! `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.

use std::collections::BTreeMap;

/// One challenge: the scheme, lower-cased, and its parameters (names
/// lower-cased, values unquoted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses a header value that may hold several challenges. Malformed parts
/// end the parse; what was understood before them is kept.
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    loop {
        p.skip(|b| b == b' ' || b == b'\t' || b == b',');
        let scheme = p.token();
        if scheme.is_empty() {
            break;
        }
        let mut params = BTreeMap::new();
        loop {
            p.skip(|b| b == b' ' || b == b'\t');
            let save = p.i;
            let name = p.token();
            p.skip(|b| b == b' ' || b == b'\t');
            if name.is_empty() || !p.eat(b'=') {
                // Not a parameter: the start of the next challenge (or junk).
                p.i = save;
                break;
            }
            p.skip(|b| b == b' ' || b == b'\t');
            let value = if p.eat(b'"') {
                match p.quoted() {
                    Some(v) => v,
                    None => {
                        out.push(Challenge {
                            scheme: scheme.to_ascii_lowercase(),
                            params,
                        });
                        return out;
                    }
                }
            } else {
                p.token()
            };
            params.insert(name.to_ascii_lowercase(), value);
            p.skip(|b| b == b' ' || b == b'\t');
            if !p.eat(b',') {
                break;
            }
        }
        out.push(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        });
        let before = p.i;
        p.skip(|b| b == b' ' || b == b'\t' || b == b',');
        if p.i == before && p.i < p.s.len() && !is_tchar(p.s[p.i]) {
            break;
        }
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b)
}

impl Parser<'_> {
    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.i < self.s.len() && f(self.s[self.i]) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn token(&mut self) -> String {
        let start = self.i;
        self.skip(is_tchar);
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    /// After the opening quote: the value up to the closing quote, with
    /// `\x` escapes resolved; `None` when the quote is never closed.
    fn quoted(&mut self) -> Option<String> {
        let mut v = Vec::new();
        while let Some(&b) = self.s.get(self.i) {
            self.i += 1;
            match b {
                b'"' => return Some(String::from_utf8_lossy(&v).into_owned()),
                b'\\' => {
                    if let Some(&n) = self.s.get(self.i) {
                        v.push(n);
                        self.i += 1;
                    }
                }
                _ => v.push(b),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_realm_service_scope() {
        let c = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/alpine:pull"));
    }

    #[test]
    fn basic_and_several_challenges() {
        let c = parse(r#"Basic realm="strata-test""#);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("strata-test"));

        let c = parse(r#"Basic realm="a, b", Bearer realm="http://x/token", error=invalid_token"#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].param("realm"), Some("a, b"));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("http://x/token"));
        assert_eq!(c[1].param("error"), Some("invalid_token"));
    }

    #[test]
    fn escapes_and_spacing() {
        let c = parse(r#"  BEARER  Realm = "a\"b" ,  SCOPE="x""#);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("a\"b"));
        assert_eq!(c[0].param("scope"), Some("x"));
    }

    #[test]
    fn malformed_input_does_not_panic() {
        for h in [
            "",
            ",",
            "Bearer",
            "Bearer realm",
            "Bearer realm=",
            "Bearer realm=\"open",
            "Bearer realm=\"a\\",
            "=\"x\"",
            "\u{0}\u{ff}",
            "Bearer ,,, realm=\"x\"",
            "Bearer realm=\"x\" junk\"",
            "é realm=x",
        ] {
            let _ = parse(h);
        }
        assert_eq!(parse("Bearer realm=\"open")[0].scheme, "bearer");
    }
}
