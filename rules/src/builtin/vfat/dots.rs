//! The `.` and `..` entries of every folder put where FAT wants them.
//!
//! fatfs 0.3.6 (the release on crates.io) writes a long-name entry before
//! each of a new folder's `.` and `..`, so they sit in slots 1 and 3
//! instead of 0 and 1: fsck.vfat moves them and Linux's `fsck` calls the
//! folder damaged. Once the image is written, every folder is visited and
//! its first four slots rewritten as `.`, `..` and two deleted entries. On
//! FAT32 `..` of a folder in the root names cluster 0, as the specification
//! says, where fatfs writes the root's cluster.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

const ENTRY: usize = 32;
const LONG_NAME: u8 = 0x0f;
const DIRECTORY: u8 = 0x10;
const VOLUME: u8 = 0x08;
const DELETED: u8 = 0xe5;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fat {
    F12,
    F16,
    F32,
}

struct Volume {
    fat_kind: Fat,
    bytes_per_cluster: u64,
    first_data: u64,
    /// The root folder: a fixed region (FAT12/16) or a cluster (FAT32).
    root_region: Option<(u64, usize)>,
    root_cluster: u32,
    fat: Vec<u8>,
}

fn bad(what: &str) -> io::Error {
    io::Error::other(format!("unexpected FAT layout: {what}"))
}

fn u16_at(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn u32_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

impl Volume {
    fn read(file: &File) -> io::Result<Volume> {
        let mut boot = [0u8; 512];
        file.read_exact_at(&mut boot, 0)?;
        let bps = u16_at(&boot, 11);
        let spc = u64::from(boot[13]);
        let reserved = u16_at(&boot, 14);
        let fats = u64::from(boot[16]);
        let root_entries = u16_at(&boot, 17);
        let total = match u16_at(&boot, 19) {
            0 => u32_at(&boot, 32),
            n => n,
        };
        let fat_sectors = match u16_at(&boot, 22) {
            0 => u32_at(&boot, 36),
            n => n,
        };
        if bps == 0 || spc == 0 || fats == 0 {
            return Err(bad("an empty boot sector"));
        }
        let root_sectors = (root_entries * ENTRY as u64).div_ceil(bps);
        let first_data = reserved + fats * fat_sectors + root_sectors;
        let clusters = total.checked_sub(first_data).ok_or_else(|| bad("size"))? / spc;
        let fat_kind = if clusters < 4085 {
            Fat::F12
        } else if clusters < 65525 {
            Fat::F16
        } else {
            Fat::F32
        };
        let mut fat = vec![0u8; (fat_sectors * bps) as usize];
        file.read_exact_at(&mut fat, reserved * bps)?;
        Ok(Volume {
            fat_kind,
            bytes_per_cluster: spc * bps,
            first_data: first_data * bps,
            root_region: (fat_kind != Fat::F32).then(|| {
                (
                    (reserved + fats * fat_sectors) * bps,
                    root_entries as usize * ENTRY,
                )
            }),
            root_cluster: if fat_kind == Fat::F32 {
                u32_at(&boot, 44) as u32
            } else {
                0
            },
            fat,
        })
    }

    /// The cluster after `c`, `None` at the end of its chain.
    fn next(&self, c: u32) -> Option<u32> {
        let c = c as usize;
        let at = |i: usize| self.fat.get(i).copied().unwrap_or(0xff) as u32;
        let (value, end) = match self.fat_kind {
            Fat::F12 => {
                let i = c + c / 2;
                let v = at(i) | at(i + 1) << 8;
                (if c % 2 == 1 { v >> 4 } else { v & 0xfff }, 0xff8)
            }
            Fat::F16 => (at(2 * c) | at(2 * c + 1) << 8, 0xfff8),
            Fat::F32 => (
                (at(4 * c) | at(4 * c + 1) << 8 | at(4 * c + 2) << 16 | at(4 * c + 3) << 24)
                    & 0x0fff_ffff,
                0x0fff_fff8,
            ),
        };
        (value >= 2 && value < end).then_some(value)
    }

    fn offset(&self, cluster: u32) -> u64 {
        self.first_data + u64::from(cluster - 2) * self.bytes_per_cluster
    }

    /// A folder's entries: the root's region, or its clusters' bytes.
    fn folder(&self, file: &File, first: u32) -> io::Result<Vec<u8>> {
        if first == self.root_cluster
            && let Some((at, len)) = self.root_region
        {
            let mut b = vec![0u8; len];
            file.read_exact_at(&mut b, at)?;
            return Ok(b);
        }
        let mut out = Vec::new();
        let mut cluster = Some(first);
        let mut hops = 0usize;
        while let Some(c) = cluster {
            hops += 1;
            if hops > self.fat.len() {
                return Err(bad("a cluster chain that loops"));
            }
            let mut b = vec![0u8; self.bytes_per_cluster as usize];
            file.read_exact_at(&mut b, self.offset(c))?;
            out.extend_from_slice(&b);
            cluster = self.next(c);
        }
        Ok(out)
    }
}

/// Puts `.` and `..` first in every folder below the root of the FAT image
/// in `file`.
pub(super) fn repair(file: &File) -> io::Result<()> {
    let v = Volume::read(file)?;
    let mut folders = vec![v.root_cluster];
    while let Some(folder) = folders.pop() {
        let bytes = v.folder(file, folder)?;
        for e in bytes.chunks_exact(ENTRY) {
            match e[0] {
                0 => break,
                DELETED | b'.' => continue,
                _ => {}
            }
            let attr = e[11];
            if attr == LONG_NAME || attr & VOLUME != 0 || attr & DIRECTORY == 0 {
                continue;
            }
            let child = (u32_at(e, 20) << 16 | u16_at(e, 26)) as u32;
            if child < 2 {
                return Err(bad("a folder without a cluster"));
            }
            fix_first_slots(&v, file, child, folder)?;
            folders.push(child);
        }
    }
    Ok(())
}

fn fix_first_slots(v: &Volume, file: &File, folder: u32, parent: u32) -> io::Result<()> {
    let at = v.offset(folder);
    let mut slots = [0u8; 4 * ENTRY];
    file.read_exact_at(&mut slots, at)?;
    let name = |i: usize| &slots[i * ENTRY..i * ENTRY + 11];
    let attr = |i: usize| slots[i * ENTRY + 11];
    if name(0) == b".          " && name(1) == b"..         " {
        return Ok(());
    }
    if !(attr(0) == LONG_NAME
        && name(1) == b".          "
        && attr(2) == LONG_NAME
        && name(3) == b"..         ")
    {
        return Err(bad("a folder whose first entries are not `.` and `..`"));
    }
    let mut fixed = [0u8; 4 * ENTRY];
    fixed[..ENTRY].copy_from_slice(&slots[ENTRY..2 * ENTRY]);
    fixed[ENTRY..2 * ENTRY].copy_from_slice(&slots[3 * ENTRY..]);
    fixed[2 * ENTRY..3 * ENTRY].copy_from_slice(&slots[..ENTRY]);
    fixed[3 * ENTRY..].copy_from_slice(&slots[2 * ENTRY..3 * ENTRY]);
    fixed[2 * ENTRY] = DELETED;
    fixed[3 * ENTRY] = DELETED;
    // `..` of a folder in the root names cluster 0.
    if parent == v.root_cluster {
        fixed[ENTRY + 20..ENTRY + 22].fill(0);
        fixed[ENTRY + 26..ENTRY + 28].fill(0);
    }
    file.write_all_at(&fixed, at)
}
