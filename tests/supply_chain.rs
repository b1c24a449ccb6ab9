//! `strata sbom` and `strata provenance` on an offline workspace: a .deb
//! (made here with dpkg-deb) and a Debian source package fetched by
//! fixed-output steps from a local mirror, the .deb unpacked by `extract`,
//! a tool "compiled" from the source package, a rootfs of both and an
//! archive around it. The documents are checked for what a user reads in
//! them, for byte-identity across two workspaces at different paths, and
//! by third-party validators (spdx-tools, cyclonedx-python-lib,
//! securesystemslib) from the venv of scripts/supply-validators-up.sh,
//! whose python `STRATA_SUPPLY_PYTHON` names. Without it these tests skip,
//! unless `STRATA_REQUIRE_SUPPLY_VALIDATORS` is set (as in CI): then they
//! fail.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{Run, Ws, sh};
use serde_json::Value;

const REQUIRE_ENV: &str = "STRATA_REQUIRE_SUPPLY_VALIDATORS";

const BUILD: &str = r#"
vars:
  SOURCE_DATE_EPOCH: "1700000000"
  debs_digest: "blake3:0000000000000000000000000000000000000000000000000000000000000000"
  src_digest: "blake3:0000000000000000000000000000000000000000000000000000000000000000"
  token: !ENV ${SUPPLY_TOKEN:none}
targets:
  debs:
    rule: run
    output_digest: ${debs_digest}
    srcs: [fetch.sh, "mirror/*.deb"]
    outs: [debs/]
    cmd: |
      mkdir -p $OUT/debs
      sh fetch.sh -o $OUT/debs/hello-sbom_1%3a1.0-1+b1_amd64.deb http://deb.example.invalid/pool/main/h/hello-src/hello-sbom_1.0-1+b1_amd64.deb
  hello-src:
    rule: run
    output_digest: ${src_digest}
    srcs: [fetch.sh, "mirror/hello-src_*"]
    outs: [src/]
    cmd: |
      mkdir -p $OUT/src
      sh fetch.sh -o $OUT/src/hello-src_1.0-1.dsc http://deb.example.invalid/pool/main/h/hello-src/hello-src_1.0-1.dsc
      sh fetch.sh -o $OUT/src/hello-src_1.0.orig.tar.gz http://deb.example.invalid/pool/main/h/hello-src/hello-src_1.0.orig.tar.gz
  deb-hello:
    rule: extract
    from: "debs:debs/hello-sbom_1%3a1.0-1+b1_amd64.deb"
  hello-orig:
    rule: extract
    from: "hello-src:src/hello-src_1.0.orig.tar.gz"
    strip_components: 1
  hello-tool:
    rule: run
    deps: [hello-orig]
    srcs: [build-tool.sh]
    outs: [usr/]
    cmd: sh build-tool.sh
  rootfs:
    rule: rootfs
    layers: [{from: deb-hello}, {from: hello-tool}]
  bundle:
    rule: archive
    from: rootfs
    compression: gzip
  disk:
    rule: run
    deps: [rootfs]
    outs: [disk.tar]
    cmd: tar -C $DEPS/rootfs -cf $OUT/disk.tar .
  root-fs:
    rule: ext4
    from: rootfs
    size: 8MiB
  card:
    rule: disk
    table: gpt
    partitions:
      - {type: linux, from: root-fs}
  bundle-sbom:
    rule: sbom
    of: bundle
  disk-sbom:
    rule: sbom
    of: disk
    formats: [cyclonedx-json]
    holds_inputs: [disk]
  sums:
    rule: checksums
    of: [bundle, bundle-sbom]
"#;

