//! `deb`: a Debian binary package from a tree.
//!
//! ```yaml
//! app-deb:
//!   rule: deb
//!   srcs: ["debian/*"]
//!   from: rootfs-app                 # the tree installed at /
//!   control:
//!     Package: app
//!     Version: "1.2.3"               # or `version: git-describe` below
//!     Architecture: amd64
//!     Maintainer: "Ops <ops@example.com>"
//!     Depends: "libc6 (>= 2.36)"
//!     Description: "The app\n more text"
//!   version: git-describe            # optional: the workspace's `git describe`
//!   scripts: {postinst: debian/postinst, prerm: debian/prerm}
//!   conffiles: [/etc/app/app.conf]
//!   name: app.deb                    # default <Package>_<Version>_<Architecture>.deb
//! ```
//! The package is an `ar` archive of `debian-binary` ("2.0\n"),
//! `control.tar.xz` and `data.tar.xz`, in that order, with member headers
//! fixed except for sizes (time SOURCE_DATE_EPOCH, owner 0:0, mode 100644).
//! Both tars are written as dpkg-deb writes them: `./`-prefixed names in
//! canonical order, times SOURCE_DATE_EPOCH, owners root:root (named) unless
//! the tree's metadata says otherwise.
//!
//! `control` holds the fields Package, Version, Architecture, Maintainer,
//! Installed-Size (computed as dpkg-gencontrol does unless given), the
//! relationship fields, then any other field sorted, and Description last.
//! Field names are case-insensitive; continuation lines of multi-line values
//! are indented and empty ones written as ` .`. `md5sums` lists every
//! regular file of the tree; `conffiles` must name regular files of it;
//! maintainer scripts (preinst, postinst, prerm, postrm, config) are 0755.
//! The same parameters and inputs give the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use strata_formats::compress::Compression;
use strata_formats::tarball::{TarOptions, write_tree};
use strata_store::tree::{Entry, Meta, Node, TreeBuilder, walk};
use strata_store::{Cas, Digest, StoreError};

use super::{Builtin, from_fields};
use super::{BuiltinError, Ctx, From, Named, ParamError, PathExt, Source, check_file_name, key};
use crate::table::{Field, FieldKind, Parse, Rule};

/// `deb`: a Debian binary package.
pub const RULE: Rule = Rule {
    name: "deb",
    doc: "packs a tree into a Debian binary package",
    fields: &[
        Field::value("from", "the tree the package installs"),
        Field::value(
            "control",
            "the control file's fields (`Package`, `Version`, ...)",
        ),
        Field {
            name: "version",
            doc: "overrides `control.Version`; `git-describe` for the workspace's `git describe`",
            kind: FieldKind::GitDescribe,
        },
        Field::value(
            "scripts",
            "maintainer scripts (`postinst`, ...), each a file of `srcs`",
        ),
        Field::value(
            "conffiles",
            "paths the package marks as configuration files",
        ),
        Field::value(
            "name",
            "the package's file name (default `<package>_<version>_<arch>.deb`)",
        ),
    ],
    parse: Parse::Builtin(|f| Ok(Builtin::Deb(from_fields(f)?))),
    image_output: false,
    contains_inputs: true,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub from: From,
    pub control: BTreeMap<String, String>,
    /// Overrides `control.Version`; the engine replaces `git-describe` with
    /// the workspace's `git describe --tags --always --dirty` before keying.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub scripts: BTreeMap<String, Source>,
    #[serde(default)]
    pub conffiles: Vec<String>,
    #[serde(default)]
    pub name: Option<String>,
}

