use strata_store::tree::walk;

use super::*;
use crate::oci::spec::{ImageConfig, Platform as SpecPlatform, RootFs};
use crate::testkit::{Fixture, fixture};

/// A config for `os/arch` naming one diff ID, and a manifest of it and one
/// layer (the bytes `layer`), all stored.
fn image(f: &Fixture, arch: &str, layer: &[u8], docker: bool) -> Image {
    let cas = f.store.cas();
    let (mt_layer, mt_config, mt_manifest) = if docker {
        (
            media_type::DOCKER_LAYER_GZIP,
            media_type::DOCKER_CONFIG,
            media_type::DOCKER_MANIFEST,
        )
    } else {
        (
            media_type::OCI_LAYER,
            media_type::OCI_CONFIG,
            media_type::OCI_MANIFEST,
        )
    };
    let layer = Blob::from_bytes(cas, mt_layer, layer).unwrap();
    let config = ImageConfig {
        architecture: arch.into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![layer.sha256.clone()],
        },
        ..Default::default()
    };
    let config = Blob::from_bytes(cas, mt_config, &to_json(&config)).unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(mt_manifest.into()),
        config: config.descriptor(),
        layers: vec![layer.descriptor()],
    };
    let manifest = Blob::from_bytes(cas, mt_manifest, &to_json(&manifest)).unwrap();
    Image {
        manifest,
        config,
        layers: vec![layer],
    }
}

fn assemble_image(f: &Fixture, img: &Image, tag: Option<&str>) -> Result<Digest, FormatError> {
    assemble(f.store.cas(), &img.manifest, &img.config, &img.layers, tag)
}

/// The files of a tree by path, with their bytes.
fn files(cas: &Cas, tree: &Digest) -> BTreeMap<String, (Vec<u8>, Option<Meta>)> {
    walk(cas, tree)
        .unwrap()
        .into_iter()
        .filter_map(|(p, e)| match e {
            Entry::File { digest, meta, .. } => Some((p, (cas.read(&digest).unwrap(), meta))),
            _ => None,
        })
        .collect()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn an_assembled_layout_is_an_oci_layout_and_a_docker_archive() {
    let f = fixture();
    let cas = f.store.cas();
    let img = image(&f, "amd64", b"layer bytes", false);
    let tree = assemble_image(&f, &img, Some("example.com/app:1.0")).unwrap();
    let all = files(cas, &tree);
    let h = |b: &Blob| format!("blobs/sha256/{}", b.hex());
    let names: Vec<&String> = all.keys().collect();
    let mut want = [
        h(&img.config),
        h(&img.layers[0]),
        h(&img.manifest),
        "index.json".into(),
        "manifest.json".into(),
        "oci-layout".into(),
    ];
    want.sort();
    assert_eq!(names, want.iter().collect::<Vec<_>>());
    // Every file is 0644 root:root and every blob is named by its SHA-256.
    for (path, (bytes, meta)) in &all {
        assert_eq!(*meta, Some(FILE_META), "{path}");
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            let b = Blob::from_bytes(cas, "x", bytes).unwrap();
            assert_eq!(b.hex(), hex);
        }
    }
    assert_eq!(
        json(&all["oci-layout"].0),
        serde_json::json!({"imageLayoutVersion": "1.0.0"})
    );
    assert_eq!(
        json(&all["index.json"].0),
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "manifests": [{
                "mediaType": media_type::OCI_MANIFEST,
                "digest": img.manifest.sha256,
                "size": img.manifest.size,
                "annotations": {REF_NAME: "example.com/app:1.0"},
            }],
        })
    );
    assert_eq!(
        json(&all["manifest.json"].0),
        serde_json::json!([{
            "Config": h(&img.config),
            "RepoTags": ["example.com/app:1.0"],
            "Layers": [h(&img.layers[0])],
        }])
    );
    assert!(is_layout(cas, &tree).unwrap());
    assert_eq!(read(cas, &tree, "linux/amd64").unwrap(), img);

    // A pure function of its inputs.
    assert_eq!(
        assemble_image(&f, &img, Some("example.com/app:1.0")).unwrap(),
        tree
    );
    let untagged = assemble_image(&f, &img, None).unwrap();
    assert_ne!(untagged, tree);
    let all = files(cas, &untagged);
    assert_eq!(
        json(&all["manifest.json"].0)[0]["RepoTags"],
        serde_json::json!([])
    );
    assert!(
        json(&all["index.json"].0)["manifests"][0]
            .get("annotations")
            .is_none()
    );
}

