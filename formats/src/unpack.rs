//! Untrusted archives into trees: tar streams (plain or compressed with
//! gzip, xz, zstd or bzip2, recognised by content) and .deb packages.
//!
//! This is the reader behind the `extract` rule (whose documentation in
//! `strata_rules::builtin::extract` says what a user sees: paths, selection,
//! metadata, order, limits), image layers, and `docker export` streams.
//!
//! **Paths.** Leading `/` and `.` components are dropped; an entry with a
//! `..` component, a NUL byte or a name that is not UTF-8 is refused.
//! [`Unpacker::select`] may drop leading components and keep only entries
//! matching globs. **Metadata.** Mode (with setuid, setgid, sticky), uid and
//! gid are kept; times are dropped; a hard link becomes a copy of the file
//! it names, which must already have been read. **Order.** A later entry
//! with the same path replaces an earlier one, and the tree is assembled in
//! path order, so the same entries give the same tree whatever their order.
//! **Limits.** [`Limits`] bounds content, entries, depth and header bytes;
//! every refusal names the entry, and a malformed archive is a format error,
//! never a panic.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::rc::Rc;

use globset::GlobSet;
use strata_store::tree::{DeviceKind, EditError, Meta, Node, TreeBuilder};
use strata_store::{Cas, Digest};

use crate::FormatError;
use crate::compress::decoder;

/// The default limit on extracted content: 8 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 8 << 30;

/// At most this many entries in one archive (a .deb counts both its tars).
pub const MAX_ENTRIES: u64 = 1_000_000;

/// At most this many path components. The store walks trees recursively, at
/// about 6 KiB of stack per level in debug builds, so a 2 MiB thread (tokio's
/// blocking pool, test threads) overflows near 330 levels; real trees stay
/// far below this.
pub const MAX_DEPTH: usize = 256;

/// At most this many bytes of headers (long names, PAX records, sparse maps)
/// before one entry; the tar reader holds them in memory.
const MAX_HEADER_BYTES: u64 = 16 << 20;

/// At most this many bytes of paths and link targets, held in memory.
const MAX_NAME_BYTES: u64 = 256 << 20;

/// Files up to this size are read into memory, larger ones streamed.
const SMALL_FILE: u64 = 1 << 20;

/// Folders the archive does not list (parents, `prefix`).
pub const DEFAULT_DIR_META: Meta = Meta {
    mode: 0o755,
    uid: 0,
    gid: 0,
};

/// The first bytes of an `ar` archive (a .deb).
pub const AR_MAGIC: &[u8; 8] = b"!<arch>\n";

/// The bounds an archive must stay within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Declared content bytes of all entries (kept or not).
    pub max_size: u64,
    pub max_entries: u64,
    /// Path components of one entry.
    pub max_depth: usize,
    /// Extension headers (long names, PAX records) before one entry.
    pub max_header_bytes: u64,
    /// Paths and link targets of all entries together.
    pub max_name_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_size: DEFAULT_MAX_SIZE,
            max_entries: MAX_ENTRIES,
            max_depth: MAX_DEPTH,
            max_header_bytes: MAX_HEADER_BYTES,
            max_name_bytes: MAX_NAME_BYTES,
        }
    }
}

/// Unpacks one tar stream into a tree with the rules of `extract` (see the
/// module documentation: paths, metadata, order, limits), keeping every
/// entry. The stream may be plain or compressed with gzip, xz, zstd or bzip2,
/// recognised by content. Folders the archive does not list get 0755
/// root:root. Nothing is written outside the store.
///
/// This is how untrusted tar streams from elsewhere (image layers, `docker
/// export`) become trees.
pub fn tar_to_tree(cas: &Cas, reader: impl Read, limits: Limits) -> Result<Digest, FormatError> {
    unpack_tar(cas, reader, limits, Some(DEFAULT_DIR_META))
}

/// [`tar_to_tree`], with the metadata of folders the archive does not list
/// chosen by the caller: `None` lets an image layer's unlisted parents be
/// told apart from the folders it sets.
pub fn unpack_tar(
    cas: &Cas,
    reader: impl Read,
    limits: Limits,
    unlisted_dirs: Option<Meta>,
) -> Result<Digest, FormatError> {
    let mut x = Unpacker::new(cas, limits, unlisted_dirs);
    x.tar(reader)?;
    x.finish(&[])
}

/// Which part of the archive entries come from: the data (placed at the
/// root, stripped and selected) or a .deb's control files (under DEBIAN/).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Data,
    Control,
}