impl Params {
    pub(super) fn validate(&self) -> Result<(), ParamError> {
        fields(self)?;
        if let Some(script) = self.scripts.keys().find(|k| !SCRIPTS.contains(&k.as_str())) {
            return Err(ParamError::at(
                key("scripts").name(script),
                format!(
                    "`{script}` is not a maintainer script (one of {})",
                    SCRIPTS.join(", ")
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, c) in self.conffiles.iter().enumerate() {
            let at = || key("conffiles").index(i);
            conffile_path(c).map_err(|m| ParamError::at(at(), m))?;
            if !seen.insert(c) {
                return Err(ParamError::at(
                    at(),
                    format!("conffile `{c}` is listed twice"),
                ));
            }
        }
        if let Some(name) = &self.name {
            check_file_name("name", name)?;
        }
        Ok(())
    }

    pub(super) fn inputs(&self) -> Vec<Named<String>> {
        let mut v = self.from.named(key("from"));
        for (name, script) in &self.scripts {
            v.extend(script.0.named(key("scripts").key(name)));
        }
        v
    }

    /// Maintainer scripts taken from the target's sources.
    pub(super) fn source_files(&self) -> Vec<Named<String>> {
        self.scripts
            .iter()
            .filter(|(_, s)| s.0.target.is_none())
            .map(|(name, s)| Named {
                value: s.0.path.clone(),
                path: key("scripts").key(name),
            })
            .collect()
    }
}

/// The maintainer scripts a package may carry.
const SCRIPTS: &[&str] = &["preinst", "postinst", "prerm", "postrm", "config"];

/// Fields written first, in this order (as dpkg-gencontrol does); any
/// other field follows, sorted, and `Description` comes last.
const FIELD_ORDER: &[&str] = &[
    "Package",
    "Source",
    "Version",
    "Architecture",
    "Maintainer",
    "Installed-Size",
    "Pre-Depends",
    "Depends",
    "Recommends",
    "Suggests",
    "Enhances",
    "Breaks",
    "Conflicts",
    "Provides",
    "Replaces",
    "Section",
    "Priority",
    "Homepage",
];
const REQUIRED: &[&str] = &[
    "Package",
    "Version",
    "Architecture",
    "Maintainer",
    "Description",
];

/// Compression of both tar members (dpkg-deb's default).
const XZ_LEVEL: i32 = 6;

fn param_error(field: &str, message: impl Into<String>) -> ParamError {
    ParamError::new(field, message.into())
}

/// The spelling a field is written in: the conventional one for known
/// fields (names are case-insensitive), else as given.
fn canonical_name(name: &str) -> String {
    FIELD_ORDER
        .iter()
        .chain(["Description"].iter())
        .find(|k| k.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_string(), |k| k.to_string())
}

fn check_field_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with(['#', '-'])
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a control field name",
            name.escape_debug()
        ))
    }
}

fn check_package(name: &str) -> Result<(), String> {
    let ok = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Package `{name}` is not a Debian package name (a-z, 0-9, `+`, `-`, `.`; two characters or more, starting with a letter or digit)"
        ))
    }
}

/// `[epoch:]upstream[-revision]`, upstream starting with a digit.
fn check_version(v: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("Version `{v}` is not a Debian version: {why}"));
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) => (Some(e), r),
        None => (None, v),
    };
    if let Some(e) = epoch
        && (e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad("the epoch before `:` must be a number");
    }
    if !rest.starts_with(|c: char| c.is_ascii_digit()) {
        return bad("it must start with a digit");
    }
    if !rest
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ".+~-:".contains(c))
    {
        return bad("only letters, digits and `.+~-:` are allowed");
    }
    if rest.ends_with('-') {
        return bad("the revision after `-` is empty");
    }
    Ok(())
}

fn check_architecture(a: &str) -> Result<(), String> {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Ok(())
    } else {
        Err(format!(
            "Architecture `{a}` is not an architecture name such as `amd64` or `all`"
        ))
    }
}

/// A field value as it appears after `Name: `: surrounding blank space
/// trimmed, continuation lines indented by one space, empty ones as ` .`.
fn field_value(value: &str) -> String {
    let mut lines = value.trim().lines();
    let mut out = lines.next().unwrap_or("").trim_end().to_string();
    for line in lines {
        let line = line.trim_end();
        out.push('\n');
        if line.trim().is_empty() {
            out.push_str(" .");
        } else if line.starts_with([' ', '\t']) {
            out.push_str(line);
        } else {
            out.push(' ');
            out.push_str(line);
        }
    }
    out
}

