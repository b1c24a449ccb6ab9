//! `makeself`: a self-extracting `.run` bundle: a POSIX sh header and a
//! compressed tar payload whose SHA-256 the header checks before extracting,
//! then it runs the startup script. Supports the makeself options
//! `--target DIR`, `--noexec`, `--keep`, `--list`, `--check`, `--info`,
//! `--quiet`; arguments after `--` go to the startup script.
//!
//! ```yaml
//! installer:
//!   rule: makeself
//!   from: payload              # the tree to bundle
//!   startup: ./install.sh      # path inside the payload
//!   args: ["--verbose"]        # default arguments of the startup script
//!   label: "App installer"
//!   name: app-installer.run    # default bundle.run
//! ```
//!
//! The bundle is the header script followed by the payload, a gzip-compressed
//! tar of the tree (as the `archive` rule writes it). The header records the
//! payload's byte offset, length and SHA-256, the label, the startup script
//! and its default arguments, and nothing else: no build time, host or path,
//! so equal inputs give byte-identical bundles.
//!
//! At run time the header checks the payload's SHA-256 (with `sha256sum`,
//! `shasum` or `openssl`) before it lists, extracts or runs anything, and
//! stops with "bundle is corrupt" (exit 1) on a mismatch. It then extracts
//! into a fresh `mktemp -d` folder (or `--target DIR`), runs the startup
//! script from that folder with `args` followed by the arguments given after
//! `--` (`USER_PWD` holds the caller's folder), exits with the script's
//! status, and removes the temporary folder unless `--keep` or `--noexec` was
//! given. A startup file that is not executable is run with `sh`.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use strata_formats::compress::Compression;
use strata_formats::tarball::{TarOptions, write_tree};
use strata_store::tree::{Entry, Node, TreeBuilder, walk};

use super::{Builtin, from_fields};
use super::{BuiltinError, Ctx, From, Named, ParamError, PathExt, check_file_name, key};
use crate::table::{Field, Parse, Rule};

/// `makeself`: a self-extracting shell archive.
pub const RULE: Rule = Rule {
    name: "makeself",
    doc: "packs a tree into a self-extracting shell archive that runs a startup script",
    fields: &[
        Field::value("from", "the tree to pack"),
        Field::value(
            "startup",
            "the script run after extraction: a path inside the tree",
        ),
        Field::value(
            "args",
            "arguments the startup script gets before those given after `--`",
        ),
        Field::value(
            "label",
            "the archive's description, shown when it runs (default its file name)",
        ),
        Field::value("name", "the archive's file name (default `bundle.run`)"),
    ],
    parse: Parse::Builtin(|f| Ok(Builtin::Makeself(from_fields(f)?))),
    image_output: false,
    contains_inputs: true,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub from: From,
    pub startup: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// The gzip level of the payload.
const LEVEL: i32 = 9;

impl Params {
    pub(super) fn validate(&self) -> Result<(), ParamError> {
        let err = |field: &str, message: String| Err(ParamError::new(field, message));
        let startup = self.startup_path();
        if self.startup.starts_with('/') {
            return err(
                "startup",
                format!(
                    "`{}` must be a path inside the payload, relative to its top (such as `./install.sh`)",
                    self.startup
                ),
            );
        }
        if startup.is_empty()
            || startup
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
            || startup.contains(['\0', '\n'])
        {
            return err(
                "startup",
                format!(
                    "`{}` is not a clean path inside the payload (such as `./install.sh` or `bin/setup`)",
                    self.startup
                ),
            );
        }
        if let Some(i) = self.args.iter().position(|a| a.contains('\0')) {
            return Err(ParamError::at(
                key("args").index(i),
                format!("argument {} contains a NUL byte", i + 1),
            ));
        }
        if let Some(label) = &self.label
            && label.contains('\0')
        {
            return err("label", "the label contains a NUL byte".into());
        }
        if let Some(name) = &self.name {
            check_file_name("name", name)?;
        }
        Ok(())
    }

    pub(super) fn inputs(&self) -> Vec<Named<String>> {
        self.from.named(key("from"))
    }

    /// The output file name.
    pub fn file_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| "bundle.run".into())
    }

    /// The startup script's path inside the payload, without `./`.
    fn startup_path(&self) -> String {
        let mut s = self.startup.as_str();
        while let Some(rest) = s.strip_prefix("./") {
            s = rest.trim_start_matches('/');
        }
        s.to_string()
    }
}

