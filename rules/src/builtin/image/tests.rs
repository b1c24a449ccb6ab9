use std::io::Read;

use serde_json::json;
use strata_formats::oci::Image;
use strata_store::tree::{Meta, Node, TreeBuilder};
use strata_store::{Cas, Digest};

use super::super::Builtin;
use super::super::testkit::{Fixture, fixture};
use super::*;

fn parse(params: serde_json::Value) -> Result<Builtin, ParamError> {
    let serde_json::Value::Object(fields) = params else {
        panic!("params are an object")
    };
    Builtin::parse("image", fields)
}

/// A rootfs-like input under `deps/rootfs/`.
fn input_root(cas: &Cas) -> Digest {
    let mut b = TreeBuilder::new();
    let file = |data: &str, mode: u32, uid: u32| Node::File {
        digest: cas.put_bytes(data.as_bytes()).unwrap(),
        executable: mode & 0o111 != 0,
        meta: Some(Meta {
            mode,
            uid,
            gid: uid,
        }),
    };
    b.insert("deps/rootfs/etc/motd", file("hello\n", 0o640, 0))
        .unwrap();
    b.insert("deps/rootfs/bin/tool", file("#!/bin/sh\n", 0o4755, 0))
        .unwrap();
    b.insert("deps/rootfs/home/app/notes", file("n", 0o600, 1000))
        .unwrap();
    b.insert(
        "deps/rootfs/bin/sh",
        Node::Symlink {
            target: "/bin/tool".into(),
            meta: None,
        },
    )
    .unwrap();
    b.store(cas).unwrap()
}

fn run_with(f: &Fixture, params: serde_json::Value, root: Digest, epoch: u64) -> Digest {
    let Builtin::Image(p) = parse(params).unwrap() else {
        unreachable!()
    };
    let ctx = Ctx {
        cas: f.store.cas(),
        input_root: root,
        source_date_epoch: epoch,
        dep_keys: Default::default(),
    };
    run(&p, &ctx).unwrap_or_else(|e| panic!("image failed: {e}"))
}

fn config_of(cas: &Cas, img: &Image) -> serde_json::Value {
    serde_json::from_slice(&cas.read(&img.config.stored).unwrap()).unwrap()
}

/// `path mode uid:gid mtime` of each layer entry, in archive order.
fn layer_entries(cas: &Cas, img: &Image) -> Vec<String> {
    let bytes = cas.read(&img.layers[0].stored).unwrap();
    let mut archive = tar::Archive::new(bytes.as_slice());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut data = String::new();
            e.read_to_string(&mut data).unwrap();
            format!(
                "{} {:o} {}:{} {} {data:?}",
                String::from_utf8_lossy(&e.path_bytes()),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap()
            )
        })
        .collect()
}

#[test]
fn an_image_holds_the_tree_as_one_layer_and_the_config() {
    let f = fixture();
    let cas = f.store.cas();
    let out = run_with(
        &f,
        json!({
            "from": "rootfs",
            "tag": "example.com/app:1.0",
            "config": {
                "env": {"PATH": "/bin", "A": "1"},
                "entrypoint": ["/bin/tool"],
                "cmd": ["--serve"],
                "workdir": "/home/app",
                "user": "1000:1000",
                "labels": {"org.example": "yes"},
            },
        }),
        input_root(cas),
        1_700_000_000,
    );
    let img = read(cas, &out, "linux/amd64").unwrap();
    assert_eq!(img.layers.len(), 1);
    assert_eq!(img.layers[0].media_type, media_type::OCI_LAYER);
    assert_eq!(img.config.media_type, media_type::OCI_CONFIG);
    assert_eq!(
        config_of(cas, &img),
        json!({
            "created": "2023-11-14T22:13:20Z",
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "User": "1000:1000",
                "Env": ["A=1", "PATH=/bin"],
                "Entrypoint": ["/bin/tool"],
                "Cmd": ["--serve"],
                "WorkingDir": "/home/app",
                "Labels": {"org.example": "yes"},
            },
            "rootfs": {"type": "layers", "diff_ids": [img.layers[0].sha256]},
            "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "strata image"}],
        })
    );
    assert_eq!(
        layer_entries(cas, &img),
        [
            "bin/ 755 0:0 1700000000 \"\"",
            "bin/sh 777 0:0 1700000000 \"\"",
            "bin/tool 4755 0:0 1700000000 \"#!/bin/sh\\n\"",
            "etc/ 755 0:0 1700000000 \"\"",
            "etc/motd 640 0:0 1700000000 \"hello\\n\"",
            "home/ 755 0:0 1700000000 \"\"",
            "home/app/ 755 0:0 1700000000 \"\"",
            "home/app/notes 600 1000:1000 1700000000 \"n\"",
        ]
    );
}

