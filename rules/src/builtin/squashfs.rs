//! `squashfs`: a read-only SquashFS 4.0 image of a tree (backhand).
//!
//! ```yaml
//! rootfs-img:
//!   rule: squashfs
//!   from: rootfs            # a target's output, `target:sub/dir`, or `srcs`
//!   compression: xz         # gzip (default) | xz
//!   name: rootfs.squashfs   # optional output file name
//! ```
//!
//! Modes, owners, symlinks and device nodes come from the tree's metadata
//! (files without any: 0644, or 0755 if executable, root:root). Every time
//! in the image is SOURCE_DATE_EPOCH; the image is as large as its content.

use serde::{Deserialize, Serialize};
use strata_store::tree::{DeviceKind, Node, TreeBuilder};

use super::volume::{Kind, items, root_meta};
use super::{Builtin, from_fields};
use super::{BuiltinError, Ctx, From, Named, ParamError, check_file_name, key};
use crate::table::{Field, Parse, Rule};

/// `squashfs`: a tree as one SquashFS image file.
pub const RULE: Rule = Rule {
    name: "squashfs",
    doc: "lays a tree out as a reproducible SquashFS image, keeping modes, owners, links and devices",
    fields: &[
        Field::value(
            "from",
            "the tree to lay out: `srcs` or a target, optionally a path inside",
        ),
        Field::value("compression", "gzip (default) or xz"),
        Field::value(
            "name",
            "the image's file name (default `<from's target>.squashfs`)",
        ),
    ],
    parse: Parse::Builtin(|f| Ok(Builtin::Squashfs(from_fields(f)?))),
    image_output: false,
    // An image of its input tree (a disk image of its partitions) holds it.
    contains_inputs: true,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Xz,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub from: From,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub name: Option<String>,
}

impl Params {
    pub(super) fn validate(&self) -> Result<(), ParamError> {
        if let Some(name) = &self.name {
            check_file_name("name", name)?;
        }
        Ok(())
    }

    pub(super) fn inputs(&self) -> Vec<Named<String>> {
        self.from.named(key("from"))
    }

    pub fn file_name(&self) -> String {
        super::volume::image_name(&self.name, &self.from, "squashfs")
    }
}

/// A device number as Linux encodes it in 32 bits (`new_encode_dev`), the
/// form SquashFS stores.
fn device_number(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

pub fn run(p: &Params, ctx: &Ctx) -> Result<strata_store::Digest, BuiltinError> {
    use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader, compression::Compressor};

    let (root, root_meta) = match ctx.entry(&p.from)? {
        strata_store::tree::Entry::Dir { digest, meta } => (digest, root_meta(meta)),
        _ => {
            return Err(BuiltinError::Input {
                what: String::from(p.from.clone()),
                reason: "is not a folder".into(),
            });
        }
    };
    // SquashFS holds 32-bit times; past 2106 the time is refused rather
    // than wrapped.
    let time = u32::try_from(ctx.source_date_epoch).map_err(|_| {
        BuiltinError::Format(format!(
            "SOURCE_DATE_EPOCH {} is past what SquashFS can hold (2106)",
            ctx.source_date_epoch
        ))
    })?;
    let bad = |path: &str, e: backhand::BackhandError| BuiltinError::Refused {
        entry: path.to_string(),
        reason: format!("SquashFS cannot hold it: {e}"),
    };

    let mut fs = FilesystemWriter::default();
    fs.set_time(time);
    fs.set_root_mode(root_meta.mode as u16);
    fs.set_root_uid(root_meta.uid);
    fs.set_root_gid(root_meta.gid);
    let codec = match p.compression {
        Compression::Gzip => Compressor::Gzip,
        Compression::Xz => Compressor::Xz,
    };
    fs.set_compressor(
        FilesystemCompressor::new(codec, None).map_err(|e| BuiltinError::Format(e.to_string()))?,
    );
    for item in items(ctx.cas, &root)? {
        let header = NodeHeader::new(item.meta.mode as u16, item.meta.uid, item.meta.gid, time);
        let path = format!("/{}", item.path);
        let pushed = match item.kind {
            Kind::Dir => fs.push_dir(&path, header),
            // Opened when the image is written, one at a time.
            Kind::File { digest } => fs.push_file_from_path(ctx.cas.path(&digest), &path, header),
            Kind::Symlink { target } => fs.push_symlink(target, &path, header),
            Kind::Device { kind, major, minor } => match kind {
                DeviceKind::Char => fs.push_char_device(device_number(major, minor), &path, header),
                DeviceKind::Block => {
                    fs.push_block_device(device_number(major, minor), &path, header)
                }
                DeviceKind::Fifo => fs.push_fifo(&path, header),
            },
        };
        pushed.map_err(|e| bad(&item.path, e))?;
    }

    let mut out = ctx.cas.scratch_file()?;
    let mut w = std::io::BufWriter::new(out.file());
    fs.write(&mut w)
        .map_err(|e| BuiltinError::Format(format!("cannot write the SquashFS image: {e}")))?;
    std::io::Write::flush(&mut w)?;
    drop(w);
    let blob = out.finish()?;
    let mut tree = TreeBuilder::new();
    tree.insert(&p.file_name(), Node::file(blob, false))
        .map_err(BuiltinError::Format)?;
    Ok(tree.store(ctx.cas)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_are_encoded_as_linux_does() {
        assert_eq!(device_number(1, 3), 0x103);
        assert_eq!(device_number(8, 1), 0x801);
        // A minor above 255 goes into the high bits.
        assert_eq!(device_number(4, 0x1234), 0x34 | (4 << 8) | (0x1200 << 12));
    }

    #[test]
    fn parameters_are_checked() {
        let parse = |json: serde_json::Value| {
            crate::builtin::Builtin::parse("squashfs", json.as_object().unwrap().clone())
        };
        let ok = parse(serde_json::json!({"from": "rootfs", "compression": "xz"})).unwrap();
        assert_eq!(ok.single_output_file().as_deref(), Some("rootfs.squashfs"));
        for (json, field) in [
            (
                serde_json::json!({"from": "rootfs", "compression": "lz4"}),
                "compression",
            ),
            (serde_json::json!({"from": "rootfs", "name": "a/b"}), "name"),
            (serde_json::json!({"from": "rootfs", "size": "1M"}), "size"),
        ] {
            let e = parse(json.clone()).unwrap_err();
            assert_eq!(e.field(), Some(field), "{json}: {}", e.message);
        }
    }
}
