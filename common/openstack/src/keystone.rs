//! Keystone (Identity v3) login from the usual `OS_*` variables, for the
//! Glance tools when no token is given: password (user and project by name
//! or id, domains defaulting to `Default`) or application credential. The
//! token comes back in `X-Subject-Token`; the catalog names the image
//! endpoint when no `--url` is given. The password and the token are never
//! printed.

use serde_json::{Value, json};
use std::time::Duration;

/// What a login needs, read from the environment.
#[derive(Clone)]
pub struct Login {
    auth_url: String,
    method: Value,
    scope: Option<Value>,
    /// `OS_INTERFACE` (public by default): which catalog endpoint to use.
    pub interface: String,
    /// `OS_REGION_NAME`: the catalog endpoint's region, when set.
    pub region: Option<String>,
}

impl std::fmt::Debug for Login {
    // The method holds the password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("auth_url", &self.auth_url)
            .finish_non_exhaustive()
    }
}

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum KeystoneError {
    /// The variables do not describe a login.
    #[error("keystone login: {0}")]
    Config(String),
    /// Keystone refused, or did not answer.
    #[error("keystone login at {url}: {why}")]
    Failed {
        /// The token URL.
        url: String,
        /// What went wrong (never the password).
        why: String,
    },
    /// The catalog has no image endpoint for the interface and region.
    #[error("the keystone catalog has no {interface} image endpoint{}", region.as_deref().map(|r| format!(" in region {r}")).unwrap_or_default())]
    NoEndpoint {
        /// public, internal or admin.
        interface: String,
        /// The region asked for.
        region: Option<String>,
    },
}

