//! The `image` rule end to end: a rootfs built from a tiny root file system
//! becomes an image layout that is byte-identical across workspaces, is a
//! valid OCI layout, and that `docker load` accepts (the oracle), with the
//! image ID, tag, files and config we wrote.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;

use common::docker::{docker_available, mini_rootfs};
use common::{Run, Ws, sh, tool};

const TAG: &str = "strata-test/rule-image:e2e";

fn workspace() -> Ws {
    let ws = Ws::new();
    mini_rootfs(&ws.path().join("mini"));
    ws.write("files/motd", "welcome to the rule_image test\n");
    ws.write(
        "BUILD.yaml",
        &format!(
            r#"
vars:
  SOURCE_DATE_EPOCH: "1700000000"
targets:
  rootfs:
    rule: rootfs
    srcs: [mini, files]
    layers:
      - {{from: "srcs:mini"}}
    components:
      - {{type: file, source: files/motd, target: /etc/motd, chmod: "0640", chown: "0:0"}}
      - {{type: file, source: files/motd, target: /home/app/motd, chmod: "0600", chown: "1000:1000"}}
  image:
    rule: image
    from: rootfs
    tag: "{TAG}"
    config:
      env: {{GREETING: hello}}
      cmd: ["/bin/sh", "-c", "cat /etc/motd; echo $GREETING; pwd"]
      workdir: /etc
      labels: {{org.example.test: rule_image}}
"#
        ),
    );
    ws
}

fn json_file(path: &Path) -> serde_json::Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The blob file a descriptor (or `sha256:<hex>`) names, in `out/image`.
fn blob(out: &Path, digest: &str) -> std::path::PathBuf {
    out.join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").expect("a sha256 digest"))
}

/// Every file under `dir` with its bytes, by relative path.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The config digest (Docker's image ID) of the layout in `out`, after
/// walking index -> manifest -> config and layers and checking that every
/// blob file hashes to its name.
fn check_layout(out: &Path) -> String {
    assert_eq!(
        json_file(&out.join("oci-layout")),
        serde_json::json!({"imageLayoutVersion": "1.0.0"})
    );
    let sums = tool(out, &["sh", "-c", "sha256sum blobs/sha256/*"]);
    let mut blobs = 0;
    for line in sums.lines() {
        let (sum, path) = line.split_once("  ").unwrap();
        assert_eq!(path, format!("blobs/sha256/{sum}"), "{sums}");
        blobs += 1;
    }
    assert_eq!(blobs, 3, "manifest, config and one layer:\n{sums}");

    let index = json_file(&out.join("index.json"));
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    let desc = &manifests[0];
    assert_eq!(
        desc["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        desc["annotations"]["org.opencontainers.image.ref.name"],
        TAG
    );
    let manifest_path = blob(out, desc["digest"].as_str().unwrap());
    assert_eq!(
        fs::metadata(&manifest_path).unwrap().len(),
        desc["size"].as_u64().unwrap()
    );
    let manifest = json_file(&manifest_path);
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config = json_file(&blob(out, &config_digest));
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    let layer_digest = layers[0]["digest"].as_str().unwrap();
    assert_eq!(
        fs::metadata(blob(out, layer_digest)).unwrap().len(),
        layers[0]["size"].as_u64().unwrap()
    );
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([layer_digest])
    );
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");

    // The docker-archive view of the same blobs.
    let archive = json_file(&out.join("manifest.json"));
    assert_eq!(
        archive,
        serde_json::json!([{
            "Config": format!("blobs/sha256/{}", &config_digest[7..]),
            "RepoTags": [TAG],
            "Layers": [format!("blobs/sha256/{}", &layer_digest[7..])],
        }])
    );

    // The layer is the tree: modes, owners and times as written.
    let listing = tool(
        out,
        &[
            "tar",
            "-tvf",
            &format!("blobs/sha256/{}", &layer_digest[7..]),
        ],
    );
    let line = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("no `{path}` in\n{listing}"))
            .to_string()
    };
    assert!(line("etc/motd").starts_with("-rw-r----- 0/0"), "{listing}");
    assert!(
        line("home/app/motd").starts_with("-rw------- 1000/1000"),
        "{listing}"
    );
    assert!(line("bin/sh").starts_with("-rwxr-xr-x 0/0"), "{listing}");
    assert!(line("etc/motd").contains("2023-11-14 22:13"), "{listing}");
    assert!(!listing.contains("./"), "no `./` prefix:\n{listing}");
    config_digest
}