#[test]
fn assemble_refuses_inconsistent_inputs() {
    let f = fixture();
    let img = image(&f, "amd64", b"one", false);
    let other = image(&f, "amd64", b"two", false);
    let e = assemble_image(&f, &img, Some("App:1"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("App:1"), "{e}");
    let e = assemble(
        f.store.cas(),
        &img.manifest,
        &img.config,
        &other.layers,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("names config"), "{e}");
    let mut missing = img.clone();
    missing.layers[0].stored = f.store.function().of_bytes(b"not stored");
    assert!(matches!(
        assemble_image(&f, &missing, None),
        Err(FormatError::Store(strata_store::StoreError::Missing { .. }))
    ));
    let mut odd = img.clone();
    odd.layers[0].sha256 = "sha256:../../x".into();
    let e = assemble_image(&f, &odd, None).unwrap_err().to_string();
    assert!(e.contains("sha256:../../x"), "{e}");
}

/// A layout tree holding `files` (path, bytes) as given.
fn raw_layout(f: &Fixture, files: &[(String, Vec<u8>)]) -> Digest {
    let cas = f.store.cas();
    let mut b = TreeBuilder::new();
    for (path, bytes) in files {
        b.insert(path, Node::file(cas.put_bytes(bytes).unwrap(), false))
            .unwrap();
    }
    b.store(cas).unwrap()
}

fn blob_file(b: &Blob, f: &Fixture) -> (String, Vec<u8>) {
    (
        format!("blobs/sha256/{}", b.hex()),
        f.store.cas().read(&b.stored).unwrap(),
    )
}

fn descriptor(b: &Blob, platform: Option<(&str, &str)>) -> Descriptor {
    Descriptor {
        platform: platform.map(|(os, arch)| SpecPlatform {
            os: os.into(),
            architecture: arch.into(),
            variant: None,
        }),
        ..b.descriptor()
    }
}

fn index_of(media: &str, manifests: Vec<Descriptor>) -> Vec<u8> {
    to_json(&Index {
        schema_version: 2,
        media_type: Some(media.into()),
        manifests,
    })
}

#[test]
fn read_follows_a_manifest_list_to_the_platform() {
    let f = fixture();
    let cas = f.store.cas();
    let amd = image(&f, "amd64", b"amd64 layer", true);
    let arm = image(&f, "arm64", b"arm64 layer", true);
    let list = index_of(
        media_type::DOCKER_MANIFEST_LIST,
        vec![
            descriptor(&arm.manifest, Some(("linux", "arm64"))),
            descriptor(&amd.manifest, Some(("linux", "amd64"))),
        ],
    );
    let list = Blob::from_bytes(cas, media_type::DOCKER_MANIFEST_LIST, &list).unwrap();
    let mut content = vec![
        ("oci-layout".to_string(), OCI_LAYOUT.to_vec()),
        (
            "index.json".to_string(),
            index_of(media_type::OCI_INDEX, vec![list.descriptor()]),
        ),
        blob_file(&list, &f),
    ];
    for img in [&amd, &arm] {
        content.push(blob_file(&img.manifest, &f));
        content.push(blob_file(&img.config, &f));
        content.push(blob_file(&img.layers[0], &f));
    }
    let tree = raw_layout(&f, &content);
    assert_eq!(read(cas, &tree, "linux/amd64").unwrap(), amd);
    assert_eq!(read(cas, &tree, "linux/arm64").unwrap(), arm);
    assert_eq!(read(cas, &tree, "linux/arm64/v8").unwrap(), arm);
    let e = read(cas, &tree, "linux/s390x").unwrap_err().to_string();
    assert!(
        e.contains("no image for linux/s390x") && e.contains("linux/arm64"),
        "{e}"
    );
    let e = read(cas, &tree, "amd64").unwrap_err().to_string();
    assert!(e.contains("not a platform"), "{e}");

    // A platform-less index naming two images cannot choose.
    let mut two = content.clone();
    two[1].1 = index_of(
        media_type::OCI_INDEX,
        vec![
            descriptor(&amd.manifest, None),
            descriptor(&arm.manifest, None),
        ],
    );
    let e = read(cas, &raw_layout(&f, &two), "linux/amd64")
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 images match"), "{e}");
    // One image without platform information: its config must still match.
    let mut one = content.clone();
    one[1].1 = index_of(media_type::OCI_INDEX, vec![descriptor(&arm.manifest, None)]);
    let e = read(cas, &raw_layout(&f, &one), "linux/amd64")
        .unwrap_err()
        .to_string();
    assert!(e.contains("is for linux/arm64, not linux/amd64"), "{e}");
}

#[test]
fn read_checks_every_blob() {
    let f = fixture();
    let cas = f.store.cas();
    let img = image(&f, "amd64", b"layer", false);
    let good = || {
        vec![
            ("oci-layout".to_string(), OCI_LAYOUT.to_vec()),
            (
                "index.json".to_string(),
                index_of(media_type::OCI_INDEX, vec![img.manifest.descriptor()]),
            ),
            blob_file(&img.manifest, &f),
            blob_file(&img.config, &f),
            blob_file(&img.layers[0], &f),
        ]
    };
    assert_eq!(
        read(cas, &raw_layout(&f, &good()), "linux/amd64").unwrap(),
        img
    );

    // A layer whose content was replaced, same size, same name.
    let mut tampered = good();
    tampered[4].1 = b"LAYER".to_vec();
    let e = read(cas, &raw_layout(&f, &tampered), "linux/amd64")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&img.layers[0].sha256) && e.contains("hashes to"),
        "{e}"
    );
    // ... or of another size.
    tampered[4].1 = b"layer!".to_vec();
    let e = read(cas, &raw_layout(&f, &tampered), "linux/amd64")
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds 6 bytes, its descriptor says 5"), "{e}");
    // A missing blob.
    let mut missing = good();
    missing.remove(3);
    let e = read(cas, &raw_layout(&f, &missing), "linux/amd64")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&img.config.sha256) && e.contains("not in the layout"),
        "{e}"
    );
    // Not a layout, or a broken one.
    let mut plain = good();
    plain.remove(0);
    let not_layout = raw_layout(&f, &plain);
    assert!(!is_layout(cas, &not_layout).unwrap());
    let e = read(cas, &not_layout, "linux/amd64")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no `oci-layout`"), "{e}");
    let mut garbage = good();
    garbage[1].1 = b"{\"schemaVersion\": 2, \"manifests\": [".to_vec();
    let e = read(cas, &raw_layout(&f, &garbage), "linux/amd64")
        .unwrap_err()
        .to_string();
    assert!(e.contains("index.json"), "{e}");
    // A descriptor whose digest would be a path.
    let mut escape = good();
    let mut d = img.manifest.descriptor();
    d.digest = "sha256:../../../etc/passwd".into();
    escape[1].1 = index_of(media_type::OCI_INDEX, vec![d]);
    let e = read(cas, &raw_layout(&f, &escape), "linux/amd64")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not `sha256:<64 hex digits>`"), "{e}");
    // Deeply nested indexes are refused.
    let mut nested = good();
    let inner = index_of(media_type::OCI_INDEX, vec![img.manifest.descriptor()]);
    let mut current = Blob::from_bytes(cas, media_type::OCI_INDEX, &inner).unwrap();
    nested.push(blob_file(&current, &f));
    for _ in 0..6 {
        let wrap = index_of(media_type::OCI_INDEX, vec![current.descriptor()]);
        current = Blob::from_bytes(cas, media_type::OCI_INDEX, &wrap).unwrap();
        nested.push(blob_file(&current, &f));
    }
    nested[1].1 = index_of(media_type::OCI_INDEX, vec![current.descriptor()]);
    let e = read(cas, &raw_layout(&f, &nested), "linux/amd64")
        .unwrap_err()
        .to_string();
    assert!(e.contains("nested more than"), "{e}");
}
