//! `ext4`: an ext4 file-system image of a tree, made by e2fsprogs.
//!
//! ```yaml
//! root-fs:
//!   rule: ext4
//!   from: rootfs            # a target's output, `target:sub/dir`, or `srcs`
//!   size: 512MiB            # optional: default, the content plus a margin
//!   label: root             # optional volume label, at most 16 characters
//!   name: root.ext4         # optional output file name
//! ```
//!
//! No Rust crate writes ext4, so the standard tools do, pinned and keyed:
//! the target becomes two steps. This built-in rule, in-process, lays the
//! tree out for them (`<target>#layout`): each file's content under
//! `files/<n>`, a `debugfs` script that creates every folder, file, link
//! and device node in name order with its mode, owner and times
//! (SOURCE_DATE_EPOCH), and `make.sh`, which a `run` step (`<target>`)
//! then runs in the sandbox with `tools: [mke2fs, debugfs]`, so their
//! packages' versions enter its key: `mke2fs` with the UUID and hash seed
//! derived from the tree's digest and `E2FSPROGS_FAKE_TIME`, then
//! `debugfs -w -f`. Nothing is copied through a folder on disk, so owners,
//! device nodes and names survive without root, and no link count or
//! folder order of the build machine can reach the image.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use strata_store::tree::{DeviceKind, Node, TreeBuilder};

use super::volume::{Kind, Size, as_uuid, derived_id, items, root_meta, round_up, show_size};
use super::{Builtin, from_fields};
use super::{BuiltinError, Ctx, From, Named, ParamError, check_file_name, key};
use crate::table::{Field, Parse, Rule};

/// `ext4`: a tree as one ext4 image file.
pub const RULE: Rule = Rule {
    name: "ext4",
    doc: "lays a tree out as a reproducible ext4 image (e2fsprogs' mke2fs and debugfs, keyed by version)",
    fields: &[
        Field::value(
            "from",
            "the tree to lay out: `srcs` or a target, optionally a path inside",
        ),
        Field::value(
            "size",
            "the image's size (`512MiB`, `2G`, bytes); default: what the content needs plus a margin",
        ),
        Field::value("label", "the volume label, at most 16 characters"),
        Field::value(
            "name",
            "the image's file name (default `<from's target>.ext4`)",
        ),
    ],
    parse: Parse::Builtin(|f| Ok(Builtin::Ext4(from_fields(f)?))),
    image_output: false,
    // An image of its input tree (a disk image of its partitions) holds it.
    contains_inputs: true,
};

/// The programs the image step runs; `tools:` of its `run` step.
pub const TOOLS: &[&str] = &["mke2fs", "debugfs"];

const BLOCK: u64 = 4096;
const INODE_SIZE: u64 = 256;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub from: From,
    #[serde(default)]
    pub size: Option<Size>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

impl Params {
    pub(super) fn validate(&self) -> Result<(), ParamError> {
        if let Some(name) = &self.name {
            check_file_name("name", name)?;
        }
        if let Some(label) = &self.label
            && (label.is_empty()
                || label.len() > 16
                || !label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return Err(ParamError::new(
                "label",
                format!("`{label}` is not 1 to 16 letters, digits, `-`, `_` or `.`"),
            ));
        }
        if let Some(size) = self.size
            && (!size.0.is_multiple_of(BLOCK) || size.0 < 1 << 20)
        {
            return Err(ParamError::new(
                "size",
                "an ext4 image is a whole number of 4 KiB blocks, 1 MiB or more",
            ));
        }
        Ok(())
    }

    pub(super) fn inputs(&self) -> Vec<Named<String>> {
        self.from.named(key("from"))
    }

    pub fn file_name(&self) -> String {
        super::volume::image_name(&self.name, &self.from, "ext4")
    }
}

/// A name as a debugfs script quotes it (libss: inside double quotes, `""`
/// is a quote and a backslash is itself); refused if it cannot be.
fn quoted(path: &str) -> Result<String, BuiltinError> {
    if path.contains(['\n', '\r']) {
        return Err(BuiltinError::Refused {
            entry: path.to_string(),
            reason: "a name with a line break cannot be written through debugfs".into(),
        });
    }
    Ok(format!("\"{}\"", path.replace('"', "\"\"")))
}

/// The journal mke2fs gives a file system of `blocks` 4 KiB blocks
/// (`ext2fs_default_journal_size`), in bytes.
fn journal(blocks: u64) -> u64 {
    let j = match blocks {
        b if b < 2048 => 0,
        b if b < 32_768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16_384,
        b if b < 8192 * 1024 => 32_768,
        b if b < 16_384 * 1024 => 65_536,
        b if b < 32_768 * 1024 => 131_072,
        _ => 262_144,
    };
    j * BLOCK
}

