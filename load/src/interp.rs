//! `${var}` interpolation and `!ENV` variables.
//!
//! Values read from the environment are secrets: they reach the step, but
//! keys, records and messages only ever see a hash of them.

use std::collections::BTreeMap;

use strata_rules::Text;

/// A variable's value and, for `!ENV`, the environment variable it came from.
#[derive(Clone, Debug)]
pub struct Var {
    pub value: String,
    pub from_env: Option<String>,
    /// The values read from the environment inside `value` (see
    /// `Text::secrets`); empty for a plain variable and for an `!ENV`
    /// default, which is written in the file.
    pub secrets: Vec<String>,
}

/// Values shorter than this are not masked in logs: masking `1` or `on`
/// everywhere would garble every log, and a value this short is guessable
/// from its unsalted hash in the key anyway (README, Limitations).
pub const MIN_MASKED_LEN: usize = 4;

impl Var {
    pub fn plain(value: String) -> Var {
        Var {
            value,
            from_env: None,
            secrets: Vec::new(),
        }
    }

    /// A value read from the environment variable `name`.
    pub fn from_environment(name: String, value: String) -> Var {
        // A multi-line value (a key file) is also masked line by line: logs
        // are shown and streamed a line at a time.
        let secrets = std::iter::once(value.as_str())
            .chain(value.lines())
            .filter(|s| s.len() >= MIN_MASKED_LEN)
            .map(str::to_string)
            .collect();
        Var {
            value,
            from_env: Some(name),
            secrets,
        }
    }

    /// The value as a step receives it, and as keys and messages may show it.
    pub fn text(&self) -> Text {
        match &self.from_env {
            None => Text::plain(self.value.clone()),
            Some(name) => Text {
                secrets: self.secrets.clone(),
                actual: self.value.clone(),
                keyed: format!(
                    "«!ENV {name} blake3:{}»",
                    blake3::hash(self.value.as_bytes()).to_hex()
                ),
            },
        }
    }
}

/// The variables in scope, by name.
#[derive(Clone, Debug, Default)]
pub struct Vars {
    vars: BTreeMap<String, Var>,
}

/// A problem in one interpolated string, at a char offset inside it.
#[derive(Debug)]
pub struct InterpError {
    pub offset: usize,
    pub len: usize,
    pub message: String,
    pub help: String,
}

/// How `!ENV` names a variable: `NAME`, `${NAME}` or `${NAME:default}`.
#[derive(Debug, PartialEq, Eq)]
pub struct EnvSpec {
    pub name: String,
    pub default: Option<String>,
}

pub fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl EnvSpec {
    pub fn parse(spec: &str) -> Result<EnvSpec, String> {
        let spec = spec.trim();
        let inner = match spec.strip_prefix("${") {
            Some(rest) => rest
                .strip_suffix('}')
                .ok_or_else(|| format!("`{spec}` opens `${{` but does not close it"))?,
            None => spec,
        };
        let (name, default) = match inner.split_once(':') {
            Some((n, d)) => (n, Some(d.to_string())),
            None => (inner, None),
        };
        if !is_var_name(name) {
            return Err(format!("`{name}` is not an environment variable name"));
        }
        Ok(EnvSpec {
            name: name.to_string(),
            default,
        })
    }
}

impl Vars {
    pub fn insert(&mut self, name: String, var: Var) {
        self.vars.insert(name, var);
    }

    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }

    /// Expands `${name}` references. `$${` stands for a literal `${`; any other
    /// `$` is left for the shell.
    pub fn interpolate(&self, s: &str) -> Result<Text, InterpError> {
        // Most strings name no variable (`$${` contains `${` too): the text
        // as written, without walking it char by char.
        if !s.contains("${") {
            return Ok(Text::plain(s));
        }
        let mut out = Text::default();
        let chars: Vec<char> = s.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            if chars[i] == '$' && chars.get(i + 1) == Some(&'$') && chars.get(i + 2) == Some(&'{') {
                push(&mut out, "${");
                i += 3;
                continue;
            }
            if chars[i] == '$' && chars.get(i + 1) == Some(&'{') {
                let close = chars[i + 2..]
                    .iter()
                    .position(|c| *c == '}')
                    .map(|p| p + i + 2);
                let Some(close) = close else {
                    return Err(InterpError {
                        offset: i,
                        len: chars.len() - i,
                        message: "`${` is not closed by `}`".into(),
                        help: "write `${name}` to use a variable, or `$${` for a literal `${`"
                            .into(),
                    });
                };
                let name: String = chars[i + 2..close].iter().collect();
                if !is_var_name(&name) {
                    return Err(InterpError {
                        offset: i,
                        len: close + 1 - i,
                        message: format!("`${{{name}}}` is not a variable reference"),
                        help: "variable names are letters, digits and `_`; write `$${` for a literal `${`".into(),
                    });
                }
                let Some(var) = self.vars.get(&name) else {
                    let hint = crate::diag::did_you_mean(&name, self.names())
                        .map(|d| format!("{d} "))
                        .unwrap_or_default();
                    return Err(InterpError {
                        offset: i,
                        len: close + 1 - i,
                        message: format!("unknown variable `{name}`"),
                        help: format!(
                            "{hint}declare it under `vars:`, or pass it with `--var {name}=...`; to hand `${{{name}}}` to the shell, write `$${{{name}}}` or `${name}`"
                        ),
                    });
                };
                let t = var.text();
                out.actual.push_str(&t.actual);
                out.keyed.push_str(&t.keyed);
                out.secrets.extend(t.secrets);
                i = close + 1;
                continue;
            }
            out.actual.push(chars[i]);
            out.keyed.push(chars[i]);
            i += 1;
        }
        Ok(out)
    }
}