pub fn run(p: &Params, ctx: &Ctx) -> Result<strata_store::Digest, BuiltinError> {
    let tree = ctx.tree(&p.from)?;
    let startup = p.startup_path();
    let direct = startup_is_executable(p, ctx, &tree, &startup)?;
    let opts = TarOptions {
        dot_prefix: false,
        prefix: String::new(),
        mtime: ctx.source_date_epoch,
        owner_names: false,
    };
    // Pass 1: the payload's length and SHA-256, which the header names
    // before the payload starts. Nothing is written: the encoder is
    // deterministic, so pass 2 gives the same bytes (and is checked).
    let (size, sha256) = write_payload(ctx, &tree, &opts, HashCount::new(io::sink()))?.result();
    let header = header(p, &startup, direct, size, &sha256);
    let mut writer = ctx.cas.writer()?;
    writer.write_all(header.as_bytes())?;
    let second = write_payload(ctx, &tree, &opts, HashCount::new(&mut writer))?.result();
    if second != (size, sha256) {
        return Err(BuiltinError::Format(
            "makeself: the payload came out different on its second pass".into(),
        ));
    }
    let blob = writer.finish()?;
    let mut out = TreeBuilder::new();
    out.insert(&p.file_name(), Node::file(blob, true))
        .map_err(BuiltinError::Format)?;
    Ok(out.store(ctx.cas)?)
}

/// The payload: the tree as a gzip-compressed tar.
fn write_payload<W: Write>(
    ctx: &Ctx,
    tree: &strata_store::Digest,
    opts: &TarOptions,
    out: W,
) -> Result<W, BuiltinError> {
    let mut result = Ok(());
    let out = Compression::Gzip.encode(LEVEL, out, |w| {
        result = write_tree(ctx.cas, tree, w, opts).map(|_| ());
        Ok(())
    })?;
    result?;
    Ok(out)
}

/// Checks that the startup script is in the payload; whether it can be run
/// directly (else it is run with `sh`). Its metadata, where present, is the
/// mode it is extracted with.
fn startup_is_executable(
    p: &Params,
    ctx: &Ctx,
    tree: &strata_store::Digest,
    startup: &str,
) -> Result<bool, BuiltinError> {
    let found = walk(ctx.cas, tree)?
        .into_iter()
        .find(|(path, _)| path == startup);
    let sep = if p.from.path.is_empty() { ":" } else { "/" };
    let what = format!("{}{sep}", String::from(p.from.clone()));
    let refuse = |reason: &str| BuiltinError::Input {
        what: format!("{what}{startup}"),
        reason: format!("{reason}: `startup` must name a file of the payload"),
    };
    match found {
        Some((
            _,
            Entry::File {
                executable, meta, ..
            },
        )) => Ok(meta.map(|m| m.mode & 0o100 != 0).unwrap_or(executable)),
        Some((_, Entry::Symlink { .. })) => Ok(true),
        Some(_) => Err(refuse("is not a file")),
        None => Err(refuse("does not exist")),
    }
}

/// A writer that counts and hashes what goes through it.
struct HashCount<W> {
    inner: W,
    hasher: sha2::Sha256,
    len: u64,
}

impl<W: Write> HashCount<W> {
    fn new(inner: W) -> Self {
        HashCount {
            inner,
            hasher: sha2::Sha256::new(),
            len: 0,
        }
    }

