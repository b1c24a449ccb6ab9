//! Progress while building: an indicatif bar on a terminal, plain lines
//! otherwise (or with NO_COLOR).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_engine::scheduler::{Observer, Outcome};

pub struct Progress {
    bar: Option<ProgressBar>,
    total: AtomicUsize,
    done: AtomicUsize,
    running: Mutex<Vec<String>>,
    /// The last line each running container step printed.
    last_line: Mutex<std::collections::BTreeMap<String, String>>,
}

impl Progress {
    pub fn new(_json: bool) -> Progress {
        let fancy = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let bar = fancy.then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{spinner} [{pos}/{len}] {wide_msg}")
                    .expect("valid template"),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress {
            bar,
            total: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            running: Mutex::new(Vec::new()),
            last_line: Mutex::new(Default::default()),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn line(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }

    fn refresh(&self) {
        if let Some(b) = &self.bar {
            let running = self.running.lock().expect("not poisoned");
            let last = self.last_line.lock().expect("not poisoned");
            let shown: Vec<String> = running
                .iter()
                .map(|t| match last.get(t) {
                    Some(line) => format!("{t}: {line}"),
                    None => t.clone(),
                })
                .collect();
            b.set_message(shown.join("  "));
        }
    }
}

impl Observer for Progress {
    fn planned(&self, total: usize) {
        self.total.store(total, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(total as u64);
        }
    }

    fn started(&self, target: &str) {
        self.running
            .lock()
            .expect("not poisoned")
            .push(target.to_string());
        self.refresh();
    }

    fn finished(&self, target: &str, outcome: &Outcome, elapsed: Duration) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.running
            .lock()
            .expect("not poisoned")
            .retain(|t| t != target);
        self.last_line.lock().expect("not poisoned").remove(target);
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
        self.refresh();
        let total = self.total.load(Ordering::Relaxed);
        match outcome {
            Outcome::Executed { .. } => self.line(&format!(
                "[{done}/{total}] executed {target} ({:.2}s)",
                elapsed.as_secs_f64()
            )),
            Outcome::Failed { .. } => self.line(&format!(
                "[{done}/{total}] FAILED {target} ({:.2}s)",
                elapsed.as_secs_f64()
            )),
            Outcome::Cached { .. } | Outcome::Skipped => {}
        }
    }

    fn warn(&self, message: &str) {
        self.line(&format!("warning: {message}"));
    }

    fn log(&self, target: &str, line: &str) {
        // Only the live display shows logs as they come; plain output keeps
        // to one line per target (a failed step's log tail is printed).
        if self.bar.is_some() {
            let line: String = line.chars().filter(|c| !c.is_control()).take(120).collect();
            self.last_line
                .lock()
                .expect("not poisoned")
                .insert(target.to_string(), line);
            self.refresh();
        }
    }
}