/// What the archive holds at one path, once every entry is read.
enum Item {
    /// A non-folder entry that is kept.
    Kept { node: Node, shown: String },
    /// A folder entry; kept if selected or if anything below it is kept.
    Dir {
        meta: Meta,
        selected: bool,
        shown: String,
    },
    /// A non-folder entry left out by `include`/`exclude`.
    Skipped,
}

/// Reads archive entries into a tree: [`Unpacker::tar`] or
/// [`Unpacker::deb`], then [`Unpacker::finish`].
pub struct Unpacker<'a> {
    cas: &'a Cas,
    strip: usize,
    include: GlobSet,
    exclude: GlobSet,
    limits: Limits,
    /// Declared content bytes so far.
    size: u64,
    entries: u64,
    name_bytes: u64,
    /// Every entry by its relative path (before `prefix`).
    items: BTreeMap<String, Item>,
    /// Metadata of folders the archive does not list.
    unlisted_dirs: Option<Meta>,
}

/// Counts what the tar reader may read before control comes back to us, so
/// a hostile extension header (a gigantic long name or PAX record, which the
/// tar crate reads into memory) is cut short.
struct Metered<R> {
    inner: R,
    left: Rc<Cell<u64>>,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let left = self.left.get();
        if left == 0 {
            self.tripped.set(true);
            return Err(io::Error::other("extension headers too large"));
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..n])?;
        self.left.set(left - got as u64);
        Ok(got)
    }
}

/// Whether `head` starts with a tar header (its checksum is right), so a
/// plain tar whose first name starts like a compression magic is not taken
/// for a compressed stream.
fn is_tar_header(head: &[u8]) -> bool {
    if head.len() < 512 || head[..512].iter().all(|b| *b == 0) {
        return false;
    }
    let field = &head[148..156];
    let text: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|b| *b != 0)
        .filter(|b| *b != b' ')
        .collect();
    let Some(declared) = std::str::from_utf8(&text)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 8).ok())
    else {
        return false;
    };
    let sum: u32 = head[..148]
        .iter()
        .chain(&head[156..512])
        .map(|b| u32::from(*b))
        .sum::<u32>()
        + 8 * u32::from(b' ');
    sum == declared
}

/// An entry name for messages: lossy UTF-8, and a name longer than 300
/// characters shortened in the middle.
fn shown_path(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= 300 {
        return text.into_owned();
    }
    let head: String = chars[..140].iter().collect();
    let tail: String = chars[chars.len() - 140..].iter().collect();
    format!("{head}...({} characters)...{tail}", chars.len() - 280)
}

impl<'a> Unpacker<'a> {
    /// An unpacker that keeps every entry where the archive puts it;
    /// folders the archive does not list get `unlisted_dirs` (`None`: no
    /// metadata, so an image layer's unlisted parents can be told apart).
    pub fn new(cas: &'a Cas, limits: Limits, unlisted_dirs: Option<Meta>) -> Unpacker<'a> {
        Unpacker {
            cas,
            strip: 0,
            include: GlobSet::empty(),
            exclude: GlobSet::empty(),
            limits,
            size: 0,
            entries: 0,
            name_bytes: 0,
            items: BTreeMap::new(),
            unlisted_dirs,
        }
    }

    fn refuse(entry: &str, reason: impl Into<String>) -> FormatError {
        FormatError::Refused {
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    /// The clean components of an entry path or hard-link target.
    fn components<'p>(&self, raw: &'p [u8], shown: &str) -> Result<Vec<&'p str>, FormatError> {
        let text =
            std::str::from_utf8(raw).map_err(|_| Self::refuse(shown, "the path is not UTF-8"))?;
        if text.contains('\0') {
            return Err(Self::refuse(shown, "the path contains a NUL byte"));
        }
        let parts: Vec<&str> = text
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.contains(&"..") {
            return Err(Self::refuse(shown, "the path has a `..` component"));
        }
        if parts.len() > self.limits.max_depth {
            return Err(Self::refuse(
                shown,
                format!(
                    "the path is nested deeper than {} folders",
                    self.limits.max_depth
                ),
            ));
        }
        Ok(parts)
    }

    /// Where clean components land in the output (before `prefix`); `None`
    /// when `strip_components` removes them all.
    fn place(&self, parts: &[&str], part: Part) -> Option<String> {
        match part {
            Part::Data if parts.len() <= self.strip => None,
            Part::Data => Some(parts[self.strip..].join("/")),
            Part::Control if parts.is_empty() => Some("DEBIAN".into()),
            Part::Control => Some(format!("DEBIAN/{}", parts.join("/"))),
        }
    }

    /// Whether `path` (or a folder above it) matches `set`.
    fn covered(set: &GlobSet, path: &str) -> bool {
        path.match_indices('/')
            .map(|(i, _)| &path[..i])
            .chain(std::iter::once(path))
            .any(|p| set.is_match(p))
    }

    fn selected(&self, path: &str, part: Part) -> bool {
        part == Part::Control
            || ((self.include.is_empty() || Self::covered(&self.include, path))
                && !Self::covered(&self.exclude, path))
    }

    /// Drops the first `strip` path components of every data entry (and of
    /// hard-link targets; an entry left with none is skipped) and keeps only
    /// entries that `include` (when not empty) and not `exclude` cover: a
    /// pattern matching a folder also covers everything below it.
    pub fn select(self, strip: usize, include: GlobSet, exclude: GlobSet) -> Unpacker<'a> {
        Unpacker {
            strip,
            include,
            exclude,
            ..self
        }
    }