/// The mirror's files, made once: the same bytes in every workspace.
fn mirror() -> &'static Vec<(String, Vec<u8>)> {
    static MIRROR: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    MIRROR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("debroot/DEBIAN")).unwrap();
        fs::create_dir_all(d.join("debroot/usr/share/hello")).unwrap();
        fs::create_dir_all(d.join("src/hello-src-1.0")).unwrap();
        fs::create_dir_all(d.join("mirror")).unwrap();
        fs::write(
            d.join("debroot/DEBIAN/control"),
            "Package: hello-sbom\nVersion: 1:1.0-1+b1\nArchitecture: amd64\nSource: hello-src (1.0-1)\nMaintainer: Strata Tests <tests@example.invalid>\nDescription: a package for the SBOM tests\n",
        )
        .unwrap();
        fs::write(d.join("debroot/usr/share/hello/greeting"), "hi\n").unwrap();
        fs::write(d.join("src/hello-src-1.0/hello.sh"), "echo hello\n").unwrap();
        fs::write(
            d.join("mirror/hello-src_1.0-1.dsc"),
            "Format: 3.0 (quilt)\nSource: hello-src\nBinary: hello-sbom\nVersion: 1.0-1\n",
        )
        .unwrap();
        sh(
            d,
            "SOURCE_DATE_EPOCH=1700000000 dpkg-deb --root-owner-group -Zgzip --build debroot mirror/hello-sbom_1.0-1+b1_amd64.deb >/dev/null \
             && tar --sort=name --mtime=@1700000000 --owner=0 --group=0 -C src -cf - hello-src-1.0 | gzip -n > mirror/hello-src_1.0.orig.tar.gz",
        );
        let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(d.join("mirror"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    format!("mirror/{}", e.file_name().to_string_lossy()),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    })
}

/// The fixed-output digests, learnt once from the build's own message.
fn digests() -> &'static (String, String) {
    static DIGESTS: OnceLock<(String, String)> = OnceLock::new();
    DIGESTS.get_or_init(|| {
        let ws = workspace();
        let r = ws.run(&["build", "-k", "debs", "hello-src"]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        let actual = |target: &str| {
            let at = r
                .stderr
                .find(&format!("target `{target}`: output digest mismatch"))
                .unwrap_or_else(|| panic!("no mismatch for {target}:\n{}", r.stderr));
            let rest = &r.stderr[at..];
            let start = rest.find("actual:").unwrap() + "actual:".len();
            rest[start..].split_whitespace().next().unwrap().to_string()
        };
        (actual("debs"), actual("hello-src"))
    })
}

fn workspace() -> Ws {
    let ws = Ws::new();
    ws.write("BUILD.yaml", BUILD)
        .write(
            "fetch.sh",
            "# A stand-in for curl reading a local mirror: fetch.sh -o FILE URL\ncp \"mirror/${3##*/}\" \"$2\"\n",
        )
        .write(
            "build-tool.sh",
            "mkdir -p $OUT/usr/bin && cp $DEPS/hello-orig/hello.sh $OUT/usr/bin/hello-tool\n",
        );
    for (path, bytes) in mirror() {
        fs::write(ws.path().join(path), bytes).unwrap_or_else(|_| {
            fs::create_dir_all(ws.path().join("mirror")).unwrap();
            fs::write(ws.path().join(path), bytes).unwrap();
        });
    }
    ws
}

/// A workspace whose `bundle` was built.
fn built() -> Ws {
    let ws = workspace();
    let (debs, src) = digests();
    ws.build_ok(&[
        "--var",
        &format!("debs_digest={debs}"),
        "--var",
        &format!("src_digest={src}"),
        "bundle",
    ]);
    ws
}

fn ok(ws: &Ws, args: &[&str]) -> String {
    let r = ws.run(args);
    assert_eq!(r.code, 0, "{args:?}:\n{}\n{}", r.stdout, r.stderr);
    r.stdout
}

/// The validators' python, or `None` to skip.
fn validators() -> Option<PathBuf> {
    match std::env::var_os("STRATA_SUPPLY_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                std::env::var_os(REQUIRE_ENV).is_none(),
                "{REQUIRE_ENV} is set but STRATA_SUPPLY_PYTHON is not (run scripts/supply-validators-up.sh)"
            );
            eprintln!(
                "skipped: STRATA_SUPPLY_PYTHON is not set (scripts/supply-validators-up.sh prints it)"
            );
            None
        }
    }
}

