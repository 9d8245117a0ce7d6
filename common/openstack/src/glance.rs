//! The Glance Images v2 API over HTTP (ureq), for glance-dump and
//! glance-load: JSON calls, streamed downloads and uploads, the version
//! check. Errors carry the HTTP status, Glance's message and the
//! `x-openstack-request-id`, never a token.

use serde_json::Value;
use std::io::Read;
use std::time::Duration;
use system::kind::{Classified, ErrorKind};

/// The most bytes of a JSON response read (an image list page of 1000
/// images is a few MiB).
const MAX_JSON: u64 = 64 << 20;

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server answered with an unexpected status.
    #[error("{method} {what}: HTTP {status}{}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default(), request_id.as_deref().map(|r| format!(" (request {r})")).unwrap_or_default())]
    Status {
        /// GET, ...
        method: &'static str,
        /// The path asked for (no query secrets: Glance takes none).
        what: String,
        /// The status code.
        status: u16,
        /// Glance's message, from its error body.
        message: Option<String>,
        /// `x-openstack-request-id`.
        request_id: Option<String>,
    },
    /// No answer (connection refused, timeout, TLS).
    #[error("{what}: {why}")]
    Transport {
        /// The path asked for.
        what: String,
        /// What went wrong.
        why: String,
    },
    /// The server stopped answering for `--timeout` seconds: no
    /// connection, no response, or a body (either way) that stalled.
    #[error("{what}: timed out: {why} for {secs} s (--timeout)")]
    Timeout {
        /// The path asked for.
        what: String,
        /// What did not happen (from the phase ureq gave up in).
        why: &'static str,
        /// The timeout.
        secs: u64,
    },
    /// An answer that is not what the API documents.
    #[error("{what}: {why}")]
    Protocol {
        /// The path asked for.
        what: String,
        /// What is wrong.
        why: String,
    },
    /// Keeping what arrived failed here (a full or read-only disk): not
    /// the server's doing, and no retry helps.
    #[error("{what}: {source}")]
    Local {
        /// The path asked for.
        what: String,
        /// The local error.
        source: std::io::Error,
    },
}