    /// Reads one tar stream (plain or compressed) of data entries.
    pub fn tar(&mut self, input: impl Read) -> Result<(), FormatError> {
        self.read_tar(input, Part::Data, "")
    }

    /// Reads a .deb: checks its members and order, extracts `data.tar.*`
    /// and, if asked, `control.tar.*` (under `DEBIAN/`).
    pub fn deb(&mut self, mut file: File, control: bool) -> Result<(), FormatError> {
        check_ar(&mut file)?;
        let mut archive = ar::Archive::new(BufReader::new(file));
        let bad = |m: String| FormatError::Format(format!("malformed .deb: {m}"));
        let (mut version, mut seen_control, mut seen_data) = (false, false, false);
        while let Some(member) = archive.next_entry() {
            let mut member = member.map_err(|e| bad(e.to_string()))?;
            let name = shown_path(member.header().identifier());
            if !version {
                if name != "debian-binary" {
                    return Err(bad(format!(
                        "the first member is `{name}`, not `debian-binary`"
                    )));
                }
                let mut text = Vec::new();
                (&mut member)
                    .take(64)
                    .read_to_end(&mut text)
                    .map_err(|e| bad(e.to_string()))?;
                if !text.starts_with(b"2.") {
                    return Err(bad(format!(
                        "unsupported format version {:?}",
                        String::from_utf8_lossy(&text).trim()
                    )));
                }
                version = true;
            } else if name == "control.tar" || name.starts_with("control.tar.") {
                if seen_control || seen_data {
                    return Err(bad(format!("unexpected member `{name}`")));
                }
                seen_control = true;
                if control {
                    self.read_tar(&mut member, Part::Control, &name)?;
                }
            } else if name == "data.tar" || name.starts_with("data.tar.") {
                if !seen_control || seen_data {
                    return Err(bad(format!("unexpected member `{name}`")));
                }
                seen_data = true;
                self.read_tar(&mut member, Part::Data, &name)?;
            } else if !name.starts_with('_') {
                return Err(bad(format!("unknown member `{name}`")));
            }
        }
        if !seen_data {
            return Err(bad("it has no `data.tar` member".into()));
        }
        Ok(())
    }

