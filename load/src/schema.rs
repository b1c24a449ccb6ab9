//! The raw shape of a BUILD.yaml file, as serde reads it. Every value keeps
//! its location so later checks can point at it.

use std::fmt;
use std::marker::PhantomData;
use std::sync::LazyLock;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::{Spanned, Tagged};

use strata_rules::table::{self, COMMON_FIELDS, RULES};

use super::tree::RawNode;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub vars: Option<Pairs<Spanned<Tagged<String>>>>,
    #[serde(default)]
    pub targets: Option<Pairs<Spanned<Box<RawTarget>>>>,
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

/// A target as written. The fields the loader reads itself are typed
/// here; every other field a rule of the table declares (`strata_rules::table`)
/// is kept generic in [`RawTarget::fields`], so a rule's field is declared
/// in its `RULE` alone. Which fields a rule takes is the table's, checked
/// by the loader.
#[derive(Debug)]
pub struct RawTarget {
    pub rule: Spanned<String>,
    /// A condition (`true`, `false`, `A == B`, `A != B`) that keeps the
    /// target in the graph; any scalar, so `when: false` reads as written.
    pub when: Option<Spanned<serde_json::Value>>,
    pub srcs: Vec<Spanned<String>>,
    pub deps: Vec<Spanned<String>>,
    pub cmd: Option<Spanned<String>>,
    pub argv: Option<Spanned<Vec<Spanned<String>>>>,
    pub env: Option<Pairs<Spanned<String>>>,
    pub outs: Vec<Spanned<String>>,
    pub network: Option<Spanned<bool>>,
    /// `run`: stays on this machine when the build has a remote executor.
    pub local: Option<Spanned<bool>>,
    /// `run` on the host: the programs it uses, which key it.
    pub tools: Option<Spanned<Vec<Spanned<String>>>>,
    pub output_digest: Option<Spanned<String>>,
    /// `run` in a container, `image-pull`: an image (target or pinned reference).
    pub image: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub caches: Option<Pairs<Spanned<String>>>,
    /// `run`: what the step may use of the machine.
    pub limits: Option<Spanned<RawLimits>>,
    /// `stage`: the ordered steps.
    pub steps: Option<Spanned<Vec<Spanned<RawStep>>>>,
    /// `image-pull`: names of environment variables holding credentials.
    pub auth: Option<Spanned<RawAuth>>,
    /// `docker-data-root`: the image targets to preload.
    pub images: Option<Spanned<Vec<Spanned<String>>>>,
    /// The other fields present, in document order, by the name the table
    /// declares: values of any shape with the place of every value inside
    /// them (`components[4].chmod`), read by the rule itself, or by the
    /// loader for `from` and `platform` of the container rules.
    pub fields: Vec<(&'static str, Spanned<RawNode>)>,
}

/// The fields [`RawTarget`] types, in the order a refused field's message
/// lists them (the table's other fields follow).
const TYPED_FIELDS: &[&str] = &[
    "rule",
    "when",
    "srcs",
    "deps",
    "cmd",
    "argv",
    "env",
    "outs",
    "network",
    "local",
    "tools",
    "output_digest",
    "image",
    "user",
    "caches",
    "limits",
    "steps",
    "auth",
    "images",
];

/// Every field a target may have: the typed ones, then each other field
/// of the table once, in table order. serde's refusal of an unknown field
/// lists them (a target whose rule Strata does not know shows that list).
fn every_field() -> &'static [&'static str] {
    static EVERY: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        let mut names = TYPED_FIELDS.to_vec();
        for field in RULES.iter().flat_map(|r| r.fields) {
            if !names.contains(&field.name) {
                names.push(field.name);
            }
        }
        names
    });
    &EVERY
}

/// `name` as a rule of the table declares it, if one does.
fn declared(name: &str) -> Option<&'static str> {
    RULES
        .iter()
        .flat_map(|r| r.fields)
        .find(|f| f.name == name)
        .map(|f| f.name)
}

impl<'de> Deserialize<'de> for RawTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct("RawTarget", every_field(), RawTargetVisitor)
    }
}

struct RawTargetVisitor;

