//! The flags every tool that talks to an OpenStack API shares (a token, a
//! token file, extra headers, a CA file; Glance's endpoint and timeout),
//! and how they become a client: a Keystone login from the `OS_*`
//! variables when no token is given.

use crate::glance::{Glance, HttpError};
use anyhow::Context;
use std::time::Duration;

/// An endpoint that does not answer as Glance's Images v2 API.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Unreachable {
    /// The endpoint's base URL (the record's `path`).
    pub endpoint: String,
    /// Why.
    pub error: HttpError,
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

/// How to authenticate to an OpenStack HTTP API and trust its TLS: the
/// flags every tool that talks to Glance shares.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// A token sent as X-Auth-Token (default: $OS_AUTH_TOKEN, else a
    /// keystone login from $OS_AUTH_URL, $OS_USERNAME, $OS_PASSWORD,
    /// $OS_PROJECT_NAME, ... or an application credential); never printed
    #[arg(
        long,
        value_name = "TOKEN",
        env = "OS_AUTH_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// Read the token from FILE (keeps it out of the process list)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// An extra request header 'Name: value' (repeatable)
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Trust the CA certificates of this PEM file for https (instead of
    /// the bundled Mozilla roots)
    #[arg(long, value_name = "PEM")]
    pub cacert: Option<std::path::PathBuf>,
}

/// The flags that name a Glance endpoint and how to talk to it, shared by
/// glance-dump and glance-load.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EndpointArgs {
    /// The Glance endpoint (default: $OS_IMAGE_URL, else the image
    /// endpoint of the keystone catalog)
    // Optional for clap so that the shared `--generate` works without one.
    #[arg(long, value_name = "URL", env = "OS_IMAGE_URL")]
    pub url: Option<String>,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Seconds to wait for a connection, a response, or the next bytes
    /// of a body (either way)
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout: u64,
    /// Whether a keystone login from the `OS_*` variables may supply the
    /// token (and the URL): the flags' endpoint, not a livecopy source.
    #[arg(skip = true)]
    pub keystone: bool,
}

impl EndpointArgs {
    /// The endpoint, checked to offer the Images v2 API: `Ok(Err(_))` when
    /// it does not (unreachable, no v2), for the caller to record; `Err`
    /// for bad usage (no URL, not http(s), a malformed header, an
    /// unreadable token file or CA file).
    pub fn connect(&self) -> anyhow::Result<Result<Glance, Unreachable>> {
        let glance = self.glance("--url URL (or $OS_IMAGE_URL)")?;
        Ok(match glance.check_v2() {
            Ok(_) => Ok(glance),
            Err(error) => Err(Unreachable {
                endpoint: glance.base().to_owned(),
                error,
            }),
        })
    }

    /// The client for these flags, not yet checked; `what` names the URL
    /// flag in the error when it is missing.
    pub fn glance(&self, what: &str) -> anyhow::Result<Glance> {
        self.auth.client(
            self.url.as_deref(),
            what,
            self.keystone,
            Duration::from_secs(self.timeout),
        )
    }
}

impl AuthArgs {
    /// A client for `url` with these credentials (a keystone login from
    /// the `OS_*` variables when `keystone` and no token is given, which
    /// also supplies the URL from its catalog when there is none); `what`
    /// names the URL flag in the error when it is missing. Not yet
    /// contacted, but for the login.
    pub fn client(
        &self,
        url: Option<&str>,
        what: &str,
        keystone: bool,
        timeout: Duration,
    ) -> anyhow::Result<Glance> {
        let mut token = match &self.token_file {
            Some(f) => {
                // The io::Error stays in the chain: it gives the record's kind.
                let t = std::fs::read_to_string(f)
                    .with_context(|| format!("--token-file {}", f.display()))?;
                let t = t.trim().to_owned();
                if t.is_empty() {
                    return Err(system::kind::usage(format!(
                        "--token-file {}: the file is empty",
                        f.display()
                    )));
                }
                Some(t)
            }
            None => self.token.clone(),
        };
        // No token: a keystone login from the OS_* variables, if any.
        let login = match (&token, keystone) {
            (None, true) => crate::keystone::Login::from_env(&|k| std::env::var(k).ok())?,
            _ => None,
        };
        if url.is_none() && login.is_none() {
            return Err(system::kind::usage(format!(
                "{what} is required (or $OS_AUTH_URL and a login to find it)"
            )));
        }
        if let Some(url) = url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(system::kind::usage(format!(
                "{url:?}: the endpoint must be an http:// or https:// URL"
            )));
        }
        let roots = match &self.cacert {
            Some(f) => Some(read_cacert(f)?),
            None => None,
        };
        let mut url = url.map(str::to_owned);
        if let Some(l) = login {
            let (t, catalog) = l.login(timeout, roots.clone())?;
            token = Some(t);
            if url.is_none() {
                url = Some(l.image_url(&catalog)?);
            }
        }
        let url = url.unwrap_or_default();
        let headers =
            request_headers(token.as_deref(), &self.headers).map_err(system::kind::usage)?;
        Ok(Glance::new(&url, headers, timeout, roots))
    }
}

/// The certificates of a PEM file, for `--cacert`.
fn read_cacert(f: &std::path::Path) -> anyhow::Result<ureq::tls::RootCerts> {
    let pem = std::fs::read(f).with_context(|| format!("--cacert {}", f.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(system::kind::usage(format!(
                    "--cacert {}: {e}",
                    f.display()
                )));
            }
        }
    }
    if certs.is_empty() {
        return Err(system::kind::usage(format!(
            "--cacert {}: no PEM certificate in the file",
            f.display()
        )));
    }
    Ok(ureq::tls::RootCerts::from(certs))
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
}
