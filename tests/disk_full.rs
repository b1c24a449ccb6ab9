//! A store on a file system that fills up: the build fails with a message
//! that says so, leaves no partial object and no temporary file behind, and
//! once there is room again the next build completes.
//!
//! The store is a small tmpfs, so these tests must run as root (or with
//! CAP_SYS_ADMIN); where mounting is not permitted they fail, unless
//! `STRATA_ALLOW_NO_TMPFS` is set, in which case they are skipped.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::hash::Hasher;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Run, Ws};

/// A tmpfs mounted for the duration of a test; dropping it detaches it
/// (`umount -l`), also when the test fails.
struct Tmpfs {
    dir: PathBuf,
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in a temp path")
}

fn mount_tmpfs(dir: &Path, size: &str, flags: libc::c_ulong) -> io::Result<()> {
    let (src, target, fstype) = (
        CString::new("tmpfs").unwrap(),
        c_path(dir),
        CString::new("tmpfs").unwrap(),
    );
    let data = CString::new(format!("size={size},mode=0755")).unwrap();
    // SAFETY: mount(2) with valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (such as `8m`) on `dir`. `None` when this
    /// machine does not permit it and `STRATA_ALLOW_NO_TMPFS` is set.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(dir).unwrap();
        match mount_tmpfs(dir, size, 0) {
            Ok(()) => Some(Tmpfs {
                dir: dir.to_path_buf(),
            }),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                if std::env::var_os("STRATA_ALLOW_NO_TMPFS").is_some() {
                    eprintln!(
                        "SKIPPED: cannot mount a tmpfs ({e}) and STRATA_ALLOW_NO_TMPFS is set"
                    );
                    return None;
                }
                panic!(
                    "cannot mount a tmpfs on {} ({e}): the disk-full tests need root \
                     (CAP_SYS_ADMIN) to make a small store; run them as root, or set \
                     STRATA_ALLOW_NO_TMPFS=1 to skip them",
                    dir.display()
                )
            }
            Err(e) => panic!("cannot mount a tmpfs on {}: {e}", dir.display()),
        }
    }

    /// Gives the file system a new size (`mount -o remount,size=...`).
    fn resize(&self, size: &str) {
        mount_tmpfs(&self.dir, size, libc::MS_REMOUNT)
            .unwrap_or_else(|e| panic!("cannot resize the tmpfs to {size}: {e}"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // SAFETY: umount2(2) with a valid path; MNT_DETACH is `umount -l`.
        unsafe { libc::umount2(c_path(&self.dir).as_ptr(), libc::MNT_DETACH) };
    }
}

/// `strata ARGS --store STORE` in the workspace.
fn strata(ws: &Ws, store: &Path, args: &[&str]) -> Run {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--store");
    all.push(store.to_str().unwrap());
    ws.run(&all)
}

fn status(r: &Run, target: &str) -> String {
    r.json()["targets"][target]["status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Every entry under `out/` but `.strata`: kind, mode, size, content hash.
fn snapshot(out: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, rel: &str, into: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if rel.is_empty() && name == ".strata" {
                continue;
            }
            let path = format!("{rel}{name}");
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let desc = if meta.is_dir() {
                walk(&e.path(), &format!("{path}/"), into);
                format!("dir {mode:o}")
            } else {
                let bytes = fs::read(e.path()).unwrap();
                let mut h = std::hash::DefaultHasher::new();
                h.write(&bytes);
                format!("file {mode:o} {} bytes {:016x}", bytes.len(), h.finish())
            };
            into.insert(path, desc);
        }
    }
    let mut into = BTreeMap::new();
    walk(out, "", &mut into);
    into
}

/// Checks what `strata store verify` checks, and independently that no blob
/// is shorter or longer than its name says (a partial object would be), that
/// no temporary file is left to hold space, and how many action results
/// there are.
fn assert_store_sound(ws: &Ws, store: &Path, action_results: usize) {
    let r = ws.run(&["store", "verify", "--store", store.to_str().unwrap()]);
    assert_eq!(r.code, 0, "store verify:\n{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("no corruption"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!(
            "{action_results} action result{} checked",
            if action_results == 1 { "" } else { "s" }
        )),
        "failed steps must leave nothing in the action cache:\n{}",
        r.stdout
    );
    let mut blobs = 0;
    for shard in fs::read_dir(store.join("cas/blake3")).unwrap() {
        for blob in fs::read_dir(shard.unwrap().path()).unwrap() {
            let blob = blob.unwrap();
            let name = blob.file_name().to_string_lossy().into_owned();
            let size: u64 = name
                .rsplit_once('-')
                .and_then(|(_, s)| s.parse().ok())
                .unwrap_or_else(|| panic!("object {name} is not named <hex>-<size>"));
            let len = blob.metadata().unwrap().len();
            assert_eq!(
                len, size,
                "object {name} holds {len} bytes: a partial write"
            );
            blobs += 1;
        }
    }
    assert!(blobs > 0, "the store holds no object at all");
    let left: Vec<_> = fs::read_dir(store.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// About 14 MB of outputs for an 8 MiB store: `small` and `big` fit, the
/// archive of `big` (built in-process, written straight to the store) does
/// not, nor does `vendor`, an archive of a source larger than the disk
/// (copied into the store first).
const BUILD_YAML: &str = r#"
vars:
  SOURCE_DATE_EPOCH: "1700000000"
targets:
  small:
    rule: run
    cmd: "seq -f 'small-%09g' 1 30000 > $OUT/small.txt"
    outs: [small.txt]
  big:
    rule: run
    cmd: >-
      mkdir $OUT/d && for i in 1 2 3; do seq -f "big$i-%09g" 1 100000 > $OUT/d/f$i.txt; done
    outs: [d/]
  pack:
    rule: archive
    from: big
    compression: none
  vendor:
    rule: archive
    srcs: [vendor.dat]
    from: srcs
    compression: none
"#;

fn workspace() -> Ws {
    let ws = Ws::new();
    ws.write("BUILD.yaml", BUILD_YAML);
    let data: String = (0..700_000).map(|i| format!("v-{i:011}\n")).collect();
    ws.write("vendor.dat", &data);
    ws
}

#[test]
fn a_full_store_fails_the_build_plainly_and_the_next_build_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&tmp.path().join("disk"), "8m") else {
        return;
    };
    let store = disk.dir.join("store");
    let ws = workspace();

    // One step at a time, so which steps fit does not depend on timing;
    // -k so every target gets its chance.
    let r = strata(&ws, &store, &["build", "--json", "-j1", "-k"]);
    assert_eq!(
        r.code, 1,
        "a full disk fails the build:\n{}\n{}",
        r.stdout, r.stderr
    );
    assert_eq!(status(&r, "small"), "executed", "{}", r.stderr);
    assert_eq!(status(&r, "big"), "executed", "{}", r.stderr);
    assert_eq!(status(&r, "pack"), "failed", "{}", r.stderr);
    assert_eq!(status(&r, "vendor"), "failed", "{}", r.stderr);
    // The engine names the cause (Failure::Store with is_disk_full) ...
    assert!(
        r.stderr
            .contains("error: target `vendor` failed: the store's disk is full: "),
        "{}",
        r.stderr
    );
    // ... and an in-process rule passes the system's words on.
    let pack = r
        .stderr
        .lines()
        .find(|l| l.starts_with("error: target `pack` failed: "))
        .unwrap_or_else(|| panic!("no error line for `pack`:\n{}", r.stderr));
    assert!(
        pack.contains("No space left on device") || pack.contains("disk is full"),
        "{pack}"
    );
    assert!(
        !ws.path().join("out/pack").exists() && !ws.path().join("out/vendor").exists(),
        "failed targets have no folder in out/"
    );
    assert_store_sound(&ws, &store, 2);

    // Room again: the next build completes and reuses what was built.
    disk.resize("64m");
    let r = strata(&ws, &store, &["build", "--json", "-j2"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.with_status("cached"), ["big", "small"]);
    assert_eq!(r.executed(), ["pack", "vendor"]);
    assert_store_sound(&ws, &store, 4);

    // Its outputs are those of a build that never ran out of space.
    let clean = workspace();
    let c = clean.build_ok(&["-j2"]);
    for t in ["small", "big", "pack", "vendor"] {
        assert_eq!(
            r.json()["targets"][t]["output"],
            c.json()["targets"][t]["output"],
            "{t}"
        );
    }
    assert_eq!(
        snapshot(&ws.path().join("out")),
        snapshot(&clean.path().join("out"))
    );
}

/// A `run` step works in a scratch folder inside the store, so it is often
/// the step itself that meets the full disk. Its stderr goes to a log in that
/// same full folder and is lost, and all the user reads is "the command
/// exited with code 1".
#[test]
fn a_step_that_fills_the_store_disk_is_reported_as_a_full_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&tmp.path().join("disk"), "8m") else {
        return;
    };
    let store = disk.dir.join("store");
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"
targets:
  huge:
    rule: run
    cmd: "seq -f 'huge-%09g' 1 1000000 > $OUT/huge.txt"
    outs: [huge.txt]
"#,
    );
    let r = strata(&ws, &store, &["build", "-j1"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    // The error about `huge` and the step's output shown after it (not the
    // warning about the build record, which also could not be written).
    let about_huge = r
        .stderr
        .split_once("error: target `huge` failed: ")
        .map_or("", |(_, rest)| rest);
    assert!(
        about_huge.contains("No space left on device") || about_huge.contains("disk is full"),
        "nothing says the disk is full:\n{}",
        r.stderr
    );
    disk.resize("64m");
    let r = strata(&ws, &store, &["build", "-j1"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_store_sound(&ws, &store, 1);
}