    fn result(self) -> (u64, String) {
        (self.len, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashCount<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `s` as one shell word, always single-quoted.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `s` as one shell word, quoted only if it has to be (for display).
fn quote_if_needed(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        quote(s)
    }
}

/// The header script for a payload of `size` bytes; its length fixes where
/// the payload starts, so it is rendered until that offset is stable.
fn header(p: &Params, startup: &str, direct: bool, size: u64, sha256: &str) -> String {
    let label = p.label.clone().unwrap_or_else(|| p.file_name());
    let args: Vec<String> = p.args.iter().map(|a| quote(a)).collect();
    let shown: Vec<String> = p.args.iter().map(|a| quote_if_needed(a)).collect();
    let shown = shown.join(" ");
    let run = if direct {
        quote(&format!("./{startup}"))
    } else {
        format!("sh {}", quote(&format!("./{startup}")))
    };
    let mut set_args = String::from("set --");
    for a in &args {
        set_args.push(' ');
        set_args.push_str(a);
    }
    set_args.push_str(" \"$@\"");
    let render = |skip: usize| {
        fill(
            TEMPLATE,
            &[
                ("@LABEL@", quote(&label)),
                ("@STARTUP@", quote(startup)),
                ("@ARGS_SHOWN@", quote(&shown)),
                ("@SKIP@", skip.to_string()),
                ("@SIZE@", size.to_string()),
                ("@SHA256@", sha256.to_string()),
                ("@SET_ARGS@", set_args.clone()),
                ("@RUN@", run.clone()),
            ],
        )
    };
    let mut skip = 1;
    loop {
        let text = render(skip);
        if text.len() + 1 == skip {
            return text;
        }
        skip = text.len() + 1;
    }
}

/// Replaces each placeholder of `template` in one pass, so a value that
/// happens to contain a placeholder's name is left as it is.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(i) = rest.find('@') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        match values.iter().find(|(k, _)| rest.starts_with(k)) {
            Some((k, v)) => {
                out.push_str(v);
                rest = &rest[k.len()..];
            }
            None => {
                out.push('@');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The header script. Everything it needs is set at the top; it always ends
/// in `exit`, so the shell never reads the payload after it.
const TEMPLATE: &str = r#"#!/bin/sh
# Self-extracting bundle made by Strata (rule `makeself`).
# Run it with --help for its options. The payload after this script is a
# gzip-compressed tar; its SHA-256 is checked before anything is extracted.
label=@LABEL@
startup=@STARTUP@
startup_args=@ARGS_SHOWN@
skip=@SKIP@
size=@SIZE@
sha256=@SHA256@

self=$0
me=${0##*/}
target=
noexec=n
keep=n
list=n
check=n
info=n
quiet=n

usage() {
	cat <<EOF
$label

Usage: $me [options] [-- arguments for $startup]

  --target DIR  extract into DIR (created if needed, kept afterwards)
  --noexec      extract only: do not run $startup (the folder is kept)
  --keep        keep the temporary folder after $startup ran
  --list        list the files of the payload
  --check       check the bundle's SHA-256 only (exit 0 if intact, else 1)
  --info        show the label, payload size, SHA-256 and startup script
  --quiet, -q   print nothing but errors
  --help, -h    show this help
EOF
}

say() {
	[ "$quiet" = y ] || printf '%s\n' "$*" >&2
}

die() {
	printf '%s: %s\n' "$me" "$*" >&2
	exit 1
}

payload() {
	tail -c +"$skip" "$self"
}

while [ $# -gt 0 ]; do
	case $1 in
	--target)
		[ $# -ge 2 ] && [ -n "$2" ] || { printf '%s: --target needs a folder\n' "$me" >&2; exit 2; }
		target=$2
		shift
		;;
	--target=?*) target=${1#--target=} ;;
	--noexec) noexec=y ;;
	--keep) keep=y ;;
	--list) list=y ;;
	--check) check=y ;;
	--info) info=y ;;
	--quiet | -q) quiet=y ;;
	--help | -h)
		usage
		exit 0
		;;
	--)
		shift
		break
		;;
	*)
		printf '%s: unknown option %s (arguments for %s go after --)\n\n' "$me" "$1" "$startup" >&2
		usage >&2
		exit 2
		;;
	esac
	shift
