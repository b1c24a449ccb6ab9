//! Masking secrets in step logs, as CI systems do: every value read with
//! `!ENV` that a step receives is replaced by `***` in its stdout and stderr
//! before Strata shows them, streams them or puts them in the store.

use std::fs;
use std::io::{self, BufRead, Write};
use std::path::Path;

/// What a masked secret is replaced with.
pub const MASK: &str = "***";

/// The secrets of one step, longest first (see `Text::secrets`).
#[derive(Clone, Debug, Default)]
pub struct Masks {
    secrets: Vec<Vec<u8>>,
}

impl Masks {
    pub fn new(secrets: &[String]) -> Masks {
        let mut secrets: Vec<Vec<u8>> = secrets
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Masks { secrets }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The longest secret starting at `text[at..]`, if any.
    fn match_at(&self, text: &[u8], at: usize) -> Option<usize> {
        self.secrets
            .iter()
            .find(|s| text[at..].starts_with(s))
            .map(Vec::len)
    }

    /// `text` with every secret replaced, leftmost first.
    pub fn apply(&self, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        let mut i = 0;
        while i < text.len() {
            match self.match_at(text, i) {
                Some(len) => {
                    out.extend_from_slice(MASK.as_bytes());
                    i += len;
                }
                None => {
                    out.push(text[i]);
                    i += 1;
                }
            }
        }
        out
    }

    /// One line of a live log.
    pub fn line(&self, line: &str) -> String {
        if self.is_empty() {
            return line.to_string();
        }
        String::from_utf8_lossy(&self.apply(line.as_bytes())).into_owned()
    }

    /// Rewrites the log at `path` with every secret masked. Streams the
    /// file, so a log of any size is masked in bounded memory: a secret is at
    /// most `longest` bytes, so all but the last `longest - 1` bytes of what
    /// was read are final.
    pub fn file(&self, path: &Path) -> io::Result<()> {
        let Some(longest) = self.secrets.first().map(Vec::len) else {
            return Ok(());
        };
        let masked_path = path.with_extension("masked");
        let mut input = io::BufReader::new(fs::File::open(path)?);
        let mut output = io::BufWriter::new(fs::File::create(&masked_path)?);
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let chunk = input.fill_buf()?;
            let done = chunk.is_empty();
            pending.extend_from_slice(chunk);
            let read = chunk.len();
            input.consume(read);
            let keep = if done { 0 } else { longest - 1 };
            // Only positions whose match cannot reach past `pending` yet.
            let settled = pending.len().saturating_sub(keep);
            let mut i = 0;
            while i < settled {
                match self.match_at(&pending, i) {
                    Some(len) => {
                        output.write_all(MASK.as_bytes())?;
                        i += len;
                    }
                    None => {
                        output.write_all(&pending[i..i + 1])?;
                        i += 1;
                    }
                }
            }
            pending.drain(..i.min(pending.len()));
            if done {
                break;
            }
        }
        output
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
        fs::rename(&masked_path, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masks(s: &[&str]) -> Masks {
        Masks::new(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn every_occurrence_is_masked_longest_first() {
        let m = masks(&["hunter2", "hunter2-extra"]);
        assert_eq!(
            m.apply(b"a hunter2 b hunter2-extra chunter2"),
            b"a *** b *** c***".to_vec()
        );
    }

    #[test]
    fn a_file_is_masked_across_read_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        // BufReader reads 8 KiB at a time: secrets straddle its chunks.
        let secret = "s3cr3t-value";
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(&format!("line {i} {secret}\n"));
        }
        fs::write(&path, &text).unwrap();
        masks(&[secret]).file(&path).unwrap();
        let masked = String::from_utf8(fs::read(&path).unwrap()).unwrap();
        assert!(!masked.contains(secret));
        assert_eq!(masked, text.replace(secret, MASK));
    }

    #[test]
    fn no_secrets_leave_the_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        fs::write(&path, "x").unwrap();
        Masks::new(&[]).file(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"x");
    }
}
