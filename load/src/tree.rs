//! YAML values that keep the place of every node and key. The fields of
//! built-in rules are read into them, so an error anywhere inside a field
//! (a list in a list, a mapping in a list, an `!include`d file) points at
//! the scalar at fault rather than at the field.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;
use strata_rules::builtin::Seg;

use super::Located;
use super::source::Loc;

/// A YAML value as serde-saphyr reads it: every child with its place.
#[derive(Debug)]
pub enum RawNode {
    Scalar(Value),
    List(Vec<Spanned<RawNode>>),
    Map(Vec<(Spanned<String>, Spanned<RawNode>)>),
}

impl RawNode {
    /// The scalar string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            RawNode::Scalar(Value::String(s)) => Some(s),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawNodeVisitor)
    }
}

struct RawNodeVisitor;

impl<'de> Visitor<'de> for RawNodeVisitor {
    type Value = RawNode;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<RawNode, E> {
        Ok(RawNode::Scalar(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<RawNode, E> {
        Ok(RawNode::Scalar(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<RawNode, E> {
        Ok(RawNode::Scalar(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<RawNode, E> {
        Ok(RawNode::Scalar(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }
    fn visit_str<E>(self, v: &str) -> Result<RawNode, E> {
        Ok(RawNode::Scalar(Value::String(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<RawNode, E> {
        Ok(RawNode::Scalar(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<RawNode, E> {
        Ok(RawNode::Scalar(Value::Null))
    }
    fn visit_none<E>(self) -> Result<RawNode, E> {
        Ok(RawNode::Scalar(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawNode, D::Error> {
        RawNode::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawNode, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(RawNode::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawNode, A::Error> {
        // Every entry in order, a repeated key included: the loader reports
        // it at both places.
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(RawNode::Map(entries))
    }
}

/// A value of a built-in rule's field with the place of every node.
#[derive(Clone, Debug)]
pub struct Tree {
    pub loc: Loc,
    pub node: Node,
}

#[derive(Clone, Debug)]
pub enum Node {
    Scalar(Value),
    List(Vec<Tree>),
    Map(Vec<(Located<String>, Tree)>),
}

impl Tree {
    /// `raw` with its places resolved to files by `loc`.
    pub fn new(raw: &Spanned<RawNode>, loc: &dyn Fn(&serde_saphyr::Location) -> Loc) -> Tree {
        let node = match &raw.value {
            RawNode::Scalar(v) => Node::Scalar(v.clone()),
            RawNode::List(items) => Node::List(items.iter().map(|i| Tree::new(i, loc)).collect()),
            RawNode::Map(entries) => Node::Map(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let key = Located {
                            value: k.value.clone(),
                            loc: loc(&k.referenced),
                        };
                        (key, Tree::new(v, loc))
                    })
                    .collect(),
            ),
        };
        Tree {
            loc: loc(&raw.referenced),
            node,
        }
    }

    /// The value as the rules read it (a repeated key: the last one).
    pub fn to_json(&self) -> Value {
        match &self.node {
            Node::Scalar(v) => v.clone(),
            Node::List(items) => Value::Array(items.iter().map(Tree::to_json).collect()),
            Node::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.value.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The place of the value at `path` (below this tree), or of the
    /// deepest node on the way that exists: a parameter the loader made up
    /// (a resolved compose component's `preload`) points at its item.
    pub fn locate(&self, path: &[Seg]) -> Loc {
        let mut here = self;
        for seg in path {
            let next = match (seg, &here.node) {
                (Seg::Key(k), Node::Map(entries)) => entries
                    .iter()
                    .rev()
                    .find(|(n, _)| n.value == *k)
                    .map(|(_, v)| v),
                (Seg::Name(k), Node::Map(entries)) => {
                    return entries
                        .iter()
                        .rev()
                        .find(|(n, _)| n.value == *k)
                        .map_or(here.loc, |(n, _)| n.loc);
                }
                (Seg::Index(i), Node::List(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(t) => here = t,
                None => break,
            }
        }
        here.loc
    }

    /// Item `i` of this list, or the list itself.
    pub fn item(&self, i: usize) -> &Tree {
        match &self.node {
            Node::List(items) => items.get(i).unwrap_or(self),
            _ => self,
        }
    }

    /// Keys written twice in any mapping of the tree: (first, again).
    pub fn repeated_keys(&self) -> Vec<(&Located<String>, &Located<String>)> {
        let mut found = Vec::new();
        self.walk(&mut |t| {
            if let Node::Map(entries) = &t.node {
                for (i, (k, _)) in entries.iter().enumerate() {
                    if let Some((first, _)) = entries[..i].iter().find(|(f, _)| f.value == k.value)
                    {
                        found.push((first, k));
                    }
                }
            }
        });
        found
    }

    /// Every scalar string of the tree, with its place, for interpolation.
    pub fn strings_mut(&mut self, f: &mut dyn FnMut(&mut String, Loc)) {
        match &mut self.node {
            Node::Scalar(Value::String(s)) => f(s, self.loc),
            Node::Scalar(_) => {}
            Node::List(items) => items.iter_mut().for_each(|i| i.strings_mut(f)),
            Node::Map(entries) => entries.iter_mut().for_each(|(_, v)| v.strings_mut(f)),
        }
    }

    /// Drops the items of this list for which `drop` holds.
    pub fn retain_items(&mut self, keep: impl Fn(&Tree) -> bool) {
        if let Node::List(items) = &mut self.node {
            items.retain(keep);
        }
    }

    /// The string at `key` of this mapping, if it is one.
    pub fn str_at(&self, key: &str) -> Option<&str> {
        match &self.node {
            Node::Map(entries) => {
                entries
                    .iter()
                    .rev()
                    .find(|(k, _)| k.value == key)
                    .and_then(|(_, v)| match &v.node {
                        Node::Scalar(Value::String(s)) => Some(s.as_str()),
                        _ => None,
                    })
            }
            _ => None,
        }
    }

    fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Tree)) {
        f(self);
        match &self.node {
            Node::Scalar(_) => {}
            Node::List(items) => items.iter().for_each(|i| i.walk(f)),
            Node::Map(entries) => entries.iter().for_each(|(_, v)| v.walk(f)),
        }
    }
}
