//! Steps in containers on the real Docker Engine: isolation, users,
//! pinned images, stages with per-step caching and early cutoff, cache
//! mounts, and cleanup after failures and Ctrl-C.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::docker::{Dockerd, Registry, docker_available, mini_image, mini_rootfs};
use common::{Run, Ws, sh};

/// A workspace whose `base` target is an image made from a tiny root file
/// system, followed by `rest` (more targets).
fn workspace(rest: &str) -> Ws {
    let ws = Ws::new();
    mini_rootfs(&ws.path().join("rootfs"));
    ws.write(
        "BUILD.yaml",
        &format!(
            "targets:\n  base:\n    rule: image\n    srcs: [\"rootfs/**\"]\n    from: srcs:rootfs\n{rest}"
        ),
    );
    ws
}

/// Containers of any strata process that are still there.
fn strata_containers() -> Vec<String> {
    let out = sh(
        std::path::Path::new("/"),
        "docker ps -a --filter label=strata=1 --format '{{.Names}} {{.Label \"strata.pid\"}}'",
    );
    out.lines().map(str::to_string).collect()
}

/// Containers labelled with process `pid`.
fn containers_of(pid: u32) -> Vec<String> {
    strata_containers()
        .into_iter()
        .filter(|l| {
            l.split_whitespace().nth(1).is_some_and(|label| {
                label
                    .split(|c: char| !c.is_ascii_digit())
                    .any(|p| p == pid.to_string())
            })
        })
        .collect()
}

#[test]
fn a_step_in_an_image_sees_only_its_inputs_and_no_network() {
    if !docker_available() {
        return;
    }
    let ws = workspace(
        r#"  probe:
    rule: run
    image: base
    srcs: [in.txt]
    cmd: |
      ls /strata/work > $OUT/work
      cat /strata/work/in.txt > $OUT/in
      ls /sys/class/net > $OUT/net
      if echo x > /strata/work/w 2>/dev/null; then echo writable; else echo read-only; fi > $OUT/ro
      if test -e /strata/work/secret.txt || test -e /rootfs; then echo leak; else echo none; fi > $OUT/leak
      id -u > $OUT/uid
    outs: [work, in, net, ro, leak, uid]
  networked:
    rule: run
    image: base
    network: true
    cmd: ls /sys/class/net > $OUT/net
    outs: [net]
  as-user:
    rule: run
    image: base
    user: "1000:1000"
    cmd: id -u > $OUT/uid; id -g >> $OUT/uid
    outs: [uid]
"#,
    );
    ws.write("in.txt", "hello from the host\n");
    ws.write("secret.txt", "not declared\n");
    let r = ws.build_ok(&[]);
    assert_eq!(
        r.executed(),
        ["as-user", "base", "networked", "probe"],
        "{}",
        r.stderr
    );
    assert_eq!(ws.read("out/probe/work"), "in.txt\n");
    assert_eq!(ws.read("out/probe/in"), "hello from the host\n");
    assert_eq!(
        ws.read("out/probe/net"),
        "lo\n",
        "no network unless declared"
    );
    assert_eq!(ws.read("out/probe/ro"), "read-only\n");
    assert_eq!(ws.read("out/probe/leak"), "none\n");
    assert_eq!(ws.read("out/probe/uid"), "0\n");
    let net = ws.read("out/networked/net");
    assert!(net.lines().any(|l| l != "lo"), "declared network: {net}");
    assert_eq!(ws.read("out/as-user/uid"), "1000\n1000\n");
    assert!(ws.build_ok(&[]).executed().is_empty(), "all cached");
}

#[test]
fn the_image_enters_the_key() {
    if !docker_available() {
        return;
    }
    let ws = workspace(
        "  step:\n    rule: run\n    image: base\n    cmd: echo same > $OUT/o\n    outs: [o]\n",
    );
    assert_eq!(ws.build_ok(&[]).executed(), ["base", "step"]);
    // Same command, another image: the step runs again.
    ws.write("rootfs/etc/motd", "a new file in the image\n");
    assert_eq!(ws.build_ok(&[]).executed(), ["base", "step"]);
}

