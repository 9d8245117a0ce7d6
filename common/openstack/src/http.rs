//! The one HTTP agent configuration of the OpenStack clients.

use std::time::Duration;

/// The HTTP client for an OpenStack API: TLS roots (`--cacert`), the
/// timeouts (each phase, and each read or write of a body), statuses as
/// values, no redirects (`GET /` of Glance answers 300 without a
/// Location), and no kept-alive connections: uWSGI (how Glance 33 is
/// served) drops idle ones without a word, and a reused one fails with
/// "connection reset".
pub fn agent(timeout: Duration, roots: Option<ureq::tls::RootCerts>) -> ureq::Agent {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(r) = roots {
        tls = tls.root_certs(r);
    }
    ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .max_redirects(0)
        .max_idle_connections(0)
        .timeout_connect(Some(timeout))
        .timeout_recv_response(Some(timeout))
        // Per read and write too: the two above end with the headers, and
        // a server that stalls in a body (sending it, or taking ours)
        // would otherwise hold the tool for ever.
        .timeout_per_read(Some(timeout))
        .timeout_per_write(Some(timeout))
        .build()
        .into()
}