fn run_validator(cmd: &mut Command) -> Run {
    cmd.output().expect("validator runs").into()
}

fn pyspdxtools(python: &Path, file: &Path) -> Run {
    run_validator(
        Command::new(python.with_file_name("pyspdxtools"))
            .arg("-i")
            .arg(file),
    )
}

fn check(python: &Path, args: &[&str]) -> Run {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/supply/validate.py");
    run_validator(Command::new(python).arg(script).args(args))
}

fn sha256_of(path: &Path) -> String {
    sh(
        path.parent().unwrap(),
        &format!("sha256sum '{}'", path.display()),
    )
    .split_whitespace()
    .next()
    .unwrap()
    .to_string()
}

fn package<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no package {name}"))
}

fn related(doc: &Value, from: &str, kind: &str) -> Vec<String> {
    let id = |name: &str| package(doc, name)["SPDXID"].as_str().unwrap().to_string();
    let from = id(from);
    let names: std::collections::BTreeMap<String, String> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["SPDXID"].as_str().unwrap().into(),
                p["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut out: Vec<String> = doc["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["spdxElementId"] == from.as_str() && r["relationshipType"] == kind)
        .filter_map(|r| {
            names
                .get(r["relatedSpdxElement"].as_str().unwrap())
                .cloned()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn spdx_names_packages_fetches_tools_and_nesting_and_spdx_tools_accepts_it() {
    let ws = built();
    let doc: Value = serde_json::from_str(&ok(&ws, &["sbom", "bundle"])).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    // SOURCE_DATE_EPOCH 1700000000, never the clock.
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");

    let deb = package(&doc, "hello-sbom");
    assert_eq!(deb["versionInfo"], "1:1.0-1+b1");
    assert_eq!(
        deb["externalRefs"][0]["referenceLocator"],
        "pkg:deb/debian/hello-sbom@1%3A1.0-1%2Bb1?arch=amd64"
    );
    let deb_sha = sha256_of(&ws.path().join("mirror/hello-sbom_1.0-1+b1_amd64.deb"));
    assert_eq!(deb["checksums"][0]["checksumValue"], deb_sha.as_str());
    assert_eq!(
        deb["downloadLocation"],
        "http://deb.example.invalid/pool/main/h/hello-src/hello-sbom_1.0-1+b1_amd64.deb"
    );
    assert_eq!(
        deb["sourceInfo"],
        "built from Debian source package hello-src 1.0-1"
    );

    let tool = package(&doc, "hello-tool");
    assert_eq!(tool["versionInfo"], "1.0-1");
    assert_eq!(
        tool["sourceInfo"],
        "compiled from Debian source package hello-src 1.0-1"
    );

    // The archive's file, hashed as it sits in out/.
    let bundle = package(&doc, "bundle");
    let out_sha = sha256_of(&ws.path().join("out/bundle/rootfs.tar.gz"));
    assert_eq!(bundle["checksums"][0]["checksumValue"], out_sha.as_str());

    // Nesting from the graph: the archive holds the rootfs, which holds the
    // package and the tool; the tool was made from the source package.
    assert_eq!(related(&doc, "bundle", "CONTAINS"), ["rootfs"]);
    assert_eq!(
        related(&doc, "rootfs", "CONTAINS"),
        ["hello-sbom", "hello-tool"]
    );
    assert_eq!(
        related(&doc, "hello-tool", "GENERATED_FROM"),
        ["hello-orig"]
    );
    assert_eq!(related(&doc, "hello-orig", "GENERATED_FROM"), ["hello-src"]);

    let Some(python) = validators() else { return };
    for args in [&["sbom", "bundle"][..], &["sbom", "bundle", "--files"]] {
        let file = ws.path().join("doc.spdx.json");
        let mut all = args.to_vec();
        let f = file.to_str().unwrap();
        all.extend(["-o", f]);
        ok(&ws, &all);
        let r = pyspdxtools(&python, &file);
        assert_eq!(
            r.code, 0,
            "pyspdxtools rejects {args:?}:\n{}\n{}",
            r.stdout, r.stderr
        );
    }
    // The validator does refuse a broken document (a file without SHA-1).
    let mut broken = doc.clone();
    broken["files"] = serde_json::json!([{"SPDXID": "SPDXRef-x", "fileName": "./x",
        "checksums": [{"algorithm": "SHA256", "checksumValue": out_sha}]}]);
    let file = ws.path().join("broken.spdx.json");
    fs::write(&file, broken.to_string()).unwrap();
    assert_ne!(pyspdxtools(&python, &file).code, 0);
}

#[test]
fn cyclonedx_nests_what_the_output_holds_and_the_schema_accepts_it() {
    let ws = built();
    let doc: Value =
        serde_json::from_str(&ok(&ws, &["sbom", "bundle", "--format", "cyclonedx-json"])).unwrap();
    assert_eq!(doc["specVersion"], "1.6");
    assert_eq!(doc["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
    assert_eq!(doc["metadata"]["component"]["name"], "bundle");
    let serial = doc["serialNumber"].as_str().unwrap();
    assert!(serial.starts_with("urn:uuid:"), "{serial}");
    // bundle > rootfs > {hello-sbom, hello-tool}
    let top = doc["components"].as_array().unwrap();
    let rootfs = top
        .iter()
        .find(|c| c["bom-ref"] == "rootfs")
        .expect("rootfs nested at the top");
    let inner: Vec<&str> = rootfs["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(inner, ["hello-sbom", "hello-tool"]);
    let deb = &rootfs["components"][0];
    assert_eq!(
        deb["purl"],
        "pkg:deb/debian/hello-sbom@1%3A1.0-1%2Bb1?arch=amd64"
    );
    // What only helped make it is there too, marked as not included.
    let src = top
        .iter()
        .find(|c| c["bom-ref"] == "hello-src")
        .expect("the source fetch");
    assert_eq!(src["scope"], "excluded");

    let Some(python) = validators() else { return };
    for extra in [&[][..], &["--files"]] {
        let file = ws.path().join("doc.cdx.json");
        let mut all = vec![
            "sbom",
            "bundle",
            "--format",
            "cyclonedx-json",
            "-o",
            file.to_str().unwrap(),
        ];
        all.extend_from_slice(extra);
        ok(&ws, &all);
        let r = check(&python, &["cyclonedx", file.to_str().unwrap()]);
        assert_eq!(
            r.code, 0,
            "CycloneDX 1.6 schema rejects {extra:?}:\n{}\n{}",
            r.stdout, r.stderr
        );
    }
    let mut broken = doc.clone();
    broken["serialNumber"] = "urn:uuid:1234".into();
    let file = ws.path().join("broken.cdx.json");
    fs::write(&file, broken.to_string()).unwrap();
    assert_ne!(
        check(&python, &["cyclonedx", file.to_str().unwrap()]).code,
        0
    );
}

#[test]
fn documents_are_byte_identical_from_two_workspaces_at_different_paths() {
    let (a, b) = (built(), built());
    assert_ne!(a.path(), b.path());
    for args in [
        &["sbom", "bundle"][..],
        &["sbom", "bundle", "--files"],
        &["sbom", "bundle", "--format", "cyclonedx-json", "--files"],
        &["provenance", "bundle"],
    ] {
        let (da, db) = (ok(&a, args), ok(&b, args));
        assert_eq!(da, db, "{args:?} differs between workspaces");
        assert!(
            !da.contains(a.path().to_str().unwrap()),
            "{args:?} names a path"
        );
    }
}

#[test]
fn provenance_lists_subjects_parameters_and_resolved_dependencies() {
    let ws = built();
    let st: Value = serde_json::from_str(&ok(&ws, &["provenance", "bundle"])).unwrap();
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
    let out_sha = sha256_of(&ws.path().join("out/bundle/rootfs.tar.gz"));
    assert_eq!(
        st["subject"],
        serde_json::json!([{"name": "bundle/rootfs.tar.gz", "digest": {"sha256": out_sha}}])
    );
    let def = &st["predicate"]["buildDefinition"];
    assert_eq!(def["externalParameters"]["target"], "bundle");
    assert_eq!(
        def["externalParameters"]["vars"]["SOURCE_DATE_EPOCH"],
        "1700000000"
    );
    let deps = def["resolvedDependencies"].as_array().unwrap();
    let uri = |u: &str| {
        deps.iter()
            .find(|d| d["uri"] == u)
            .unwrap_or_else(|| panic!("{u} missing"))
    };
    let orig = uri("http://deb.example.invalid/pool/main/h/hello-src/hello-src_1.0.orig.tar.gz");
    assert_eq!(
        orig["digest"]["sha256"],
        sha256_of(&ws.path().join("mirror/hello-src_1.0.orig.tar.gz")).as_str()
    );
    uri("http://deb.example.invalid/pool/main/h/hello-src/hello-sbom_1.0-1+b1_amd64.deb");
    let sources = deps
        .iter()
        .find(|d| d["name"] == "sources")
        .expect("the sources");
    assert_eq!(sources["annotations"]["files"], 1);
    assert!(st["predicate"]["runDetails"]["builder"]["id"].is_string());
}

#[test]
fn a_secret_variable_appears_as_its_hash_only() {
    let ws = workspace();
    let (debs, src) = digests();
    let secret = "s3cr3t-supply-token";
    let r = ws
        .cmd(&[
            "build",
            "--var",
            &format!("debs_digest={debs}"),
            "--var",
            &format!("src_digest={src}"),
            "bundle",
        ])
        .env("SUPPLY_TOKEN", secret)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let text = ok(&ws, &["provenance", "bundle"]);
    assert!(!text.contains(secret), "the secret leaked:\n{text}");
    let st: Value = serde_json::from_str(&text).unwrap();
    let token = st["predicate"]["buildDefinition"]["externalParameters"]["vars"]["token"]
        .as_str()
        .unwrap();
    assert!(token.starts_with("«!ENV SUPPLY_TOKEN blake3:"), "{token}");
}

#[test]
fn signed_provenance_verifies_and_tampering_or_another_key_is_refused() {
    let ws = built();
    let key = ws.path().join("signing.key");
    let public = ok(&ws, &["cache", "keygen", "-o", key.to_str().unwrap()])
        .trim()
        .to_string();
    let other_key = ws.path().join("other.key");
    let other = ok(&ws, &["cache", "keygen", "-o", other_key.to_str().unwrap()])
        .trim()
        .to_string();
    let signed = ws.path().join("bundle.intoto.json");
    ok(
        &ws,
        &[
            "provenance",
            "bundle",
            "--sign-key",
            key.to_str().unwrap(),
            "-o",
            signed.to_str().unwrap(),
        ],
    );
    let f = signed.to_str().unwrap();
    let verified = ok(&ws, &["provenance", "verify", f, "--trusted-key", &public]);
    assert!(verified.contains("bundle/rootfs.tar.gz"), "{verified}");
    // The public key may also be given as a file.
    fs::write(ws.path().join("trusted.pub"), format!("{public}\n")).unwrap();
    ok(
        &ws,
        &["provenance", "verify", f, "--trusted-key", "trusted.pub"],
    );

    let r = ws.run(&["provenance", "verify", f, "--trusted-key", &other]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("not signed by the trusted key"),
        "{}",
        r.stderr
    );

    // One changed byte of the statement: the subject's digest.
    let mut env: Value = serde_json::from_str(&fs::read_to_string(&signed).unwrap()).unwrap();
    let payload = sh(
        ws.path(),
        &format!(
            "printf %s '{}' | base64 -d",
            env["payload"].as_str().unwrap()
        ),
    );
    let changed = payload.replacen("\"sha256\": \"", "\"sha256\": \"0", 1);
    assert_ne!(changed, payload);
    let encoded = sh(
        ws.path(),
        &format!(
            "printf %s '{}' | base64 -w0",
            changed.replace('\'', "'\\''")
        ),
    );
    env["payload"] = encoded.into();
    let tampered = ws.path().join("tampered.json");
    fs::write(&tampered, env.to_string()).unwrap();
    let t = tampered.to_str().unwrap();
    let r = ws.run(&["provenance", "verify", t, "--trusted-key", &public]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("changed after signing"), "{}", r.stderr);

    let Some(python) = validators() else { return };
    let r = check(&python, &["dsse", f, &public]);
    assert_eq!(
        r.code, 0,
        "securesystemslib rejects the envelope:\n{}\n{}",
        r.stdout, r.stderr
    );
    assert_ne!(check(&python, &["dsse", t, &public]).code, 0);
    assert_ne!(check(&python, &["dsse", f, &other]).code, 0);
}

#[test]
fn the_sbom_rule_ships_the_documents_beside_the_checksums() {
    let ws = workspace();
    let (debs, src) = digests();
    let vars = [
        "--var".to_string(),
        format!("debs_digest={debs}"),
        "--var".to_string(),
        format!("src_digest={src}"),
    ];
    let mut args: Vec<&str> = vars.iter().map(String::as_str).collect();
    args.extend(["bundle", "bundle-sbom", "sums"]);
    ws.build_ok(&args);
    // What the build shipped is what `strata sbom` says of the same build.
    assert_eq!(
        ws.read("out/bundle-sbom/bundle.spdx.json"),
        ok(&ws, &["sbom", "bundle"])
    );
    assert_eq!(
        ws.read("out/bundle-sbom/bundle.cdx.json"),
        ok(&ws, &["sbom", "bundle", "--format", "cyclonedx-json"])
    );
    let shipped: Value =
        serde_json::from_str(&ws.read("out/bundle-sbom/bundle.intoto.json")).unwrap();
    let printed: Value = serde_json::from_str(&ok(&ws, &["provenance", "bundle"])).unwrap();
    assert_eq!(shipped["subject"], printed["subject"]);
    assert_eq!(
        shipped["predicate"]["buildDefinition"]["resolvedDependencies"],
        printed["predicate"]["buildDefinition"]["resolvedDependencies"]
    );
    // Listed beside the archive in SHA256SUMS and the build manifest.
    let sums = ws.read("out/sums/SHA256SUMS");
    for name in [
        "bundle/rootfs.tar.gz",
        "bundle-sbom/bundle.spdx.json",
        "bundle-sbom/bundle.cdx.json",
    ] {
        assert!(sums.contains(name), "{name} not in SHA256SUMS:\n{sums}");
    }
    // The facts are an input of its key: nothing changed, nothing runs.
    let again = ws.build_ok(&args);
    assert!(again.executed().is_empty(), "{:?}", again.executed());
    // explain and audit key it as the build does (the facts included).
    let mut explain = vec!["explain", "bundle-sbom", "--json"];
    explain.extend(vars.iter().map(String::as_str));
    let e: Value = serde_json::from_str(&ok(&ws, &explain)).unwrap();
    assert_eq!(e["changes"], serde_json::json!([]), "{e}");
    assert!(e["components"]["deps"][".facts"].is_string(), "{e}");
    let mut audit = vec!["audit", "bundle-sbom"];
    audit.extend(vars.iter().map(String::as_str));
    let a = ws.run(&audit);
    assert_eq!(a.code, 0, "{}\n{}", a.stdout, a.stderr);
    // A changed tool changes the SBOM (the tool's component and hashes).
    ws.write(
        "build-tool.sh",
        "mkdir -p $OUT/usr/bin && cp $DEPS/hello-orig/hello.sh $OUT/usr/bin/hello-tool2\n",
    );
    let before = ws.read("out/bundle-sbom/bundle.spdx.json");
    let r = ws.build_ok(&args);
    assert!(
        r.executed().contains(&"bundle-sbom".to_string()),
        "{:?}",
        r.executed()
    );
    assert_ne!(ws.read("out/bundle-sbom/bundle.spdx.json"), before);
}

#[test]
fn a_step_named_as_holding_its_inputs_contains_them() {
    let ws = workspace();
    let (debs, src) = digests();
    let (d, s) = (format!("debs_digest={debs}"), format!("src_digest={src}"));
    ws.build_ok(&["--var", &d, "--var", &s, "disk", "disk-sbom"]);
    // A run step is made from its inputs...
    let plain: Value = serde_json::from_str(&ok(&ws, &["sbom", "disk"])).unwrap();
    assert_eq!(related(&plain, "disk", "GENERATED_FROM"), ["rootfs"]);
    assert!(related(&plain, "disk", "CONTAINS").is_empty());
    // ...unless it is said to hold them (a disk image made from a rootfs).
    let held: Value =
        serde_json::from_str(&ok(&ws, &["sbom", "disk", "--holds-inputs", "disk"])).unwrap();
    assert_eq!(related(&held, "disk", "CONTAINS"), ["rootfs"]);
    let cdx: Value = serde_json::from_str(&ok(
        &ws,
        &[
            "sbom",
            "disk",
            "--holds-inputs",
            "disk",
            "--format",
            "cyclonedx-json",
        ],
    ))
    .unwrap();
    let rootfs = &cdx["components"][0];
    assert_eq!(rootfs["bom-ref"], "rootfs");
    assert!(rootfs["scope"].is_null(), "{rootfs}");
    assert_eq!(rootfs["components"][0]["name"], "hello-sbom");
    // The rule's `holds_inputs` says the same.
    assert_eq!(
        ws.read("out/disk-sbom/disk.cdx.json"),
        ok(
            &ws,
            &[
                "sbom",
                "disk",
                "--holds-inputs",
                "disk",
                "--format",
                "cyclonedx-json"
            ]
        )
    );
}

#[test]
fn a_disk_image_holds_its_file_system_which_holds_the_tree() {
    let ws = workspace();
    let (debs, src) = digests();
    let (d, s) = (format!("debs_digest={debs}"), format!("src_digest={src}"));
    ws.build_ok(&["--var", &d, "--var", &s, "card"]);
    let doc: Value = serde_json::from_str(&ok(&ws, &["sbom", "card"])).unwrap();
    assert_eq!(related(&doc, "card", "CONTAINS"), ["root-fs"]);
    // `ext4` is mke2fs run over the tree its hidden layout lays out: the
    // image holds that tree, it is not merely made from it.
    assert_eq!(related(&doc, "root-fs", "CONTAINS"), ["root-fs#layout"]);
    assert!(related(&doc, "root-fs", "GENERATED_FROM").is_empty());
    assert_eq!(related(&doc, "root-fs#layout", "CONTAINS"), ["rootfs"]);
    assert!(related(&doc, "rootfs", "CONTAINS").contains(&"hello-sbom".to_string()));
}

#[test]
fn bad_requests_are_usage_errors() {
    let ws = built();
    let r = ws.run(&["sbom", "bundle", "--format", "swid"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("spdx-json"), "{}", r.stderr);

    let r = ws.run(&["sbom", "bundel"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("`bundel` is not in the last build"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("bundle"), "no hint: {}", r.stderr);

    // Nothing is built for you: a workspace never built, or one whose last
    // build did not include the target, is told to build first.
    let never = workspace();
    let r = never.run(&["provenance", "bundle"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("build first"), "{}", r.stderr);
    let (debs, _) = digests();
    never.build_ok(&["--var", &format!("debs_digest={debs}"), "debs"]);
    let r = never.run(&["sbom", "bundle"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("`bundle` is not in the last build"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("build it first"), "{}", r.stderr);

    // A format the rule does not write, at its place in BUILD.yaml.
    let bad = workspace();
    bad.write(
        "BUILD.yaml",
        &BUILD.replace(
            "    of: bundle\n",
            "    of: bundle\n    formats: [spdx-json, swid]\n",
        ),
    );
    let r = bad.run(&["build", "bundle-sbom"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("unknown format `swid`"), "{}", r.stderr);
    assert!(r.stderr.contains("BUILD.yaml:"), "{}", r.stderr);

    let r = ws.run(&["provenance", "bundle", "--sign-key", "missing.key"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot read the signing key"),
        "{}",
        r.stderr
    );
}