/// The control fields with canonical names and the `version` override.
fn fields(p: &Params) -> Result<BTreeMap<String, String>, ParamError> {
    let mut fields = BTreeMap::new();
    for (name, value) in &p.control {
        let at = |m: String| ParamError::at(key("control").name(name), m);
        check_field_name(name).map_err(at)?;
        let canonical = canonical_name(name);
        if value.trim().is_empty() {
            return Err(ParamError::at(
                key("control").key(name),
                format!("the field `{canonical}` is empty"),
            ));
        }
        if fields
            .insert(canonical.clone(), field_value(value))
            .is_some()
        {
            return Err(at(format!(
                "field `{canonical}` is given twice (field names are case-insensitive)"
            )));
        }
    }
    if let Some(v) = &p.version {
        check_version(v).map_err(|m| param_error("version", m))?;
        fields.insert("Version".into(), v.clone());
    }
    if let Some(name) = REQUIRED.iter().find(|n| !fields.contains_key(**n)) {
        return Err(param_error(
            "control",
            format!("the required field `{name}` is missing"),
        ));
    }
    // Where a field's value is written: `version:` for the version it
    // overrides, else the control entry of that name, however spelled.
    let value_of = |canonical: &str| {
        if canonical == "Version" && p.version.is_some() {
            return key("version");
        }
        p.control
            .keys()
            .find(|k| canonical_name(k) == canonical)
            .map_or_else(|| key("control"), |k| key("control").key(k))
    };
    for name in ["Package", "Version", "Architecture"] {
        if fields[name].contains('\n') {
            return Err(ParamError::at(
                value_of(name),
                format!("the field `{name}` must be one line"),
            ));
        }
    }
    let at = |name: &'static str| move |m: String| ParamError::at(value_of(name), m);
    check_package(&fields["Package"]).map_err(at("Package"))?;
    check_version(&fields["Version"]).map_err(at("Version"))?;
    check_architecture(&fields["Architecture"]).map_err(at("Architecture"))?;
    if let Some(size) = fields.get("Installed-Size")
        && size.parse::<u64>().is_err()
    {
        return Err(ParamError::at(
            value_of("Installed-Size"),
            format!("Installed-Size `{size}` is not a number of KiB"),
        ));
    }
    Ok(fields)
}

/// The `control` file: known fields in order, then the others sorted,
/// `Description` last.
fn control_text(fields: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut line = |name: &str, value: &str| {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push('\n');
    };
    for name in FIELD_ORDER {
        if let Some(v) = fields.get(*name) {
            line(name, v);
        }
    }
    for (name, v) in fields {
        if !FIELD_ORDER.contains(&name.as_str()) && name != "Description" {
            line(name, v);
        }
    }
    line("Description", &fields["Description"]);
    out
}

impl Params {
    /// The output file name: `name`, or `<Package>_<Version>_<Arch>.deb`
    /// (the version without its epoch, as dpkg-name does).
    pub fn file_name(&self) -> Result<String, ParamError> {
        if let Some(name) = &self.name {
            return Ok(name.clone());
        }
        let f = fields(self)?;
        let version = f["Version"]
            .split_once(':')
            .map_or(f["Version"].as_str(), |(_, v)| v);
        Ok(format!(
            "{}_{version}_{}.deb",
            f["Package"], f["Architecture"]
        ))
    }
}

/// Where a conffile is in the data tree.
fn conffile_path(c: &str) -> Result<String, String> {
    let rel = c
        .strip_prefix('/')
        .ok_or_else(|| format!("conffile `{c}` must be an absolute path"))?;
    if rel.is_empty()
        || c.contains(['\n', '\0'])
        || rel
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(format!(
            "conffile `{}` is not a clean absolute path",
            c.escape_debug()
        ));
    }
    Ok(rel.to_string())
}

/// Writes the tree `root` as a `./`-prefixed, xz-compressed tar into `out`.
fn write_tar_xz<W: Write>(ctx: &Ctx, root: &Digest, out: W) -> Result<W, BuiltinError> {
    // As dpkg-deb writes them: `./` names and `root` owner names.
    let opts = TarOptions {
        dot_prefix: true,
        prefix: String::new(),
        mtime: ctx.source_date_epoch,
        owner_names: true,
    };
    let mut result = Ok(());
    let out = Compression::Xz.encode(XZ_LEVEL, out, |w| {
        result = write_tree(ctx.cas, root, w, &opts).map(drop);
        Ok(())
    })?;
    result?;
    Ok(out)
}