impl<'de> Visitor<'de> for RawTargetVisitor {
    type Value = RawTarget;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("struct RawTarget")
    }

    // As `#[derive(Deserialize)]` with `deny_unknown_fields` reads a
    // struct: a field given twice or unknown is refused where it stands,
    // and an optional field written `~` is absent.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawTarget, A::Error> {
        let mut rule = None;
        let (mut when, mut srcs, mut deps, mut cmd, mut argv) = (None, None, None, None, None);
        let (mut env, mut outs, mut network, mut tools) = (None, None, None, None);
        let mut local = None;
        let (mut output_digest, mut image, mut user, mut caches) = (None, None, None, None);
        let (mut limits, mut steps, mut auth, mut images) = (None, None, None, None);
        let mut fields: Vec<(&'static str, Option<Spanned<RawNode>>)> = Vec::new();
        while let Some(FieldName(key)) = map.next_key()? {
            let m = &mut map;
            match key.as_str() {
                "rule" => once(&mut rule, "rule", m)?,
                "when" => once(&mut when, "when", m)?,
                "srcs" => once(&mut srcs, "srcs", m)?,
                "deps" => once(&mut deps, "deps", m)?,
                "cmd" => once(&mut cmd, "cmd", m)?,
                "argv" => once(&mut argv, "argv", m)?,
                "env" => once(&mut env, "env", m)?,
                "outs" => once(&mut outs, "outs", m)?,
                "network" => once(&mut network, "network", m)?,
                "local" => once(&mut local, "local", m)?,
                "tools" => once(&mut tools, "tools", m)?,
                "output_digest" => once(&mut output_digest, "output_digest", m)?,
                "image" => once(&mut image, "image", m)?,
                "user" => once(&mut user, "user", m)?,
                "caches" => once(&mut caches, "caches", m)?,
                "limits" => once(&mut limits, "limits", m)?,
                "steps" => once(&mut steps, "steps", m)?,
                "auth" => once(&mut auth, "auth", m)?,
                "images" => once(&mut images, "images", m)?,
                other => {
                    let Some(name) = declared(other) else {
                        return Err(de::Error::unknown_field(other, every_field()));
                    };
                    if fields.iter().any(|(f, _)| *f == name) {
                        return Err(de::Error::duplicate_field(name));
                    }
                    fields.push((name, m.next_value()?));
                }
            }
        }
        Ok(RawTarget {
            rule: rule.ok_or_else(|| de::Error::missing_field("rule"))?,
            when: when.flatten(),
            srcs: srcs.unwrap_or_default(),
            deps: deps.unwrap_or_default(),
            cmd: cmd.flatten(),
            argv: argv.flatten(),
            env: env.flatten(),
            outs: outs.unwrap_or_default(),
            network: network.flatten(),
            local: local.flatten(),
            tools: tools.flatten(),
            output_digest: output_digest.flatten(),
            image: image.flatten(),
            user: user.flatten(),
            caches: caches.flatten(),
            limits: limits.flatten(),
            steps: steps.flatten(),
            auth: auth.flatten(),
            images: images.flatten(),
            fields: fields
                .into_iter()
                .filter_map(|(name, value)| Some((name, value?)))
                .collect(),
        })
    }
}

/// Reads the value of the field `name` into `slot`, refusing it if the
/// field was already given.
fn once<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
    slot: &mut Option<T>,
    name: &'static str,
    map: &mut A,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

