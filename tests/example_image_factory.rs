//! examples/image-factory end to end on a Docker Engine: base-tools (Debian
//! packages) -> dependencies (deps.txt resolved into libdeps.a) ->
//! application (a static C program) -> runtime (only the binary). The
//! runtime image runs, and a dependency-file edit that keeps the resolved
//! set re-runs `dependencies` only: its tree is the same, so everything
//! after it stays cached. One workspace and store for every assertion.

mod common;

use std::path::Path;
use std::process::Command;

use common::docker::docker_available;
use common::{Ws, sh};

const TAG: &str = "image-factory/envelope:1";
const PIPELINE: [&str; 4] = ["dependencies", "application", "runtime", "runtime-image"];

#[test]
fn the_image_factory_runs_and_cuts_off_after_an_unchanged_dependency_set() {
    if !docker_available() {
        return;
    }
    let ws = Ws::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/image-factory");
    sh(
        ws.path(),
        &format!("cp -a {}/. . && rm -rf out", src.display()),
    );

    let first = ws.build_ok(&[]);
    let built = first.json()["targets"].clone();
    assert_eq!(first.executed().len(), built.as_object().unwrap().len());
    assert_eq!(
        ws.read("out/dependencies/usr/local/share/deps/deps.lock"),
        "base64 2.0.1\ncrc32 1.0.3\nstrbuf 1.2.0\n",
        "deps.txt names base64 and crc32; base64 requires strbuf"
    );

    // The runtime stage holds the binary and nothing else, and its image
    // runs with nothing but that binary: it is static.
    let files = sh(ws.path(), "cd out/runtime && find . -mindepth 1 | sort");
    assert_eq!(
        files,
        "./usr\n./usr/local\n./usr/local/bin\n./usr/local/bin/envelope\n"
    );
    sh(
        ws.path(),
        "tar -C out/runtime-image -c . | docker load >/dev/null",
    );
    let run = format!("docker run --rm -i --network none {TAG}");
    assert_eq!(sh(ws.path(), &run), "envelope 1.0.0\n", "CMD is --version");
    let sealed = sh(
        ws.path(),
        &format!("printf 'image factory\\n' | {run} seal"),
    );
    assert_eq!(
        sealed,
        "envelope 1.0.0\nsize 14\ncrc32 56a7f899\n\naW1hZ2UgZmFjdG9yeQo=\n"
    );
    let opened = sh(
        ws.path(),
        &format!("printf 'image factory\\n' | {run} seal | {run} open"),
    );
    assert_eq!(opened, "image factory\n");
    let _ = Command::new("docker").args(["rmi", "-f", TAG]).output();

    // deps.txt rewritten: another order, other comments, a pinned version
    // (the vendored one) and a library base64 already requires. The
    // resolved set is the same, so `dependencies` re-runs and reproduces
    // its tree, and application and runtime stay cached.
    ws.write(
        "deps.txt",
        "# reordered and pinned; the resolved set is unchanged\n\
         crc32 1.0.3\n\nstrbuf   # base64 requires it anyway\nbase64\n",
    );
    let after = ws.build_ok(&[]);
    assert_eq!(after.executed(), ["dependencies"]);
    let now = after.json()["targets"].clone();
    for name in PIPELINE {
        assert_eq!(
            now[name]["output"], built[name]["output"],
            "`{name}` changed"
        );
        if name != "dependencies" {
            assert_eq!(now[name]["status"], "cached", "`{name}` re-ran");
        }
    }

    // A comment in the C source: `application` re-runs and links the same
    // binary, so `runtime` and its image stay cached.
    sh(ws.path(), "echo '/* a comment only */' >>src/envelope.c");
    let comment = ws.build_ok(&[]);
    assert_eq!(comment.executed(), ["application"]);
    let now = comment.json()["targets"].clone();
    for name in ["runtime", "runtime-image"] {
        assert_eq!(now[name]["status"], "cached", "`{name}` re-ran");
        assert_eq!(now[name]["output"], built[name]["output"]);
    }
}
