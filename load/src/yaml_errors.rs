//! What a YAML or shape error of a BUILD file means to its writer. The
//! parser says where it stopped ("did not find expected key", "unknown field
//! `cmdd`, expected one of" 40 fields); this module reads the file again as
//! plain YAML to say what the place is (a field of target `hello`, whose
//! rule is `run`), and reads the lines around it for tabs and indentation.

use serde_json::Value;
use serde_saphyr::Spanned;

use super::diag::{did_you_mean, unknown_field_hint};
use super::schema::rule_fields;
use super::source::Loc;
use super::tree::RawNode;

/// An error said for its writer: where, what, and what to do.
pub(super) struct Explained {
    pub loc: Loc,
    pub message: String,
    pub label: String,
    pub help: String,
    /// Another place the error involves (the first of two equal keys).
    pub also: Option<(Loc, String)>,
}

pub(super) const FILE_FIELDS: &[&str] =
    &["vars", "targets", "include", "out_dir", "default", "matrix"];
const STEP_FIELDS: &[&str] = &[
    "cmd", "argv", "env", "srcs", "deps", "network", "user", "workdir", "caches", "copy", "to",
    "mode", "owner",
];

/// Where a node is in its file: the keys and list indices down to it.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// What the parser's place is, found in the file read again as plain YAML.
struct Found<'a> {
    path: Vec<Step>,
    /// The mapping holding the key at fault (for a key), with its entries.
    mapping: Option<Entries<'a>>,
    /// The node at the place (for a value).
    node: Option<&'a RawNode>,
}

/// `text` read as plain YAML; `!include`s read as empty (their place is in
/// another file).
fn plain_yaml(text: &str) -> Option<Spanned<RawNode>> {
    let mut n = 0;
    let options = serde_saphyr::options! {
        with_snippet: false,
        leading_zero_numbers_as_strings: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
    }
    .with_include_resolver(move |req: serde_saphyr::IncludeRequest<'_>| {
        n += 1;
        Ok(serde_saphyr::ResolvedInclude::new(
            format!("\0include-{n}"),
            req.spec.to_string(),
            serde_saphyr::InputSource::Text("null".into()),
        ))
    });
    serde_saphyr::from_str_with_options(text, options).ok()
}

/// The key or value at `line:column` (1-based), searching every node.
fn find(root: &Spanned<RawNode>, line: u64, column: u64) -> Option<Found<'_>> {
    fn at(l: &serde_saphyr::Location, line: u64, column: u64) -> bool {
        l.line() == line && l.column() == column
    }
    fn walk<'a>(
        node: &'a Spanned<RawNode>,
        path: &mut Vec<Step>,
        line: u64,
        column: u64,
    ) -> Option<Found<'a>> {
        match &node.value {
            RawNode::Map(entries) => {
                for (k, v) in entries {
                    path.push(Step::Key(k.value.clone()));
                    if at(&k.referenced, line, column) {
                        return Some(Found {
                            path: path.clone(),
                            mapping: Some(entries),
                            node: None,
                        });
                    }
                    if let Some(f) = walk(v, path, line, column) {
                        return Some(f);
                    }
                    path.pop();
                }
            }
            RawNode::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Step::Index(i));
                    if let Some(f) = walk(item, path, line, column) {
                        return Some(f);
                    }
                    path.pop();
                }
            }
            RawNode::Scalar(_) => {}
        }
        at(&node.referenced, line, column).then(|| Found {
            path: path.clone(),
            mapping: None,
            node: Some(&node.value),
        })
    }
    walk(root, &mut Vec::new(), line, column)
}

/// What kind of mapping a path leads to, for messages and field lists.
enum Owner {
    File,
    Target { name: String, rule: Option<String> },
    Step { stage: String, index: usize },
    Limits,
    Auth,
    Other,
}

