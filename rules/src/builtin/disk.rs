//! `disk`: a partitioned disk image (GPT or MBR) from file-system images,
//! such as an SD card for a Raspberry Pi (a FAT boot partition and a root
//! file system) or a USB stick with an EFI system partition.
//!
//! ```yaml
//! sdcard:
//!   rule: disk
//!   table: mbr               # gpt (default) | mbr
//!   size: 2GiB               # optional: default, the partitions plus 1 MiB
//!   name: sdcard.img         # optional output file name (default disk.img)
//!   partitions:
//!     - {type: fat32, from: boot-fs, size: 256MiB, label: boot}
//!     - {type: linux, from: root-fs}           # size: fit (the image's size)
//!     - {type: linux-swap, size: 512MiB, start: 1GiB}
//! ```
//!
//! Partitions start on 1 MiB boundaries, one after another unless `start`
//! says where; `size: fit` (the default) is the image's size rounded up to
//! 1 MiB. A partition without `from` is left empty (zeros). Types are named
//! (`efi`, `fat32`, `fat16`, `linux`, `linux-swap`, `linux-root-x86-64`,
//! `linux-root-arm64`, `bios-boot`, ...), or given as a GPT type GUID or an
//! MBR type byte (`0x83`). The disk and partition GUIDs (GPT) and the disk
//! signature (MBR) derive from the partitions' contents and the parameters.

use serde::{Deserialize, Serialize};
use strata_store::tree::{Node, TreeBuilder};

use super::volume::{Size, as_uuid, derived_id, round_up, show_size};
use super::{Builtin, PathExt, from_fields};
use super::{BuiltinError, Ctx, From, Named, ParamError, check_file_name, key};
use crate::table::{Field, Parse, Rule};

/// `disk`: partitions laid out in one image file.
pub const RULE: Rule = Rule {
    name: "disk",
    doc: "lays file-system images out as partitions of a reproducible GPT or MBR disk image",
    fields: &[
        Field::value(
            "partitions",
            "the partitions in order: `type`, `from` (a target's image), `size` (or `fit`), `start`, `label`",
        ),
        Field::value("table", "gpt (default) or mbr"),
        Field::value(
            "size",
            "the disk's size; default: the partitions plus 1 MiB",
        ),
        Field::value("name", "the image's file name (default `disk.img`)"),
    ],
    parse: Parse::Builtin(|f| Ok(Builtin::Disk(from_fields(f)?))),
    image_output: false,
    // An image of its input tree (a disk image of its partitions) holds it.
    contains_inputs: true,
};

const SECTOR: u64 = 512;
/// Where partitions start and how their sizes round: what fdisk, sgdisk and
/// the Raspberry Pi images use.
const ALIGN: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    #[default]
    Gpt,
    Mbr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub partitions: Vec<Partition>,
    #[serde(default)]
    pub table: Table,
    #[serde(default)]
    pub size: Option<Size>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub from: Option<From>,
    #[serde(default)]
    pub size: PartSize,
    #[serde(default)]
    pub start: Option<Size>,
    #[serde(default)]
    pub label: Option<String>,
}

/// A partition's size: `fit` (its image's, to 1 MiB) or a size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value", into = "serde_json::Value")]
pub enum PartSize {
    #[default]
    Fit,
    Fixed(u64),
}

impl TryFrom<serde_json::Value> for PartSize {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<PartSize, String> {
        if v.as_str() == Some("fit") {
            return Ok(PartSize::Fit);
        }
        Size::try_from(v)
            .map(|s| PartSize::Fixed(s.0))
            .map_err(|e| format!("{e}, or `fit`"))
    }
}

impl std::convert::From<PartSize> for serde_json::Value {
    fn from(s: PartSize) -> serde_json::Value {
        match s {
            PartSize::Fit => "fit".into(),
            PartSize::Fixed(n) => n.into(),
        }
    }
}

/// A partition type: its GPT type GUID and MBR type byte, where it has one.
struct PartType {
    gpt: Option<[u8; 16]>,
    mbr: Option<u8>,
}

