//! `strata build --trace FILE`: what a build did, over time, as a Chrome
//! trace-event file (the JSON object form that Perfetto and chrome://tracing
//! load).
//!
//! The tracer is an `Observer` wrapped around the progress display, so it
//! sees exactly what the user sees: a span per executed (or failed) action,
//! from `started` to `finished`, and a marker per cache hit. `build` adds
//! its phases.
//!
//! Tracks (`tid`): 0 holds the phases, 1 the cache hits, and actions run on
//! lanes from 2 on. A starting action takes the lowest free lane and gives
//! it back when it finishes, both under one lock with the timestamp, so two
//! actions that overlap in time never share a track and the number of lanes
//! is the build's peak concurrency. (The scheduler loop reports a finished
//! action when it collects it, a moment after its `-j` slot is free, so a
//! build may use a lane or two more than `-j`.)

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::scheduler::{Observer, Outcome};

const PID: u32 = 1;
const PHASE_TID: usize = 0;
const CACHE_TID: usize = 1;
const FIRST_LANE_TID: usize = 2;

/// Records a build's events; forwards every notification to `inner`.
pub struct Tracer {
    inner: Arc<dyn Observer>,
    epoch: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Whether each lane holds a running action.
    busy: Vec<bool>,
    /// Running actions: their lane and start (µs since the epoch).
    running: HashMap<String, (usize, u64)>,
    events: Vec<Event>,
}

enum Event {
    Phase {
        name: &'static str,
        ts: u64,
        dur: u64,
    },
    Action {
        target: String,
        lane: usize,
        ts: u64,
        dur: u64,
        status: &'static str,
        key: Option<String>,
    },
    CacheHit {
        target: String,
        ts: u64,
        key: String,
    },
}

impl Tracer {
    /// Times count from `epoch`, the start of the build.
    pub fn new(inner: Arc<dyn Observer>, epoch: Instant) -> Arc<Tracer> {
        Arc::new(Tracer {
            inner,
            epoch,
            state: Mutex::new(State::default()),
        })
    }

    fn micros(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere must not also lose the trace.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A phase of the build that began at `start` and ends now.
    pub fn phase(&self, name: &'static str, start: Instant) {
        let ts = self.micros(start);
        let end = self.micros(Instant::now());
        self.state().events.push(Event::Phase {
            name,
            ts,
            dur: end.saturating_sub(ts),
        });
    }

    /// The trace document; `rules` maps target names to their rule. Actions
    /// still running (an interrupted build) end now, as `interrupted`.
    pub fn document(&self, rules: &BTreeMap<String, String>) -> Value {
        let mut state = self.state();
        let now = self.micros(Instant::now());
        let mut open: Vec<(String, (usize, u64))> = state.running.drain().collect();
        open.sort();
        for (target, (lane, ts)) in open {
            state.events.push(Event::Action {
                target,
                lane,
                ts,
                dur: now.saturating_sub(ts),
                status: "interrupted",
                key: None,
            });
        }
        let rule = |t: &str| rules.get(t).map(String::as_str).unwrap_or("");
        let mut events = vec![
            json!({"name": "process_name", "ph": "M", "pid": PID, "tid": PHASE_TID,
                   "args": {"name": "strata build"}}),
        ];
        let mut tracks = vec![
            (PHASE_TID, "phases".to_string()),
            (CACHE_TID, "cache hits".into()),
        ];
        tracks
            .extend((0..state.busy.len()).map(|l| (FIRST_LANE_TID + l, format!("lane {}", l + 1))));
        for (tid, name) in tracks {
            events.push(
                json!({"name": "thread_name", "ph": "M", "pid": PID, "tid": tid,
                               "args": {"name": name}}),
            );
            events.push(
                json!({"name": "thread_sort_index", "ph": "M", "pid": PID, "tid": tid,
                               "args": {"sort_index": tid}}),
            );
        }
        // In time order, so the file reads like the build went.
        state.events.sort_by_key(|e| match e {
            Event::Phase { ts, .. } | Event::Action { ts, .. } | Event::CacheHit { ts, .. } => *ts,
        });
        for e in &state.events {
            events.push(match e {
                Event::Phase { name, ts, dur } => json!({
                    "name": name, "cat": "phase", "ph": "X", "ts": ts, "dur": dur,
                    "pid": PID, "tid": PHASE_TID,
                }),
                Event::Action {
                    target,
                    lane,
                    ts,
                    dur,
                    status,
                    key,
                } => json!({
                    "name": target, "cat": "action", "ph": "X", "ts": ts, "dur": dur,
                    "pid": PID, "tid": FIRST_LANE_TID + lane,
                    "args": {"key": key, "status": status, "rule": rule(target)},
                }),
                Event::CacheHit { target, ts, key } => json!({
                    "name": target, "cat": "cache-hit", "ph": "i", "s": "t", "ts": ts,
                    "pid": PID, "tid": CACHE_TID,
                    "args": {"key": key, "status": "cached", "rule": rule(target)},
                }),
            });
        }
        json!({"traceEvents": events, "displayTimeUnit": "ms"})
    }

    /// Writes the trace to `path` atomically: a reader never sees half a file.
    pub fn write(&self, path: &Path, rules: &BTreeMap<String, String>) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let doc = self.document(rules);
        let dir = parent(path);
        let mut tmp = tempfile::Builder::new()
            .prefix(".strata-trace-")
            .permissions(std::fs::Permissions::from_mode(0o644))
            .tempfile_in(dir)?;
        serde_json::to_writer(&mut tmp, &doc)?;
        tmp.write_all(b"\n")?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Refuses a trace path that cannot be written, before the build starts
/// rather than after it has run.
pub fn check_path(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!("--trace {}: is a folder", path.display()));
    }
    let dir = parent(path);
    if !dir.is_dir() {
        return Err(format!(
            "--trace {}: no folder {}",
            path.display(),
            dir.display()
        ));
    }
    Ok(())
}