fn owner(path: &[Step], mapping: Entries<'_>, in_root: bool) -> Owner {
    let rule = mapping
        .iter()
        .find(|(k, _)| k.value == "rule")
        .and_then(|(_, v)| v.value.as_str().map(str::to_string));
    let key = |i: usize| match path.get(i) {
        Some(Step::Key(k)) => Some(k.as_str()),
        _ => None,
    };
    match path.len() {
        1 if in_root => return Owner::File,
        3 if key(0) == Some("targets") => {
            return Owner::Target {
                name: key(1).unwrap_or_default().to_string(),
                rule,
            };
        }
        5 if key(0) == Some("targets") && key(2) == Some("steps") => {
            if let Some(Step::Index(i)) = path.get(3) {
                return Owner::Step {
                    stage: key(1).unwrap_or_default().to_string(),
                    index: *i,
                };
            }
        }
        4 if key(0) == Some("targets") && key(2) == Some("limits") => return Owner::Limits,
        4 if key(0) == Some("targets") && key(2) == Some("auth") => return Owner::Auth,
        _ => {}
    }
    // A target `!include`d on its own: its mapping has a `rule:`.
    match rule {
        Some(rule) => Owner::Target {
            name: String::new(),
            rule: Some(rule),
        },
        None => Owner::Other,
    }
}

/// The names to suggest from and list, and how to name their owner.
fn owner_fields(owner: &Owner) -> Option<(String, Vec<&'static str>)> {
    match owner {
        Owner::File => Some(("the file".into(), FILE_FIELDS.to_vec())),
        Owner::Target {
            rule: Some(rule), ..
        } => rule_fields(rule).map(|f| (format!("`{rule}`"), f)),
        Owner::Step { .. } => Some(("a stage step".into(), STEP_FIELDS.to_vec())),
        Owner::Limits => Some(("`limits`".into(), vec!["processes", "memory"])),
        Owner::Auth => Some(("`auth`".into(), vec!["username_env", "password_env"])),
        Owner::Target { rule: None, .. } | Owner::Other => None,
    }
}

fn owner_text(owner: &Owner) -> String {
    match owner {
        Owner::File => " at the top of the file".into(),
        Owner::Target { name, rule } => {
            let name = match name.as_str() {
                "" => "this target".to_string(),
                n => format!("target `{n}`"),
            };
            match rule {
                Some(r) => format!(" in {name} (rule `{r}`)"),
                None => format!(" in {name}"),
            }
        }
        Owner::Step { stage, index } => format!(" in `steps[{index}]` of stage `{stage}`"),
        Owner::Limits => " in `limits`".into(),
        Owner::Auth => " in `auth`".into(),
        Owner::Other => String::new(),
    }
}

/// Explains the parser's `message` at `loc` in `text` (the file `loc` is
/// in; `in_root`: the file's top level is a BUILD file's, not a fragment).
pub(super) fn explain(message: &str, loc: Loc, text: &str, in_root: bool) -> Explained {
    let plain = |help: String| Explained {
        loc,
        message: message.to_string(),
        label: message.to_string(),
        help,
        also: None,
    };
    // The word, not the letters: an unknown field's message lists the
    // fields rules take, and `table` (disk) is one.
    if message
        .split(|c: char| !c.is_ascii_alphabetic())
        .any(|w| w == "tab" || w == "tabs")
    {
        return tab(message, loc, text);
    }
    let tree = plain_yaml(text);
    let found = tree.as_ref().and_then(|t| find(t, loc.line, loc.column));
    if let Some(name) = message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        let Some(Found {
            path,
            mapping: Some(mapping),
            ..
        }) = &found
        else {
            return plain(unknown_field_hint(message).unwrap_or_default());
        };
        let owner = owner(path, mapping, in_root);
        let message = format!("unknown field `{name}`{}", owner_text(&owner));
        let (label, help) = match owner_fields(&owner) {
            Some((who, fields)) => {
                let list = format!("{who} takes: {}", fields.join(", "));
                let help = match did_you_mean(name, fields.iter().copied()) {
                    Some(hint) => format!("{hint} {list}"),
                    None => list,
                };
                (format!("not a field of {who}"), help)
            }
            None => (
                "unknown field".to_string(),
                unknown_field_hint(message.as_str()).unwrap_or_default(),
            ),
        };
        return Explained {
            loc,
            message,
            label,
            help,
            also: None,
        };
    }
    if let Some(name) = message
        .strip_prefix("duplicate field `")
        .and_then(|r| r.split('`').next())
    {
        return repeated_field(name, loc, tree.as_ref(), in_root)
            .unwrap_or_else(|| plain("a field is given once; remove one of the two".into()));
    }
    if is_structure(message) {
        return indentation(message, loc, text);
    }
    // A value of the wrong shape. A target that is not a mapping is most
    // often fields indented as deep as its name, or less.
    if let Some(Found { path, node, .. }) = &found
        && let [Step::Key(t), Step::Key(name)] = path.as_slice()
        && t == "targets"
        && in_root
    {
        let empty = matches!(node, Some(RawNode::Scalar(Value::Null)));
        return Explained {
            loc,
            message: if empty {
                format!("target `{name}` has no fields")
            } else {
                format!("target `{name}` is not a mapping of fields ({message})")
            },
            label: "a target's fields go here".into(),
            help: format!(
                "a target's fields are indented below its name, deeper than `{name}:`, all at the same column (with spaces, not tabs); if `{name}` is a field of the target above, indent it as that target's other fields"
            ),
            also: None,
        };
    }
    let at = found
        .as_ref()
        .map(|f| path_text(&f.path))
        .filter(|p| !p.is_empty());
    let mut e = plain(shape_hint(message));
    if let Some(at) = at {
        e.label = format!("{message} for `{at}`");
    }
    e
}

