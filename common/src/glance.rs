//! The Glance Images v2 API over HTTP (ureq), for glance-dump and
//! glance-load: JSON calls, streamed downloads and uploads, the version
//! check. Errors carry the HTTP status, Glance's message and the
//! `x-openstack-request-id`, never a token.

use serde_json::Value;
use std::io::Read;
use std::time::Duration;

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
    /// An answer that is not what the API documents.
    #[error("{what}: {why}")]
    Protocol {
        /// The path asked for.
        what: String,
        /// What is wrong.
        why: String,
    },
}

impl HttpError {
    /// The record's `error.kind`.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            HttpError::Status {
                status: 401 | 403, ..
            } => crate::ErrorKind::PermissionDenied,
            HttpError::Status { status: 404, .. } => crate::ErrorKind::NotFound,
            HttpError::Status { status: 409, .. } => crate::ErrorKind::AlreadyExists,
            HttpError::Status { .. } | HttpError::Transport { .. } | HttpError::Protocol { .. } => {
                crate::ErrorKind::Io
            }
        }
    }
}

/// The headers every request carries: `X-Auth-Token` from `token`, and
/// each `Name: value` of `extra` (the `--header` flags).
pub fn request_headers(
    token: Option<&str>,
    extra: &[String],
) -> Result<Vec<(String, String)>, String> {
    let mut headers = Vec::new();
    if let Some(t) = token {
        headers.push(("X-Auth-Token".to_owned(), t.to_owned()));
    }
    for h in extra {
        let Some((k, v)) = h.split_once(':') else {
            return Err(format!("--header {h:?}: expected 'Name: value'"));
        };
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Ok(headers)
}

/// The flags that name a Glance endpoint and how to talk to it, shared by
/// glance-dump and glance-load.
#[derive(Debug, Clone, clap::Args)]
pub struct EndpointArgs {
    /// The Glance endpoint (default: $OS_IMAGE_URL); required
    // Optional for clap so that the shared `--generate` works without one.
    #[arg(long, value_name = "URL", env = "OS_IMAGE_URL")]
    pub url: Option<String>,
    /// A token sent as X-Auth-Token (default: $OS_AUTH_TOKEN); never
    /// printed
    #[arg(
        long,
        value_name = "TOKEN",
        env = "OS_AUTH_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// An extra request header 'Name: value' (repeatable)
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Seconds to wait for a connection or a response
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout: u64,
}

impl EndpointArgs {
    /// The endpoint, checked to offer the Images v2 API. `Ok(None)` after
    /// an error record for the endpoint was written (no v2, unreachable);
    /// `Err` for bad usage (no URL, a malformed header).
    pub fn connect(&self, ctx: &mut crate::cli::Ctx) -> anyhow::Result<Option<Glance>> {
        let Some(url) = self.url.as_deref() else {
            anyhow::bail!("--url URL (or $OS_IMAGE_URL) is required");
        };
        let headers =
            request_headers(self.token.as_deref(), &self.headers).map_err(anyhow::Error::msg)?;
        let glance = Glance::new(url, headers, Duration::from_secs(self.timeout));
        if let Err(e) = glance.check_v2() {
            let err = ctx.error(e.kind(), e.to_string());
            ctx.fail(crate::Record::from_path(url), err)?;
            return Ok(None);
        }
        Ok(Some(glance))
    }
}

/// One Glance endpoint.
pub struct Glance {
    agent: ureq::Agent,
    /// The endpoint without a trailing `/` (may carry a path prefix).
    base: String,
    /// Sent with every request (`X-Auth-Token`, `--header`s).
    headers: Vec<(String, String)>,
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
    pub fn new(url: &str, headers: Vec<(String, String)>, timeout: Duration) -> Glance {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // `GET /` answers 300 Multiple Choices without a Location.
            .max_redirects(0)
            // uWSGI (how Glance 33 is served) drops idle connections
            // without a word: a reused one fails with "connection reset".
            .max_idle_connections(0)
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .build()
            .into();
        Glance {
            agent,
            base: url.trim_end_matches('/').to_owned(),
            headers,
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
        req.call().map_err(|e| HttpError::Transport {
            what: path.to_owned(),
            why: e.to_string(),
        })
    }

    /// The error for a response with an unexpected status.
    fn status_error(path: &str, mut resp: ureq::http::Response<ureq::Body>) -> HttpError {
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
                    .map(str::to_owned)
            });
        HttpError::Status {
            method: "GET",
            what: path.to_owned(),
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

    fn json_of(path: &str, mut resp: ureq::http::Response<ureq::Body>) -> Result<Value, HttpError> {
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_JSON)
            .read_to_string()
            .map_err(|e| HttpError::Transport {
                what: path.to_owned(),
                why: e.to_string(),
            })?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| HttpError::Protocol {
            what: path.to_owned(),
            why: format!("not JSON: {e}"),
        })
    }

    /// GET `path` as JSON; `None` on 404.
    pub fn get_opt_json(&self, path: &str) -> Result<Option<Value>, HttpError> {
        let resp = self.get(path, &[])?;
        match resp.status().as_u16() {
            200 => Self::json_of(path, resp).map(Some),
            404 => Ok(None),
            _ => Err(Self::status_error(path, resp)),
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
            .map_err(|e| HttpError::Transport {
                what: path.to_owned(),
                why: e.to_string(),
            })?;
        if !ok.contains(&resp.status().as_u16()) {
            let mut e = Self::status_error(path, resp);
            if let HttpError::Status { method: m, .. } = &mut e {
                *m = method;
            }
            return Err(e);
        }
        Self::json_of(path, resp)
    }

    /// PUT the `size` bytes of `file` as image data to `path`, always with
    /// the size (`Content-Length`, `x-openstack-image-size`): a chunked
    /// upload cut short becomes an active image with truncated data.
    pub fn upload(&self, path: &str, file: &std::path::Path, size: u64) -> Result<(), HttpError> {
        let io = |e: std::io::Error| HttpError::Transport {
            what: path.to_owned(),
            why: e.to_string(),
        };
        let f = std::fs::File::open(file).map_err(io)?;
        let mut reader = f.take(size);
        let resp = self
            .with_headers(self.agent.put(&self.url(path)))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", size.to_string())
            .header("x-openstack-image-size", size.to_string())
            .send(ureq::SendBody::from_reader(&mut reader))
            .map_err(|e| HttpError::Transport {
                what: path.to_owned(),
                why: e.to_string(),
            })?;
        if resp.status().as_u16() != 204 {
            let mut e = Self::status_error(path, resp);
            if let HttpError::Status { method: m, .. } = &mut e {
                *m = "PUT";
            }
            return Err(e);
        }
        Ok(())
    }

    /// GET `path` as JSON, expecting one of `ok` statuses.
    pub fn get_json(&self, path: &str, ok: &[u16]) -> Result<Value, HttpError> {
        let resp = self.get(path, &[])?;
        if !ok.contains(&resp.status().as_u16()) {
            return Err(Self::status_error(path, resp));
        }
        Self::json_of(path, resp)
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
            return Err(Self::status_error(path, resp));
        }
        let io = |e: std::io::Error| HttpError::Transport {
            what: path.to_owned(),
            why: e.to_string(),
        };
        let mut r = resp.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            crate::signal::check().map_err(io)?;
            let k = r.read(&mut buf).map_err(io)?;
            if k == 0 {
                return Ok(n);
            }
            sink(&buf[..k]).map_err(io)?;
            n += k as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_from_flags() {
        let h = request_headers(Some("tok"), &["X-Roles: admin, member".into()]);
        assert_eq!(
            h,
            Ok(vec![
                ("X-Auth-Token".to_owned(), "tok".to_owned()),
                ("X-Roles".to_owned(), "admin, member".to_owned()),
            ])
        );
        assert!(request_headers(None, &["no colon".into()]).is_err());
    }

    #[test]
    fn errors_never_show_headers() {
        let g = Glance::new(
            "http://127.0.0.1:9/prefix/",
            vec![("X-Auth-Token".into(), "secret".into())],
            Duration::from_secs(1),
        );
        assert!(!format!("{g:?}").contains("secret"));
        assert_eq!(g.url("/v2/images"), "http://127.0.0.1:9/prefix/v2/images");
        let e = g.get_json("/", &[200]).unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
