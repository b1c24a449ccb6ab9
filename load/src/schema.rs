//! The raw shape of a BUILD.yaml file, as serde reads it. Every value keeps
//! its location so later checks can point at it.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_saphyr::{Spanned, Tagged};

use strata_rules::table::{self, COMMON_FIELDS};

use super::tree::RawNode;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub vars: Option<Pairs<Spanned<Tagged<String>>>>,
    #[serde(default)]
    pub targets: Option<Pairs<Spanned<RawTarget>>>,
    #[serde(default)]
    pub include: Option<Vec<Spanned<String>>>,
    /// Root file only: where outputs are materialized (`--out-dir` wins).
    #[serde(default)]
    pub out_dir: Option<Spanned<String>>,
    /// Root file only: what a command builds when it names no target.
    #[serde(default)]
    pub default: Option<Spanned<Vec<Spanned<String>>>>,
    /// Root file only: the values each listed variable may take, which
    /// `--matrix VAR` builds in one invocation.
    #[serde(default)]
    pub matrix: Option<Spanned<RawMatrix>>,
}

/// `matrix:`: each variable with the list of its values.
pub type RawMatrix = Pairs<Spanned<Vec<Spanned<String>>>>;

/// Fields of every rule kind; which ones a rule takes, and how it reads
/// them, is the rule table's (`strata_rules::table`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub rule: Spanned<String>,
    /// A condition (`true`, `false`, `A == B`, `A != B`) that keeps the
    /// target in the graph; any scalar, so `when: false` reads as written.
    #[serde(default)]
    pub when: Option<Spanned<serde_json::Value>>,
    #[serde(default)]
    pub srcs: Vec<Spanned<String>>,
    #[serde(default)]
    pub deps: Vec<Spanned<String>>,
    #[serde(default)]
    pub cmd: Option<Spanned<String>>,
    #[serde(default)]
    pub argv: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub env: Option<Pairs<Spanned<String>>>,
    #[serde(default)]
    pub outs: Vec<Spanned<String>>,
    #[serde(default)]
    pub network: Option<Spanned<bool>>,
    /// `run` on the host: the programs it uses, which key it.
    #[serde(default)]
    pub tools: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub output_digest: Option<Spanned<String>>,
    /// `run` in a container, `image-pull`: an image (target or pinned reference).
    #[serde(default)]
    pub image: Option<Spanned<String>>,
    #[serde(default)]
    pub user: Option<Spanned<String>>,
    #[serde(default)]
    pub caches: Option<Pairs<Spanned<String>>>,
    /// `run`: what the step may use of the machine.
    #[serde(default)]
    pub limits: Option<Spanned<RawLimits>>,
    /// `stage`: the ordered steps.
    #[serde(default)]
    pub steps: Option<Spanned<Vec<Spanned<RawStep>>>>,
    /// `image-pull`: names of environment variables holding credentials.
    #[serde(default)]
    pub auth: Option<Spanned<RawAuth>>,
    /// `docker-data-root`: the image targets to preload.
    #[serde(default)]
    pub images: Option<Spanned<Vec<Spanned<String>>>>,
    // Fields of built-in rules, read by the rule itself (see
    // `strata_rules::table`); kept generic here, with the place of every
    // value inside them. Named one by one (not one map of names) because
    // serde's refusal of an unknown field lists these names in this order,
    // and messages show that list; the test below holds them to the table.
    #[serde(default)]
    pub from: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub compression: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub level: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub name: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub prefix: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub strip_components: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub include: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub exclude: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub control: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub max_size: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub layers: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub components: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub remove: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub scripts: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub conffiles: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub version: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub startup: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub args: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub label: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub of: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub tag: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub base: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub platform: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub config: Option<Spanned<RawNode>>,
}

/// One step of a `stage`: a command (with the `run` fields that apply in
/// a container) or a `copy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    #[serde(default)]
    pub cmd: Option<Spanned<String>>,
    #[serde(default)]
    pub argv: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub env: Option<Pairs<Spanned<String>>>,
    #[serde(default)]
    pub srcs: Vec<Spanned<String>>,
    #[serde(default)]
    pub deps: Vec<Spanned<String>>,
    #[serde(default)]
    pub network: Option<Spanned<bool>>,
    #[serde(default)]
    pub user: Option<Spanned<String>>,
    #[serde(default)]
    pub workdir: Option<Spanned<String>>,
    #[serde(default)]
    pub caches: Option<Pairs<Spanned<String>>>,
    #[serde(default)]
    pub copy: Option<Spanned<String>>,
    #[serde(default)]
    pub to: Option<Spanned<String>>,
    #[serde(default)]
    pub mode: Option<Spanned<serde_json::Value>>,
    #[serde(default)]
    pub owner: Option<Spanned<String>>,
}

/// `limits:` of a `run` target; each value is checked by the loader, so a
/// bad one is reported at its own line and column.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    pub processes: Option<Spanned<serde_json::Value>>,
    #[serde(default)]
    pub memory: Option<Spanned<serde_json::Value>>,
}

/// Registry credentials, by the names of the environment variables that
/// hold them (never the values: BUILD.yaml is committed).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub username_env: Spanned<String>,
    pub password_env: Spanned<String>,
}