/// One member of an `ar` archive, with a deterministic header: the time is
/// SOURCE_DATE_EPOCH, owner 0:0, mode 100644.
fn ar_member(
    out: &mut impl Write,
    name: &str,
    mtime: u64,
    size: u64,
    data: &mut impl io::Read,
) -> Result<(), BuiltinError> {
    if mtime > 999_999_999_999 {
        return Err(BuiltinError::Format(format!(
            "SOURCE_DATE_EPOCH {mtime} does not fit an ar header"
        )));
    }
    if size > 9_999_999_999 {
        return Err(BuiltinError::Format(format!(
            "`{name}` is too large for an ar archive ({size} bytes)"
        )));
    }
    let header = format!(
        "{name:<16}{mtime:<12}{:<6}{:<6}{:<8}{size:<10}`\n",
        0, 0, "100644"
    );
    debug_assert_eq!(header.len(), 60);
    out.write_all(header.as_bytes())?;
    let copied = io::copy(&mut io::Read::take(data, size), out)?;
    if copied != size {
        return Err(BuiltinError::Format(format!(
            "`{name}` is shorter than expected"
        )));
    }
    if size % 2 == 1 {
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn md5_of(cas: &Cas, digest: &Digest) -> Result<String, BuiltinError> {
    let mut file = std::fs::File::open(cas.path(digest))
        .map_err(|_| StoreError::Missing { digest: *digest })?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match io::Read::read(&mut file, &mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

const ROOT: Meta = Meta {
    mode: 0o755,
    uid: 0,
    gid: 0,
};

fn control_file(cas: &Cas, content: &[u8], mode: u32) -> Result<Node, BuiltinError> {
    Ok(Node::File {
        digest: cas.put_bytes(content)?,
        executable: mode & 0o111 != 0,
        meta: Some(Meta {
            mode,
            uid: 0,
            gid: 0,
        }),
    })
}

pub fn run(p: &Params, ctx: &Ctx) -> Result<Digest, BuiltinError> {
    let param = |e: ParamError| {
        BuiltinError::Format(format!(
            "field `{}`: {}",
            e.field().unwrap_or_default(),
            e.message
        ))
    };
    p.validate().map_err(param)?;
    let mut fields = fields(p).map_err(param)?;
    let name = p.file_name().map_err(param)?;
    let cas = ctx.cas;
    let data = ctx.tree(&p.from)?;
    let entries = walk(cas, &data)?;

    // Installed-Size as dpkg-gencontrol computes it: KiB of each regular
    // file and symlink, rounded up, and 1 for every other entry.
    let kib = |n: u64| n.div_ceil(1024);
    let installed: u64 = 1 + entries
        .iter()
        .map(|(_, e)| match e {
            Entry::File { digest, .. } => kib(digest.size_bytes),
            Entry::Symlink { target, .. } => kib(target.len() as u64),
            _ => 1,
        })
        .sum::<u64>();
    fields
        .entry("Installed-Size".into())
        .or_insert_with(|| installed.to_string());

    let mut md5sums: Vec<(String, String)> = Vec::new();
    for (path, entry) in &entries {
        if path.contains('\n') {
            return Err(BuiltinError::Refused {
                entry: path.escape_debug().to_string(),
                reason: "dpkg cannot list a path holding a newline".into(),
            });
        }
        if let Entry::File { digest, .. } = entry {
            md5sums.push((path.clone(), md5_of(cas, digest)?));
        }
    }
    md5sums.sort();
    for c in &p.conffiles {
        let rel = conffile_path(c).map_err(BuiltinError::Format)?;
        if !entries
            .iter()
            .any(|(path, e)| *path == rel && matches!(e, Entry::File { .. }))
        {
            return Err(BuiltinError::Format(format!(
                "conffile `{c}` is not a regular file of the package's tree"
            )));
        }
    }

    let mut control = TreeBuilder::new();
    control.set_meta(Some(ROOT));
    let mut add = |name: &str, node: Node| control.insert(name, node).map_err(BuiltinError::Format);
    add(
        "control",
        control_file(cas, control_text(&fields).as_bytes(), 0o644)?,
    )?;
    if !md5sums.is_empty() {
        let text: String = md5sums
            .iter()
            .map(|(path, sum)| format!("{sum}  {path}\n"))
            .collect();
        add("md5sums", control_file(cas, text.as_bytes(), 0o644)?)?;
    }
    if !p.conffiles.is_empty() {
        let text: String = p.conffiles.iter().map(|c| format!("{c}\n")).collect();
        add("conffiles", control_file(cas, text.as_bytes(), 0o644)?)?;
    }
    for (script, source) in &p.scripts {
        let (_, digest) = ctx.file(&source.0)?;
        let node = Node::File {
            digest,
            executable: true,
            meta: Some(ROOT),
        };
        add(script, node)?;
    }
    let control = control.store(cas)?;
    let control_tar = write_tar_xz(ctx, &control, Vec::new())?;

    // The data member's size must be known before its header is written,
    // so it is compressed into a blob of its own first.
    let data_tar = write_tar_xz(ctx, &data, cas.writer()?)?.finish()?;

    let mtime = ctx.source_date_epoch;
    let mut deb = cas.writer()?;
    deb.write_all(b"!<arch>\n")?;
    ar_member(&mut deb, "debian-binary", mtime, 4, &mut &b"2.0\n"[..])?;
    ar_member(
        &mut deb,
        "control.tar.xz",
        mtime,
        control_tar.len() as u64,
        &mut control_tar.as_slice(),
    )?;
    let mut blob = std::fs::File::open(cas.path(&data_tar))
        .map_err(|_| StoreError::Missing { digest: data_tar })?;
    ar_member(
        &mut deb,
        "data.tar.xz",
        mtime,
        data_tar.size_bytes,
        &mut blob,
    )?;
    let deb = deb.finish()?;

    let mut out = TreeBuilder::new();
    out.insert(&name, Node::file(deb, false))
        .map_err(BuiltinError::Format)?;
    Ok(out.store(cas)?)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use serde_json::json;
    use strata_formats::compress::decoder;
    use strata_store::tree::DeviceKind;
    use strata_store::{DigestFunction, Store};

    use super::super::Builtin;
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        input_root: Digest,
    }

    /// md5 of "hello\n", as `md5sum` prints it.
    const MD5_HELLO: &str = "b1946ac92492d2347c6235b4d2611184";

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), DigestFunction::Blake3).unwrap();
            let cas = store.cas();
            let put = |s: &str| cas.put_bytes(s.as_bytes()).unwrap();
            let mut b = TreeBuilder::new();
            let meta = |mode, uid, gid| Some(Meta { mode, uid, gid });
            b.insert(
                "work/debian/postinst",
                Node::file(put("#!/bin/sh\necho configured\n"), true),
            )
            .unwrap();
            b.insert("work/debian/prerm", Node::file(put("#!/bin/sh\n"), false))
                .unwrap();
            b.insert("deps/tree/usr/bin/hello", Node::file(put("hello\n"), true))
                .unwrap();
            let su = Node::File {
                digest: put("su\n"),
                executable: true,
                meta: meta(0o4755, 0, 0),
            };
            b.insert("deps/tree/usr/bin/su", su).unwrap();
            let conf = Node::File {
                digest: put("key=1\n"),
                executable: false,
                meta: meta(0o640, 0, 42),
            };
            b.insert("deps/tree/etc/app/app.conf", conf).unwrap();
            let link = Node::Symlink {
                target: "hello".into(),
                meta: None,
            };
            b.insert("deps/tree/usr/bin/hi", link).unwrap();
            let console = Node::Device {
                kind: DeviceKind::Char,
                major: 5,
                minor: 1,
                meta: meta(0o600, 0, 0),
            };
            b.insert("deps/tree/dev/console", console).unwrap();
            let input_root = b.store(cas).unwrap();
            Fixture {
                _dir: dir,
                store,
                input_root,
            }
        }

        fn run_at(
            &self,
            params: serde_json::Value,
            epoch: u64,
        ) -> Result<(String, Vec<u8>), BuiltinError> {
            let Builtin::Deb(p) = parse(params).unwrap() else {
                unreachable!()
            };
            let ctx = Ctx {
                cas: self.store.cas(),
                input_root: self.input_root,
                source_date_epoch: epoch,
                dep_keys: BTreeMap::new(),
            };
            let out = run(&p, &ctx)?;
            let entries = walk(self.store.cas(), &out).unwrap();
            let [
                (
                    name,
                    Entry::File {
                        digest,
                        executable: false,
                        meta: None,
                    },
                ),
            ] = entries.as_slice()
            else {
                panic!("one file expected: {entries:?}")
            };
            Ok((name.clone(), self.store.cas().read(digest).unwrap()))
        }

        fn run(&self, params: serde_json::Value) -> (String, Vec<u8>) {
            self.run_at(params, 1_700_000_000).unwrap()
        }
    }

    fn parse(params: serde_json::Value) -> Result<Builtin, ParamError> {
        let serde_json::Value::Object(fields) = params else {
            panic!("params are an object")
        };
        Builtin::parse("deb", fields)
    }

    fn params() -> serde_json::Value {
        json!({
            "from": "tree",
            "control": {
                "Package": "hello",
                "Version": "1.2.3",
                "Architecture": "amd64",
                "Maintainer": "Ops <ops@example.com>",
                "Depends": "libc6 (>= 2.36)",
                "Section": "utils",
                "X-Custom": "yes",
                "Bugs": "mailto:ops@example.com",
                "Description": "Says hello\nA longer text.\n\nAnother paragraph.\n",
            },
            "scripts": {"postinst": "debian/postinst", "prerm": "debian/prerm"},
            "conffiles": ["/etc/app/app.conf"],
        })
    }

    /// The members of an ar archive: raw header and content.
    fn members(deb: &[u8]) -> Vec<(String, Vec<u8>)> {
        assert!(deb.starts_with(b"!<arch>\n"));
        let mut out = Vec::new();
        let mut at = 8;
        while at < deb.len() {
            let header = String::from_utf8(deb[at..at + 60].to_vec()).unwrap();
            let size: usize = header[48..58].trim().parse().unwrap();
            out.push((header, deb[at + 60..at + 60 + size].to_vec()));
            at += 60 + size + size % 2;
        }
        assert_eq!(at, deb.len());
        // The `ar` crate reads the same members.
        let mut archive = ar::Archive::new(deb);
        let mut names = Vec::new();
        while let Some(entry) = archive.next_entry() {
            names.push(String::from_utf8(entry.unwrap().header().identifier().to_vec()).unwrap());
        }
        assert_eq!(names, ["debian-binary", "control.tar.xz", "data.tar.xz"]);
        out
    }

    /// A tar member as `mode user/group size path[ -> target]` lines, and
    /// the contents of its files.
    fn tar_listing(compressed: &[u8]) -> (Vec<String>, BTreeMap<String, String>) {
        assert!(
            compressed.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            "xz"
        );
        let mut tar = tar::Archive::new(decoder(compressed).unwrap());
        let mut lines = Vec::new();
        let mut files = BTreeMap::new();
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header().clone();
            let path = String::from_utf8(entry.path_bytes().to_vec()).unwrap();
            let mut line = format!(
                "{:?} {:04o} {}/{} {}:{} {} {path}",
                h.entry_type(),
                h.mode().unwrap(),
                h.username().unwrap().unwrap_or(""),
                h.groupname().unwrap().unwrap_or(""),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
            );
            if let Some(target) = entry.link_name_bytes() {
                line.push_str(&format!(" -> {}", String::from_utf8_lossy(&target)));
            }
            if h.entry_type().is_character_special() {
                line.push_str(&format!(
                    " {}:{}",
                    h.device_major().unwrap().unwrap(),
                    h.device_minor().unwrap().unwrap()
                ));
            }
            lines.push(line);
            if h.entry_type().is_file() {
                let mut text = String::new();
                entry.read_to_string(&mut text).unwrap();
                files.insert(path, text);
            }
        }
        (lines, files)
    }

    #[test]
    fn builds_a_debian_package() {
        let f = Fixture::new();
        let (name, deb) = f.run(params());
        assert_eq!(name, "hello_1.2.3_amd64.deb");
        let m = members(&deb);
        assert_eq!(
            m[0].0,
            "debian-binary   1700000000  0     0     100644  4         `\n"
        );
        assert_eq!(m[0].1, b"2.0\n");
        assert!(
            m[1].0
                .starts_with("control.tar.xz  1700000000  0     0     100644  "),
            "{}",
            m[1].0
        );
        assert!(
            m[2].0
                .starts_with("data.tar.xz     1700000000  0     0     100644  "),
            "{}",
            m[2].0
        );

        let (control, files) = tar_listing(&m[1].1);
        assert_eq!(
            control,
            [
                "Directory 0755 root/root 0:0 1700000000 ./",
                "Regular 0644 root/root 0:0 1700000000 ./conffiles",
                "Regular 0644 root/root 0:0 1700000000 ./control",
                "Regular 0644 root/root 0:0 1700000000 ./md5sums",
                "Regular 0755 root/root 0:0 1700000000 ./postinst",
                "Regular 0755 root/root 0:0 1700000000 ./prerm",
            ]
        );
        // Installed-Size: 3 files and a symlink of 1 KiB each, the root,
        // 5 folders and a device of 1 each.
        assert_eq!(
            files["./control"],
            "Package: hello\n\
             Version: 1.2.3\n\
             Architecture: amd64\n\
             Maintainer: Ops <ops@example.com>\n\
             Installed-Size: 11\n\
             Depends: libc6 (>= 2.36)\n\
             Section: utils\n\
             Bugs: mailto:ops@example.com\n\
             X-Custom: yes\n\
             Description: Says hello\n \
             A longer text.\n \
             .\n \
             Another paragraph.\n"
        );
        let md5 = |s: &str| hex::encode(Md5::digest(s.as_bytes()));
        assert_eq!(md5("hello\n"), MD5_HELLO);
        assert_eq!(
            files["./md5sums"],
            format!(
                "{}  etc/app/app.conf\n{MD5_HELLO}  usr/bin/hello\n{}  usr/bin/su\n",
                md5("key=1\n"),
                md5("su\n")
            )
        );
        assert_eq!(files["./conffiles"], "/etc/app/app.conf\n");
        assert_eq!(files["./postinst"], "#!/bin/sh\necho configured\n");

        let (data, files) = tar_listing(&m[2].1);
        assert_eq!(
            data,
            [
                "Directory 0755 root/root 0:0 1700000000 ./",
                "Directory 0755 root/root 0:0 1700000000 ./dev/",
                "Char 0600 root/root 0:0 1700000000 ./dev/console 5:1",
                "Directory 0755 root/root 0:0 1700000000 ./etc/",
                "Directory 0755 root/root 0:0 1700000000 ./etc/app/",
                "Regular 0640 root/ 0:42 1700000000 ./etc/app/app.conf",
                "Directory 0755 root/root 0:0 1700000000 ./usr/",
                "Directory 0755 root/root 0:0 1700000000 ./usr/bin/",
                "Regular 0755 root/root 0:0 1700000000 ./usr/bin/hello",
                "Symlink 0777 root/root 0:0 1700000000 ./usr/bin/hi -> hello",
                "Regular 4755 root/root 0:0 1700000000 ./usr/bin/su",
            ]
        );
        assert_eq!(files["./usr/bin/hello"], "hello\n");
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        let f = Fixture::new();
        let (_, a) = f.run(params());
        let (_, b) = f.run(params());
        assert_eq!(a, b);
        let (_, c) = f.run_at(params(), 0).unwrap();
        assert_ne!(a, c, "the time is SOURCE_DATE_EPOCH");
        assert!(c.starts_with(
            b"!<arch>\ndebian-binary   0           0     0     100644  4         `\n"
        ));
    }

    #[test]
    fn version_overrides_and_names() {
        let f = Fixture::new();
        let mut p = params();
        p["version"] = json!("2:1.0-3~g1a2b3c");
        p["control"].as_object_mut().unwrap().remove("Version");
        p["control"].as_object_mut().unwrap().remove("Description");
        p["control"]["description"] = json!("lower-case field names are recognised");
        p["scripts"] = json!({});
        p["conffiles"] = json!([]);
        let (name, deb) = f.run(p.clone());
        assert_eq!(
            name, "hello_1.0-3~g1a2b3c_amd64.deb",
            "no epoch in the file name"
        );
        let m = members(&deb);
        let (control, files) = tar_listing(&m[1].1);
        assert_eq!(control.len(), 3, "{control:?}");
        let text = &files["./control"];
        assert!(text.contains("\nVersion: 2:1.0-3~g1a2b3c\n"), "{text}");
        assert!(
            text.ends_with("\nDescription: lower-case field names are recognised\n"),
            "{text}"
        );
        p["name"] = json!("app.deb");
        p["control"]["Installed-Size"] = json!("99");
        let (name, deb) = f.run(p);
        assert_eq!(name, "app.deb");
        let (_, files) = tar_listing(&members(&deb)[1].1);
        assert!(files["./control"].contains("\nInstalled-Size: 99\n"));
    }

    #[test]
    fn parameters_are_checked_where_they_are_written() {
        let with = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut p = params();
            edit(&mut p);
            let e = parse(p).unwrap_err();
            (e.field().unwrap_or_default().to_string(), e.message)
        };
        for field in [
            "Package",
            "Version",
            "Architecture",
            "Maintainer",
            "Description",
        ] {
            let (f, m) = with(&|p| {
                p["control"].as_object_mut().unwrap().remove(field);
            });
            assert_eq!(f, "control");
            assert!(m.contains(&format!("`{field}` is missing")), "{m}");
        }
        let (f, m) = with(&|p| p["control"]["Package"] = json!("Hello World"));
        assert_eq!(
            (f.as_str(), m.contains("package name")),
            ("control", true),
            "{m}"
        );
        let (f, m) = with(&|p| p["control"]["Version"] = json!("v1.0"));
        assert_eq!((f.as_str(), m.contains("digit")), ("control", true), "{m}");
        let (f, _) = with(&|p| p["version"] = json!("1.0 beta"));
        assert_eq!(f, "version");
        let (f, m) = with(&|p| p["control"]["package"] = json!("again"));
        assert_eq!((f.as_str(), m.contains("twice")), ("control", true), "{m}");
        let (f, _) = with(&|p| p["control"]["Depends"] = json!(" "));
        assert_eq!(f, "control");
        let (f, _) = with(&|p| p["control"]["Bad Name"] = json!("x"));
        assert_eq!(f, "control");
        let (f, m) = with(&|p| p["scripts"]["triggers"] = json!("debian/postinst"));
        assert_eq!(
            (f.as_str(), m.contains("`triggers`")),
            ("scripts", true),
            "{m}"
        );
        let (f, _) = with(&|p| p["conffiles"] = json!(["etc/app/app.conf"]));
        assert_eq!(f, "conffiles");
        let (f, _) = with(&|p| p["conffiles"] = json!(["/etc/../x"]));
        assert_eq!(f, "conffiles");
        let (f, _) = with(&|p| p["name"] = json!("a/b.deb"));
        assert_eq!(f, "name");
    }

    #[test]
    fn conffiles_and_scripts_must_exist() {
        let f = Fixture::new();
        let mut p = params();
        p["conffiles"] = json!(["/etc/app"]);
        let err = f.run_at(p, 0).unwrap_err().to_string();
        assert!(err.contains("conffile `/etc/app`"), "{err}");
        let mut p = params();
        p["scripts"] = json!({"postrm": "debian/postrm"});
        let err = f.run_at(p, 0).unwrap_err().to_string();
        assert!(err.contains("debian/postrm"), "{err}");
    }
}