impl Observer for Tracer {
    fn planned(&self, total: usize) {
        self.inner.planned(total);
    }

    fn started(&self, target: &str) {
        {
            let mut state = self.state();
            let lane = match state.busy.iter().position(|b| !b) {
                Some(l) => l,
                None => {
                    state.busy.push(false);
                    state.busy.len() - 1
                }
            };
            state.busy[lane] = true;
            let ts = self.micros(Instant::now());
            state.running.insert(target.to_string(), (lane, ts));
        }
        self.inner.started(target);
    }

    fn finished(&self, target: &str, outcome: &Outcome, elapsed: Duration) {
        {
            let mut state = self.state();
            let now = self.micros(Instant::now());
            let key = outcome.key().map(|k| k.hex());
            match outcome {
                Outcome::Executed { .. } | Outcome::Failed { .. } => {
                    if let Some((lane, ts)) = state.running.remove(target) {
                        state.busy[lane] = false;
                        let status = if outcome.output().is_some() {
                            "executed"
                        } else {
                            "failed"
                        };
                        state.events.push(Event::Action {
                            target: target.to_string(),
                            lane,
                            ts,
                            dur: now.saturating_sub(ts),
                            status,
                            key,
                        });
                    }
                }
                Outcome::Cached { key, .. } => state.events.push(Event::CacheHit {
                    target: target.to_string(),
                    ts: now,
                    key: key.hex(),
                }),
                Outcome::Skipped => {}
            }
        }
        self.inner.finished(target, outcome, elapsed);
    }

    fn warn(&self, message: &str) {
        self.inner.warn(message);
    }

    fn log(&self, target: &str, line: &str) {
        self.inner.log(target, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::DigestFunction;

    struct Quiet;
    impl Observer for Quiet {}

    fn executed() -> Outcome {
        let d = DigestFunction::Blake3.of_bytes(b"x");
        Outcome::Executed { key: d, output: d }
    }

    fn lanes(doc: &Value) -> BTreeMap<String, u64> {
        doc["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["cat"] == "action")
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["tid"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_freed_lane_is_reused_and_overlapping_actions_get_their_own() {
        let t = Tracer::new(Arc::new(Quiet), Instant::now());
        t.started("a");
        t.started("b");
        t.finished("a", &executed(), Duration::ZERO);
        t.started("c");
        t.started("d");
        for n in ["b", "c", "d"] {
            t.finished(n, &executed(), Duration::ZERO);
        }
        let l = lanes(&t.document(&BTreeMap::new()));
        assert_eq!(l["a"], l["c"]);
        assert_ne!(l["b"], l["c"]);
        assert_ne!(l["d"], l["b"]);
        assert_ne!(l["d"], l["c"]);
        assert_eq!(l.values().max(), Some(&(FIRST_LANE_TID as u64 + 2)));
    }
}