done

if [ "$info" = y ]; then
	printf 'Label:     %s\n' "$label"
	printf 'Payload:   %s bytes (gzip-compressed tar) at byte %s\n' "$size" "$skip"
	printf 'SHA-256:   %s\n' "$sha256"
	printf 'Startup:   %s\n' "$startup"
	printf 'Arguments: %s\n' "$startup_args"
	exit 0
fi

[ -f "$self" ] && [ -r "$self" ] ||
	die "cannot read the bundle itself ($self): run it from its file, not through a pipe"

if command -v sha256sum >/dev/null 2>&1; then
	sum=sha256sum
elif command -v shasum >/dev/null 2>&1; then
	sum='shasum -a 256'
elif command -v openssl >/dev/null 2>&1; then
	sum='openssl dgst -sha256 -r'
else
	die "cannot check the bundle: none of sha256sum, shasum or openssl is installed"
fi
say "Verifying $label..."
actual=$(payload | $sum)
actual=${actual%% *}
if [ "$actual" != "$sha256" ]; then
	found=$(payload | wc -c)
	found=$((found + 0))
	printf '%s: bundle is corrupt: the payload SHA-256 is %s, expected %s\n' "$me" "$actual" "$sha256" >&2
	if [ "$found" != "$size" ]; then
		printf '%s: the payload has %s bytes, expected %s (incomplete download?)\n' "$me" "$found" "$size" >&2
	fi
	printf '%s: nothing was extracted or run\n' "$me" >&2
	exit 1
fi
if [ "$check" = y ]; then
	[ "$quiet" = y ] || printf 'bundle is intact (SHA-256 %s)\n' "$sha256"
	exit 0
fi

command -v gzip >/dev/null 2>&1 || die "gzip is needed to unpack the bundle"
command -v tar >/dev/null 2>&1 || die "tar is needed to unpack the bundle"
if [ "$list" = y ]; then
	payload | gzip -dc | tar -tvf -
	exit $?
fi

if [ -n "$target" ]; then
	mkdir -p -- "$target" || die "cannot create $target"
	dir=$(cd -- "$target" && pwd) || die "cannot enter $target"
else
	dir=$(mktemp -d "${TMPDIR:-/tmp}/bundle.XXXXXX") || die "cannot create a temporary folder"
	if [ "$keep" = n ] && [ "$noexec" = n ]; then
		trap 'cd / && rm -rf -- "$dir"' EXIT
		trap 'exit 129' HUP
		trap 'exit 130' INT
		trap 'exit 143' TERM
	fi
fi
say "Extracting $label into $dir"
payload | gzip -dc | (cd -- "$dir" && tar -xf -) || die "cannot extract into $dir"
[ -e "$dir/$startup" ] || [ -L "$dir/$startup" ] || die "cannot extract into $dir ($startup is missing)"

if [ "$noexec" = y ]; then
	say "Extracted into $dir; $startup not run (--noexec)"
	exit 0