#[test]
fn a_pinned_registry_image_runs_and_a_tag_is_refused() {
    if !docker_available() {
        return;
    }
    let registry = Registry::start(None);
    let id = mini_image("strata-test/mini:pinned");
    let digest = registry.push(&id, "mini", "v1");
    let pinned = format!("{}/mini@{digest}", registry.host());
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        &format!("targets:\n  hello:\n    rule: run\n    image: {pinned}\n    cmd: echo pinned > $OUT/o\n    outs: [o]\n"),
    );
    ws.build_ok(&[]);
    assert_eq!(ws.read("out/hello/o"), "pinned\n");

    ws.write(
        "BUILD.yaml",
        &format!("targets:\n  hello:\n    rule: run\n    image: {}/mini:v1\n    cmd: echo tag > $OUT/o\n    outs: [o]\n", registry.host()),
    );
    let r = ws.build_fails(&[], 2);
    assert!(r.stderr.contains("BUILD.yaml:4:"), "{}", r.stderr);
    assert!(
        r.stderr.contains("sha256"),
        "the hint says how to pin: {}",
        r.stderr
    );
    let _ = sh(
        ws.path(),
        "docker rmi -f strata-test/mini:pinned >/dev/null 2>&1 || true",
    );
}

const STAGE: &str = r#"  tools:
    rule: stage
    from: base
    steps:
      - srcs: [v.txt]
        cmd: head -c 1 /strata/work/v.txt > /first
      - cmd: cp /first /second && rm /bin/ls && mkdir -p /opt/made
      - copy: srcs:extra.txt
        srcs: [extra.txt]
        to: /opt/made/
"#;

#[test]
fn stage_steps_are_cached_one_by_one_with_early_cutoff() {
    if !docker_available() {
        return;
    }
    let ws = workspace(STAGE);
    ws.write("v.txt", "ab\n");
    ws.write("extra.txt", "copied in\n");
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["base", "tools", "tools#1", "tools#2"]);
    assert_eq!(ws.read("out/tools/first"), "a");
    assert_eq!(ws.read("out/tools/second"), "a");
    assert_eq!(ws.read("out/tools/opt/made/extra.txt"), "copied in\n");
    assert!(
        !ws.path().join("out/tools/bin/ls").exists(),
        "deleted by a step"
    );
    assert!(ws.path().join("out/tools/bin/cat").exists());
    for injected in [
        ".dockerenv",
        "etc/hostname",
        "etc/hosts",
        "etc/resolv.conf",
        "strata",
    ] {
        assert!(
            !ws.path().join("out/tools").join(injected).exists(),
            "{injected} is Docker's, not the step's"
        );
    }
    assert!(
        !ws.path().join("out/tools#1").exists(),
        "steps are not outputs"
    );

    // The first step re-runs and writes the same byte: the rest is cached.
    ws.write("v.txt", "ac\n");
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["tools#1"]);
    assert_eq!(r.with_status("cached"), ["base", "tools", "tools#2"]);

    // A change that matters reaches every later step.
    ws.write("v.txt", "zc\n");
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["tools", "tools#1", "tools#2"]);
    assert_eq!(ws.read("out/tools/second"), "z");
}

/// Steps that delete, replace a folder and add files, each checking what
/// the one before left.
const LAYERED: &str = r#"  tools:
    rule: stage
    from: base
    steps:
      - cmd: echo one > /a && rm /bin/ls && mkdir -p /d && echo x > /d/x
      - cmd: test ! -e /bin/ls && test "$(cat /a)" = one && rm -r /d && mkdir /d && echo y > /d/y
      - cmd: test ! -e /d/x && test -e /d/y && test ! -e /bin/ls && cat /a /d/y > /seen
"#;

