//! The raw shape of a BUILD.yaml file, as serde reads it. Every value keeps
//! its location so later checks can point at it.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_saphyr::{Spanned, Tagged};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub vars: Option<Pairs<Spanned<Tagged<String>>>>,
    #[serde(default)]
    pub targets: Option<Pairs<Spanned<RawTarget>>>,
    #[serde(default)]
    pub include: Option<Vec<Spanned<String>>>,
}

/// Fields of every rule kind; each rule checks which ones it accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub rule: Spanned<String>,
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
    #[serde(default)]
    pub output_digest: Option<Spanned<String>>,
}

/// The field names of a target, for hints.
pub const TARGET_FIELDS: &str = "rule, srcs, deps, cmd, argv, env, outs, network, output_digest";

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
