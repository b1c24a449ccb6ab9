//! Remote execution on real components: BuildGrid (PyPI) with its
//! scheduler on PostgreSQL (Debian), `strata worker`s as its bots, and
//! Bazel 4.2.3 (Debian's bazel-bootstrap), a client that knows nothing of
//! Strata, sending its genrules there. One service serves every scenario
//! of this file (it takes a while to start); each scenario has workers and
//! a Bazel workspace of its own.
//!
//! - Bazel's genrules run on a worker (`-j 2`: two at once, never three)
//!   and their outputs are byte for byte what a local Bazel build makes; a
//!   generated script runs there as an input; the worker's CAS stays within
//!   `--max-size`.
//! - A worker killed (SIGKILL) while running an action loses nothing:
//!   BuildGrid requeues the lease once the session's keepalive passes,
//!   another worker runs it, the build completes; the killed worker's
//!   sandboxed step died with it.
//! - An action whose input root lacks blobs ends in FAILED_PRECONDITION
//!   naming every missing blob, as REAPI specifies; a failing command's
//!   exit code and output reach the client, and one past its timeout ends
//!   in DEADLINE_EXCEEDED with what it wrote.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::bazel::{Bazel, bazel_available};
use common::execution::{INSTANCE, Service, Worker};
use common::remote::buildgrid_available;

/// Seconds a silent worker keeps its session: short, so the kill scenario
/// sees its lease requeued soon.
const KEEPALIVE: u32 = 5;

const GENRULES: &str = r#"genrule(
    name = "sorted",
    srcs = ["words.txt"],
    outs = ["sorted.txt"],
    cmd = "sort $(location words.txt) > $@",
)

# Larger than one ByteStream message either way.
genrule(
    name = "big",
    outs = ["big.txt"],
    cmd = "seq 1 400000 > $@",
)

genrule(
    name = "script",
    outs = ["hello.sh"],
    cmd = "printf '#!/bin/sh\\necho hello from $$1\\n' > $@ && chmod +x $@",
    executable = True,
)

# Runs a generated input, which must have kept its executable bit on the
# way to the worker (Bazel marks every output of its own executable).
genrule(
    name = "chained",
    srcs = [":sorted", ":script"],
    outs = ["chained.txt"],
    cmd = "$(location :script) worker > $@ && cat $(location :sorted) >> $@",
)

genrule(
    name = "slow_a",
    outs = ["a.txt"],
    cmd = "sleep 2; echo a > $@",
)

genrule(
    name = "slow_b",
    outs = ["b.txt"],
    cmd = "sleep 2; echo b > $@",
)
"#;

const OUTPUTS: &[&str] = &[
    "sorted.txt",
    "big.txt",
    "hello.sh",
    "chained.txt",
    "a.txt",
    "b.txt",
];

fn remote_flags(service: &Service) -> Vec<String> {
    vec![
        format!("--remote_executor={}", service.endpoint()),
        format!("--remote_instance_name={INSTANCE}"),
        "--remote_default_exec_properties=OSFamily=linux".to_string(),
        "--remote_default_exec_properties=ISA=x86-64".to_string(),
        "--remote_timeout=120".to_string(),
    ]
}

/// Each output's bytes and executable bit.
fn outputs(bazel: &Bazel) -> BTreeMap<String, (Vec<u8>, bool)> {
    OUTPUTS
        .iter()
        .map(|rel| {
            let path = bazel.path().join("bazel-bin").join(rel);
            let mode = fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .permissions()
                .mode();
            (rel.to_string(), (bazel.output(rel), mode & 0o100 != 0))
        })
        .collect()
}

#[test]
fn bazel_builds_on_strata_workers_through_buildgrid_on_postgresql() {
    if !buildgrid_available() {
        return;
    }
    let service = Service::start(KEEPALIVE);
    missing_input_blobs_are_named_in_failed_precondition(&service);
    exit_codes_and_timeouts_reach_the_client(&service);
    if !bazel_available() {
        return;
    }
    genrules_run_on_a_worker_as_they_run_locally(&service);
    a_worker_killed_mid_action_loses_nothing(&service);
}