impl Login {
    /// The login `env` describes (`OS_AUTH_URL` and either
    /// `OS_APPLICATION_CREDENTIAL_ID`/`_SECRET` or `OS_USERNAME` or
    /// `OS_USER_ID` with `OS_PASSWORD`); None without `OS_AUTH_URL`.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Login>, KeystoneError> {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        let Some(auth_url) = get("OS_AUTH_URL") else {
            return Ok(None);
        };
        let domain = |id: &str, name: &str| match (get(id), get(name)) {
            (Some(i), _) => json!({"id": i}),
            (None, Some(n)) => json!({"name": n}),
            (None, None) => json!({"id": "default"}),
        };
        let method = if let Some(id) = get("OS_APPLICATION_CREDENTIAL_ID") {
            let secret = get("OS_APPLICATION_CREDENTIAL_SECRET").ok_or_else(|| {
                KeystoneError::Config("OS_APPLICATION_CREDENTIAL_SECRET is not set".into())
            })?;
            json!({"methods": ["application_credential"],
                   "application_credential": {"id": id, "secret": secret}})
        } else {
            let password = get("OS_PASSWORD")
                .ok_or_else(|| KeystoneError::Config("OS_PASSWORD is not set".into()))?;
            let user = match (get("OS_USER_ID"), get("OS_USERNAME")) {
                (Some(id), _) => json!({"id": id, "password": password}),
                (None, Some(name)) => json!({"name": name, "password": password,
                    "domain": domain("OS_USER_DOMAIN_ID", "OS_USER_DOMAIN_NAME")}),
                (None, None) => {
                    return Err(KeystoneError::Config(
                        "OS_USERNAME (or OS_USER_ID) is not set".into(),
                    ));
                }
            };
            json!({"methods": ["password"], "password": {"user": user}})
        };
        // An application credential carries its own scope.
        let scope = if method["methods"][0] == "password" {
            match (
                get("OS_PROJECT_ID"),
                get("OS_PROJECT_NAME").or_else(|| get("OS_TENANT_NAME")),
            ) {
                (Some(id), _) => Some(json!({"project": {"id": id}})),
                (None, Some(name)) => Some(json!({"project": {"name": name,
                    "domain": domain("OS_PROJECT_DOMAIN_ID", "OS_PROJECT_DOMAIN_NAME")}})),
                (None, None) => None,
            }
        } else {
            None
        };
        Ok(Some(Login {
            auth_url,
            method,
            scope,
            interface: get("OS_INTERFACE")
                .map(|i| i.trim_end_matches("URL").to_owned())
                .unwrap_or_else(|| "public".into()),
            region: get("OS_REGION_NAME"),
        }))
    }

    /// `POST /v3/auth/tokens`: the token and the catalog.
    pub fn login(
        &self,
        timeout: Duration,
        roots: Option<ureq::tls::RootCerts>,
    ) -> Result<(String, Value), KeystoneError> {
        let base = self.auth_url.trim_end_matches('/');
        let url = if base.ends_with("/v3") {
            format!("{base}/auth/tokens")
        } else {
            format!("{base}/v3/auth/tokens")
        };
        let fail = |why: String| KeystoneError::Failed {
            url: url.clone(),
            why,
        };
        let mut auth = json!({"identity": self.method});
        if let Some(s) = &self.scope {
            auth["scope"] = s.clone();
        }
        let body = json!({"auth": auth}).to_string();
        let agent = crate::http::agent(timeout, roots);
        let mut resp = agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .unwrap_or_default();
        if status != 201 {
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.pointer("/error/message")?.as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(fail(format!("HTTP {status} {msg}").trim_end().to_owned()));
        }
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| fail("no X-Subject-Token in the answer".into()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| fail(format!("not JSON: {e}")))?;
        let catalog = v.pointer("/token/catalog").cloned().unwrap_or(Value::Null);
        Ok((token, catalog))
    }

    /// The image endpoint of `catalog` for this login's interface and
    /// region.
    pub fn image_url(&self, catalog: &Value) -> Result<String, KeystoneError> {
        catalog
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s.get("type").and_then(Value::as_str) == Some("image"))
            .flat_map(|s| {
                s.get("endpoints")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .find(|e| {
                e.get("interface").and_then(Value::as_str) == Some(self.interface.as_str())
                    && self.region.as_deref().is_none_or(|r| {
                        e.get("region_id").and_then(Value::as_str) == Some(r)
                            || e.get("region").and_then(Value::as_str) == Some(r)
                    })
            })
            .and_then(|e| e.get("url").and_then(Value::as_str))
            .map(str::to_owned)
            .ok_or_else(|| KeystoneError::NoEndpoint {
                interface: self.interface.clone(),
                region: self.region.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| v.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone())
    }

    #[test]
    fn password_login_by_names() {
        let e = env(&[
            ("OS_AUTH_URL", "http://k:5000/v3"),
            ("OS_USERNAME", "admin"),
            ("OS_PASSWORD", "s3cret"),
            ("OS_PROJECT_NAME", "admin"),
            ("OS_USER_DOMAIN_NAME", "Default"),
        ]);
        let l = Login::from_env(&e).unwrap().unwrap();
        assert_eq!(l.method["password"]["user"]["name"], "admin");
        assert_eq!(
            l.method["password"]["user"]["domain"],
            json!({"name": "Default"})
        );
        assert_eq!(
            l.scope,
            Some(json!({"project": {"name": "admin", "domain": {"id": "default"}}}))
        );
        assert_eq!(l.interface, "public");
        assert!(!format!("{l:?}").contains("s3cret"));
    }

    #[test]
    fn no_auth_url_no_login_and_missing_parts_are_errors() {
        assert!(Login::from_env(&env(&[])).unwrap().is_none());
        assert!(Login::from_env(&env(&[("OS_AUTH_URL", "http://k/v3")])).is_err());
        let e = env(&[
            ("OS_AUTH_URL", "http://k/v3"),
            ("OS_APPLICATION_CREDENTIAL_ID", "ac"),
        ]);
        assert!(Login::from_env(&e).is_err());
    }

    #[test]
    fn the_image_endpoint_by_interface_and_region() {
        let e = env(&[
            ("OS_AUTH_URL", "http://k/v3"),
            ("OS_APPLICATION_CREDENTIAL_ID", "ac"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "x"),
            ("OS_REGION_NAME", "two"),
            ("OS_INTERFACE", "internal"),
        ]);
        let l = Login::from_env(&e).unwrap().unwrap();
        assert!(l.scope.is_none());
        let cat = json!([
            {"type": "identity", "endpoints": [{"interface": "internal", "region_id": "two", "url": "http://k"}]},
            {"type": "image", "endpoints": [
                {"interface": "internal", "region_id": "one", "url": "http://g1"},
                {"interface": "public", "region_id": "two", "url": "http://g2-pub"},
                {"interface": "internal", "region_id": "two", "url": "http://g2"}]}
        ]);
        assert_eq!(l.image_url(&cat).unwrap(), "http://g2");
        assert!(l.image_url(&json!([])).is_err());
    }
}