/// One inode per this many bytes, at least: mke2fs's own ratio for an
/// ordinary file system (`inode_ratio` of `mke2fs.conf`), so an image
/// written to after it is flashed has inodes to spare, as one mke2fs made
/// alone would.
const INODE_RATIO: u64 = 16_384;

/// The inodes of an image of `size` bytes holding `entries` entries.
fn inode_count(entries: u64, size: u64) -> u64 {
    round_up((entries + 64).max(size / INODE_RATIO), 64)
}

/// The size a tree of `data` bytes (in blocks) and `entries` entries needs:
/// its blocks, inode tables, the journal, per-group metadata (bitmaps and
/// descriptors, about 1 in 32 blocks with reserved descriptors) and 2 MiB
/// to spare, to whole MiB.
fn needed(data: u64, entries: u64) -> u64 {
    let total = |size: u64| {
        let base = data + inode_count(entries, size) * INODE_SIZE + (2 << 20);
        round_up(base + base / 32 + journal(size / BLOCK), 1 << 20)
    };
    let mut size = total(0);
    loop {
        let next = total(size);
        if next <= size {
            return size;
        }
        size = next;
    }
}

pub fn run(p: &Params, ctx: &Ctx) -> Result<strata_store::Digest, BuiltinError> {
    let (root, root_meta) = match ctx.entry(&p.from)? {
        strata_store::tree::Entry::Dir { digest, meta } => (digest, root_meta(meta)),
        _ => {
            return Err(BuiltinError::Input {
                what: String::from(p.from.clone()),
                reason: "is not a folder".into(),
            });
        }
    };
    let items = items(ctx.cas, &root)?;
    let epoch = ctx.source_date_epoch;
    let mut out = TreeBuilder::new();
    let mut script = String::new();
    let mut data = 0u64;
    let times = |script: &mut String, path: &str| {
        for field in ["atime", "mtime", "ctime", "crtime"] {
            let _ = writeln!(script, "sif {path} {field} @{epoch}");
            let _ = writeln!(script, "sif {path} {field}_extra 0");
        }
    };
    // The root and lost+found that mke2fs made.
    let _ = writeln!(script, "sif / mode 0{:o}", 0o040000 | root_meta.mode);
    let _ = writeln!(script, "sif / uid {}", root_meta.uid);
    let _ = writeln!(script, "sif / gid {}", root_meta.gid);
    times(&mut script, "/");
    times(&mut script, "/lost+found");
    let mut cwd = String::new();
    for (n, item) in items.iter().enumerate() {
        let (parent, name) = item.path.rsplit_once('/').unwrap_or(("", &item.path));
        if parent != cwd {
            let _ = writeln!(script, "cd {}", quoted(&format!("/{parent}"))?);
            cwd = parent.to_string();
        }
        let q = quoted(name)?;
        let type_bits = match &item.kind {
            Kind::Dir => {
                let _ = writeln!(script, "mkdir {q}");
                data += BLOCK;
                0o040000
            }
            Kind::File { digest } => {
                let _ = writeln!(script, "write files/{n} {q}");
                out.insert(&format!("files/{n}"), Node::file(*digest, false))
                    .map_err(BuiltinError::Format)?;
                // Its blocks and, past 4 extents in the inode, an extent block.
                data += round_up(digest.size_bytes, BLOCK)
                    + BLOCK * u64::from(digest.size_bytes > 128 << 20);
                0o100000
            }
            Kind::Symlink { target } => {
                let _ = writeln!(script, "symlink {q} {}", quoted(target)?);
                data += if target.len() < 60 { 0 } else { BLOCK };
                0o120000
            }
            Kind::Device { kind, major, minor } => {
                let (letter, bits) = match kind {
                    DeviceKind::Char => ("c", 0o020000),
                    DeviceKind::Block => ("b", 0o060000),
                    DeviceKind::Fifo => ("p", 0o010000),
                };
                match kind {
                    DeviceKind::Fifo => {
                        let _ = writeln!(script, "mknod {q} p");
                    }
                    _ => {
                        let _ = writeln!(script, "mknod {q} {letter} {major} {minor}");
                    }
                }
                bits
            }
        };
        let path = quoted(&format!("/{}", item.path))?;
        let _ = writeln!(script, "sif {path} mode 0{:o}", type_bits | item.meta.mode);
        let _ = writeln!(script, "sif {path} uid {}", item.meta.uid);
        let _ = writeln!(script, "sif {path} gid {}", item.meta.gid);
        times(&mut script, &path);
    }

    let entries = items.len() as u64;
    let need = needed(data + BLOCK * 4, entries);
    let size = match p.size {
        Some(s) if s.0 < need => {
            return Err(BuiltinError::Input {
                what: String::from(p.from.clone()),
                reason: format!(
                    "does not fit in a {} ext4 image (`size`): it needs {} (write `size: {}MiB`, or leave `size` out to have it computed)",
                    show_size(s.0),
                    show_size(need),
                    need >> 20
                ),
            });
        }
        Some(s) => s.0,
        None => need,
    };
    // Every entry, the reserved ones, and room to grow.
    let inodes = inode_count(entries, size);
    let uuid = uuid_text(as_uuid(derived_id(&[
        b"strata/ext4/uuid",
        &root.hash,
        p.label.as_deref().unwrap_or("").as_bytes(),
    ])));
    let seed = uuid_text(as_uuid(derived_id(&[b"strata/ext4/hash-seed", &root.hash])));
    let label = p
        .label
        .as_deref()
        .map(|l| format!(" -L {l}"))
        .unwrap_or_default();
    let image = p.file_name();
    let make = format!(
        r#"# Made by Strata's `ext4` rule: the image from this folder's layout.
set -eu
here=$(dirname "$0")
img="$OUT/{image}"
# Every time mke2fs and debugfs write is SOURCE_DATE_EPOCH; names sort
# as bytes.
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH
LC_ALL=C
export E2FSPROGS_FAKE_TIME LC_ALL
mke2fs -q -F -t ext4 -b {BLOCK} -I {INODE_SIZE} -N {inodes} -m 0 \
  -U {uuid} -E hash_seed={seed},root_owner={uid}:{gid},lazy_itable_init=0,lazy_journal_init=0,nodiscard{label} \
  "$img" {blocks}
cd "$here"
debugfs -w -f debugfs.cmds "$img" >/dev/null 2>"$TMPDIR/debugfs.err"
# debugfs goes on after a failed command: any message but its banner and
# the inodes it allocates is a failure.
if grep -v -e '^debugfs [0-9]' -e '^Allocated inode' "$TMPDIR/debugfs.err" >&2; then
  if grep -q -i -e 'no free space' -e 'could not allocate' -e 'no free inodes' "$TMPDIR/debugfs.err"; then
    echo "the tree does not fit in a {shown} ext4 image: give a larger \`size\`, or leave it out to have it computed" >&2
  fi
  exit 1
fi
"#,
        uid = root_meta.uid,
        gid = root_meta.gid,
        blocks = size / BLOCK,
        shown = show_size(size),
    );
    out.insert(
        "debugfs.cmds",
        Node::file(ctx.cas.put_bytes(script.as_bytes())?, false),
    )
    .map_err(BuiltinError::Format)?;
    out.insert(
        "make.sh",
        Node::file(ctx.cas.put_bytes(make.as_bytes())?, false),
    )
    .map_err(BuiltinError::Format)?;
    Ok(out.store(ctx.cas)?)
}