    /// Reads one tar stream (plain or compressed) into `items`.
    fn read_tar(
        &mut self,
        mut input: impl Read,
        part: Part,
        member: &str,
    ) -> Result<(), FormatError> {
        let within = if member.is_empty() {
            String::new()
        } else {
            format!(" (in `{member}`)")
        };
        let malformed =
            |e: io::Error| FormatError::Format(format!("malformed archive{within}: {e}"));
        let mut head = Vec::with_capacity(512);
        (&mut input)
            .take(512)
            .read_to_end(&mut head)
            .map_err(malformed)?;
        let plain = is_tar_header(&head);
        let stream = io::Cursor::new(head).chain(input);
        let stream: Box<dyn Read + '_> = if plain {
            Box::new(stream)
        } else {
            decoder(stream).map_err(malformed)?
        };
        let left = Rc::new(Cell::new(self.limits.max_header_bytes));
        let tripped = Rc::new(Cell::new(false));
        let mut archive = tar::Archive::new(Metered {
            inner: stream,
            left: left.clone(),
            tripped: tripped.clone(),
        });
        let mut previous = String::new();
        let entries = archive.entries().map_err(malformed)?;
        for entry in entries {
            let mut entry = match entry {
                Ok(e) => e,
                Err(_) if tripped.get() => {
                    let after = if previous.is_empty() {
                        "the start of the archive".to_string()
                    } else {
                        format!("`{previous}`")
                    };
                    return Err(Self::refuse(
                        &format!("(the entry after {after}{within})"),
                        format!(
                            "its headers (long names, PAX records) exceed {} bytes (archive bomb)",
                            self.limits.max_header_bytes
                        ),
                    ));
                }
                Err(e) => return Err(malformed(e)),
            };
            // What the reader may consume until the next entry: this one's
            // data and padding, then the next entry's headers.
            let size = entry.size();
            // Saturating: a hostile header may declare a size near u64::MAX.
            left.set(
                (size.saturating_add(511) / 512 * 512).saturating_add(self.limits.max_header_bytes),
            );
            previous = shown_path(&entry.path_bytes());
            self.entry(&mut entry, part, &previous)?;
        }
        Ok(())
    }

    /// Reads one entry into `items`.
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        part: Part,
        shown: &str,
    ) -> Result<(), FormatError> {
        use tar::EntryType as T;
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(Self::refuse(
                shown,
                format!(
                    "the archive has more than {} entries (archive bomb)",
                    self.limits.max_entries
                ),
            ));
        }
        let size = entry.size();
        self.size = self.size.saturating_add(size);
        if self.size > self.limits.max_size {
            return Err(Self::refuse(
                shown,
                format!(
                    "the content exceeds max_size, {} bytes (archive bomb): this entry declares {size} bytes",
                    self.limits.max_size
                ),
            ));
        }
        let kind = entry.header().entry_type();
        // Archive-wide metadata, not files.
        if matches!(kind, T::XGlobalHeader) || kind.as_byte() == b'V' {
            return Ok(());
        }
        let path_bytes = entry.path_bytes().into_owned();
        let link_bytes = entry.link_name_bytes().map(|l| l.into_owned());
        self.name_bytes = self
            .name_bytes
            .saturating_add(path_bytes.len() as u64)
            .saturating_add(link_bytes.as_ref().map_or(0, |l| l.len() as u64));
        if self.name_bytes > self.limits.max_name_bytes {
            return Err(Self::refuse(
                shown,
                format!(
                    "the names in the archive exceed {} bytes (archive bomb)",
                    self.limits.max_name_bytes
                ),
            ));
        }
        let parts = self.components(&path_bytes, shown)?;
        // A hard link's target is checked even if the link is left out.
        let link_parts = match (kind, &link_bytes) {
            (T::Link, Some(l)) => Some(self.components(l, shown)?),
            (T::Link, None) => return Err(Self::refuse(shown, "a hard link without a target")),
            _ => None,
        };
        let Some(path) = self.place(&parts, part) else {
            return Ok(());
        };
        let meta = header_meta(entry.header(), shown)?;
        let selected = self.selected(&path, part);
        if kind == T::Directory {
            self.items.insert(
                path,
                Item::Dir {
                    meta,
                    selected,
                    shown: shown.into(),
                },
            );
            return Ok(());
        }
        if !selected {
            self.items.insert(path, Item::Skipped);
            return Ok(());
        }
        let node = match kind {
            T::Regular | T::Continuous | T::GNUSparse => Node::File {
                digest: self.content(entry, size, shown)?,
                executable: meta.mode & 0o111 != 0,
                meta: Some(meta),
            },
            T::Symlink => {
                let target =
                    link_bytes.ok_or_else(|| Self::refuse(shown, "a symlink without a target"))?;
                let target = String::from_utf8(target)
                    .map_err(|_| Self::refuse(shown, "the symlink target is not UTF-8"))?;
                if target.is_empty() || target.contains('\0') {
                    return Err(Self::refuse(
                        shown,
                        "the symlink target is empty or contains NUL",
                    ));
                }
                Node::Symlink {
                    target,
                    meta: Some(meta),
                }
            }
            T::Link => {
                let link_parts = link_parts.unwrap_or_default();
                let shown_target = shown_path(link_bytes.as_deref().unwrap_or_default());
                let Some(target) = self.place(&link_parts, part) else {
                    return Err(Self::refuse(
                        shown,
                        format!(
                            "hard link to `{shown_target}`, which is outside the extracted tree"
                        ),
                    ));
                };
                match self.items.get(&target) {
                    Some(Item::Kept { node, .. }) => with_meta(node, meta),
                    Some(Item::Dir { .. }) => {
                        return Err(Self::refuse(
                            shown,
                            format!("hard link to the folder `{shown_target}`"),
                        ));
                    }
                    Some(Item::Skipped) => {
                        return Err(Self::refuse(
                            shown,
                            format!(
                                "hard link to `{shown_target}`, which include/exclude left out"
                            ),
                        ));
                    }
                    None => {
                        return Err(Self::refuse(
                            shown,
                            format!(
                                "hard link to `{shown_target}`, which is not in the extracted tree \
                                 (a link must come after its target in the archive)"
                            ),
                        ));
                    }
                }
            }
            T::Fifo => Node::Device {
                // A FIFO's device numbers mean nothing to the kernel, but
                // they are kept when present so a tree survives a round
                // trip through a tar. GNU tar leaves the fields empty (NUL
                // bytes), which are not numbers: those read as 0.
                kind: DeviceKind::Fifo,
                major: entry.header().device_major().ok().flatten().unwrap_or(0),
                minor: entry.header().device_minor().ok().flatten().unwrap_or(0),
                meta: Some(meta),
            },
            T::Char | T::Block => {
                let bad = |e: io::Error| {
                    FormatError::Format(format!("entry `{shown}`: bad device number: {e}"))
                };
                let major = entry.header().device_major().map_err(bad)?.unwrap_or(0);
                let minor = entry.header().device_minor().map_err(bad)?.unwrap_or(0);
                let kind = if kind == T::Char {
                    DeviceKind::Char
                } else {
                    DeviceKind::Block
                };
                Node::Device {
                    kind,
                    major,
                    minor,
                    meta: Some(meta),
                }
            }
            other => {
                return Err(Self::refuse(
                    shown,
                    format!("unsupported entry type {:?}", char::from(other.as_byte())),
                ));
            }
        };
        self.items.insert(
            path,
            Item::Kept {
                node,
                shown: shown.into(),
            },
        );
        Ok(())
    }

    /// Stores an entry's `size` bytes of content.
    fn content(
        &self,
        entry: &mut impl Read,
        size: u64,
        shown: &str,
    ) -> Result<Digest, FormatError> {
        let bad = |e: io::Error| FormatError::Format(format!("entry `{shown}`: {e}"));
        let truncated = || {
            FormatError::Format(format!(
                "entry `{shown}`: the archive ends within its {size} bytes"
            ))
        };
        if size <= SMALL_FILE {
            let mut buf = Vec::with_capacity(size as usize);
            entry.take(size).read_to_end(&mut buf).map_err(bad)?;
            if buf.len() as u64 != size {
                return Err(truncated());
            }
            return Ok(self.cas.put_bytes(&buf)?);
        }
        let mut writer = self.cas.writer()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut copied = 0u64;
        while copied < size {
            let want = buf
                .len()
                .min(usize::try_from(size - copied).unwrap_or(usize::MAX));
            let n = match entry.read(&mut buf[..want]) {
                Ok(0) => return Err(truncated()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(bad(e)),
            };
            io::Write::write_all(&mut writer, &buf[..n])?;
            copied += n as u64;
        }
        Ok(writer.finish()?)
    }

    /// Assembles the tree in path order under `prefix` (its folders get
    /// the unlisted folders' metadata) and stores it.
    pub fn finish(self, prefix: &[String]) -> Result<Digest, FormatError> {
        // Folders that hold something kept.
        let mut needed: HashSet<&str> = HashSet::new();
        for (path, item) in &self.items {
            if matches!(item, Item::Kept { .. } | Item::Dir { selected: true, .. }) {
                let mut p = path.as_str();
                while let Some(i) = p.rfind('/') {
                    p = &p[..i];
                    if !needed.insert(p) {
                        break;
                    }
                }
            }
        }
        let mut out = TreeBuilder::new();
        let base = prefix.join("/");
        if !base.is_empty() {
            let mut top = TreeBuilder::new();
            top.set_meta(self.unlisted_dirs);
            out.insert_at(self.cas, &base, Node::Dir(top), self.unlisted_dirs)
                .map_err(|e| FormatError::Format(e.to_string()))?;
        }
        for (path, item) in &self.items {
            let (node, shown) = match item {
                Item::Kept { node, shown } => (node.clone(), shown),
                Item::Dir {
                    meta,
                    selected,
                    shown,
                } if *selected || needed.contains(path.as_str()) => {
                    let mut dir = TreeBuilder::new();
                    dir.set_meta(Some(*meta));
                    (Node::Dir(dir), shown)
                }
                _ => continue,
            };
            let full = if base.is_empty() {
                path.clone()
            } else {
                format!("{base}/{path}")
            };
            out.insert_at(self.cas, &full, node, self.unlisted_dirs)
                .map_err(|e| match e {
                    EditError::Store(s) => FormatError::Store(s),
                    EditError::ThroughSymlink { link, .. } => Self::refuse(
                        shown,
                        format!("it goes through `{link}`, a symlink in the archive"),
                    ),
                    EditError::NotADirectory { blocker, .. } => Self::refuse(
                        shown,
                        format!(
                            "it goes through `{blocker}`, which the archive makes a non-folder"
                        ),
                    ),
                    other => Self::refuse(shown, other.to_string()),
                })?;
        }
        Ok(out.store(self.cas)?)
    }
}

