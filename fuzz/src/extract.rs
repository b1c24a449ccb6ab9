//! `extract_archive`: the input is an archive (tar, compressed or not, or a
//! .deb: the rule tells them apart by content). It is stored as
//! `work/pkg` of an input root and extracted by the `extract` built-in
//! through the public path the engine uses (`Builtin::parse`, then
//! `Builtin::run`), with `max_size` of 16 MiB so a bomb stays cheap.
//!
//! The parameters vary with the input's length (so seed files stay plain
//! archives): defaults, `control: true` for an `ar` archive, stripping and
//! excluding, or including with a prefix.
//!
//! Tar headers carry a checksum that the `tar` crate verifies, so nearly
//! every mutation of a header would be refused before any interesting code
//! runs. The harness therefore first rewrites the checksum of every header
//! of a plain tar, and of the plain `*.tar` members of an `ar` archive
//! ([`prepare`]); compressed streams are left as they are. Set
//! `STRATA_FUZZ_DUMP=FILE` to write the prepared archive (what the rule
//! reads) to FILE, for a regression test.
//!
//! Besides "no panic", one property is checked: a tree the rule returns is a
//! valid stored tree (`walk` reads it back without error).

use serde_json::{Map, Value, json};
use strata_rules::builtin::{Builtin, Ctx};
use strata_store::tree::{Node, TreeBuilder, walk};

/// `max_size` for every run: 16 MiB of declared content.
pub const MAX_SIZE: u64 = 16 << 20;

/// The rule's fields for an input of this length and content.
pub fn fields(data: &[u8]) -> Map<String, Value> {
    let is_ar = data.starts_with(b"!<arch>\n");
    let extra = match data.len() % 4 {
        0 => json!({}),
        1 if is_ar => json!({"control": true}),
        1 => json!({"strip_components": 2}),
        2 => json!({"strip_components": 1, "exclude": ["usr/share/**", "*.txt"]}),
        _ => json!({"include": ["usr/**", "etc/*", "DEBIAN"], "prefix": "opt/x"}),
    };
    let mut fields = json!({"from": "srcs:pkg", "max_size": MAX_SIZE});
    for (k, v) in extra.as_object().expect("an object") {
        fields[k] = v.clone();
    }
    match fields {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

/// Extracts `data` (once [`prepare`]d); never panics.
pub fn run(data: &[u8]) {
    let archive = prepare(data);
    if let Some(path) = std::env::var_os("STRATA_FUZZ_DUMP") {
        std::fs::write(path, &archive).expect("write STRATA_FUZZ_DUMP");
    }
    crate::with_store(|store| {
        let cas = store.cas();
        let blob = cas.put_bytes(&archive).expect("store the archive");
        let mut root = TreeBuilder::new();
        root.insert("work/pkg", Node::file(blob, false))
            .expect("a clean path");
        let input_root = root.store(cas).expect("store the input root");
        let rule = Builtin::parse("extract", fields(data)).expect("valid parameters");
        let ctx = Ctx {
            cas,
            input_root,
            source_date_epoch: 0,
            dep_keys: Default::default(),
        };
        match rule.run(&ctx) {
            Ok(tree) => {
                if let Err(e) = walk(cas, &tree) {
                    panic!("extract returned a tree that does not read back: {e}");
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    })
}

/// `data` with the checksum of every tar header it can find rewritten: the
/// headers of a plain tar, and of the members named `*.tar` of an `ar`
/// archive. Compressed streams (by their magic) are left alone.
pub fn prepare(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if let Some(members) = out.strip_prefix(b"!<arch>\n").map(|m| m.len()) {
        let mut pos = out.len() - members;
        while pos + 60 <= out.len() {
            let header = &out[pos..pos + 60];
            let name = String::from_utf8_lossy(&header[..16])
                .trim_end()
                .to_string();
            let Some(size) = std::str::from_utf8(&header[48..58])
                .ok()
                .and_then(|s| s.trim_end().parse::<usize>().ok())
            else {
                break;
            };
            let start = pos + 60;
            let end = start.saturating_add(size).min(out.len());
            if name.trim_end_matches('/').ends_with(".tar") && !compressed(&out[start..end]) {
                fix_tar(&mut out[start..end]);
            }
            pos = end + size % 2;
        }
    } else if !compressed(&out) {
        fix_tar(&mut out);
    }
    out
}

/// Whether `data` starts like a gzip, xz, zstd or bzip2 stream.
fn compressed(data: &[u8]) -> bool {
    const MAGIC: &[&[u8]] = &[b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"BZh"];
    MAGIC.iter().any(|m| data.starts_with(m))
}

/// Rewrites the checksum of each header of the plain tar stream `tar`,
/// following the sizes the headers declare; stops at the first block of
/// zeros or at a size it cannot read.
fn fix_tar(tar: &mut [u8]) {
    let mut pos = 0usize;
    while pos + 512 <= tar.len() {
        let block = &mut tar[pos..pos + 512];
        if block.iter().all(|b| *b == 0) {
            return;
        }
        let Some(size) = tar_size(&block[124..136]) else {
            return;
        };
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let blocks = size.div_ceil(512);
        match blocks
            .checked_mul(512)
            .and_then(|n| n.checked_add(512))
            .and_then(|n| usize::try_from(n).ok())
            .and_then(|n| pos.checked_add(n))
        {
            Some(next) => pos = next,
            None => return,
        }
    }
}

/// The size field of a tar header: octal text, or base-256 (GNU).
fn tar_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let tail = &field[field.len() - 8..];
        return Some(u64::from_be_bytes(tail.try_into().ok()?));
    }
    let text: String = field
        .iter()
        .map(|b| *b as char)
        .take_while(|c| *c != '\0')
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}
