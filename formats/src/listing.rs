//! The entries of an archive, with their metadata and a hash of their
//! content: what the audit compares to say which entries differ rather than
//! where the first differing byte of a compressed stream is.
//!
//! Read: tar (what `archive` writes, and any ustar/GNU/PAX tar), ar with its
//! members and the tars inside (a `.deb`: `data.tar.xz:./usr/bin/x`), and
//! newc cpio (an `initramfs`), each plain or compressed (gzip, zstd, xz,
//! bzip2). Contents are hashed while streaming, so only the list of entries
//! is held in memory.

use std::io::{self, BufRead, BufReader, Read};

use crate::compress;
use crate::unpack::AR_MAGIC;
use serde::Serialize;

/// Stop listing past this many entries: the diff is for reading.
const MAX_ENTRIES: usize = 1_000_000;

/// One entry of an archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntryInfo {
    pub name: String,
    /// `file`, `dir`, `symlink`, `hardlink`, `char`, `block`, `fifo`, `other`.
    pub kind: &'static str,
    pub size: u64,
    /// Permission and special bits (in JSON: octal, `"0644"`).
    #[serde(serialize_with = "octal")]
    pub mode: u32,
    pub mtime: u64,
    pub uid: u64,
    pub gid: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(skip)]
    pub content: [u8; 32],
}

fn octal<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

/// An archive's format as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// `tar`, `ar`, `cpio`, with the compression (`tar+gzip`).
    pub format: String,
    pub entries: Vec<EntryInfo>,
}

/// Lists `input` if it is an archive this module reads; `None` otherwise or
/// if it is damaged.
pub fn list(input: impl Read) -> Option<Listing> {
    let mut raw = BufReader::new(input);
    let compression = compress::Compressed::detect(raw.fill_buf().ok()?);
    let mut decoded = compress::decoder(raw).ok()?;
    let mut head = Vec::with_capacity(512);
    decoded.by_ref().take(512).read_to_end(&mut head).ok()?;
    let mut reader =
        BufReader::with_capacity(64 * 1024, io::Cursor::new(head.clone()).chain(decoded));
    let (format, entries) = if head.starts_with(AR_MAGIC) {
        ("ar", read_ar(&mut reader).ok()?)
    } else if head.starts_with(b"070701") || head.starts_with(b"070702") {
        ("cpio", read_cpio(&mut reader).ok()?)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        ("tar", read_tar(&mut reader, "").ok()?)
    } else {
        return None;
    };
    Some(Listing {
        format: match compression {
            Some(c) => format!("{format}+{}", c.name()),
            None => format.to_string(),
        },
        entries,
    })
}

/// Hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The content hash and length of what `r` yields.
fn hash_all(r: &mut impl Read) -> io::Result<([u8; 32], u64)> {
    let mut h = blake3::Hasher::new();
    let n = io::copy(r, &mut h)?;
    Ok((*h.finalize().as_bytes(), n))
}

fn too_many() -> io::Error {
    io::Error::other("too many entries")
}

fn read_tar(r: impl Read, prefix: &str) -> io::Result<Vec<EntryInfo>> {
    let mut archive = tar::Archive::new(r);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        if out.len() >= MAX_ENTRIES {
            return Err(too_many());
        }
        let header = entry.header().clone();
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let t = header.entry_type();
        let kind = if t.is_file() {
            "file"
        } else if t.is_dir() {
            "dir"
        } else if t.is_symlink() {
            "symlink"
        } else if t.is_hard_link() {
            "hardlink"
        } else if t.is_character_special() {
            "char"
        } else if t.is_block_special() {
            "block"
        } else if t.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let (content, size) = hash_all(&mut entry)?;
        out.push(EntryInfo {
            name: format!("{prefix}{name}"),
            kind,
            size,
            // An empty numeric field (some writers leave owners blank)
            // reads as 0 rather than hiding the whole archive.
            mode: header.mode().unwrap_or(0),
            mtime: header.mtime().unwrap_or(0),
            uid: header.uid().unwrap_or(0),
            gid: header.gid().unwrap_or(0),
            link,
            content,
        });
    }
    Ok(out)
}

/// An `ar` archive: every member, and the entries of members that are
/// (compressed) tars, as `member:entry`.
fn read_ar(r: &mut impl Read) -> io::Result<Vec<EntryInfo>> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    let mut out = Vec::new();
    let mut header = [0u8; 60];
    loop {
        match read_full(r, &mut header)? {
            0 => break,
            60 => {}
            _ => return Err(io::Error::other("truncated ar header")),
        }
        let field = |a: usize, b: usize| String::from_utf8_lossy(&header[a..b]).trim().to_string();
        let num = |a: usize, b: usize, radix: u32| {
            let f = field(a, b);
            if f.is_empty() {
                Ok(0)
            } else {
                u64::from_str_radix(&f, radix).map_err(|_| io::Error::other("bad ar number"))
            }
        };
        let name = field(0, 16).trim_end_matches('/').to_string();
        let size = num(48, 58, 10)?;
        let mut member = Hashing {
            inner: r.by_ref().take(size),
            hasher: blake3::Hasher::new(),
        };
        let nested = if is_tar_name(&name) {
            compress::decoder(&mut member)
                .ok()
                .and_then(|d| read_tar(d, &format!("{name}:")).ok())
        } else {
            None
        };
        // The member as a whole is compared too: hash what the nested read
        // left.
        io::copy(&mut member, &mut io::sink())?;
        let content = *member.hasher.finalize().as_bytes();
        out.push(EntryInfo {
            name: name.clone(),
            kind: "file",
            size,
            mode: num(40, 48, 8)? as u32,
            mtime: num(16, 28, 10)?,
            uid: num(28, 34, 10)?,
            gid: num(34, 40, 10)?,
            link: None,
            content,
        });
        out.extend(nested.into_iter().flatten());
        if size % 2 == 1 {
            let mut pad = [0u8; 1];
            let _ = read_full(r, &mut pad)?;
        }
        if out.len() >= MAX_ENTRIES {
            return Err(too_many());
        }
    }
    Ok(out)
}

