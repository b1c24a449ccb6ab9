//! `vfat`: a FAT12/16/32 file-system image of a tree (fatfs), with long
//! names: a boot partition, an EFI system partition, a USB stick.
//!
//! ```yaml
//! boot-fs:
//!   rule: vfat
//!   from: boot              # a target's output, `target:sub/dir`, or `srcs`
//!   size: 64MiB             # optional: default, the content plus a margin
//!   fat: 32                 # optional: 12, 16 or 32 (default by size)
//!   label: BOOT             # optional volume label, at most 11 characters
//!   name: boot.vfat         # optional output file name
//! ```
//!
//! FAT has no owners, modes, links or device nodes: a tree holding a
//! symbolic link or a device is refused naming it, as is a name FAT cannot
//! hold (`:`, `*`, `?`, `"`, `<`, `>`, `|`, `\`, control characters) or two
//! names that differ only in case. Every time is SOURCE_DATE_EPOCH (UTC;
//! before 1980, 1980-01-01, FAT's first day).

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use strata_store::tree::{Node, TreeBuilder};

use super::volume::{Item, Kind, Size, derived_id, items, round_up, show_size};
use super::{Builtin, from_fields};
use super::{BuiltinError, Ctx, From, Named, ParamError, check_file_name, key};
use crate::table::{Field, Parse, Rule};

mod dots;