/// The named types, with their GPT GUID (as written) and MBR byte.
const TYPES: &[(&str, Option<&str>, Option<u8>)] = &[
    (
        "efi",
        Some("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        Some(0xef),
    ),
    (
        "fat32",
        Some("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"),
        Some(0x0c),
    ),
    (
        "fat16",
        Some("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"),
        Some(0x0e),
    ),
    (
        "linux",
        Some("0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
        Some(0x83),
    ),
    (
        "linux-swap",
        Some("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"),
        Some(0x82),
    ),
    (
        "linux-root-x86-64",
        Some("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
        Some(0x83),
    ),
    (
        "linux-root-arm64",
        Some("B921B045-1DF0-41C3-AF44-4C6F280D3FAE"),
        Some(0x83),
    ),
    (
        "bios-boot",
        Some("21686148-6449-6E6F-744E-656564454649"),
        None,
    ),
];

fn type_names() -> String {
    TYPES.iter().map(|t| t.0).collect::<Vec<_>>().join(", ")
}

/// A GUID as written (`C12A7328-F81F-...`) in the byte order GPT stores:
/// the first three fields little-endian.
fn guid_bytes(text: &str) -> Option<[u8; 16]> {
    let parts: Vec<&str> = text.split('-').collect();
    if parts.iter().map(|p| p.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
        return None;
    }
    let hex = hex::decode(parts.concat()).ok()?;
    let mut b: [u8; 16] = hex.try_into().ok()?;
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    Some(b)
}

fn part_type(name: &str, table: Table) -> Result<PartType, String> {
    if let Some((_, gpt, mbr)) = TYPES.iter().find(|t| t.0 == name) {
        let t = PartType {
            gpt: gpt.and_then(guid_bytes),
            mbr: *mbr,
        };
        return match (table, t.gpt, t.mbr) {
            (Table::Mbr, _, None) => Err(format!("`{name}` has no MBR type; use `table: gpt`")),
            _ => Ok(t),
        };
    }
    if let Some(hex) = name.strip_prefix("0x")
        && let Ok(byte) = u8::from_str_radix(hex, 16)
        && byte != 0
    {
        return match table {
            Table::Mbr => Ok(PartType {
                gpt: None,
                mbr: Some(byte),
            }),
            Table::Gpt => Err(format!(
                "`{name}` is an MBR type byte; a GPT partition's type is a name or a GUID"
            )),
        };
    }
    if let Some(guid) = guid_bytes(name) {
        return match table {
            Table::Gpt => Ok(PartType {
                gpt: Some(guid),
                mbr: None,
            }),
            Table::Mbr => Err(format!(
                "`{name}` is a GPT type GUID; an MBR partition's type is a name or a byte such as 0x83"
            )),
        };
    }
    Err(format!("unknown partition type `{name}`"))
}

impl Params {
    pub(super) fn validate(&self) -> Result<(), ParamError> {
        if let Some(name) = &self.name {
            check_file_name("name", name)?;
        }
        if self.partitions.is_empty() {
            return Err(ParamError::new("partitions", "a disk needs a partition"));
        }
        let max = match self.table {
            Table::Gpt => 128,
            Table::Mbr => 4,
        };
        if self.partitions.len() > max {
            return Err(ParamError::new(
                "partitions",
                format!(
                    "{} partitions: a{} table holds at most {max} (primary) partitions",
                    self.partitions.len(),
                    if self.table == Table::Mbr {
                        "n MBR"
                    } else {
                        " GPT"
                    }
                ),
            ));
        }
        if let Some(size) = self.size
            && !size.0.is_multiple_of(SECTOR)
        {
            return Err(ParamError::new(
                "size",
                "a disk is a whole number of 512-byte sectors",
            ));
        }
        // Where the partition before ends (and which it is, `None` for the
        // table), as far as the parameters alone say: after a `fit`
        // partition, only the built images tell.
        let mut end: Option<(u64, Option<usize>)> = Some((ALIGN, None));
        for (i, p) in self.partitions.iter().enumerate() {
            let at = key("partitions").index(i);
            part_type(&p.kind, self.table).map_err(|m| {
                ParamError::at(at.clone().key("type"), m).with_hint(format!(
                    "a name ({}), a GPT type GUID, or an MBR type byte such as 0x83",
                    type_names()
                ))
            })?;
            if let Some(label) = &p.label {
                let limit = match self.table {
                    Table::Gpt => 36,
                    Table::Mbr => 0,
                };
                if label.encode_utf16().count() > limit {
                    return Err(ParamError::at(
                        at.clone().key("label"),
                        match self.table {
                            Table::Gpt => format!("`{label}` is longer than GPT's 36 characters"),
                            Table::Mbr => {
                                "MBR partitions have no label (label the file system instead)"
                                    .into()
                            }
                        },
                    ));
                }
            }
            if let PartSize::Fixed(n) = p.size
                && !n.is_multiple_of(SECTOR)
            {
                return Err(ParamError::at(
                    at.clone().key("size"),
                    "a partition is a whole number of 512-byte sectors",
                ));
            }
            if p.from.is_none() && p.size == PartSize::Fit {
                return Err(ParamError::at(
                    at.clone(),
                    "an empty partition (no `from`) needs a `size`",
                ));
            }
            if let Some(from) = &p.from
                && from.target.is_none()
            {
                return Err(ParamError::at(
                    at.clone().key("from"),
                    "a partition's content is a target's image file, not `srcs`",
                ));
            }
            let start = match (p.start, end) {
                (Some(start), _) if !start.0.is_multiple_of(SECTOR) => {
                    return Err(ParamError::at(
                        at.clone().key("start"),
                        "a partition starts on a 512-byte sector",
                    ));
                }
                (Some(start), Some((prev_end, prev))) if start.0 < prev_end => {
                    return Err(ParamError::at(
                        at.clone().key("start"),
                        match prev {
                            None => format!(
                                "a partition starts at 1 MiB or later (the table is before it), not at {}",
                                show_size(start.0)
                            ),
                            Some(prev) => format!(
                                "starts at {}, inside partitions[{prev}], which ends at {}",
                                show_size(start.0),
                                show_size(prev_end)
                            ),
                        },
                    )
                    .with_hint(
                        "partitions follow one another from 1 MiB: leave `start` out, or start past the end of the one before",
                    ));
                }
                (Some(start), _) => Some(start.0),
                (None, Some((prev_end, _))) => Some(round_up(prev_end, ALIGN)),
                (None, None) => None,
            };
            end = match (start, p.size) {
                (Some(start), PartSize::Fixed(n)) => Some((start + n, Some(i))),
                _ => None,
            };
        }
        Ok(())
    }

    pub(super) fn inputs(&self) -> Vec<Named<String>> {
        self.partitions
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                p.from
                    .iter()
                    .flat_map(move |f| f.named(key("partitions").index(i).key("from")))
            })
            .collect()
    }

    pub fn file_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| "disk.img".into())
    }
}