/// `node` (a non-folder) with the metadata of a hard link to it.
fn with_meta(node: &Node, meta: Meta) -> Node {
    match node.clone() {
        Node::File { digest, .. } => Node::File {
            digest,
            executable: meta.mode & 0o111 != 0,
            meta: Some(meta),
        },
        Node::Symlink { target, .. } => Node::Symlink {
            target,
            meta: Some(meta),
        },
        Node::Device {
            kind, major, minor, ..
        } => Node::Device {
            kind,
            major,
            minor,
            meta: Some(meta),
        },
        other => other,
    }
}

/// Mode (with setuid, setgid, sticky), uid and gid of a tar header (PAX
/// uid/gid already applied by the tar crate). A blank field reads as 0, as
/// GNU tar and Python's tarfile read it.
fn header_meta(h: &tar::Header, shown: &str) -> Result<Meta, FormatError> {
    let bad =
        |what: &str, e: String| FormatError::Format(format!("entry `{shown}`: bad {what}: {e}"));
    let old = h.as_old();
    let blank = |field: &[u8]| field.iter().all(|b| *b == 0 || *b == b' ');
    let number = |v: io::Result<u64>, field: &[u8], what: &str| -> Result<u32, FormatError> {
        let v = match v {
            Ok(v) => v,
            Err(_) if blank(field) => 0,
            Err(e) => return Err(bad(what, e.to_string())),
        };
        u32::try_from(v).map_err(|_| bad(what, format!("{v} is out of range")))
    };
    Ok(Meta {
        mode: number(h.mode().map(u64::from), &old.mode, "mode")? & 0o7777,
        uid: number(h.uid(), &old.uid, "uid")?,
        gid: number(h.gid(), &old.gid, "gid")?,
    })
}

