//! examples/image, end to end: every artifact checked with the standard
//! tool, and the whole pipeline reproducible across workspaces.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Run, Ws, sh};

fn copy_example(ws: &Ws) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/image");
    let out = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(ws.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let _ = std::fs::remove_dir_all(ws.path().join("out"));
}

fn outputs(r: &Run) -> serde_json::Value {
    let mut doc = r.json()["targets"].clone();
    for v in doc.as_object_mut().unwrap().values_mut() {
        v.as_object_mut().unwrap().remove("status");
    }
    doc
}

#[test]
fn the_image_pipeline_builds_every_artifact_and_each_checks_out() {
    let ws = Ws::new();
    copy_example(&ws);
    let r = ws.build_ok(&[]);
    assert_eq!(r.executed().len(), 8, "{}", r.stdout);
    let dir = ws.path();

    let info = sh(dir, "dpkg-deb --info out/package/greeter_1.0.0_amd64.deb");
    assert!(
        info.contains("Package: greeter") && info.contains("Version: 1.0.0"),
        "{info}"
    );
    let contents = sh(
        dir,
        "dpkg-deb --contents out/package/greeter_1.0.0_amd64.deb",
    );
    assert!(
        contents.contains("root/root") && contents.contains("./usr/bin/greeter"),
        "{contents}"
    );
    assert!(
        contents.contains("./etc/systemd/system/multi-user.target.wants/greeter.service ->"),
        "{contents}"
    );

    let ramdisk = sh(
        dir,
        "zcat out/ramdisk/greeter.cpio.gz | cpio -itv 2>/dev/null",
    );
    assert!(
        ramdisk
            .lines()
            .any(|l| l.starts_with("crw-------") && l.ends_with("dev/console")),
        "{ramdisk}"
    );
    assert!(
        ramdisk
            .lines()
            .any(|l| l.ends_with("usr/local/bin/hello -> /usr/bin/greeter")),
        "{ramdisk}"
    );

    let run = "out/installer/greeter-installer.run";
    sh(dir, &format!("{run} --check"));
    assert!(sh(dir, &format!("{run} --list")).contains("greeter_1.0.0_amd64.deb"));
    let installed = sh(dir, &format!("{run} --quiet -- \"$PWD/newroot\""));
    assert!(installed.contains("installed into"), "{installed}");
    assert_eq!(
        ws.read("newroot/var/lib/greeter/installed"),
        "greeter configured\n"
    );
    assert_eq!(
        sh(dir, "newroot/usr/bin/greeter newroot/etc/greeter.conf"),
        "Hello from the Strata example appliance\n"
    );

    sh(
        dir,
        "mkdir -p sums && cp -r out/package out/ramdisk out/installer sums/ && cp out/sums/SHA256SUMS sums/ && cd sums && sha256sum -c SHA256SUMS",
    );
    let manifest = ws.read("out/sums/build-manifest.txt");
    let key = r.json()["targets"]["package"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(manifest.contains(&key), "{manifest}");
}

#[test]
fn the_image_pipeline_is_reproducible_and_incremental() {
    let a = Ws::new();
    copy_example(&a);
    let first = a.build_ok(&[]);
    let b = Ws::new();
    copy_example(&b);
    let mut cmd = b.cmd(&["build", "--json", "-j1"]);
    cmd.env("TZ", "Pacific/Auckland")
        .env("LANG", "de_DE.UTF-8")
        .env("LC_ALL", "de_DE.UTF-8");
    use std::os::unix::process::CommandExt;
    // SAFETY: umask(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    let second: Run = cmd.output().unwrap().into();
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(outputs(&first), outputs(&second));
    // A config change rebuilds from rootfs on; the compiled tool stays cached.
    a.write("files/greeter.conf", "Hi again\n");
    let r = a.build_ok(&[]);
    assert_eq!(r.with_status("cached"), ["greeter", "source"]);
}