#[test]
fn a_step_after_a_step_starts_from_its_parent_image_plus_one_layer() {
    if !docker_available() {
        return;
    }
    let ws = workspace(LAYERED);
    let r = ws.build_ok(&[]);
    assert_eq!(ws.read("out/tools/seen"), "one\ny\n");
    let output = |r: &common::Run, t: &str| {
        r.json()["targets"][t]["output"]
            .as_str()
            .unwrap()
            .split_once(':')
            .unwrap()
            .1
            .to_string()
    };
    // Like `docker build`, each step's tree is its parent's image plus a
    // layer of changes (whiteouts for /bin/ls and the replaced /d).
    let layers = |tree: &str| {
        sh(
            std::path::Path::new("/"),
            &format!(
                "docker image inspect strata-tree:{tree} --format '{{{{len .RootFS.Layers}}}}'"
            ),
        )
        .trim()
        .to_string()
    };
    assert_eq!(layers(&output(&r, "tools#1")), "2");
    assert_eq!(layers(&output(&r, "tools#2")), "3");

    // With those images gone and a fresh store, they are made again and
    // every step gives the same tree.
    let again = workspace(LAYERED);
    for t in ["tools#1", "tools#2"] {
        sh(
            std::path::Path::new("/"),
            &format!("docker rmi strata-tree:{}", output(&r, t)),
        );
    }
    let r2 = again.build_ok(&[]);
    for t in ["tools#1", "tools#2", "tools"] {
        assert_eq!(output(&r, t), output(&r2, t), "{t}");
    }
}