/// `targets.hello.outs[1]`.
fn path_text(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Key(k) if s.is_empty() => s.push_str(k),
            Step::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Step::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The entries of a mapping, in order.
type Entries<'a> = &'a [(Spanned<String>, Spanned<RawNode>)];

/// A field written twice in one mapping: both places. The parser points
/// near the mapping; of the mappings holding `name` twice, the one that
/// starts last at or before that line is it.
fn repeated_field(
    name: &str,
    loc: Loc,
    tree: Option<&Spanned<RawNode>>,
    in_root: bool,
) -> Option<Explained> {
    fn search<'a>(
        node: &'a Spanned<RawNode>,
        path: &mut Vec<Step>,
        name: &str,
        found: &mut Vec<(u64, Vec<Step>, Entries<'a>)>,
    ) {
        match &node.value {
            RawNode::Map(entries) => {
                if entries.iter().filter(|(k, _)| k.value == name).count() > 1 {
                    let start = entries.first().map_or(0, |(k, _)| k.referenced.line());
                    found.push((start, path.clone(), entries));
                }
                for (k, v) in entries {
                    path.push(Step::Key(k.value.clone()));
                    search(v, path, name, found);
                    path.pop();
                }
            }
            RawNode::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Step::Index(i));
                    search(item, path, name, found);
                    path.pop();
                }
            }
            RawNode::Scalar(_) => {}
        }
    }
    let mut found = Vec::new();
    search(tree?, &mut Vec::new(), name, &mut found);
    let (_, path, entries) = found
        .into_iter()
        .filter(|(start, _, _)| *start <= loc.line)
        .max_by_key(|(start, _, _)| *start)?;
    let mut keys = entries.iter().filter(|(k, _)| k.value == name);
    let first = keys.next()?;
    let again = keys.next()?;
    let at = |k: &Spanned<String>| Loc {
        file: loc.file,
        line: k.referenced.line(),
        column: k.referenced.column(),
        len: name.chars().count() as u64,
    };
    let mut key_path = path;
    key_path.push(Step::Key(name.to_string()));
    let owner = owner(&key_path, entries, in_root);
    Some(Explained {
        loc: at(&again.0),
        message: format!("field `{name}` is given twice{}", owner_text(&owner)),
        label: "given again here".into(),
        help: "YAML keeps one value of a key: remove the one you do not mean".into(),
        also: Some((at(&first.0), "first given here".into())),
    })
}