#[test]
fn an_image_is_a_valid_layout_identical_across_workspaces() {
    let a = workspace();
    let first = a.build_ok(&["image"]);
    let id = check_layout(&a.path().join("out/image"));

    let b = workspace();
    let mut cmd = b.cmd(&["build", "--json", "-j1", "image"]);
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
    for t in ["rootfs", "image"] {
        assert!(first.json()["targets"][t]["output"].is_string(), "{t}");
        assert_eq!(
            first.json()["targets"][t]["output"],
            second.json()["targets"][t]["output"],
            "{t}"
        );
    }
    assert_eq!(
        contents(&a.path().join("out/image")),
        contents(&b.path().join("out/image"))
    );
    assert_eq!(check_layout(&b.path().join("out/image")), id);

    // Nothing changed: cached.
    assert_eq!(
        a.build_ok(&["image"]).with_status("cached"),
        ["image", "rootfs"]
    );
}

/// Removes the image when the test ends, passing or not.
struct LoadedImage(String);

impl Drop for LoadedImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.0])
            .output();
    }
}

#[test]
fn docker_loads_and_runs_the_image() {
    if !docker_available() {
        return;
    }
    let ws = workspace();
    ws.build_ok(&["image"]);
    let out = ws.path().join("out/image");
    let id = check_layout(&out);
    let _cleanup = LoadedImage(id.clone());
    let loaded = sh(ws.path(), "tar -C out/image -c . | docker load");
    assert!(loaded.contains(&format!("Loaded image: {TAG}")), "{loaded}");

    // Docker's image ID is our config digest, under our tag.
    let inspect = |what: &str, format: &str| {
        sh(
            ws.path(),
            &format!("docker image inspect --format '{format}' {what}"),
        )
        .trim()
        .to_string()
    };
    assert_eq!(inspect(TAG, "{{.Id}}"), id);
    assert_eq!(
        inspect(&id, "{{index .Config.Labels \"org.example.test\"}}"),
        "rule_image"
    );

    // The default command sees the config: env, workdir, the tree's files.
    let ran = sh(ws.path(), &format!("docker run --rm --network none {id}"));
    assert_eq!(ran, "welcome to the rule_image test\nhello\n/etc\n");
    let ls = sh(
        ws.path(),
        &format!(
            "docker run --rm --network none {id} /bin/sh -c 'ls -ln /etc/motd /home/app/motd'"
        ),
    );
    let fields: Vec<Vec<&str>> = ls.lines().map(|l| l.split_whitespace().collect()).collect();
    // mode, links, uid, gid, size, month, day, year, path
    assert_eq!(
        fields,
        [
            [
                "-rw-r-----",
                "1",
                "0",
                "0",
                "31",
                "Nov",
                "14",
                "2023",
                "/etc/motd"
            ],
            [
                "-rw-------",
                "1",
                "1000",
                "1000",
                "31",
                "Nov",
                "14",
                "2023",
                "/home/app/motd"
            ],
        ],
        "{ls}"
    );
}