fn uuid_text(b: [u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inodes_follow_mke2fs_ratio_or_the_entries() {
        assert_eq!(inode_count(10, 256 << 20), 16_384);
        assert_eq!(inode_count(100_000, 256 << 20), round_up(100_064, 64));
    }

    #[test]
    fn the_size_needed_grows_with_content_and_journal() {
        assert_eq!(needed(0, 64) % (1 << 20), 0);
        assert!(needed(100 << 20, 1000) > 100 << 20);
        // Past 128 MiB the journal grows from 4 MiB to 16 MiB.
        assert!(needed(200 << 20, 1000) >= (200 << 20) + (16 << 20));
    }

    #[test]
    fn names_are_quoted_for_debugfs_or_refused() {
        assert_eq!(quoted("a b").unwrap(), "\"a b\"");
        assert_eq!(quoted("a\"b").unwrap(), "\"a\"\"b\"");
        assert_eq!(quoted("a\\x2db").unwrap(), "\"a\\x2db\"");
        assert!(quoted("a\nb").is_err());
    }

    #[test]
    fn parameters_are_checked() {
        let parse = |json: serde_json::Value| {
            crate::builtin::Builtin::parse("ext4", json.as_object().unwrap().clone())
        };
        let ok =
            parse(serde_json::json!({"from": "rootfs", "size": "64MiB", "label": "root"})).unwrap();
        assert_eq!(ok.single_output_file(), None);
        for (json, field) in [
            (
                serde_json::json!({"from": "rootfs", "label": "has space"}),
                "label",
            ),
            (serde_json::json!({"from": "rootfs", "size": 1000}), "size"),
            (serde_json::json!({"from": "rootfs", "name": "a/b"}), "name"),
        ] {
            let e = parse(json.clone()).unwrap_err();
            assert_eq!(e.field(), Some(field), "{json}: {}", e.message);
        }
    }
}