/// Whether the parser lost the structure (as opposed to a value of the
/// wrong type): these are nearly always indentation.
fn is_structure(message: &str) -> bool {
    [
        "did not find expected key",
        "mapping values are not allowed",
        "did not find expected '-'",
        "invalid indentation",
        "did not find expected node content",
        "block sequence entries are not allowed",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// The columns of the keys above `line` that a line may line up with:
/// `(column, key)` from the innermost mapping out.
fn open_columns(text: &str, line: u64) -> Vec<(u64, String)> {
    let mut columns: Vec<(u64, String)> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut limit = u64::MAX;
    for l in lines[..(line as usize - 1).min(lines.len())].iter().rev() {
        let body = l.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = (l.len() - body.len()) as u64 + 1;
        let body = body.trim_start_matches("- ");
        let indent = indent + (l.trim_start_matches(' ').len() - body.len()) as u64;
        let Some((key, _)) = body.split_once(':') else {
            continue;
        };
        if indent < limit && !key.contains(' ') && !key.is_empty() {
            columns.push((indent, key.to_string()));
            limit = indent;
        }
        if indent == 1 {
            break;
        }
    }
    columns
}

/// A line the parser could not fit into the structure: say which columns
/// it could have started at.
fn indentation(message: &str, loc: Loc, text: &str) -> Explained {
    let line_text = text.lines().nth(loc.line as usize - 1).unwrap_or("");
    let indent = (line_text.len() - line_text.trim_start_matches(' ').len()) as u64 + 1;
    let first = line_text.trim_start_matches(' ');
    let word: String = first
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ':')
        .collect();
    let columns = open_columns(text, loc.line);
    let choices: Vec<String> = columns
        .iter()
        .map(|(c, k)| format!("column {c} (`{k}`)"))
        .collect();
    let expected = match choices.as_slice() {
        [] => "YAML expected a key of the mapping above".to_string(),
        [one] => format!("YAML expected a key at {one}"),
        [init @ .., last] => format!("YAML expected a key at {} or {last}", init.join(", ")),
    };
    let start = Loc {
        file: loc.file,
        line: loc.line,
        column: indent,
        len: word.chars().count().max(1) as u64,
    };
    Explained {
        loc: if word.is_empty() { loc } else { start },
        message: format!(
            "bad indentation: `{word}` at column {indent} lines up with no key above it"
        ),
        label: expected,
        help: format!(
            "YAML nests by indentation: the keys of one mapping start at the same column, with spaces (never tabs); a field of a target is indented deeper than the target's name (the parser: {message})"
        ),
        also: None,
    }
}

/// A tab where YAML allows only spaces: point at the tab itself (the
/// parser may stop at the end of the line before).
fn tab(message: &str, loc: Loc, text: &str) -> Explained {
    let mut at = loc;
    for (i, l) in text.lines().enumerate().skip(loc.line as usize - 1).take(3) {
        let line = i as u64 + 1;
        let leading: String = l.chars().take_while(|c| *c == ' ' || *c == '\t').collect();
        let from = if line == loc.line {
            loc.column as usize - 1
        } else {
            0
        };
        if let Some(col) = leading.chars().skip(from).position(|c| c == '\t') {
            at = Loc {
                file: loc.file,
                line,
                column: (from + col) as u64 + 1,
                len: 1,
            };
            break;
        }
    }
    Explained {
        loc: at,
        message: format!("a tab in the indentation of line {}", at.line),
        label: "tab".into(),
        help: format!(
            "YAML indents with spaces only: replace the tab with spaces, lining the line up with the keys of its mapping (the parser: {message})"
        ),
        also: None,
    }
}

/// A hint for a value of the wrong type.
fn shape_hint(message: &str) -> String {
    if message.contains("sequence") {
        "this field takes a list, such as `[a.txt, b.txt]`".into()
    } else if message.contains("boolean") {
        "this field takes `true` or `false`".into()
    } else if message.contains("mapping") || message.contains("a map") {
        "this field takes a mapping: `key: value` lines indented below it, or `{key: value}`".into()
    } else if message.contains("invalid type") || message.contains("expected") {
        "check the value's type against the BUILD.yaml reference in README.md".into()
    } else {
        "fix the YAML at the marked place".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_a_line_may_start_at_are_the_open_keys_above_it() {
        let text = "targets:\n  hello:\n    rule: run\n    cmd: x\n   outs: [a]\n";
        assert_eq!(
            open_columns(text, 5),
            [
                (5, "cmd".to_string()),
                (3, "hello".to_string()),
                (1, "targets".to_string())
            ]
        );
    }

    #[test]
    fn every_rule_lists_its_own_fields_after_the_common_ones() {
        let run = rule_fields("run").unwrap();
        assert_eq!(&run[..5], ["rule", "when", "srcs", "deps", "cmd"]);
        assert!(!run.contains(&"compression"));
        let archive = rule_fields("archive").unwrap();
        assert!(archive.contains(&"compression") && !archive.contains(&"cmd"));
        assert_eq!(rule_fields("nope"), None);
    }
}
