//! Writes the seeds of the `store_tree` fuzz target into the folder given
//! as the only argument: stored directory records (with and without
//! metadata, devices, symlinks), a hostile record, an `ActionResult`, and
//! the empty record.

use prost::Message;
use strata_store::DigestFunction;
use strata_store::reapi::{self, ActionResult, Directory, OutputDirectory};
use strata_store::tree::{DeviceKind, Meta, Node, TreeBuilder};

fn main() {
    let out = std::path::Path::new(&std::env::args().nth(1).unwrap()).to_path_buf();
    let f = DigestFunction::Blake3;
    let blob = f.of_bytes(b"hello\n");
    let meta = |mode, uid, gid| Some(Meta { mode, uid, gid });
    let mut t = TreeBuilder::new();
    t.set_meta(meta(0o755, 0, 0));
    t.insert(
        "bin/tool",
        Node::File {
            digest: blob,
            executable: true,
            meta: meta(0o4755, 0, 0),
        },
    )
    .unwrap();
    t.insert("etc/app.conf", Node::file(blob, false)).unwrap();
    t.insert(
        "etc/link",
        Node::Symlink {
            target: "../bin/tool".into(),
            meta: meta(0o777, 0, 0),
        },
    )
    .unwrap();
    t.insert(
        "dev/console",
        Node::Device {
            kind: DeviceKind::Char,
            major: 5,
            minor: 1,
            meta: meta(0o600, 0, 5),
        },
    )
    .unwrap();
    t.insert(
        "dev/fifo",
        Node::Device {
            kind: DeviceKind::Fifo,
            major: 0,
            minor: 0,
            meta: None,
        },
    )
    .unwrap();
    t.insert(
        "abs",
        Node::Symlink {
            target: "/etc/passwd".into(),
            meta: None,
        },
    )
    .unwrap();
    let enc = t.encode(f);
    // Root record, and the `etc` and `dev` records.
    for (i, (_, bytes)) in enc.directories.iter().enumerate().take(3) {
        std::fs::write(out.join(format!("directory-{i}.pb")), bytes).unwrap();
    }
    // A plain tree (no metadata), like a run step's output.
    let mut plain = TreeBuilder::new();
    plain.insert("a.txt", Node::file(blob, false)).unwrap();
    plain.insert("sub/b", Node::file(blob, true)).unwrap();
    let penc = plain.encode(f);
    std::fs::write(out.join("plain-root.pb"), &penc.directories[0].1).unwrap();
    // A hostile record: unsorted, `..`, a slash, a bad digest, bad properties.
    let hostile = Directory {
        files: vec![
            reapi::FileNode {
                name: "z".into(),
                digest: Some(blob.to_proto()),
                is_executable: false,
                node_properties: None,
            },
            reapi::FileNode {
                name: "a/b".into(),
                digest: Some(reapi::Digest {
                    hash: "xyz".into(),
                    size_bytes: -1,
                }),
                is_executable: true,
                node_properties: Some(reapi::NodeProperties {
                    properties: vec![reapi::NodeProperty {
                        name: "uid".into(),
                        value: "-1".into(),
                    }],
                    mtime: None,
                    unix_mode: Some(reapi::UInt32Value { value: 0o17777 }),
                }),
            },
        ],
        directories: vec![reapi::DirectoryNode {
            name: "..".into(),
            digest: Some(blob.to_proto()),
        }],
        symlinks: vec![reapi::SymlinkNode {
            name: ".".into(),
            target: "../../..".into(),
            node_properties: None,
        }],
        node_properties: None,
    };
    std::fs::write(out.join("hostile.pb"), hostile.encode_to_vec()).unwrap();
    let ar = ActionResult {
        output_directories: vec![OutputDirectory {
            path: "out".into(),
            tree_digest: None,
            is_topologically_sorted: false,
            root_directory_digest: Some(penc.root.to_proto()),
        }],
        exit_code: 0,
        stdout_digest: Some(blob.to_proto()),
        stderr_digest: Some(f.of_bytes(b"").to_proto()),
        execution_metadata: None,
    };
    std::fs::write(out.join("action-result.pb"), ar.encode_to_vec()).unwrap();
    std::fs::write(out.join("empty.pb"), b"").unwrap();
}
