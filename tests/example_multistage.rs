//! examples/multistage, end to end on a Docker Engine: a Debian base image
//! made from apt packages, a build stage compiling `tree`, a runtime stage
//! holding only the binary, and a data-root preload. Every output but the
//! data-root (declared non-reproducible) is identical across workspaces.

mod common;

use std::path::Path;
use std::process::Command;

use common::docker::docker_available;
use common::{Ws, sh};

fn copy_example(ws: &Ws) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/multistage");
    sh(
        ws.path(),
        &format!("cp -a {}/. . && rm -rf out", src.display()),
    );
}

#[test]
fn the_multistage_pipeline_builds_a_slim_image_reproducibly() {
    if !docker_available() {
        return;
    }
    let a = Ws::new();
    copy_example(&a);
    let r = a.build_ok(&[]);
    let targets = r.json()["targets"].clone();
    assert_eq!(r.executed().len(), targets.as_object().unwrap().len());

    // The runtime stage holds the binary and nothing else.
    let files = sh(a.path(), "cd out/runtime && find . -mindepth 1 | sort");
    assert_eq!(
        files,
        "./usr\n./usr/local\n./usr/local/bin\n./usr/local/bin/tree\n"
    );

    // Its image runs with nothing but that binary: it is static.
    let tag = "strata-examples/tree:1";
    sh(
        a.path(),
        "tar -C out/runtime-image -c . | docker load >/dev/null",
    );
    let listing = sh(
        a.path(),
        &format!("docker run --rm --network none {tag} --noreport /usr/local"),
    );
    assert_eq!(listing, "/usr/local\n`-- bin\n    `-- tree\n");
    let _ = Command::new("docker").args(["rmi", "-f", tag]).output();

    // The data-root holds the image.
    let repos = a.read("out/preload/image/overlay2/repositories.json");
    assert!(repos.contains("strata-examples/tree"), "{repos}");

    // A second workspace and store produce the same bytes.
    let b = Ws::new();
    copy_example(&b);
    let other = b.build_ok(&[]).json()["targets"].clone();
    for name in ["base", "build", "runtime", "runtime-image"] {
        assert_eq!(
            targets[name]["output"], other[name]["output"],
            "`{name}` differs between two workspaces"
        );
    }
    assert!(
        b.build_ok(&[]).executed().is_empty(),
        "a second build is a no-op"
    );
}