/// A mapping key read as a field name (serde's identifier), as a derived
/// struct reads it.
struct FieldName(String);

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = FieldName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("field identifier")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldName, E> {
                Ok(FieldName(v.to_string()))
            }
        }
        d.deserialize_identifier(NameVisitor)
    }
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
    #[serde(default)]
    pub time: Option<Spanned<serde_json::Value>>,
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
    /// The generic fields present, by name, in document order.
    pub fn generic_fields(&self) -> impl Iterator<Item = (&'static str, &Spanned<RawNode>)> {
        self.fields.iter().map(|(name, value)| (*name, value))
    }

    /// The generic field `name`, if present.
    pub fn field(&self, name: &str) -> Option<&Spanned<RawNode>> {
        self.generic_fields()
            .find(|(f, _)| *f == name)
            .map(|(_, value)| value)
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
        if let Some(x) = &self.local {
            v.push(("local", x.referenced));
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
    use strata_rules::table::{Field, FieldKind};

    use super::*;

    /// Reads one target as the loader does: a repeated key reaches it.
    fn target(yaml: &str) -> Result<RawTarget, String> {
        let options = serde_saphyr::options! {
            with_snippet: false,
            duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        };
        serde_saphyr::from_str_with_options::<RawTarget>(yaml, options).map_err(|e| e.to_string())
    }

    fn at(value: &Spanned<RawNode>) -> (usize, usize) {
        let l = value.referenced;
        (l.line() as usize, l.column() as usize)
    }

    #[test]
    fn fields_of_the_table_keep_document_order_and_the_place_of_every_value() {
        let raw =
            target("rule: rootfs\nremove: [a]\ncomponents:\n  - {chmod: '0755'}\nsrcs: [x]\n")
                .unwrap();
        let names: Vec<&str> = raw.generic_fields().map(|(f, _)| f).collect();
        assert_eq!(names, ["remove", "components"]);
        assert_eq!(raw.srcs.len(), 1);
        let components = raw.field("components").unwrap();
        let RawNode::List(items) = &components.value else {
            panic!("{components:?}")
        };
        let RawNode::Map(entries) = &items[0].value else {
            panic!("{items:?}")
        };
        assert_eq!(entries[0].0.value, "chmod");
        assert_eq!(at(&entries[0].1), (4, 13));
        assert!(raw.field("from").is_none());
    }

    #[test]
    fn a_field_written_empty_is_absent_and_a_repeated_one_refused() {
        let raw = target("rule: image\nfrom: ~\ntag:\n").unwrap();
        assert_eq!(raw.generic_fields().count(), 0);
        let twice = target("rule: image\nfrom: ~\nfrom: a\n").unwrap_err();
        assert!(twice.starts_with("duplicate field `from`"), "{twice}");
        let twice = target("rule: run\ncmd: a\ncmd: b\n").unwrap_err();
        assert!(twice.starts_with("duplicate field `cmd`"), "{twice}");
        let none = target("from: a\n").unwrap_err();
        assert!(none.starts_with("missing field `rule`"), "{none}");
    }

    #[test]
    fn a_field_no_rule_declares_is_refused_where_it_stands_listing_every_field() {
        let refused = target("rule: run\nfrom: a\nno_such_field: 1\n").unwrap_err();
        let (listed, place) = refused
            .strip_prefix("unknown field `no_such_field`, expected one of ")
            .and_then(|r| r.split_once(" at "))
            .expect(&refused);
        assert_eq!(place, "line 3, column 1");
        let listed: Vec<&str> = listed.split(", ").collect();
        let mut every: Vec<&str> = TYPED_FIELDS.to_vec();
        every.extend(RULES.iter().flat_map(|r| r.field_names()));
        every.sort();
        every.dedup();
        let mut sorted = listed.clone();
        sorted.sort();
        assert_eq!(sorted, every, "each field once, and all of them");
    }

    #[test]
    fn every_typed_field_is_read_into_its_own_place() {
        let mut yaml = String::from("rule: run\n");
        for name in TYPED_FIELDS.iter().filter(|f| **f != "rule") {
            yaml.push_str(&match *name {
                "env" | "caches" => format!("{name}: {{a: b}}\n"),
                "network" | "local" => format!("{name}: true\n"),
                "srcs" | "deps" | "outs" | "argv" | "tools" | "images" => format!("{name}: [a]\n"),
                "limits" => format!("{name}: {{}}\n"),
                "steps" => format!("{name}: [{{cmd: a}}]\n"),
                "auth" => format!("{name}: {{username_env: U, password_env: P}}\n"),
                _ => format!("{name}: x\n"),
            });
        }
        let raw = target(&yaml).unwrap();
        assert!(raw.fields.is_empty(), "{:?}", raw.fields);
        let mut read: Vec<&str> = raw.run_fields().into_iter().map(|(f, _)| f).collect();
        read.extend(["rule", "when", "srcs", "deps"]);
        assert!(raw.when.is_some() && !raw.srcs.is_empty() && !raw.deps.is_empty());
        read.sort();
        let mut typed = TYPED_FIELDS.to_vec();
        typed.sort();
        assert_eq!(read, typed);
    }

    #[test]
    fn every_typed_field_is_one_the_loader_reads_and_a_rule_declares() {
        for name in TYPED_FIELDS.iter().filter(|f| !COMMON_FIELDS.contains(f)) {
            let declaring: Vec<&Field> = RULES
                .iter()
                .flat_map(|r| r.fields)
                .filter(|f| f.name == *name)
                .collect();
            assert!(!declaring.is_empty(), "no rule takes `{name}`");
            // A field a rule reads itself must reach it as a generic value.
            assert!(
                declaring.iter().all(|f| f.kind == FieldKind::Typed),
                "`{name}` is read by a rule, so it is not typed by the loader"
            );
        }
    }
}
