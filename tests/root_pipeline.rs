//! The repository's own BUILD.yaml: it builds offline and its outputs are
//! byte-identical across workspace paths, stores, umask, TZ, LANG and -j.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;

use common::{Run, Ws};

fn copy_pipeline(ws: &Ws) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    ws.write(
        "BUILD.yaml",
        &std::fs::read_to_string(repo.join("BUILD.yaml")).unwrap(),
    );
    for rel in [
        "examples/hello/BUILD.yaml",
        "examples/hello/wordfreq.c",
        "examples/hello/texts/rain.txt",
        "examples/hello/texts/wind.txt",
    ] {
        ws.write(rel, &std::fs::read_to_string(repo.join(rel)).unwrap());
    }
}

fn outputs(r: &Run) -> serde_json::Value {
    let mut doc = r.json()["targets"].clone();
    for v in doc.as_object_mut().unwrap().values_mut() {
        v.as_object_mut().unwrap().remove("status");
    }
    doc
}

#[test]
fn root_pipeline_builds_and_is_reproducible() {
    let a = Ws::new();
    copy_pipeline(&a);
    let first = a.build_ok(&[]);
    assert_eq!(first.executed().len(), 5);
    let freq = a.read("out/frequencies/frequencies.txt");
    assert_eq!(freq.lines().next(), Some("14 the"));
    assert!(
        a.read("out/checksums/SHA256SUMS")
            .contains("bundle/wordfreq.tar.gz")
    );

    let b = Ws::new();
    copy_pipeline(&b);
    let mut cmd = b.cmd(&["build", "--json", "-j1"]);
    cmd.env("TZ", "Asia/Tokyo").env("LANG", "de_DE.UTF-8");
    // SAFETY: umask(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    let second: Run = cmd.output().unwrap().into();
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(
        second.executed().len(),
        5,
        "a fresh store executes everything"
    );
    assert_eq!(outputs(&first), outputs(&second));
}