fi
@SET_ARGS@
USER_PWD=$(pwd)
export USER_PWD
cd -- "$dir" || die "cannot enter $dir"
say "Running $startup"
@RUN@ "$@"
status=$?
[ "$keep" = n ] || [ -n "$target" ] || say "Kept $dir"
exit $status
"#;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Read;

    use sha2::Digest as _;
    use strata_store::Digest;
    use strata_store::tree::{Meta, Node, TreeBuilder, walk};

    use super::*;

    use super::super::testkit::fixture;

    fn payload_tree(cas: &strata_store::Cas) -> Digest {
        let mut t = TreeBuilder::new();
        let script = cas
            .put_bytes(b"#!/bin/sh\necho installed \"$@\"\n")
            .unwrap();
        t.insert("install.sh", Node::file(script, true)).unwrap();
        t.insert(
            "share/data.txt",
            Node::file(cas.put_bytes(b"data\n").unwrap(), false),
        )
        .unwrap();
        t.insert(
            "setup",
            Node::File {
                digest: script,
                executable: true,
                meta: Some(Meta {
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                }),
            },
        )
        .unwrap();
        t.insert(
            "link",
            Node::Symlink {
                target: "install.sh".into(),
                meta: None,
            },
        )
        .unwrap();
        t.store(cas).unwrap()
    }

    fn ctx(cas: &strata_store::Cas, tree: Digest) -> Ctx<'_> {
        let mut root = TreeBuilder::new();
        root.insert("deps/payload", Node::Stored(tree)).unwrap();
        Ctx {
            cas,
            input_root: root.store(cas).unwrap(),
            source_date_epoch: 1_700_000_000,
            dep_keys: BTreeMap::new(),
        }
    }

    fn params(startup: &str) -> Params {
        Params {
            from: From::try_from("payload".to_string()).unwrap(),
            startup: startup.into(),
            args: vec!["--verbose".into(), "it's a \"test\" $HOME".into()],
            label: Some("App installer".into()),
            name: None,
        }
    }

    /// The bundle's name, whether it is executable, and its bytes.
    fn bundle(cas: &strata_store::Cas, out: Digest) -> (String, bool, Vec<u8>) {
        let entries = walk(cas, &out).unwrap();
        assert_eq!(entries.len(), 1, "{entries:?}");
        let (
            name,
            Entry::File {
                digest, executable, ..
            },
        ) = &entries[0]
        else {
            panic!("{entries:?}")
        };
        (name.clone(), *executable, cas.read(digest).unwrap())
    }

    fn field<'a>(header: &'a str, name: &str) -> &'a str {
        header
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in header"))
    }

    #[test]
    fn the_header_describes_the_payload_that_follows() {
        let f = fixture();
        let cas = f.store.cas();
        let tree = payload_tree(cas);
        let p = params("./install.sh");
        let out = run(&p, &ctx(cas, tree)).unwrap();
        let (name, executable, bytes) = bundle(cas, out);
        assert_eq!(name, "bundle.run");
        assert!(executable);
        let text = String::from_utf8_lossy(&bytes);
        let skip: usize = field(&text, "skip").parse().unwrap();
        let size: usize = field(&text, "size").parse().unwrap();
        let sha = field(&text, "sha256");
        assert!(text.starts_with("#!/bin/sh\n"));
        assert_eq!(field(&text, "label"), "'App installer'");
        assert_eq!(field(&text, "startup"), "'install.sh'");
        let payload = &bytes[skip - 1..];
        assert_eq!(payload.len(), size);
        assert_eq!(sha, hex::encode(sha2::Sha256::digest(payload)));
        assert_eq!(&payload[..2], &[0x1f, 0x8b], "gzip");
        let header = std::str::from_utf8(&bytes[..skip - 1]).unwrap();
        assert!(header.ends_with("exit $status\n"), "{header}");
        assert!(
            header.contains("set -- '--verbose' 'it'\\''s a \"test\" $HOME' \"$@\"\n"),
            "{header}"
        );
        assert!(header.contains("\n'./install.sh' \"$@\"\n"), "{header}");
        // The payload is the tree as a tar.
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(payload)
            .read_to_end(&mut tar)
            .unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            ["install.sh", "link", "setup", "share/", "share/data.txt"]
        );
        // Nothing about the machine, the time or the store's path.
        let store_path = f.store.root().display().to_string();
        assert!(!header.contains(&store_path));
        assert!(!header.contains("1700000000"));
    }

    #[test]
    fn bundles_are_deterministic_and_follow_the_time() {
        let f = fixture();
        let cas = f.store.cas();
        let tree = payload_tree(cas);
        let p = Params {
            name: Some("app.run".into()),
            label: None,
            ..params("install.sh")
        };
        let a = run(&p, &ctx(cas, tree)).unwrap();
        assert_eq!(run(&p, &ctx(cas, tree)).unwrap(), a);
        let (name, _, bytes) = bundle(cas, a);
        assert_eq!(name, "app.run");
        assert_eq!(
            field(&String::from_utf8_lossy(&bytes), "label"),
            "'app.run'"
        );
        let later = Ctx {
            source_date_epoch: 1_800_000_000,
            ..ctx(cas, tree)
        };
        assert_ne!(run(&p, &later).unwrap(), a);
    }

    #[test]
    fn startup_must_be_in_the_payload_and_may_be_run_with_sh() {
        let f = fixture();
        let cas = f.store.cas();
        let tree = payload_tree(cas);
        let c = ctx(cas, tree);
        for missing in ["nope.sh", "share"] {
            let e = run(&params(missing), &c).unwrap_err().to_string();
            assert!(e.contains(&format!("payload:{missing}")), "{e}");
            assert!(e.contains(missing), "{e}");
        }
        // `setup` is stored executable but its metadata says 0644.
        let (_, _, bytes) = bundle(cas, run(&params("setup"), &c).unwrap());
        assert!(
            String::from_utf8_lossy(&bytes).contains("\nsh './setup' \"$@\"\n"),
            "not executable: run with sh"
        );
        let (_, _, bytes) = bundle(cas, run(&params("link"), &c).unwrap());
        assert!(String::from_utf8_lossy(&bytes).contains("\n'./link' \"$@\"\n"));
    }

    #[test]
    fn values_that_look_like_placeholders_are_kept() {
        let p = Params {
            label: Some("@SKIP@ @SHA256@ $@ 'x'".into()),
            ..params("install.sh")
        };
        let h = header(&p, "install.sh", true, 5, &"0".repeat(64));
        assert_eq!(field(&h, "label"), r"'@SKIP@ @SHA256@ $@ '\''x'\'''");
        assert!(h.contains("\n'./install.sh' \"$@\"\n"), "{h}");
        assert!(!h.contains("@RUN@") && !h.contains("@SET_ARGS@"));
    }

    #[test]
    fn a_header_of_any_length_points_at_its_payload() {
        // Offsets around powers of ten change the header's own length.
        let p = params("install.sh");
        for pad in 0..40 {
            let p = Params {
                label: Some("x".repeat(pad * 7)),
                ..p.clone()
            };
            let h = header(&p, "install.sh", true, 5, &"0".repeat(64));
            assert_eq!(field(&h, "skip"), (h.len() + 1).to_string());
        }
    }

    #[test]
    fn parameters_are_checked() {
        let parse = |json: serde_json::Value| {
            crate::builtin::Builtin::parse("makeself", json.as_object().unwrap().clone())
        };
        assert!(parse(serde_json::json!({"from": "p", "startup": "./install.sh"})).is_ok());
        assert!(parse(serde_json::json!({"from": "p", "startup": "bin/setup", "args": ["a"], "label": "L", "name": "x.run"})).is_ok());
        for bad in ["/install.sh", "", "./", "../x", "a/../b", "a//b", "a\nb"] {
            let e = parse(serde_json::json!({"from": "p", "startup": bad})).unwrap_err();
            assert_eq!(e.field(), Some("startup"), "{bad:?}");
        }
        let e = parse(serde_json::json!({"from": "p"})).unwrap_err();
        assert!(e.message.contains("startup"), "{}", e.message);
        let e = parse(serde_json::json!({"from": "p", "startup": "s", "name": "a/b"})).unwrap_err();
        assert_eq!(e.field(), Some("name"));
        let e = parse(serde_json::json!({"from": "p", "startup": "s", "args": ["ok", "a\u{0}"]}))
            .unwrap_err();
        assert_eq!(e.field(), Some("args"));
        let e = parse(serde_json::json!({"from": "p", "startup": "s", "level": 3})).unwrap_err();
        assert_eq!(e.field(), Some("level"));
    }
}