fn push(t: &mut Text, s: &str) {
    t.actual.push_str(s);
    t.keyed.push_str(s);
}

/// The variable names `text` uses as `${name}` (`$${` escapes one).
pub fn referenced_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        let escaped = rest[..at].ends_with('$');
        rest = &rest[at + 2..];
        let Some(close) = rest.find('}') else { break };
        let name = &rest[..close];
        if !escaped && is_var_name(name) {
            names.insert(name.to_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {

    #[test]
    fn names_used_in_a_text_are_found_but_not_escaped_ones() {
        let names = referenced_names("a ${arch} $${not} ${x:y} ${ok_2}${arch} ${");
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["arch".to_string(), "ok_2".to_string()]
        );
    }
    use super::*;

    fn vars() -> Vars {
        let mut v = Vars::default();
        v.insert(
            "greeting".into(),
            Var {
                value: "hello".into(),
                from_env: None,
                secrets: Vec::new(),
            },
        );
        v.insert(
            "token".into(),
            Var {
                value: "s3cr3t".into(),
                from_env: Some("TOKEN".into()),
                secrets: vec!["s3cr3t".into()],
            },
        );
        v
    }

    #[test]
    fn expands_vars_and_leaves_shell_syntax_alone() {
        let t = vars()
            .interpolate("echo ${greeting} $OUT $$ $${HOME}")
            .unwrap();
        assert_eq!(t.actual, "echo hello $OUT $$ ${HOME}");
        assert!(!t.has_secret());
    }

    #[test]
    fn a_text_without_references_is_kept_as_written() {
        for s in [
            "",
            "cat src/*.txt | cksum > $OUT/out.txt",
            "é $$ $ {x} $}{ \u{1F600}",
        ] {
            let t = vars().interpolate(s).unwrap();
            assert_eq!((t.actual.as_str(), t.keyed.as_str()), (s, s));
            assert!(t.secrets.is_empty());
        }
        let t = vars().interpolate("é ${greeting} ü").unwrap();
        assert_eq!(t.actual, "é hello ü");
    }

    #[test]
    fn secrets_are_hashed_in_the_keyed_form() {
        let t = vars().interpolate("x=${token}").unwrap();
        assert_eq!(t.actual, "x=s3cr3t");
        assert!(!t.keyed.contains("s3cr3t"));
        assert!(t.keyed.contains("TOKEN"));
    }

    #[test]
    fn unknown_and_malformed_references_point_at_themselves() {
        let e = vars().interpolate("ab ${greting} c").unwrap_err();
        assert_eq!((e.offset, e.len), (3, 10));
        assert!(e.help.contains("did you mean `greeting`"));
        let e = vars().interpolate("x ${oops").unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(vars().interpolate("${a b}").is_err());
    }

    #[test]
    fn env_specs() {
        assert_eq!(
            EnvSpec::parse("ARCH").unwrap(),
            EnvSpec {
                name: "ARCH".into(),
                default: None
            }
        );
        assert_eq!(
            EnvSpec::parse("${ARCH:x86_64}").unwrap(),
            EnvSpec {
                name: "ARCH".into(),
                default: Some("x86_64".into())
            }
        );
        assert!(EnvSpec::parse("${ARCH").is_err());
        assert!(EnvSpec::parse("1X").is_err());
    }
}