impl RawTarget {
    /// The built-in rule fields that are present, by name.
    pub fn builtin_fields(&self) -> Vec<(&'static str, &Spanned<RawNode>)> {
        [
            ("from", &self.from),
            ("compression", &self.compression),
            ("level", &self.level),
            ("name", &self.name),
            ("prefix", &self.prefix),
            ("strip_components", &self.strip_components),
            ("include", &self.include),
            ("exclude", &self.exclude),
            ("control", &self.control),
            ("max_size", &self.max_size),
            ("layers", &self.layers),
            ("components", &self.components),
            ("remove", &self.remove),
            ("scripts", &self.scripts),
            ("conffiles", &self.conffiles),
            ("version", &self.version),
            ("startup", &self.startup),
            ("args", &self.args),
            ("label", &self.label),
            ("of", &self.of),
            ("tag", &self.tag),
            ("base", &self.base),
            ("platform", &self.platform),
            ("config", &self.config),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.as_ref().map(|v| (name, v)))
        .collect()
    }

    /// The `run`-only fields that are present, with their locations.
    pub fn run_fields(&self) -> Vec<(&'static str, serde_saphyr::Location)> {
        let mut v = Vec::new();
        if let Some(x) = &self.cmd {
            v.push(("cmd", x.referenced));
        }
        if let Some(x) = &self.argv {
            v.push(("argv", x.referenced));
        }
        if let Some((k, _)) = self.env.as_ref().and_then(|x| x.0.first()) {
            v.push(("env", k.referenced));
        }
        if let Some(x) = self.outs.first() {
            v.push(("outs", x.referenced));
        }
        if let Some(x) = &self.network {
            v.push(("network", x.referenced));
        }
        if let Some(x) = &self.tools {
            v.push(("tools", x.referenced));
        }
        if let Some(x) = &self.output_digest {
            v.push(("output_digest", x.referenced));
        }
        if let Some(x) = &self.image {
            v.push(("image", x.referenced));
        }
        if let Some(x) = &self.user {
            v.push(("user", x.referenced));
        }
        if let Some((k, _)) = self.caches.as_ref().and_then(|x| x.0.first()) {
            v.push(("caches", k.referenced));
        }
        if let Some(x) = &self.limits {
            v.push(("limits", x.referenced));
        }
        if let Some(x) = &self.steps {
            v.push(("steps", x.referenced));
        }
        if let Some(x) = &self.auth {
            v.push(("auth", x.referenced));
        }
        if let Some(x) = &self.images {
            v.push(("images", x.referenced));
        }
        v
    }
}

/// The fields a target of `rule` takes, `rule:` and `when:` first; `None`
/// for a rule Strata does not know. Messages list these.
pub fn rule_fields(rule: &str) -> Option<Vec<&'static str>> {
    let own = table::rule(rule)?.field_names();
    let mut fields = COMMON_FIELDS.to_vec();
    fields.extend(own.into_iter().filter(|f| !COMMON_FIELDS.contains(f)));
    Some(fields)
}

/// A mapping read in document order with the location of every key, so
/// duplicate keys can be reported at both places.
#[derive(Debug)]
pub struct Pairs<V>(pub Vec<(Spanned<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Pairs<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PairsVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for PairsVisitor<V> {
            type Value = Pairs<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs<V>, A::Error> {
                let mut pairs = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    pairs.push(entry);
                }
                Ok(Pairs(pairs))
            }
        }
        d.deserialize_map(PairsVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use strata_rules::table::{FieldKind, RULES};

    use super::*;

    /// A target with every field of every rule (values need only parse).
    fn every_field() -> RawTarget {
        let names: BTreeSet<&str> = RULES.iter().flat_map(|r| r.field_names()).collect();
        let mut yaml = String::from("rule: run\n");
        for name in names {
            yaml.push_str(&match name {
                "env" | "caches" => format!("{name}: {{a: b}}\n"),
                "network" => format!("{name}: true\n"),
                "outs" | "argv" | "tools" | "images" => format!("{name}: [a]\n"),
                "limits" => format!("{name}: {{}}\n"),
                "steps" => format!("{name}: [{{cmd: a}}]\n"),
                "auth" => format!("{name}: {{username_env: U, password_env: P}}\n"),
                _ => format!("{name}: x\n"),
            });
        }
        serde_saphyr::from_str(&yaml).expect("every declared field has a place in RawTarget")
    }

    #[test]
    fn raw_target_holds_exactly_the_fields_the_rule_table_declares() {
        let raw = every_field();
        let declared: BTreeSet<&str> = RULES.iter().flat_map(|r| r.field_names()).collect();
        let builtin: BTreeSet<&str> = raw.builtin_fields().into_iter().map(|(f, _)| f).collect();
        let typed: BTreeSet<&str> = raw.run_fields().into_iter().map(|(f, _)| f).collect();
        assert_eq!(&builtin | &typed, declared);
        // And RawTarget has no field the table does not declare: serde's
        // refusal of an unknown one lists them all.
        let refused = serde_saphyr::from_str::<RawTarget>("rule: run\nno_such_field: 1\n")
            .unwrap_err()
            .to_string();
        let slots: BTreeSet<&str> = refused
            .lines()
            .next()
            .and_then(|l| l.split_once("expected one of "))
            .expect("serde lists the fields")
            .1
            .split(", ")
            .filter(|f| !COMMON_FIELDS.contains(f))
            .collect();
        assert_eq!(slots, declared);
        // Every field a rule reads from a generic value has a generic slot.
        for r in RULES {
            for f in r.fields.iter().filter(|f| f.kind != FieldKind::Typed) {
                assert!(builtin.contains(f.name), "{}.{}", r.name, f.name);
            }
        }
    }
}
