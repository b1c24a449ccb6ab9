//! What the file-system image rules (`squashfs`, `vfat`, `disk`) share: the
//! entries of a tree with the metadata each format writes, sizes as
//! BUILD.yaml writes them, and identifiers derived from content.

use serde::{Deserialize, Serialize};
use strata_store::tree::{DeviceKind, Entry, Meta, walk};
use strata_store::{Cas, Digest};

use super::BuiltinError;

/// One entry of a tree to lay out, with the metadata it gets in an image.
pub(crate) struct Item {
    /// Its path below the tree's root, `/`-separated, never empty.
    pub path: String,
    pub kind: Kind,
    pub meta: Meta,
}

pub(crate) enum Kind {
    Dir,
    File {
        digest: Digest,
    },
    Symlink {
        target: String,
    },
    Device {
        kind: DeviceKind,
        major: u32,
        minor: u32,
    },
}

/// The metadata an entry without any gets: what a tarball of it holds
/// (`strata_formats::tarball`), so an image and an archive of one tree agree.
fn meta_or_default(meta: Option<Meta>, mode: u32) -> Meta {
    meta.unwrap_or(Meta {
        mode,
        uid: 0,
        gid: 0,
    })
}

/// The root folder's metadata (0755 root:root unless the tree says).
pub(crate) fn root_meta(meta: Option<Meta>) -> Meta {
    meta_or_default(meta, 0o755)
}

/// Every entry of the tree at `root`, parents before children, in name order.
pub(crate) fn items(cas: &Cas, root: &Digest) -> Result<Vec<Item>, BuiltinError> {
    Ok(walk(cas, root)?
        .into_iter()
        .map(|(path, e)| {
            let (kind, meta) = match e {
                Entry::Dir { meta, .. } => (Kind::Dir, meta_or_default(meta, 0o755)),
                Entry::File {
                    digest,
                    executable,
                    meta,
                } => (
                    Kind::File { digest },
                    meta_or_default(meta, if executable { 0o755 } else { 0o644 }),
                ),
                Entry::Symlink { target, meta } => {
                    (Kind::Symlink { target }, meta_or_default(meta, 0o777))
                }
                Entry::Device {
                    kind,
                    major,
                    minor,
                    meta,
                } => (
                    Kind::Device { kind, major, minor },
                    meta_or_default(meta, 0o644),
                ),
            };
            Item { path, kind, meta }
        })
        .collect())
}

/// The file an image rule writes: `name:`, else `<from's target>.<extension>`
/// (`srcs.<extension>` for an image of the sources).
pub(crate) fn image_name(name: &Option<String>, from: &super::From, extension: &str) -> String {
    name.clone().unwrap_or_else(|| {
        let stem = from.target.clone().unwrap_or_else(|| "srcs".into());
        format!("{stem}.{extension}")
    })
}

/// `n` bytes with a unit, for messages: `48 MiB`, `1536 KiB`, `700 bytes`.
pub(crate) fn show_size(n: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

/// Rounds `n` up to a multiple of `unit` (a power of two).
pub(crate) fn round_up(n: u64, unit: u64) -> u64 {
    n.div_ceil(unit) * unit
}

/// A size written in BUILD.yaml: a whole number of bytes, or a whole number
/// followed by a binary unit (`64MiB`, `1G`). `MB` and the like are refused,
/// as in `limits: {memory:}`, since they mean powers of 1,000 elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value", into = "u64")]
pub struct Size(pub u64);

impl TryFrom<serde_json::Value> for Size {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<Size, String> {
        let text = match &v {
            serde_json::Value::String(s) => s.trim().to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Err(format!("{v} is not a size such as \"64MiB\"")),
        };
        let bad = || format!("`{text}` is not a size such as \"64MiB\", \"2G\" or 1048576");
        let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(bad());
        }
        let (number, unit) = text.split_at(digits);
        let shift = match unit.trim_start() {
            "" | "B" => 0,
            "K" | "KiB" => 10,
            "M" | "MiB" => 20,
            "G" | "GiB" => 30,
            "T" | "TiB" => 40,
            _ => return Err(bad()),
        };
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1 << shift))
            .filter(|b| *b > 0 && *b < 1 << 50)
            .map(Size)
            .ok_or_else(|| format!("`{text}` is out of range (1 byte to 1 PiB)"))
    }
}

impl std::convert::From<Size> for u64 {
    fn from(s: Size) -> u64 {
        s.0
    }
}

/// `n` bytes derived from `parts` (a rule's name, its tree's digest, its
/// parameters): volume IDs, UUIDs and GUIDs that change with the content
/// and never with the machine or the time.
pub(crate) fn derived_id<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    use sha2::Digest as _;
    const { assert!(N <= 32, "a SHA-256 has 32 bytes") };
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let sum = h.finalize();
    let mut out = [0u8; N];
    out.copy_from_slice(&sum[..N]);
    out
}

/// An RFC 4122 version 4 style UUID from 16 derived bytes (the version and
/// variant bits set, so tools that check them accept it).
pub(crate) fn as_uuid(mut b: [u8; 16]) -> [u8; 16] {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bytes_or_binary_units() {
        let size = |v: serde_json::Value| Size::try_from(v).map(|s| s.0);
        assert_eq!(size("64MiB".into()), Ok(64 << 20));
        assert_eq!(size("2G".into()), Ok(2 << 30));
        assert_eq!(size("512 KiB".into()), Ok(512 << 10));
        assert_eq!(size(1048576.into()), Ok(1 << 20));
        for bad in ["64MB", "1.5G", "", "M", "0", "-1M"] {
            assert!(size(bad.into()).is_err(), "{bad}");
        }
        assert!(size(serde_json::json!([1])).is_err());
    }

    #[test]
    fn sizes_are_shown_in_the_largest_whole_unit() {
        assert_eq!(show_size(48 << 20), "48 MiB");
        assert_eq!(show_size(1536 << 10), "1536 KiB");
        assert_eq!(show_size(700), "700 bytes");
    }

    #[test]
    fn derived_ids_depend_on_every_part_and_its_boundaries() {
        let a: [u8; 16] = derived_id(&[b"ab", b"c"]);
        let b: [u8; 16] = derived_id(&[b"a", b"bc"]);
        assert_ne!(a, b);
        assert_eq!(a, derived_id::<16>(&[b"ab", b"c"]));
        let u = as_uuid(a);
        assert_eq!(u[6] >> 4, 4);
        assert_eq!(u[8] >> 6, 2);
    }
}