/// `vfat`: a tree as one FAT image file.
pub const RULE: Rule = Rule {
    name: "vfat",
    doc: "lays a tree out as a reproducible FAT (vfat) image with long names",
    fields: &[
        Field::value(
            "from",
            "the tree to lay out: `srcs` or a target, optionally a path inside",
        ),
        Field::value(
            "size",
            "the image's size (`64MiB`, `1G`, bytes); default: what the content needs plus a margin",
        ),
        Field::value("fat", "12, 16 or 32 (default: chosen by size)"),
        Field::value("label", "the volume label, at most 11 characters"),
        Field::value(
            "name",
            "the image's file name (default `<from's target>.vfat`)",
        ),
    ],
    parse: Parse::Builtin(|f| Ok(Builtin::Vfat(from_fields(f)?))),
    image_output: false,
    // An image of its input tree (a disk image of its partitions) holds it.
    contains_inputs: true,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub from: From,
    #[serde(default)]
    pub size: Option<Size>,
    #[serde(default)]
    pub fat: Option<u8>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// FAT's sector: every size is a whole number of them.
const SECTOR: u64 = 512;

impl Params {
    pub(super) fn validate(&self) -> Result<(), ParamError> {
        if let Some(name) = &self.name {
            check_file_name("name", name)?;
        }
        if let Some(fat) = self.fat
            && ![12, 16, 32].contains(&fat)
        {
            return Err(ParamError::new(
                "fat",
                format!("FAT{fat} does not exist: write 12, 16 or 32"),
            ));
        }
        if let Some(label) = &self.label {
            label_bytes(label).map_err(|m| ParamError::new("label", m))?;
        }
        if let Some(size) = self.size
            && (!size.0.is_multiple_of(SECTOR) || size.0 < 64 << 10 || size.0 > 2 << 40)
        {
            return Err(ParamError::new(
                "size",
                "a FAT image is a whole number of 512-byte sectors, from 64 KiB to 2 TiB",
            ));
        }
        Ok(())
    }

    pub(super) fn inputs(&self) -> Vec<Named<String>> {
        self.from.named(key("from"))
    }

    pub fn file_name(&self) -> String {
        super::volume::image_name(&self.name, &self.from, "vfat")
    }

    fn fat_type(&self) -> Option<fatfs::FatType> {
        match self.fat {
            Some(12) => Some(fatfs::FatType::Fat12),
            Some(16) => Some(fatfs::FatType::Fat16),
            Some(32) => Some(fatfs::FatType::Fat32),
            _ => None,
        }
    }
}

/// A volume label as the boot sector holds it: upper case, space padded.
fn label_bytes(label: &str) -> Result<[u8; 11], String> {
    if label.is_empty() || label.len() > 11 {
        return Err(format!("`{label}` is not 1 to 11 characters"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || " !#$%&'()-@^_`{}~".contains(c);
    if !label.chars().all(ok) {
        return Err(format!(
            "`{label}` holds a character a FAT label cannot: use letters, digits, spaces and !#$%&'()-@^_`{{}}~"
        ));
    }
    let mut out = [b' '; 11];
    for (o, b) in out.iter_mut().zip(label.to_ascii_uppercase().bytes()) {
        *o = b;
    }
    Ok(out)
}

pub fn run(p: &Params, ctx: &Ctx) -> Result<strata_store::Digest, BuiltinError> {
    let root = ctx.tree(&p.from)?;
    let items = items(ctx.cas, &root)?;
    check_names(&items)?;
    let times = time_provider(ctx.source_date_epoch);
    let volume_id = u32::from_le_bytes(derived_id(&[
        b"strata/vfat",
        root.hash.as_slice(),
        p.label.as_deref().unwrap_or("").as_bytes(),
    ]));
    let layout = Layout {
        items: &items,
        ctx,
        fat: p.fat_type(),
        label: p
            .label
            .as_deref()
            .map(label_bytes)
            .transpose()
            .map_err(BuiltinError::Format)?,
        volume_id,
        times,
    };
    let blob = match p.size {
        Some(size) => match layout.write(size.0)? {
            Written::Done(blob) => blob,
            Written::Full => {
                let needed = layout.smallest_fitting(size.0)?;
                return Err(BuiltinError::Input {
                    what: String::from(p.from.clone()),
                    reason: format!(
                        "does not fit in a {} FAT image (`size`): it needs {} (write `size: {}`, or leave `size` out to have it computed)",
                        show_size(size.0),
                        show_size(needed.0),
                        needed.1
                    ),
                });
            }
        },
        None => layout.fitting()?,
    };
    let mut tree = TreeBuilder::new();
    tree.insert(&p.file_name(), Node::file(blob, false))
        .map_err(BuiltinError::Format)?;
    Ok(tree.store(ctx.cas)?)
}

/// Refuses what FAT cannot hold, naming the entry: links, devices, names
/// with characters FAT forbids, names equal but for case in one folder.
fn check_names(items: &[Item]) -> Result<(), BuiltinError> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for item in items {
        let refuse = |reason: String| BuiltinError::Refused {
            entry: item.path.clone(),
            reason,
        };
        match item.kind {
            Kind::Symlink { .. } => {
                return Err(refuse(
                    "FAT has no symbolic links; copy the file it points to instead".into(),
                ));
            }
            Kind::Device { .. } => {
                return Err(refuse("FAT has no device nodes or FIFOs".into()));
            }
            Kind::Dir | Kind::File { .. } => {}
        }
        let name = item.path.rsplit('/').next().unwrap_or(&item.path);
        if let Some(c) = name
            .chars()
            .find(|&c| c < ' ' || "\"*/:<>?\\|\u{7f}".contains(c) || c as u32 > 0xffff)
        {
            return Err(refuse(format!(
                "FAT cannot hold the character {c:?} in a name"
            )));
        }
        if name.encode_utf16().count() > 255 {
            return Err(refuse("FAT names are at most 255 characters".into()));
        }
        if name.ends_with(['.', ' ']) {
            return Err(refuse(
                "FAT drops a trailing dot or space, so the name would change".into(),
            ));
        }
        // FAT compares names without case: a second name equal but for
        // case would overwrite the first.
        if let Some(other) = seen.insert(item.path.to_uppercase(), &item.path) {
            return Err(refuse(format!(
                "FAT does not tell it from `{other}`: names differ only in case"
            )));
        }
    }
    Ok(())
}

struct Layout<'a> {
    items: &'a [Item],
    ctx: &'a Ctx<'a>,
    fat: Option<fatfs::FatType>,
    label: Option<[u8; 11]>,
    volume_id: u32,
    times: &'static FixedTime,
}

enum Written {
    Done(strata_store::Digest),
    /// The content does not fit in the size tried.
    Full,
}

/// Grows a size by a quarter, to whole MiB: the steps both the computed size
/// and the size an error names go through, so they agree.
fn grow(size: u64) -> u64 {
    round_up(size + size / 4, 1 << 20)
}

impl Layout<'_> {
    /// A first guess at the size the content needs: every file and folder
    /// in 4 KiB clusters, plus the FATs and a margin.
    fn estimate(&self) -> u64 {
        let mut data = 0u64;
        let mut dir_entries: BTreeMap<&str, u64> = BTreeMap::new();
        for item in self.items {
            let parent = item.path.rsplit_once('/').map_or("", |(p, _)| p);
            let name = item.path.rsplit('/').next().unwrap_or("");
            // A short entry and the long-name entries, 13 characters each.
            *dir_entries.entry(parent).or_default() +=
                1 + (name.encode_utf16().count() as u64).div_ceil(13);
            if let Kind::File { digest } = &item.kind {
                data += round_up(digest.size_bytes, 4096);
            }
        }
        for entries in dir_entries.values() {
            data += round_up((entries + 2) * 32, 4096);
        }
        round_up(data + data / 16 + (1 << 20), 1 << 20)
    }

    /// The smallest size with enough clusters for the FAT type asked for
    /// (tools tell FAT12, 16 and 32 apart by the count of clusters alone).
    fn minimum(&self) -> u64 {
        match self.fat {
            Some(fatfs::FatType::Fat16) => 5 << 20,
            Some(fatfs::FatType::Fat32) => 34 << 20,
            _ => 64 << 10,
        }
    }

    /// The image at the smallest size along `grow`'s steps that holds the
    /// content.
    fn fitting(&self) -> Result<strata_store::Digest, BuiltinError> {
        let mut size = self.estimate().max(self.minimum());
        for _ in 0..16 {
            if let Written::Done(blob) = self.write(size)? {
                return Ok(blob);
            }
            size = grow(size);
        }
        Err(BuiltinError::Format(format!(
            "no FAT image up to {} holds the tree",
            show_size(size)
        )))
    }

    /// The size a declared `size` too small should have been: the first of
    /// `grow`'s steps above it that fits, and how to write it.
    fn smallest_fitting(&self, declared: u64) -> Result<(u64, String), BuiltinError> {
        let estimate = self.estimate().max(self.minimum());
        let mut size = if estimate > declared {
            estimate
        } else {
            grow(declared)
        };
        for _ in 0..16 {
            if let Written::Done(_) = self.write(size)? {
                return Ok((size, format!("{}MiB", size >> 20)));
            }
            size = grow(size);
        }
        Err(BuiltinError::Format("no FAT image holds the tree".into()))
    }

    /// The image at `size`, or `Full` when the content does not fit.
    fn write(&self, size: u64) -> Result<Written, BuiltinError> {
        let mut out = self.ctx.cas.scratch_file()?;
        out.file().set_len(size)?;
        let mut options = fatfs::FormatVolumeOptions::new()
            .volume_id(self.volume_id)
            .bytes_per_sector(SECTOR as u16)
            .total_sectors((size / SECTOR) as u32);
        if let Some(fat) = self.fat {
            options = options.fat_type(fat);
        }
        if let Some(label) = self.label {
            options = options.volume_label(label);
        }
        let format_error = |e: std::io::Error| {
            BuiltinError::Format(format!(
                "cannot make a {}{} FAT file system: {e}",
                show_size(size),
                self.fat.map(|f| format!(" {f:?}")).unwrap_or_default()
            ))
        };
        fatfs::format_volume(&mut *out.file(), options).map_err(format_error)?;
        out.file().seek(SeekFrom::Start(0))?;
        let fs = fatfs::FileSystem::new(
            &mut *out.file(),
            fatfs::FsOptions::new()
                .update_accessed_date(false)
                .time_provider(self.times),
        )
        .map_err(format_error)?;
        check_clusters(&fs, size)?;
        match self.fill(&fs) {
            Ok(()) => {}
            Err(Fill::Full) => return Ok(Written::Full),
            Err(Fill::Failed(e)) => return Err(e),
        }
        fs.unmount()
            .map_err(|e| BuiltinError::Format(format!("cannot finish the FAT image: {e}")))?;
        dots::repair(out.file())
            .map_err(|e| BuiltinError::Format(format!("cannot finish the FAT image: {e}")))?;
        Ok(Written::Done(out.finish()?))
    }

    fn fill<T: fatfs::ReadWriteSeek>(&self, fs: &fatfs::FileSystem<T>) -> Result<(), Fill> {
        let root = fs.root_dir();
        for item in self.items {
            let failed = |e: std::io::Error| {
                if e.to_string().contains("No space left") {
                    Fill::Full
                } else {
                    Fill::Failed(BuiltinError::Refused {
                        entry: item.path.clone(),
                        reason: format!("FAT cannot hold it: {e}"),
                    })
                }
            };
            match &item.kind {
                Kind::Dir => {
                    root.create_dir(&item.path).map_err(failed)?;
                }
                Kind::File { digest } => {
                    let mut file = root.create_file(&item.path).map_err(failed)?;
                    let mut blob =
                        std::fs::File::open(self.ctx.cas.path(digest)).map_err(|_| {
                            Fill::Failed(
                                strata_store::StoreError::Missing { digest: *digest }.into(),
                            )
                        })?;
                    std::io::copy(&mut blob, &mut file).map_err(failed)?;
                    file.flush().map_err(failed)?;
                }
                // Refused by `check_names` before anything is laid out.
                Kind::Symlink { .. } | Kind::Device { .. } => {}
            }
        }
        Ok(())
    }
}

/// Refuses a volume whose count of clusters other tools would read as
/// another FAT type than the one written (FAT12 below 4,085 clusters,
/// FAT32 from 65,525): fsck and the kernel would see garbage.
fn check_clusters<T: fatfs::ReadWriteSeek>(
    fs: &fatfs::FileSystem<T>,
    size: u64,
) -> Result<(), BuiltinError> {
    let clusters = fs
        .stats()
        .map_err(|e| BuiltinError::Format(format!("cannot read the new FAT image: {e}")))?
        .total_clusters();
    let (name, range) = match fs.fat_type() {
        fatfs::FatType::Fat12 => ("FAT12", 1..4085),
        fatfs::FatType::Fat16 => ("FAT16", 4085..65525),
        fatfs::FatType::Fat32 => ("FAT32", 65525..0x0fff_fff6),
    };
    if range.contains(&clusters) {
        return Ok(());
    }
    Err(BuiltinError::Format(format!(
        "a {} image makes {clusters} clusters, and {name} needs {} to {}: change `size` or `fat`",
        show_size(size),
        range.start,
        range.end - 1
    )))
}

enum Fill {
    Full,
    Failed(BuiltinError),
}

/// The time every entry of an image gets. fatfs asks a `'static` provider;
/// one is made per SOURCE_DATE_EPOCH a process meets, and kept.
#[derive(Debug)]
struct FixedTime(fatfs::DateTime);

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.0
    }
}