/// A partition placed on the disk.
struct Placed {
    start: u64,
    size: u64,
    content: Option<strata_store::Digest>,
    kind: PartType,
    label: String,
}

pub fn run(p: &Params, ctx: &Ctx) -> Result<strata_store::Digest, BuiltinError> {
    let mut placed = Vec::new();
    let mut next = ALIGN;
    let mut seed: Vec<u8> = b"strata/disk".to_vec();
    seed.extend_from_slice(Builtin::Disk(p.clone()).canonical().as_bytes());
    for (i, part) in p.partitions.iter().enumerate() {
        let what = format!("partitions[{i}]");
        let content = match &part.from {
            Some(from) => Some(ctx.file(from)?.1),
            None => None,
        };
        let start = part.start.map_or(next, |s| s.0);
        if start < next {
            return Err(BuiltinError::Input {
                what,
                reason: format!(
                    "starts at {}, inside the partition before it, which ends at {}",
                    show_size(start),
                    show_size(next)
                ),
            });
        }
        let image = content.map_or(0, |d| d.size_bytes);
        let size = match part.size {
            PartSize::Fit => round_up(image.max(1), ALIGN),
            PartSize::Fixed(n) => n,
        };
        if image > size {
            return Err(BuiltinError::Input {
                what,
                reason: format!(
                    "is {} and its image `{}` is {}: write `size: {}MiB` or `size: fit`",
                    show_size(size),
                    part.from.clone().map(String::from).unwrap_or_default(),
                    show_size(image),
                    round_up(image, ALIGN) >> 20
                ),
            });
        }
        if let Some(d) = content {
            seed.extend_from_slice(&d.hash);
        }
        placed.push(Placed {
            start,
            size,
            content,
            kind: part_type(&part.kind, p.table).map_err(BuiltinError::Format)?,
            label: part.label.clone().unwrap_or_default(),
        });
        next = round_up(start + size, ALIGN);
    }
    // GPT keeps a copy of its table in the disk's last 33 sectors.
    let tail = match p.table {
        Table::Gpt => 33 * SECTOR,
        Table::Mbr => 0,
    };
    let needed = round_up(
        placed.last().map_or(ALIGN, |l| l.start + l.size) + tail,
        ALIGN,
    );
    let size = match p.size {
        Some(s) if s.0 < needed => {
            return Err(BuiltinError::Input {
                what: "partitions".into(),
                reason: format!(
                    "need a disk of {} at least; `size` is {}",
                    show_size(needed),
                    show_size(s.0)
                ),
            });
        }
        Some(s) => s.0,
        None => needed,
    };
    if p.table == Table::Mbr && size / SECTOR > u64::from(u32::MAX) {
        return Err(BuiltinError::Format(
            "an MBR disk holds at most 2 TiB; use `table: gpt`".into(),
        ));
    }

    let mut out = ctx.cas.scratch_file()?;
    out.file().set_len(size)?;
    let file = out.file();
    match p.table {
        Table::Gpt => write_gpt(file, size, &placed, &seed)?,
        Table::Mbr => write_mbr(file, &placed, &seed)?,
    }
    for part in &placed {
        if let Some(d) = part.content {
            copy_sparse(ctx, &d, file, part.start)?;
        }
    }
    let blob = out.finish()?;
    let mut tree = TreeBuilder::new();
    tree.insert(&p.file_name(), Node::file(blob, false))
        .map_err(BuiltinError::Format)?;
    Ok(tree.store(ctx.cas)?)
}