#[test]
fn a_cache_mount_persists_across_builds_and_is_not_keyed() {
    if !docker_available() {
        return;
    }
    let ws = workspace(
        r#"  count:
    rule: run
    image: base
    srcs: [trigger]
    caches: {counter: /var/cache/counter}
    cmd: |
      n=$(cat /var/cache/counter/n 2>/dev/null || echo 0)
      echo $n > $OUT/seen
      echo $((n + 1)) > /var/cache/counter/n
    outs: [seen]
"#,
    );
    ws.write("trigger", "1");
    ws.build_ok(&[]);
    assert_eq!(ws.read("out/count/seen"), "0\n");
    ws.write("trigger", "2");
    ws.build_ok(&[]);
    assert_eq!(ws.read("out/count/seen"), "1\n", "the cache kept its file");

    // Changing the cache's contents changes no key.
    let export = ws.path().join("counter.tar.zst");
    let r = ws.run(&["cache", "export", "counter", "-o", export.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = ws.store.join("caches/counter");
    std::fs::write(dir.join("n"), "41\n").unwrap();
    assert!(ws.build_ok(&[]).executed().is_empty());

    // An exported cache moves to another store (as in CI).
    let other = Ws::new();
    let r = other.run(&["cache", "import", "counter", export.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(other.store.join("caches/counter/n")).unwrap(),
        "2\n"
    );
    let r = other.run(&["cache", "list"]);
    assert!(r.stdout.starts_with("counter\t"), "{}", r.stdout);
}

#[test]
fn no_container_is_left_after_a_failed_step_or_one_past_its_time_limit() {
    if !docker_available() {
        return;
    }
    let ws = workspace(concat!(
        "  bad:\n    rule: run\n    image: base\n    cmd: echo oops >&2; exit 3\n    outs: [x]\n",
        "  slow:\n    rule: run\n    image: base\n    limits: {time: 5s}\n",
        "    cmd: echo going to sleep; sleep 60\n    outs: [x]\n",
    ));
    let started = Instant::now();
    let child = ws
        .cmd(&["build", "-k"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exited with code 3"), "{stderr}");
    assert!(stderr.contains("oops"), "the step's log is shown: {stderr}");
    // A step past its time limit: its container is removed, its log shown.
    assert!(
        stderr.contains("the step passed its time limit of 5s and was killed"),
        "{stderr}"
    );
    assert!(stderr.contains("going to sleep"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(50));
    assert!(containers_of(pid).is_empty(), "{:?}", containers_of(pid));
}

#[test]
fn no_container_is_left_after_ctrl_c() {
    if !docker_available() {
        return;
    }
    let ws =
        workspace("  slow:\n    rule: run\n    image: base\n    cmd: sleep 120\n    outs: [x]\n");
    let mut child = ws
        .cmd(&["build"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    while containers_of(pid).is_empty() {
        assert!(Instant::now() < deadline, "the container never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    nix_kill(pid, libc::SIGINT);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(containers_of(pid).is_empty(), "{:?}", containers_of(pid));
}

fn nix_kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child we spawned.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

#[test]
fn image_pull_verifies_digests_and_refuses_tags() {
    if !docker_available() {
        return;
    }
    let registry = Registry::start(None);
    let id = mini_image("strata-test/mini:pull");
    let digest = registry.push(&id, "mini", "v1");
    let reference = format!("{}/mini@{digest}", registry.host());
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        &format!(
            "targets:\n  pulled:\n    rule: image-pull\n    image: {reference}\n  use:\n    rule: run\n    image: pulled\n    cmd: echo from the pulled image > $OUT/o\n    outs: [o]\n"
        ),
    );
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["pulled", "use"]);
    assert_eq!(ws.read("out/use/o"), "from the pulled image\n");
    // The layout names every blob by its sha256.
    let index: serde_json::Value = serde_json::from_str(&ws.read("out/pulled/index.json")).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    let check = sh(
        ws.path(),
        "cd out/pulled/blobs/sha256 && for f in *; do [ \"$(sha256sum $f | cut -c1-64)\" = \"$f\" ] || echo bad $f; done",
    );
    assert_eq!(check, "", "every blob matches its name");

    // A tampered layer in the registry is refused.
    let manifest: serde_json::Value = serde_json::from_str(&ws.read(&format!(
        "out/pulled/blobs/sha256/{}",
        digest.trim_start_matches("sha256:")
    )))
    .unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = registry.blob_path(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let fresh = Ws::new();
    fresh.write(
        "BUILD.yaml",
        &format!("targets:\n  pulled:\n    rule: image-pull\n    image: {reference}\n"),
    );
    let r = fresh.build_fails(&[], 1);
    assert!(r.stderr.contains(&layer), "names the blob: {}", r.stderr);

    // A tag is not a pin.
    fresh.write(
        "BUILD.yaml",
        &format!(
            "targets:\n  pulled:\n    rule: image-pull\n    image: {}/mini:v1\n",
            registry.host()
        ),
    );
    let r = fresh.build_fails(&[], 2);
    assert!(r.stderr.contains("BUILD.yaml:4:"), "{}", r.stderr);
    assert!(r.stderr.contains("not pinned by digest"), "{}", r.stderr);
    let _ = Command::new("docker")
        .args(["rmi", "-f", "strata-test/mini:pull"])
        .output();
}

#[test]
fn a_preloaded_data_root_boots_and_runs_its_image() {
    if !docker_available() {
        return;
    }
    let ws = workspace(
        r#"    tag: strata-test/preloaded:1
  data-root:
    rule: docker-data-root
    images: [base]
  shipped:
    rule: archive
    from: data-root
    name: var-lib-docker.tar
"#,
    );
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed(), ["base", "data-root", "shipped"]);
    // Boot a fresh engine on the shipped tree, as a device would.
    let root = tempfile::Builder::new()
        .prefix("strata-boot")
        .tempdir()
        .unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    sh(
        root.path(),
        &format!(
            "tar -C data --numeric-owner -xpf {}",
            ws.path().join("out/shipped/var-lib-docker.tar").display()
        ),
    );
    // As a device would, in its own network namespace.
    let daemon = Dockerd::start(&data, root.path());
    let host = daemon.host.clone();
    let images = sh(
        root.path(),
        &format!("docker -H {host} images --format '{{{{.Repository}}}}:{{{{.Tag}}}}'"),
    );
    let run = sh(
        root.path(),
        &format!(
            "docker -H {host} run --rm --network none strata-test/preloaded:1 /bin/sh -c 'echo preloaded and running'"
        ),
    );
    drop(daemon);
    assert!(
        images.lines().any(|l| l == "strata-test/preloaded:1"),
        "{images}"
    );
    assert_eq!(run, "preloaded and running\n");
}

#[test]
fn an_image_on_a_base_adds_one_layer_with_whiteouts() {
    if !docker_available() {
        return;
    }
    let ws = workspace(
        r#"  slim:
    rule: stage
    from: base
    steps:
      - cmd: rm /bin/ls && echo added > /added
  slim-image:
    rule: image
    base: base
    from: slim
    tag: strata-test/slim:1
    config: {cmd: [/bin/sh]}
"#,
    );
    ws.build_ok(&[]);
    let manifest: serde_json::Value = {
        let index: serde_json::Value =
            serde_json::from_str(&ws.read("out/slim-image/index.json")).unwrap();
        let hex = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        serde_json::from_str(&ws.read(&format!("out/slim-image/blobs/sha256/{hex}"))).unwrap()
    };
    let base_index: serde_json::Value =
        serde_json::from_str(&ws.read("out/base/index.json")).unwrap();
    let base_hex = base_index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let base_manifest: serde_json::Value =
        serde_json::from_str(&ws.read(&format!("out/base/blobs/sha256/{base_hex}"))).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "the base's layer, then the changes");
    assert_eq!(
        layers[0], base_manifest["layers"][0],
        "the base layer is shared as is"
    );
    let top = layers[1]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let entries = sh(
        ws.path(),
        &format!("tar -tf out/slim-image/blobs/sha256/{top} | sort"),
    );
    assert_eq!(
        entries, "added\nbin/\nbin/.wh.ls\n",
        "only the changes, the deletion as a whiteout"
    );

    sh(
        ws.path(),
        "tar -C out/slim-image -c . | docker load >/dev/null",
    );
    let seen = sh(
        ws.path(),
        "docker run --rm --network none strata-test/slim:1 /bin/sh -c 'cat /added; test -e /bin/ls && echo ls || echo no ls; test -e /bin/cat && echo cat'",
    );
    let _ = Command::new("docker")
        .args(["rmi", "-f", "strata-test/slim:1"])
        .output();
    assert_eq!(seen, "added\nno ls\ncat\n");
}

#[test]
fn image_pull_reads_registry_credentials_from_the_environment() {
    if !docker_available() {
        return;
    }
    let mut registry = Registry::start(None);
    let id = mini_image("strata-test/mini:auth");
    let digest = registry.push(&id, "private/mini", "v1");
    registry.restart(Some(("builder", "s3cret-passw0rd")));
    let ws = Ws::new();
    ws.write(
        "BUILD.yaml",
        &format!(
            "targets:\n  pulled:\n    rule: image-pull\n    image: {}/private/mini@{digest}\n    auth: {{username_env: REG_USER, password_env: REG_PASS}}\n",
            registry.host()
        ),
    );
    let r = ws.run(&["build"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("REG_USER"),
        "names the missing variable: {}",
        r.stderr
    );

    let r: common::Run = ws
        .cmd(&["build"])
        .env("REG_USER", "builder")
        .env("REG_PASS", "wrong")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(!r.stderr.contains("wrong"), "{}", r.stderr);

    let r: common::Run = ws
        .cmd(&["build"])
        .env("REG_USER", "builder")
        .env("REG_PASS", "s3cret-passw0rd")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("s3cret") && !r.stdout.contains("s3cret"));
    assert!(ws.path().join("out/pulled/index.json").exists());
    let _ = Command::new("docker")
        .args(["rmi", "-f", "strata-test/mini:auth"])
        .output();
}

/// `strata store gc --docker` removes the engine's tree images whose tree
/// the store no longer holds, leaves the rest and other tags alone, never
/// removes an image a container uses, and a build afterwards imports what
/// it needs again.
#[test]
fn gc_with_docker_removes_the_tree_images_of_trees_no_longer_stored() {
    if !docker_available() {
        return;
    }
    // A dockerd of the test's own: the shared engine holds other tests'
    // tree images, which this store does not hold.
    let run = tempfile::Builder::new()
        .prefix("strata-gcd")
        .tempdir()
        .unwrap();
    let data = run.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let daemon = Dockerd::start(&data, run.path());
    let host = daemon.host.clone();
    let strata = |ws: &Ws, args: &[&str]| -> Run {
        let r: Run = ws
            .cmd(args)
            .env("DOCKER_HOST", &host)
            .output()
            .unwrap()
            .into();
        assert_eq!(r.code, 0, "{args:?}:\n{}\n{}", r.stdout, r.stderr);
        r
    };
    let docker = |script: &str| sh(run.path(), &format!("docker -H {host} {script}"));
    let tree_images = || -> Vec<String> {
        let mut tags: Vec<String> = docker("images strata-tree --format '{{.Tag}}'")
            .lines()
            .map(str::to_string)
            .collect();
        tags.sort();
        tags
    };
    let stored = |ws: &Ws, hex: &str| {
        std::fs::read_dir(ws.store.join("cas/blake3").join(&hex[..2])).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(hex))
        })
    };
    let ws = workspace(
        "  tools:\n    rule: stage\n    from: base\n    steps:\n      - cmd: echo one > /a\n      - cmd: cat /a /a > /b\n      - cmd: cat /b > /c\n",
    );
    strata(&ws, &["build", "--json"]);
    let first = tree_images();
    assert!(first.len() >= 2, "{first:?}");
    // Other tags of the same images are somebody else's: they stay.
    for (i, tag) in first.iter().enumerate() {
        docker(&format!("tag strata-tree:{tag} mine/kept:{i}"));
    }

    // Everything is still stored: nothing goes.
    let r = strata(
        &ws,
        &["store", "gc", "--max-size", "10G", "--docker", "--json"],
    );
    let images = &r.json()["tree_images"];
    assert_eq!(images["removed"], 0, "{images}");
    assert_eq!(images["kept"], first.len(), "{images}");
    assert_eq!(tree_images(), first);

    // A second build replaces the steps; with one build kept and no room,
    // the first build's step trees leave the store, and their images go.
    ws.write(
        "BUILD.yaml",
        &ws.read("BUILD.yaml").replace("echo one", "echo two"),
    );
    strata(&ws, &["build", "--json"]);
    let both = tree_images();
    assert!(both.len() > first.len(), "{both:?}");
    let gc_args = [
        "store",
        "gc",
        "--max-size",
        "0",
        "--keep-builds",
        "1",
        "--docker",
        "--json",
    ];
    let mut dry = gc_args.to_vec();
    dry.push("--dry-run");
    let would = strata(&ws, &dry).json()["tree_images"]["removed"].clone();
    assert_eq!(tree_images(), both, "a dry run removed images");
    let r = strata(&ws, &gc_args);
    let images = r.json()["tree_images"].clone();
    let left = tree_images();
    assert_eq!(images["removed"], would, "{images}");
    assert!(images["removed"].as_u64().unwrap() > 0, "{images}");
    assert_eq!(
        images["kept"].as_u64().unwrap() as usize + images["in_use"].as_u64().unwrap() as usize,
        left.len(),
        "{images} {left:?}"
    );
    for tag in &both {
        assert_eq!(
            left.contains(tag),
            stored(&ws, tag),
            "strata-tree:{tag} is in the engine iff its tree is in the store"
        );
    }
    let others = docker("images mine/kept --format '{{.Tag}}'");
    assert_eq!(
        others.lines().count(),
        first.len(),
        "another tag of a removed image was touched: {others}"
    );

    // Back to the first version: its steps run again on re-imported images.
    ws.write(
        "BUILD.yaml",
        &ws.read("BUILD.yaml").replace("echo two", "echo one"),
    );
    let again = strata(&ws, &["build", "--json"]);
    assert_eq!(
        again.executed(),
        ["tools", "tools#1", "tools#2"],
        "{}",
        again.stdout
    );
    let second_only: Vec<&String> = left.iter().filter(|t| !first.contains(t)).collect();
    assert!(!second_only.is_empty(), "{left:?}");
    let mut expected: Vec<String> = first
        .iter()
        .chain(second_only.iter().copied())
        .cloned()
        .collect();
    expected.sort();
    assert_eq!(tree_images(), expected);

    // Now the second version's images are doomed; a (stopped) container
    // uses one of them, which stays.
    let used = second_only[0];
    docker(&format!(
        "create --name gc-user strata-tree:{used} /bin/true"
    ));
    let images = strata(&ws, &gc_args).json()["tree_images"].clone();
    assert_eq!(images["in_use"], 1, "{images}");
    assert!(!stored(&ws, used));
    let left = tree_images();
    assert!(left.contains(used), "{left:?}");
    for tag in expected.iter().filter(|t| *t != used) {
        assert_eq!(left.contains(tag), stored(&ws, tag), "strata-tree:{tag}");
    }
    docker("rm gc-user");
    drop(daemon);
}