fn genrules_run_on_a_worker_as_they_run_locally(service: &Service) {
    let worker = Worker::start(service, 2, "1M");
    let bazel = Bazel::new();
    bazel.write("words.txt", "pear\napple\nfig\n");
    bazel.write("BUILD", GENRULES);
    let flags = remote_flags(service);
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.push("//...");
    let run = bazel.build(&args);
    assert!(
        run.code == 0,
        "remote build failed:\n{}\n--- worker\n{}\n{}",
        run.stderr,
        worker.log(),
        service.logs()
    );
    assert!(
        run.stderr.contains("6 remote"),
        "every genrule runs remotely:\n{}",
        run.stderr
    );
    let remote = outputs(&bazel);

    // Every genrule ran on the worker, and succeeded.
    let started = worker.started();
    assert_eq!(started.len(), 6, "{}", worker.log());
    let finished = worker.finished();
    assert_eq!(finished.len(), 6, "{}", worker.log());
    for (id, what) in &finished {
        assert!(what.starts_with("exit 0 "), "lease {id}: {what}");
    }
    // -j 2: two leases at once at some point, never three.
    let mut running = 0i32;
    let mut most = 0;
    for line in worker.log().lines() {
        if line.starts_with("strata worker: lease ") {
            running += if line.ends_with(": started") { 1 } else { -1 };
            most = most.max(running);
        }
    }
    assert_eq!(most, 2, "{}", worker.log());
    // 2.6 MB went through a CAS bounded to 1 MiB.
    assert!(
        worker.cache_bytes() <= 1024 * 1024,
        "the worker's CAS holds {} bytes",
        worker.cache_bytes()
    );

    // The same build on this machine, without the service.
    let clean = bazel.run("clean", &[]);
    assert!(clean.code == 0, "{}", clean.stderr);
    let local = bazel.build(&["--spawn_strategy=standalone", "//..."]);
    assert!(local.code == 0, "local build failed:\n{}", local.stderr);
    assert!(!local.stderr.contains("remote"), "{}", local.stderr);
    assert_eq!(remote, outputs(&bazel));
    assert_eq!(
        remote["chained.txt"].0,
        b"hello from worker\napple\nfig\npear\n"
    );
}

fn a_worker_killed_mid_action_loses_nothing(service: &Service) {
    let mut workers = [
        Worker::start(service, 1, "100M"),
        Worker::start(service, 1, "100M"),
    ];
    let bazel = Bazel::new();
    bazel.write(
        "BUILD",
        r#"genrule(
    name = "survivor",
    outs = ["survivor.txt"],
    cmd = "sleep 6; echo survived > $@",
)
"#,
    );
    let flags = remote_flags(service);
    let mut args = vec![
        "--host_javabase=@local_jdk//:jdk",
        "--incompatible_strict_action_env",
        "--color=no",
    ];
    args.extend(flags.iter().map(String::as_str));
    args.push("//:survivor");
    let log = bazel.scratch("build.log");
    let mut build = bazel
        .command("build", &args)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    // Whichever worker takes the lease is killed while the action runs.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (victim, lease) = loop {
        if let Some((i, id)) = workers
            .iter()
            .enumerate()
            .find_map(|(i, w)| w.started().first().map(|id| (i, id.clone())))
        {
            break (i, id);
        }
        assert!(
            Instant::now() < deadline,
            "no worker took the lease:\n{}\n{}",
            fs::read_to_string(&log).unwrap_or_default(),
            service.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    workers[victim].kill();
    let survivor = &workers[1 - victim];
    // Its sandboxed step went with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while workers[victim].steps_left() > 0 {
        assert!(
            Instant::now() < deadline,
            "the killed worker's step still runs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = build.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = build.kill();
            panic!(
                "the build did not complete:\n{}\n--- survivor\n{}\n{}",
                fs::read_to_string(&log).unwrap_or_default(),
                survivor.log(),
                service.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success(),
        "{}\n--- survivor\n{}",
        fs::read_to_string(&log).unwrap_or_default(),
        survivor.log()
    );
    assert_eq!(bazel.output("survivor.txt"), b"survived\n");
    // The requeued lease ran to its end on the other worker.
    assert_eq!(
        survivor.started(),
        vec![lease.clone()],
        "{}",
        survivor.log()
    );
    let finished = survivor.finished();
    assert_eq!(finished.len(), 1, "{}", survivor.log());
    assert_eq!(finished[0].0, lease);
    assert!(finished[0].1.starts_with("exit 0 "), "{}", finished[0].1);
}

fn missing_input_blobs_are_named_in_failed_precondition(service: &Service) {
    let worker = Worker::start(service, 1, "100M");
    let (code, mut named, mut absent) = service.execute_with_missing_inputs();
    const FAILED_PRECONDITION: i32 = 9;
    assert_eq!(code, FAILED_PRECONDITION, "{}", worker.log());
    named.sort();
    absent.sort();
    assert_eq!(named, absent, "every missing blob is named, nothing else");
    let finished = worker.finished();
    assert_eq!(finished.len(), 1, "{}", worker.log());
    assert!(
        finished[0].1.starts_with("FailedPrecondition"),
        "{}",
        finished[0].1
    );
}

fn exit_codes_and_timeouts_reach_the_client(service: &Service) {
    let worker = Worker::start(service, 1, "100M");
    // A command that fails has a result: status OK, its exit code, its
    // output; it runs with exactly the environment the Command gives.
    let (code, result) = service.execute(&["sh", "-c", "echo PATH=$PATH HOME=$HOME; exit 3"], 0);
    assert_eq!(code, 0, "{}", worker.log());
    assert_eq!(result, Some((3, "PATH=/usr/bin:/bin HOME=\n".to_string())));
    // Past its timeout it is killed: DEADLINE_EXCEEDED, with what it wrote.
    const DEADLINE_EXCEEDED: i32 = 4;
    let (code, result) = service.execute(&["sh", "-c", "echo started; exec sleep 60"], 1);
    assert_eq!(code, DEADLINE_EXCEEDED, "{}", worker.log());
    assert_eq!(result.map(|(_, out)| out), Some("started\n".to_string()));
    assert_eq!(worker.steps_left(), 0, "the timed-out step is gone");
}