#[test]
fn the_output_is_a_function_of_tree_fields_and_epoch() {
    let f = fixture();
    let cas = f.store.cas();
    let root = input_root(cas);
    let params = json!({"from": "rootfs", "tag": "app:1"});
    let a = run_with(&f, params.clone(), root, 1);
    assert_eq!(run_with(&f, params, root, 1), a);
    let id = |out: &Digest| read(cas, out, "linux/amd64").unwrap().config.sha256;
    // The epoch enters the layer and the config; the tag neither.
    let later = run_with(&f, json!({"from": "rootfs", "tag": "app:1"}), root, 2);
    assert_ne!(id(&later), id(&a));
    let retagged = run_with(&f, json!({"from": "rootfs", "tag": "app:2"}), root, 1);
    assert_ne!(retagged, a);
    assert_eq!(id(&retagged), id(&a));
    let arm = run_with(
        &f,
        json!({"from": "rootfs", "platform": "linux/arm64/v8"}),
        root,
        1,
    );
    let img = read(cas, &arm, "linux/arm64").unwrap();
    assert_eq!(config_of(cas, &img)["variant"], "v8");
    assert!(read(cas, &arm, "linux/amd64").is_err());
}

#[test]
fn an_image_from_an_image_flattens_it() {
    let f = fixture();
    let cas = f.store.cas();
    let params = json!({"from": "rootfs", "config": {"cmd": ["/bin/sh"]}});
    let first = run_with(&f, params.clone(), input_root(cas), 7);
    let mut b = TreeBuilder::new();
    b.insert("deps/rootfs", Node::Stored(first)).unwrap();
    let again = run_with(&f, params, b.store(cas).unwrap(), 7);
    // The same tree, fields and epoch: the same image.
    assert_eq!(again, first);
}

#[test]
fn names_a_layer_cannot_carry_are_refused() {
    let f = fixture();
    let cas = f.store.cas();
    let mut b = TreeBuilder::new();
    b.insert(
        "work/etc/.wh.passwd",
        Node::file(cas.put_bytes(b"").unwrap(), false),
    )
    .unwrap();
    let Builtin::Image(p) = parse(json!({"from": "srcs"})).unwrap() else {
        unreachable!()
    };
    let ctx = Ctx {
        cas,
        input_root: b.store(cas).unwrap(),
        source_date_epoch: 0,
        dep_keys: Default::default(),
    };
    let e = run(&p, &ctx).unwrap_err().to_string();
    assert!(e.contains("`etc/.wh.passwd`") && e.contains("srcs"), "{e}");
}

#[test]
fn bad_fields_are_named() {
    let field = |v: serde_json::Value| {
        let e = parse(v).unwrap_err();
        (e.field().unwrap_or_default().to_string(), e.message)
    };
    let (f, m) = field(json!({"from": "rootfs", "tag": "App"}));
    assert_eq!(f, "tag");
    assert!(m.contains("`App`"), "{m}");
    let (f, m) = field(json!({"from": "rootfs", "config": {"entrypont": ["/x"]}}));
    assert_eq!(f, "config");
    assert!(m.contains("entrypont"), "{m}");
    let (f, m) = field(json!({"from": "rootfs", "config": {"workdir": "srv"}}));
    assert_eq!(f, "config");
    assert!(
        m.contains("config.workdir") && m.contains("absolute"),
        "{m}"
    );
    let (f, m) = field(json!({"from": "rootfs", "config": {"env": {"A=B": "x"}}}));
    assert_eq!(f, "config");
    assert!(m.contains("config.env"), "{m}");
    let (f, _) = field(json!({"from": "rootfs", "config": {"cmd": "echo hi"}}));
    assert_eq!(f, "config");
    let (f, m) = field(json!({"from": "rootfs", "platform": "amd64"}));
    assert_eq!(f, "platform");
    assert!(m.contains("linux/amd64"), "{m}");
    let (f, _) = field(json!({"from": "rootfs", "compression": "gzip"}));
    assert_eq!(f, "compression");
    let (f, _) = field(json!({"tag": "app:1"}));
    assert_eq!(f, "");
    // Defaults fill the canonical form, so spelling them out keys the same.
    assert_eq!(
        parse(json!({"from": "rootfs"})).unwrap().canonical(),
        parse(json!({"from": "rootfs", "platform": "linux/amd64", "config": {}}))
            .unwrap()
            .canonical()
    );
}