#[test]
fn image_mistakes_point_at_the_field() {
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        r#"targets:
  image:
    rule: image
    from: srcs
    srcs: [x]
    tag: "Strata/App"
"#,
    );
    ws.write("x", "x");
    let r = ws.build_fails(&[], 2);
    // line 6: `    tag: "Strata/App"`, the value at column 10
    assert!(r.stderr.contains("BUILD.yaml:6:10"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("`Strata/App` is not an image name with a tag"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("help:"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);

    ws.write(
        "BUILD.yaml",
        r#"targets:
  image:
    rule: image
    from: srcs
    srcs: [x]
    config:
      workdir: /srv
      entrypont: [/bin/app]
"#,
    );
    let r = ws.build_fails(&[], 2);
    // line 8: the misspelt key itself, at column 7
    assert!(r.stderr.contains("BUILD.yaml:8:7"), "{}", r.stderr);
    assert!(r.stderr.contains("entrypont"), "{}", r.stderr);
}

/// Converts the output of `docker save` (a docker-archive, unpacked in
/// `saved`) into an OCI image layout in `layout`, so a workspace can hold a
/// real multi-layer image made by Docker.
fn layout_from_docker_save(saved: &Path, layout: &Path) {
    let archive = json_file(&saved.join("manifest.json"));
    let entry = &archive[0];
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |from: &Path, media_type: &str| -> serde_json::Value {
        let sum = tool(saved, &["sha256sum", from.to_str().unwrap()]);
        let hex = sum.split_whitespace().next().unwrap().to_string();
        fs::copy(from, blobs.join(&hex)).unwrap();
        serde_json::json!({
            "mediaType": media_type,
            "digest": format!("sha256:{hex}"),
            "size": fs::metadata(from).unwrap().len(),
        })
    };
    let config = put(
        &saved.join(entry["Config"].as_str().unwrap()),
        "application/vnd.oci.image.config.v1+json",
    );
    let layers: Vec<serde_json::Value> = entry["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            put(
                &saved.join(l.as_str().unwrap()),
                "application/vnd.oci.image.layer.v1.tar",
            )
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": layers,
    });
    let manifest_path = saved.join("oci-manifest.json");
    fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let manifest = put(&manifest_path, "application/vnd.oci.image.manifest.v1+json");
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [manifest]}))
            .unwrap(),
    )
    .unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
}

/// Docker's own multi-layer image (deletions, an opaque folder) flattened by
/// `image` gives a container the same files as the original.
#[test]
fn an_image_from_a_docker_image_flattens_its_layers() {
    if !docker_available() {
        return;
    }
    let base = "strata-test/rule-image-base:e2e";
    let built = "strata-test/rule-image-built:e2e";
    let ours = "strata-test/rule-image-flat:e2e";
    let _cleanup = [
        LoadedImage(ours.into()),
        LoadedImage(built.into()),
        LoadedImage(base.into()),
    ];
    let ws = Ws::new();
    common::docker::mini_image(base);
    ws.write(
        "docker/Dockerfile",
        &format!(
            "FROM {base}\n\
             RUN rm /bin/ls && mkdir -p /opt/d/sub && echo one > /opt/d/a && echo 1 > /opt/d/sub/x && echo keep > /opt/keep\n\
             RUN rm -r /opt/d && mkdir /opt/d && echo two > /opt/d/b && rm /opt/keep && echo kept > /opt/keep && touch /opt/new\n"
        ),
    );
    sh(
        ws.path(),
        &format!("DOCKER_BUILDKIT=0 docker build -q --network none -t {built} docker >/dev/null"),
    );
    fs::create_dir(ws.path().join("saved")).unwrap();
    sh(ws.path(), &format!("docker save {built} | tar -C saved -x"));
    layout_from_docker_save(&ws.path().join("saved"), &ws.path().join("layout"));
    ws.write(
        "BUILD.yaml",
        &format!(
            r#"
vars:
  SOURCE_DATE_EPOCH: "1700000000"
targets:
  flat:
    rule: image
    srcs: [layout]
    from: "srcs:layout"
    tag: "{ours}"
"#
        ),
    );
    ws.build_ok(&["flat"]);
    sh(ws.path(), "tar -C out/flat -c . | docker load >/dev/null");
    let look = |image: &str| {
        sh(
            ws.path(),
            &format!(
                "docker run --rm --network none {image} /bin/sh -c \
                 'cd / && echo /opt/*; echo /opt/d/*; cat /opt/keep /opt/d/b; echo /bin/*; echo /lib*/*'"
            ),
        )
    };
    let theirs = look(built);
    assert!(
        theirs.starts_with("/opt/d /opt/keep /opt/new\n/opt/d/b\nkept\ntwo\n"),
        "{theirs}"
    );
    assert!(!theirs.contains("/bin/ls"), "{theirs}");
    assert_eq!(look(ours), theirs);
}
