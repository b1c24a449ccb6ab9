//! Where a container's output goes: appended to two files, byte for byte,
//! and handed line by line to a callback (the progress display).

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use super::DockerError;

/// Which of a container's outputs a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// A line longer than this is handed to the callback in pieces, so output
/// without newlines cannot grow memory without bound.
pub const MAX_LINE: usize = 64 << 10;

type OnLine = Box<dyn FnMut(LogStream, &str) + Send>;

/// Receives a container's stdout and stderr. The files are created if
/// missing and appended to. The callback gets each complete line without its
/// newline (lossy UTF-8, a trailing `\r` dropped); a last line without a
/// newline is passed on when the output ends.
pub struct LogSink {
    stdout: PathBuf,
    stderr: PathBuf,
    on_line: OnLine,
}

impl LogSink {
    pub fn new(
        stdout: impl Into<PathBuf>,
        stderr: impl Into<PathBuf>,
        on_line: impl FnMut(LogStream, &str) + Send + 'static,
    ) -> LogSink {
        LogSink {
            stdout: stdout.into(),
            stderr: stderr.into(),
            on_line: Box::new(on_line),
        }
    }

    /// A sink that only writes the files.
    pub fn files(stdout: impl Into<PathBuf>, stderr: impl Into<PathBuf>) -> LogSink {
        LogSink::new(stdout, stderr, |_, _| {})
    }

    pub(crate) async fn open(self) -> Result<OpenSink, DockerError> {
        Ok(OpenSink {
            out: Output::open(&self.stdout).await?,
            err: Output::open(&self.stderr).await?,
            on_line: self.on_line,
        })
    }
}

/// A sink whose files are open.
pub(crate) struct OpenSink {
    out: Output,
    err: Output,
    on_line: OnLine,
}

impl OpenSink {
    pub(crate) async fn write(
        &mut self,
        stream: LogStream,
        data: &[u8],
    ) -> Result<(), DockerError> {
        let output = match stream {
            LogStream::Stdout => &mut self.out,
            LogStream::Stderr => &mut self.err,
        };
        output
            .file
            .write_all(data)
            .await
            .map_err(DockerError::io(format!(
                "cannot write {}",
                output.path.display()
            )))?;
        output.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = output.pending[start..].iter().position(|b| *b == b'\n') {
            emit(
                &mut self.on_line,
                stream,
                &output.pending[start..start + nl],
            );
            start += nl + 1;
        }
        while output.pending.len() - start >= MAX_LINE {
            emit(
                &mut self.on_line,
                stream,
                &output.pending[start..start + MAX_LINE],
            );
            start += MAX_LINE;
        }
        output.pending.drain(..start);
        Ok(())
    }

    /// Passes on unterminated last lines and flushes the files.
    pub(crate) async fn finish(mut self) -> Result<(), DockerError> {
        for (stream, output) in [
            (LogStream::Stdout, &mut self.out),
            (LogStream::Stderr, &mut self.err),
        ] {
            if !output.pending.is_empty() {
                emit(&mut self.on_line, stream, &output.pending);
                output.pending.clear();
            }
            output.file.flush().await.map_err(DockerError::io(format!(
                "cannot write {}",
                output.path.display()
            )))?;
        }
        Ok(())
    }
}

fn emit(on_line: &mut OnLine, stream: LogStream, line: &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    on_line(stream, &String::from_utf8_lossy(line));
}

struct Output {
    path: PathBuf,
    file: tokio::fs::File,
    /// Bytes after the last newline.
    pending: Vec<u8>,
}

impl Output {
    async fn open(path: &Path) -> Result<Output, DockerError> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .map_err(DockerError::io(format!(
                "cannot open the log {}",
                path.display()
            )))?;
        Ok(Output {
            path: path.to_path_buf(),
            file,
            pending: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn lines_are_split_across_chunks_and_files_get_every_byte() {
        let d = tempfile::tempdir().unwrap();
        let (out, err) = (d.path().join("out"), d.path().join("err"));
        std::fs::write(&out, b"before\n").unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let sink = LogSink::new(&out, &err, move |stream, line| {
            s.lock().unwrap().push((stream, line.to_string()))
        });
        let mut open = sink.open().await.unwrap();
        open.write(LogStream::Stdout, b"he").await.unwrap();
        open.write(LogStream::Stderr, b"oops\r\n").await.unwrap();
        open.write(LogStream::Stdout, b"llo\nwor").await.unwrap();
        open.write(LogStream::Stdout, b"ld\n\xffend").await.unwrap();
        open.finish().await.unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            b"before\nhello\nworld\n\xffend".to_vec()
        );
        assert_eq!(std::fs::read(&err).unwrap(), b"oops\r\n".to_vec());
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (LogStream::Stderr, "oops".to_string()),
                (LogStream::Stdout, "hello".to_string()),
                (LogStream::Stdout, "world".to_string()),
                (LogStream::Stdout, "\u{fffd}end".to_string()),
            ]
        );
    }

    #[tokio::test]
    async fn output_without_newlines_is_passed_on_in_bounded_pieces() {
        let d = tempfile::tempdir().unwrap();
        let lengths = Arc::new(Mutex::new(Vec::new()));
        let l = lengths.clone();
        let sink = LogSink::new(d.path().join("o"), d.path().join("e"), move |_, line| {
            l.lock().unwrap().push(line.len())
        });
        let mut open = sink.open().await.unwrap();
        let chunk = vec![b'x'; 1000];
        for _ in 0..(2 * MAX_LINE / 1000 + 1) {
            open.write(LogStream::Stdout, &chunk).await.unwrap();
        }
        open.finish().await.unwrap();
        let lengths = lengths.lock().unwrap();
        assert!(lengths.iter().all(|n| *n <= MAX_LINE), "{lengths:?}");
        assert_eq!(
            lengths.iter().sum::<usize>(),
            1000 * (2 * MAX_LINE / 1000 + 1)
        );
    }
}