impl HttpError {
    /// The record's `error.kind`: 401/403 are auth errors, 404 not found,
    /// 409 already exists (the replicator's "already present"), 415 a
    /// format Glance refused; any other status (400, 5xx) and an answer
    /// that is not the API's are server errors.
    pub fn kind(&self) -> ErrorKind {
        match self {
            HttpError::Status {
                status: 401 | 403, ..
            } => ErrorKind::PermissionDenied,
            HttpError::Status { status: 404, .. } => ErrorKind::NotFound,
            HttpError::Status { status: 409, .. } => ErrorKind::AlreadyExists,
            HttpError::Status { status: 415, .. } => ErrorKind::FormatMismatch,
            HttpError::Status { .. } | HttpError::Protocol { .. } => ErrorKind::ServerError,
            HttpError::Transport { .. } => ErrorKind::Io,
            HttpError::Timeout { .. } => ErrorKind::Timeout,
            HttpError::Local { source, .. } => ErrorKind::from_io(source),
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether trying again might work: no answer, or a 5xx (a gateway,
    /// an overloaded or locked database). The caller still decides whether
    /// a retry is safe: a 500 on upload is usually a spoiled id.
    pub fn transient(&self) -> bool {
        matches!(
            self,
            HttpError::Transport { .. }
                | HttpError::Timeout { .. }
                | HttpError::Status {
                    status: 500..=599,
                    ..
                }
        )
    }
}

pub use system::files::{UnsafeName, safe_file_name};

/// The few HTML entities webob's error pages use, decoded (`&amp;` last,
/// so `&amp;lt;` stays `&lt;`).
fn unescape(s: &str) -> String {
    s.replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The record layer builds an error facet from these: the kind, the
/// message and, when the server answered, `http_status`, Glance's
/// `server_message` and `request_id`.
impl Classified for HttpError {
    fn kind(&self) -> ErrorKind {
        HttpError::kind(self)
    }

    fn details(&self) -> Vec<(&'static str, serde_json::Value)> {
        let mut d = Vec::new();
        if let HttpError::Status {
            status,
            message,
            request_id,
            ..
        } = self
        {
            d.push(("http_status", (*status).into()));
            if let Some(m) = message {
                d.push(("server_message", m.as_str().into()));
            }
            if let Some(r) = request_id {
                d.push(("request_id", r.as_str().into()));
            }
        }
        d
    }
}

/// A body that stops at the next read once a signal is pending, so an
/// interrupted upload ends short (and Glance refuses it by its size).
struct Checked<R> {
    inner: R,
    /// Bytes handed to the connection so far.
    read: u64,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        system::signal::check()?;
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// One Glance endpoint.
pub struct Glance {
    agent: ureq::Agent,
    /// The endpoint without a trailing `/` (may carry a path prefix).
    base: String,
    /// Sent with every request (`X-Auth-Token`, `--header`s).
    headers: Vec<(String, String)>,
    /// `--timeout`, for the errors that name it.
    timeout: Duration,
}

impl std::fmt::Debug for Glance {
    // Headers hold tokens: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Glance")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Glance {
    /// An endpoint at `url` sending `headers`.
    pub fn new(
        url: &str,
        headers: Vec<(String, String)>,
        timeout: Duration,
        roots: Option<ureq::tls::RootCerts>,
    ) -> Glance {
        let agent = crate::http::agent(timeout, roots);
        Glance {
            agent,
            base: url.trim_end_matches('/').to_owned(),
            headers,
            timeout,
        }
    }

    /// The error for a failed exchange on `what`: [`HttpError::Timeout`]
    /// when ureq gave up waiting, else a transport error.
    fn failed(&self, what: &str, e: ureq::Error) -> HttpError {
        use ureq::Timeout as T;
        let what = self.what(what);
        let why = match e {
            ureq::Error::Timeout(T::Resolve | T::Connect) => "no connection",
            ureq::Error::Timeout(T::RecvResponse) => "no response",
            ureq::Error::Timeout(T::PerRead | T::RecvBody) => "nothing arrived",
            ureq::Error::Timeout(T::SendRequest | T::SendBody | T::PerWrite) => {
                "the server took nothing"
            }
            ureq::Error::Timeout(_) => "no progress",
            e => {
                return HttpError::Transport {
                    what,
                    why: e.to_string(),
                };
            }
        };
        HttpError::Timeout {
            what,
            why,
            secs: self.timeout.as_secs(),
        }
    }

    /// [`Glance::failed`] for an error from reading a body (ureq's own
    /// errors arrive wrapped in `io::Error`).
    fn failed_io(&self, what: &str, e: std::io::Error) -> HttpError {
        let wrapped = e.get_ref().is_some_and(|x| x.is::<ureq::Error>());
        if wrapped || e.kind() == std::io::ErrorKind::TimedOut {
            return self.failed(what, ureq::Error::from(e));
        }
        HttpError::Transport {
            what: self.what(what),
            why: e.to_string(),
        }
    }

    /// What a message names for a request of `path`: the path, or the
    /// whole URL when that is what was asked for (imginfo-parse --image-url asks
    /// for ""), never an empty name (`GET : HTTP 404`).
    fn what(&self, path: &str) -> String {
        if path.is_empty() {
            self.base.clone()
        } else {
            path.to_owned()
        }
    }

    /// The endpoint as given (without a trailing `/`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `path` (starting with `/`) or a `next` link resolved against the
    /// endpoint (with its path prefix).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(
        &self,
        path: &str,
        extra: &[(&str, String)],
    ) -> Result<ureq::http::Response<ureq::Body>, HttpError> {
        let mut req = self.with_headers(self.agent.get(&self.url(path)));
        for (k, v) in extra {
            req = req.header(*k, v.as_str());
        }
        req.call().map_err(|e| self.failed(path, e))
    }

    /// The error for a response with an unexpected status.
    fn status_error(
        &self,
        method: &'static str,
        path: &str,
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> HttpError {
        let status = resp.status().as_u16();
        let request_id = resp
            .headers()
            .get("x-openstack-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        // Glance's errors are HTML or JSON; keep the first line that says
        // something.
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| {
                v.pointer("/message")
                    .or_else(|| v.pointer("/error/message"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .or_else(|| {
                body.lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with('<'))
                    // webob's pages end their text with line breaks and
                    // escape quotes as HTML.
                    .map(|l| unescape(&l.replace("<br />", " ")).trim().to_owned())
            });
        HttpError::Status {
            method,
            what: self.what(path),
            status,
            message,
            request_id,
        }
    }

    fn with_headers<B>(&self, mut req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req
    }

    fn json_of(
        &self,
        path: &str,
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> Result<Value, HttpError> {
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_JSON)
            .read_to_string()
            .map_err(|e| self.failed(path, e))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| HttpError::Protocol {
            what: self.what(path),
            why: format!("not JSON: {e}"),
        })
    }

    /// GET `path` as JSON; `None` on 404.
    pub fn get_opt_json(&self, path: &str) -> Result<Option<Value>, HttpError> {
        let resp = self.get(path, &[])?;
        match resp.status().as_u16() {
            200 => self.json_of(path, resp).map(Some),
            404 => Ok(None),
            _ => Err(self.status_error("GET", path, resp)),
        }
    }

    /// Send `body` as JSON with `method` (POST, PATCH with `content_type`),
    /// expecting one of `ok`.
    pub fn send_json(
        &self,
        method: &'static str,
        path: &str,
        content_type: &str,
        body: &Value,
        ok: &[u16],
    ) -> Result<Value, HttpError> {
        let url = self.url(path);
        let text = body.to_string();
        let req = match method {
            "POST" => self.with_headers(self.agent.post(&url)),
            "PATCH" => self.with_headers(self.agent.patch(&url)),
            _ => self.with_headers(self.agent.put(&url)),
        };
        let resp = req
            .header("Content-Type", content_type)
            .send(text.as_bytes())
            .map_err(|e| self.failed(path, e))?;
        if !ok.contains(&resp.status().as_u16()) {
            return Err(self.status_error(method, path, resp));
        }
        self.json_of(path, resp)
    }

    /// PUT `size` bytes of `body` as image data to `path`, always with
    /// the size (`Content-Length`, `x-openstack-image-size`): a chunked
    /// upload cut short becomes an active image with truncated data.
    pub fn upload(&self, path: &str, body: &mut dyn Read, size: u64) -> Result<(), HttpError> {
        let mut body = Checked {
            inner: body.take(size),
            read: 0,
        };
        let resp = self
            .with_headers(self.agent.put(&self.url(path)))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", size.to_string())
            .header("x-openstack-image-size", size.to_string())
            .send(ureq::SendBody::from_reader(&mut body))
            .map_err(|e| match self.failed(path, e) {
                // Say how far it got (a server killed mid-upload).
                HttpError::Transport { what, why } => HttpError::Transport {
                    what,
                    why: format!("{why} (after {} of {size} bytes)", body.read),
                },
                e => e,
            })?;
        if resp.status().as_u16() != 204 {
            return Err(self.status_error("PUT", path, resp));
        }
        Ok(())
    }

    /// A call without a body (`POST .../actions/deactivate`, `DELETE`),
    /// expecting one of `ok`.
    pub fn call(&self, method: &'static str, path: &str, ok: &[u16]) -> Result<(), HttpError> {
        let url = self.url(path);
        let sent = match method {
            "DELETE" => self.with_headers(self.agent.delete(&url)).call(),
            _ => self.with_headers(self.agent.post(&url)).send_empty(),
        };
        let resp = sent.map_err(|e| self.failed(path, e))?;
        if !ok.contains(&resp.status().as_u16()) {
            return Err(self.status_error(method, path, resp));
        }
        Ok(())
    }

    /// The data of `path` (`/v2/images/{id}/file`) as a stream, with the
    /// size the server announces: for copying straight into an upload.
    pub fn open(&self, path: &str) -> Result<(Option<u64>, ureq::BodyReader<'static>), HttpError> {
        let resp = self.get(path, &[])?;
        if resp.status().as_u16() != 200 {
            return Err(self.status_error("GET", path, resp));
        }
        let len = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
        Ok((len, reader))
    }

    /// GET `path` as JSON, expecting one of `ok` statuses.
    pub fn get_json(&self, path: &str, ok: &[u16]) -> Result<Value, HttpError> {
        let resp = self.get(path, &[])?;
        if !ok.contains(&resp.status().as_u16()) {
            return Err(self.status_error("GET", path, resp));
        }
        self.json_of(path, resp)
    }

    /// `GET /`: the versions on offer must include v2 (never read a v1-only
    /// or unknown server as an empty cloud). The highest v2 id.
    pub fn check_v2(&self) -> Result<String, HttpError> {
        let v = self.get_json("/", &[200, 300])?;
        let ids: Vec<&str> = v
            .get("versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|x| x.get("id").and_then(Value::as_str))
            .collect();
        let mut v2: Vec<(u32, &str)> = ids
            .iter()
            .filter_map(|id| {
                let minor = id.strip_prefix("v2.")?.parse().ok()?;
                Some((minor, *id))
            })
            .collect();
        v2.sort();
        v2.last()
            .map(|(_, id)| (*id).to_owned())
            .ok_or_else(|| HttpError::Protocol {
                what: "/".into(),
                why: format!("no Images v2 API on offer (versions: {})", ids.join(", ")),
            })
    }

    /// Bytes `start..=end` of `path` with a Range request: the part and
    /// the object's total size (from Content-Range). `Ok(None)` when the
    /// server ignores Range (it answers 200 with the whole object, which is
    /// not read).
    pub fn get_range(
        &self,
        path: &str,
        start: u64,
        end: u64,
    ) -> Result<Option<(Vec<u8>, u64)>, HttpError> {
        let mut resp = self.get(path, &[("Range", format!("bytes={start}-{end}"))])?;
        match resp.status().as_u16() {
            206 => {}
            200 => return Ok(None),
            _ => return Err(self.status_error("GET", path, resp)),
        }
        let bad = |why: String| HttpError::Protocol {
            what: self.what(path),
            why,
        };
        // "bytes START-END/TOTAL"
        let range = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| bad("206 without Content-Range".into()))?
            .to_owned();
        let (got_start, total) = range
            .strip_prefix("bytes ")
            .and_then(|r| r.split_once('/'))
            .and_then(|(span, total)| {
                let (a, _) = span.split_once('-')?;
                Some((a.parse::<u64>().ok()?, total.parse::<u64>().ok()?))
            })
            .ok_or_else(|| bad(format!("unreadable Content-Range {range:?}")))?;
        if got_start != start {
            return Err(bad(format!("asked for byte {start}, got {range:?}")));
        }
        let want = end - start + 1;
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(want)
            .read_to_vec()
            .map_err(|e| self.failed(path, e))?;
        Ok(Some((bytes, total)))
    }

    /// Stream `path` (from byte `from`, with `Range`) into `sink`; the
    /// bytes written. A 206 is required when `from > 0`.
    pub fn download(
        &self,
        path: &str,
        from: u64,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, HttpError> {
        let extra = if from > 0 {
            vec![("Range", format!("bytes={from}-"))]
        } else {
            Vec::new()
        };
        let mut resp = self.get(path, &extra)?;
        let status = resp.status().as_u16();
        let want = if from > 0 { 206 } else { 200 };
        if status != want {
            return Err(self.status_error("GET", path, resp));
        }
        let len: Option<u64> = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut n = 0u64;
        // A body cut short (the server killed mid-body) says how far it got.
        let io = |e: std::io::Error, n: u64| {
            let eof = e.kind() == std::io::ErrorKind::UnexpectedEof;
            match self.failed_io(path, e) {
                HttpError::Transport { what, why } => {
                    let at = format!(
                        "after {} of {} bytes",
                        from + n,
                        len.map_or("?".to_owned(), |l| (from + l).to_string())
                    );
                    let why = if eof {
                        format!("the server closed the connection {at} ({why})")
                    } else {
                        format!("{why} ({at})")
                    };
                    HttpError::Transport { what, why }
                }
                e => e,
            }
        };
        let mut r = resp.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            system::signal::check().map_err(|e| self.failed_io(path, e))?;
            let k = r.read(&mut buf).map_err(|e| io(e, n))?;
            if k == 0 {
                return Ok(n);
            }
            sink(&buf[..k]).map_err(|source| HttpError::Local {
                what: self.what(path),
                source,
            })?;
            n += k as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webob_entities_are_decoded() {
        assert_eq!(
            unescape("does not match schema &#x27;image&#x27;: &quot;x&quot; &amp;lt;"),
            "does not match schema 'image': \"x\" &lt;"
        );
    }

    /// A one-shot server answering every request with 404 and a Glance
    /// error body; its URL.
    fn answers_404() -> String {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for s in l.incoming().take(2) {
                let mut s = s.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let body = r#"{"message": "No image found", "code": 404}"#;
                let _ = write!(
                    s,
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
                     x-openstack-request-id: req-1\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    #[test]
    fn a_404_names_the_request() {
        let url = answers_404();
        let g = Glance::new(&url, Vec::new(), Duration::from_secs(5), None);
        let e = g.get_json("/v2/images/x", &[200]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "GET /v2/images/x: HTTP 404: No image found (request req-1)"
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        // A whole URL (imginfo-parse --image-url asks for ""): the URL, never
        // `GET : HTTP 404`.
        let whole = Glance::new(
            &format!("{url}/v2/images/y/file"),
            Vec::new(),
            Duration::from_secs(5),
            None,
        );
        let e = whole.get_range("", 0, 9).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("GET {url}/v2/images/y/file: HTTP 404: No image found (request req-1)")
        );
    }

    #[test]
    fn errors_never_show_headers() {
        let g = Glance::new(
            "http://127.0.0.1:9/prefix/",
            vec![("X-Auth-Token".into(), "secret".into())],
            Duration::from_secs(1),
            None,
        );
        assert!(!format!("{g:?}").contains("secret"));
        assert_eq!(g.url("/v2/images"), "http://127.0.0.1:9/prefix/v2/images");
        let e = g.get_json("/", &[200]).unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