fn time_provider(epoch: u64) -> &'static FixedTime {
    static PROVIDERS: Mutex<BTreeMap<u64, &'static FixedTime>> = Mutex::new(BTreeMap::new());
    let mut providers = PROVIDERS.lock().unwrap_or_else(|e| e.into_inner());
    providers
        .entry(epoch)
        .or_insert_with(|| Box::leak(Box::new(FixedTime(dos_time(epoch)))))
}

/// SOURCE_DATE_EPOCH as FAT's date and time (UTC, two-second steps), within
/// FAT's range: 1980-01-01 to 2107-12-31.
fn dos_time(epoch: u64) -> fatfs::DateTime {
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let (year, month, day, secs) = if year < 1980 {
        (1980, 1, 1, 0)
    } else if year > 2107 {
        (2107, 12, 31, 86_399)
    } else {
        (year, month, day, secs)
    };
    fatfs::DateTime {
        date: fatfs::Date {
            year: year as u16,
            month: month as u16,
            day: day as u16,
        },
        time: fatfs::Time {
            hour: (secs / 3600) as u16,
            min: (secs / 60 % 60) as u16,
            sec: (secs % 60 / 2 * 2) as u16,
            millis: 0,
        },
    }
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's
/// algorithm, proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_become_fat_dates_within_its_range() {
        let t = dos_time(1_700_000_000); // 2023-11-14 22:13:20 UTC
        assert_eq!((t.date.year, t.date.month, t.date.day), (2023, 11, 14));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (22, 13, 20));
        let t = dos_time(0);
        assert_eq!((t.date.year, t.date.month, t.date.day), (1980, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        // Seconds in two-second steps.
        assert_eq!(dos_time(1_700_000_001).time.sec, 20);
    }

    #[test]
    fn labels_are_upper_case_and_padded() {
        assert_eq!(&label_bytes("boot").unwrap(), b"BOOT       ");
        assert!(label_bytes("much-too-long").is_err());
        assert!(label_bytes("a/b").is_err());
        assert!(label_bytes("").is_err());
    }

    #[test]
    fn parameters_are_checked() {
        let parse = |json: serde_json::Value| {
            crate::builtin::Builtin::parse("vfat", json.as_object().unwrap().clone())
        };
        let ok = parse(serde_json::json!({"from": "boot", "size": "64MiB", "fat": 32})).unwrap();
        assert_eq!(ok.single_output_file().as_deref(), Some("boot.vfat"));
        for (json, field) in [
            (serde_json::json!({"from": "boot", "fat": 64}), "fat"),
            (serde_json::json!({"from": "boot", "size": "64MB"}), "size"),
            (serde_json::json!({"from": "boot", "size": "1000"}), "size"),
            (serde_json::json!({"from": "boot", "label": "x:y"}), "label"),
            (serde_json::json!({"from": "boot", "name": "../x"}), "name"),
        ] {
            let e = parse(json.clone()).unwrap_err();
            assert_eq!(e.field(), Some(field), "{json}: {}", e.message);
        }
    }
}