/// Checks every member header of an ar archive before the `ar` crate reads
/// it: terminators, sizes within the file, and plain member names (a .deb
/// uses no GNU or BSD name tables, whose hostile forms the crate does not
/// survive).
fn check_ar(file: &mut File) -> Result<(), FormatError> {
    let bad = |m: String| FormatError::Format(format!("malformed .deb: {m}"));
    let len = file.metadata()?.len();
    let mut pos = AR_MAGIC.len() as u64;
    let mut header = [0u8; 60];
    while pos < len {
        // A lone padding newline may end the archive.
        if len - pos < 60 {
            file.seek(SeekFrom::Start(pos))?;
            let mut rest = Vec::new();
            file.read_to_end(&mut rest)?;
            if rest == b"\n" {
                break;
            }
            return Err(bad(format!("truncated member header at byte {pos}")));
        }
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut header)?;
        if &header[58..60] != b"`\n" {
            return Err(bad(format!("bad member header at byte {pos}")));
        }
        let name = &header[..16];
        if name.starts_with(b"/") || name.starts_with(b"#1/") {
            return Err(bad(format!(
                "unsupported member name {:?} (extended ar names are not used by .deb)",
                String::from_utf8_lossy(name).trim_end()
            )));
        }
        let size = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|s| s.trim_end().parse::<u64>().ok())
            .ok_or_else(|| bad(format!("bad member size at byte {pos}")))?;
        let end = pos
            .checked_add(60)
            .and_then(|p| p.checked_add(size))
            .filter(|end| *end <= len)
            .ok_or_else(|| {
                bad(format!(
                    "member at byte {pos} runs past the end of the file"
                ))
            })?;
        pos = end + size % 2;
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(())
}
