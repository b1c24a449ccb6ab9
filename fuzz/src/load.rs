//! `load_build_yaml`: the input is a BUILD.yaml. It is loaded the way
//! `strata build` loads it (`load::load`, then `Graph::build`), and every
//! error is rendered the way the CLI prints it (miette's graphical report),
//! so a diagnostic whose span points outside its text is caught as well.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use miette::{GraphicalReportHandler, GraphicalTheme};
use strata_engine::graph::Graph;
use strata_load as load;
use strata_load::{ConfigError, LoadOptions};

/// Files beside the BUILD.yaml, so `include:` and `!include` of existing
/// files, and of the BUILD.yaml itself, are reachable.
const FILES: &[(&str, &str)] = &[
    (
        "examples/hello/BUILD.yaml",
        include_str!("../../examples/hello/BUILD.yaml"),
    ),
    (
        "common.yaml",
        "targets:\n  shared:\n    rule: run\n    cmd: \"echo ${v} > $OUT/x\"\n    outs: [x]\n",
    ),
    ("vars.yaml", "v: \"1\"\n"),
    ("files/motd", "hello\n"),
    ("vendor/pkg.tar.gz", "not really a tarball\n"),
];

/// The workspace folder, made once per process.
fn workspace() -> &'static Path {
    static WS: OnceLock<PathBuf> = OnceLock::new();
    WS.get_or_init(|| {
        let ws = crate::scratch().join("ws");
        for (name, text) in FILES {
            let path = ws.join(name);
            fs::create_dir_all(path.parent().expect("has a parent")).expect("create folder");
            fs::write(&path, text).expect("write workspace file");
        }
        ws
    })
}

/// Loads `data` as `<workspace>/BUILD.yaml`; never panics.
pub fn run(data: &[u8]) {
    let build_file = workspace().join("BUILD.yaml");
    fs::write(&build_file, data).expect("write BUILD.yaml");
    let options = LoadOptions {
        var_overrides: vec![("version".into(), "9.9".into())],
        ..LoadOptions::default()
    };
    match load::load(&build_file, &options) {
        Ok(ws) => match Graph::build(&ws) {
            Ok(graph) => {
                let all: Vec<_> = ws
                    .targets
                    .iter()
                    .filter_map(|t| graph.node(&t.name))
                    .collect();
                let _ = graph.closure(&all);
            }
            Err(errors) => render(errors),
        },
        Err(errors) => render(errors),
    }
}

fn render(errors: Vec<ConfigError>) {
    let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor());
    for e in errors {
        let _ = e.place();
        let mut out = String::new();
        let _ = handler.render_report(&mut out, &e);
    }
}