fn is_tar_name(name: &str) -> bool {
    name.ends_with(".tar") || name.contains(".tar.")
}

/// Reads as much of `buf` as the stream holds; the count read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A newc cpio archive, up to its `TRAILER!!!`.
fn read_cpio(r: &mut impl Read) -> io::Result<Vec<EntryInfo>> {
    let mut out = Vec::new();
    let mut header = [0u8; 110];
    let mut offset: u64 = 0;
    let skip = |r: &mut dyn Read, n: u64| -> io::Result<()> {
        io::copy(&mut r.take(n), &mut io::sink()).map(|_| ())
    };
    loop {
        if read_full(r, &mut header)? != 110 {
            return Err(io::Error::other("truncated cpio header"));
        }
        let hex = |i: usize| -> io::Result<u64> {
            let f = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])
                .map_err(|_| io::Error::other("bad cpio header"))?;
            u64::from_str_radix(f, 16).map_err(|_| io::Error::other("bad cpio header"))
        };
        let (mode, uid, gid, mtime, size) = (hex(1)?, hex(2)?, hex(3)?, hex(5)?, hex(6)?);
        let (rmajor, rminor, namesize) = (hex(9)?, hex(10)?, hex(11)?);
        if namesize > 4096 {
            return Err(io::Error::other("cpio name too long"));
        }
        let mut name = vec![0u8; namesize as usize];
        r.read_exact(&mut name)?;
        offset += 110 + namesize;
        skip(r, pad4(offset))?;
        offset += pad4(offset);
        let name = String::from_utf8_lossy(name.strip_suffix(b"\0").unwrap_or(&name)).into_owned();
        if name == "TRAILER!!!" {
            break;
        }
        let kind = match mode & 0o170000 {
            0o100000 => "file",
            0o040000 => "dir",
            0o120000 => "symlink",
            0o020000 => "char",
            0o060000 => "block",
            0o010000 => "fifo",
            _ => "other",
        };
        let mut data = r.by_ref().take(size);
        let (content, link) = if kind == "symlink" && size <= 4096 {
            let mut target = Vec::new();
            data.read_to_end(&mut target)?;
            (
                *blake3::hash(&target).as_bytes(),
                Some(String::from_utf8_lossy(&target).into_owned()),
            )
        } else {
            (hash_all(&mut data)?.0, None)
        };
        offset += size;
        skip(r, pad4(offset))?;
        offset += pad4(offset);
        let link =
            link.or_else(|| matches!(kind, "char" | "block").then(|| format!("{rmajor},{rminor}")));
        out.push(EntryInfo {
            name,
            kind,
            size,
            mode: (mode & 0o7777) as u32,
            mtime,
            uid,
            gid,
            link,
            content,
        });
        if out.len() >= MAX_ENTRIES {
            return Err(too_many());
        }
    }
    Ok(out)
}

fn pad4(offset: u64) -> u64 {
    (4 - offset % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 3).unwrap()
    }

    #[test]
    fn other_files_are_not_archives() {
        assert_eq!(list(&b"hello world"[..]), None);
        assert_eq!(list(&zstd(b"hello")[..]), None);
        assert_eq!(list(&b""[..]), None);
    }

    /// A tar, an ar holding a compressed tar, and a newc cpio, each with
    /// a few bytes changed or cut at many places: listing them is an answer
    /// (a listing or `None`), never a panic.
    #[test]
    fn damaged_archives_never_panic() {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [("a", &b"one"[..]), ("dir/b", b"two two")] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, data).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut ar = AR_MAGIC.to_vec();
        let member = zstd(&tar);
        ar.extend(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                "data.tar.zst",
                0,
                0,
                0,
                "100644",
                member.len()
            )
            .as_bytes(),
        );
        ar.extend(&member);
        let mut cpio = Vec::new();
        for (name, mode, size) in [("init", 0o100755, 2), ("TRAILER!!!", 0, 0)] {
            cpio.extend(format!("070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}", 1, 0, 0, 1, 0, 0, 0, 0, 0, name.len() + 1, 0).as_bytes());
            cpio.extend(name.as_bytes());
            cpio.push(0);
            cpio.resize(cpio.len().next_multiple_of(4), 0);
            cpio.extend(&b"#!"[..size]);
            cpio.resize(cpio.len().next_multiple_of(4), 0);
        }
        let originals = [tar.clone(), zstd(&tar), ar, cpio];
        for original in &originals {
            assert!(
                list(&original[..]).is_some(),
                "the undamaged archive is read"
            );
        }
        // xorshift: the same damage on every run.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for original in &originals {
            for _ in 0..400 {
                let mut damaged = original.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % damaged.len();
                    damaged[at] = next() as u8;
                }
                if next() % 4 == 0 {
                    damaged.truncate((next() as usize) % damaged.len());
                }
                let _ = list(&damaged[..]);
            }
        }
    }
}
