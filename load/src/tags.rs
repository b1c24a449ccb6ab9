//! Where YAML tags may stand. serde-saphyr drops the tag of a node it reads
//! into a plain string, so `env: {X: !ENV TOKEN}` would silently mean the
//! literal text `TOKEN`. This pass walks the file's events once and finds
//! every `!ENV` that is not the value of a top-level `vars:` entry, the only
//! place the loader reads it.

use granit_parser::{Event, Parser};

/// A misplaced tag: 1-based line and column, and its length in bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Misplaced {
    pub line: u64,
    pub column: u64,
    pub len: u64,
}

/// One open collection while walking the events.
enum Frame {
    /// A mapping; `key` is the last key read (when it was a scalar) and
    /// `at_value` whether the next node is that key's value.
    Mapping {
        key: Option<String>,
        at_value: bool,
    },
    Sequence,
}

/// Every `!ENV` in `text` outside `vars:` values. `vars_allowed` is false for
/// a fragment inserted by `!include`, which has no `vars:` of its own. A file
/// that does not parse yields nothing here: the deserializer reports it.
pub fn misplaced_env(text: &str, vars_allowed: bool) -> Vec<Misplaced> {
    let mut found = Vec::new();
    if !may_hold_env_tag(text) {
        return found;
    }
    let mut stack: Vec<Frame> = Vec::new();
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else {
            return found;
        };
        let tag = match &event {
            Event::Scalar(_, _, _, tag)
            | Event::SequenceStart(_, _, tag)
            | Event::MappingStart(_, _, tag) => tag.as_deref(),
            _ => None,
        };
        if tag.is_some_and(|t| t.handle() == "!" && t.suffix() == "ENV")
            && !(vars_allowed && in_vars_value(&stack))
        {
            // The span starts at the node's tag token when it has one.
            let start = span.tag_start.unwrap_or(span.start);
            found.push(Misplaced {
                line: start.line() as u64,
                column: start.col() as u64 + 1,
                len: "!ENV".len() as u64,
            });
        }
        match event {
            Event::Scalar(value, ..) => node_done(&mut stack, Some(&value)),
            Event::Alias(_) => node_done(&mut stack, None),
            Event::MappingStart(..) => stack.push(Frame::Mapping {
                key: None,
                at_value: false,
            }),
            Event::SequenceStart(..) => stack.push(Frame::Sequence),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                node_done(&mut stack, None);
            }
            _ => {}
        }
    }
    found
}

/// Whether `text` can hold an `!ENV` tag at all, so that most files skip
/// the walk (a second parse of the whole file). Every tag starts with `!`,
/// and one that reads `!ENV` spells `ENV` in the text (as `!ENV`,
/// `!<!ENV>`, or through a `%TAG` handle: `!e!ENV`) unless it is written
/// with `%` escapes (`!%45NV`).
fn may_hold_env_tag(text: &str) -> bool {
    text.contains('!') && (text.contains("ENV") || text.contains('%'))
}

/// Whether the next node is the value of an entry of the top-level `vars:`.
fn in_vars_value(stack: &[Frame]) -> bool {
    matches!(
        stack,
        [
            Frame::Mapping { key: Some(k), at_value: true },
            Frame::Mapping { at_value: true, .. },
        ] if k == "vars"
    )
}

/// A node of the innermost collection ended: a mapping moves from key to
/// value (remembering a scalar key) or from value to the next key.
fn node_done(stack: &mut [Frame], scalar: Option<&str>) {
    if let Some(Frame::Mapping { key, at_value }) = stack.last_mut() {
        if !*at_value {
            *key = scalar.map(str::to_string);
        }
        *at_value = !*at_value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str, vars_allowed: bool) -> Vec<(u64, u64)> {
        misplaced_env(text, vars_allowed)
            .into_iter()
            .map(|m| (m.line, m.column))
            .collect()
    }

    #[test]
    fn env_in_vars_values_is_where_it_belongs() {
        let text = "vars:\n  a: !ENV A\n  b: !ENV ${B:x}\ntargets: {}\n";
        assert_eq!(lines(text, true), vec![]);
    }

    #[test]
    fn env_anywhere_else_is_found_at_its_tag() {
        let text = "vars:\n  a: x\n  nested: {k: !ENV N}\ntargets:\n  t:\n    env: {X: !ENV TOKEN}\n    cmd: !ENV C\n    when: [!ENV W]\n";
        assert_eq!(lines(text, true), vec![(3, 15), (6, 14), (7, 10), (8, 12)]);
    }

    #[test]
    fn a_key_named_vars_below_the_top_is_not_vars() {
        let text = "targets:\n  vars:\n    x: !ENV X\n";
        assert_eq!(lines(text, true), vec![(3, 8)]);
    }

    #[test]
    fn an_included_fragment_has_no_vars() {
        let text = "vars:\n  a: !ENV A\n";
        assert_eq!(lines(text, false), vec![(2, 6)]);
    }

    #[test]
    fn env_spelled_with_escapes_or_a_tag_handle_is_found_too() {
        let text = "targets:\n  t:\n    cmd: !%45NV C\n";
        assert_eq!(lines(text, true), vec![(3, 10)]);
        let text = "%TAG !e! !\n---\ntargets:\n  t:\n    cmd: !e!ENV C\n";
        assert_eq!(lines(text, true), vec![(5, 10)]);
    }

    #[test]
    fn other_tags_and_broken_yaml_report_nothing() {
        assert_eq!(lines("a: !include x.yaml\n", true), vec![]);
        // Broken YAML is the deserializer's to report; this pass must not
        // panic on it.
        misplaced_env("a: [unclosed\nb: !ENV X", true);
    }
}