/// Copies a blob into the image at `at`, leaving runs of zeros unwritten
/// (the scratch file is sparse, and so then is the stored image).
fn copy_sparse(
    ctx: &Ctx,
    digest: &strata_store::Digest,
    file: &std::fs::File,
    at: u64,
) -> Result<(), BuiltinError> {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let mut blob = std::fs::File::open(ctx.cas.path(digest))
        .map_err(|_| strata_store::StoreError::Missing { digest: *digest })?;
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = match blob.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if buf[..n].iter().any(|&b| b != 0) {
            file.write_all_at(&buf[..n], at + offset)?;
        }
        offset += n as u64;
    }
    Ok(())
}

/// A GUID for `what` derived from the disk's seed, in GPT's byte order.
fn derived_guid(seed: &[u8], what: &[u8]) -> [u8; 16] {
    let mut b = as_uuid(derived_id(&[seed, what]));
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One MBR partition entry (CHS fields set to "beyond CHS", as for large
/// disks: every tool reads the LBA fields).
fn mbr_entry(entry: &mut [u8], kind: u8, start: u64, sectors: u64) {
    entry[0] = 0;
    entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[4] = kind;
    entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[8..12].copy_from_slice(&(start as u32).to_le_bytes());
    entry[12..16].copy_from_slice(&(sectors.min(u64::from(u32::MAX)) as u32).to_le_bytes());
}

fn write_mbr(file: &std::fs::File, parts: &[Placed], seed: &[u8]) -> Result<(), BuiltinError> {
    use std::os::unix::fs::FileExt;
    let mut mbr = [0u8; 512];
    let signature: [u8; 4] = derived_id(&[seed, b"mbr-signature"]);
    mbr[440..444].copy_from_slice(&signature);
    for (i, p) in parts.iter().enumerate() {
        let at = 446 + 16 * i;
        mbr_entry(
            &mut mbr[at..at + 16],
            p.kind.mbr.expect("checked"),
            p.start / SECTOR,
            p.size / SECTOR,
        );
    }
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    file.write_all_at(&mbr, 0)?;
    Ok(())
}

fn write_gpt(
    file: &std::fs::File,
    size: u64,
    parts: &[Placed],
    seed: &[u8],
) -> Result<(), BuiltinError> {
    use std::os::unix::fs::FileExt;
    let last = size / SECTOR - 1;
    // The protective MBR: one partition of type 0xEE over the whole disk.
    let mut mbr = [0u8; 512];
    mbr_entry(&mut mbr[446..462], 0xee, 1, last);
    mbr[447..450].copy_from_slice(&[0x00, 0x02, 0x00]);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    file.write_all_at(&mbr, 0)?;

    let mut entries = vec![0u8; 128 * 128];
    for (i, p) in parts.iter().enumerate() {
        let e = &mut entries[i * 128..(i + 1) * 128];
        e[0..16].copy_from_slice(&p.kind.gpt.expect("checked"));
        e[16..32].copy_from_slice(&derived_guid(seed, format!("partition-{i}").as_bytes()));
        e[32..40].copy_from_slice(&(p.start / SECTOR).to_le_bytes());
        e[40..48].copy_from_slice(&((p.start + p.size) / SECTOR - 1).to_le_bytes());
        for (j, unit) in p.label.encode_utf16().take(36).enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
        }
    }
    let entries_crc = crc32(&entries);
    let disk_guid = derived_guid(seed, b"disk");
    let header = |current: u64, backup: u64, entries_lba: u64| -> [u8; 512] {
        let mut h = [0u8; 512];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(last - 33).to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    file.write_all_at(&header(1, last, 2), SECTOR)?;
    file.write_all_at(&entries, 2 * SECTOR)?;
    file.write_all_at(&entries, (last - 32) * SECTOR)?;
    file.write_all_at(&header(last, 1, last - 32), last * SECTOR)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_ieee_one() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn guids_are_stored_mixed_endian() {
        let g = guid_bytes("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(hex::encode(g), "28732ac11ff8d211ba4b00a0c93ec93b");
        assert!(guid_bytes("C12A7328F81F11D2BA4B00A0C93EC93B").is_none());
    }

    #[test]
    fn parameters_are_checked_at_their_place() {
        let parse = |json: serde_json::Value| {
            crate::builtin::Builtin::parse("disk", json.as_object().unwrap().clone())
        };
        let ok = parse(serde_json::json!({"partitions": [
            {"type": "efi", "from": "esp", "size": "64MiB"},
            {"type": "linux", "from": "root:root.ext4"},
        ]}))
        .unwrap();
        assert_eq!(
            ok.inputs().into_iter().map(|n| n.value).collect::<Vec<_>>(),
            ["esp", "root"]
        );
        assert_eq!(ok.single_output_file().as_deref(), Some("disk.img"));
        for (json, path) in [
            (
                serde_json::json!({"partitions": [{"type": "nope", "from": "a"}]}),
                "partitions[0].type",
            ),
            (
                serde_json::json!({"table": "mbr", "partitions": [{"type": "bios-boot", "from": "a"}]}),
                "partitions[0].type",
            ),
            (
                serde_json::json!({"partitions": [
                    {"type": "linux", "size": "8MiB"},
                    {"type": "linux", "size": "8MiB", "start": "4MiB"},
                ]}),
                "partitions[1].start",
            ),
            (
                serde_json::json!({"partitions": [{"type": "linux", "size": "8MiB", "start": 512}]}),
                "partitions[0].start",
            ),
            (
                serde_json::json!({"partitions": [{"type": "linux"}]}),
                "partitions[0]",
            ),
            (
                serde_json::json!({"partitions": [{"type": "linux", "from": "srcs"}]}),
                "partitions[0].from",
            ),
            (
                serde_json::json!({"partitions": [{"type": "linux", "from": "a", "size": "big"}]}),
                "partitions[0].size",
            ),
            (serde_json::json!({"partitions": []}), "partitions"),
        ] {
            let e = parse(json.clone()).unwrap_err();
            assert_eq!(
                super::super::path_text(&e.path),
                path,
                "{json}: {}",
                e.message
            );
        }
        let e = parse(serde_json::json!({"partitions": [
            {"type": "linux", "size": "8MiB"},
            {"type": "linux", "size": "8MiB", "start": "4MiB"},
        ]}))
        .unwrap_err();
        assert!(
            e.message
                .contains("inside partitions[0], which ends at 9 MiB"),
            "{}",
            e.message
        );
    }
}
