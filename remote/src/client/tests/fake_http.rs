//! A minimal HTTP/1.1 cache on a std listener: objects by path, one thread
//! per connection, every connection closed after one answer.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub(super) struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub team: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Tamper {
    FlipFirstByte,
    AppendByte,
}

pub(super) struct State {
    pub objects: HashMap<String, Vec<u8>>,
    pub seen: Vec<Seen>,
    pub tampered: HashMap<String, Tamper>,
    /// Status of a GET of an absent object (404 or 204).
    pub miss: u16,
    /// Every request answered with this status and an explanation.
    pub fail: Option<u16>,
}

#[derive(Clone)]
pub(super) struct FakeHttp(Arc<Mutex<State>>);

impl FakeHttp {
    pub(super) fn new() -> Self {
        FakeHttp(Arc::new(Mutex::new(State {
            objects: HashMap::new(),
            seen: Vec::new(),
            tampered: HashMap::new(),
            miss: 404,
            fail: None,
        })))
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    pub(super) fn start(&self) -> SocketAddr {
        self.listen(None)
    }

    /// Serves HTTPS with `tls`.
    pub(super) fn start_tls(&self, tls: Arc<rustls::ServerConfig>) -> SocketAddr {
        self.listen(Some(tls))
    }

    fn listen(&self, tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = self.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let fake = fake.clone();
                let tls = tls.clone();
                std::thread::spawn(move || {
                    // A client that gives up mid-request is no test failure.
                    let _ = match tls {
                        None => fake.serve(stream),
                        Some(config) => rustls::ServerConnection::new(config)
                            .map_err(std::io::Error::other)
                            .and_then(|c| fake.serve(rustls::StreamOwned::new(c, stream))),
                    };
                });
            }
        });
        addr
    }

    fn serve(&self, stream: impl Read + Write) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        self.state().seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            authorization: headers.get("authorization").cloned(),
            team: headers.get("x-team").cloned(),
        });
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        // A body cut short (an aborted upload) is never stored.
        reader.read_exact(&mut body)?;

        let (status, payload, length) = self.answer(&method, &path, body);
        let out = reader.get_mut();
        let reason = match status {
            200 => "OK",
            201 => "Created",
            204 => "No Content",
            403 => "Forbidden",
            404 => "Not Found",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Whatever",
        };
        let mut head = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\n");
        if status != 204 {
            head.push_str(&format!("Content-Length: {length}\r\n"));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        out.write_all(&payload)?;
        out.flush()
    }

    /// Status, body and Content-Length (a HEAD has the length, no body).
    fn answer(&self, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>, usize) {
        let mut state = self.state();
        if let Some(status) = state.fail {
            let text = b"the cache is on fire".to_vec();
            let n = text.len();
            return (status, text, n);
        }
        match method {
            "PUT" => {
                let existed = state.objects.insert(path.to_string(), body).is_some();
                (if existed { 204 } else { 201 }, Vec::new(), 0)
            }
            "HEAD" => match state.objects.get(path) {
                Some(object) => (200, Vec::new(), object.len()),
                None => (404, Vec::new(), 0),
            },
            "GET" => match state.objects.get(path) {
                Some(object) => {
                    let mut object = object.clone();
                    match state.tampered.get(path) {
                        Some(Tamper::FlipFirstByte) => object[0] ^= 0xff,
                        Some(Tamper::AppendByte) => object.push(0),
                        None => {}
                    }
                    let n = object.len();
                    (200, object, n)
                }
                None => (state.miss, Vec::new(), 0),
            },
            _ => (405, Vec::new(), 0),
        }
    }
}
