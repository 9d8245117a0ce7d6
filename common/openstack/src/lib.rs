//! The OpenStack HTTP clients: Glance's Images v2 API and a Keystone v3
//! login, over one HTTP agent (ureq with rustls), and an image read by
//! HTTP Range requests as a probe source. It returns results and typed
//! errors (each [`system::kind::Classified`]); it never writes records —
//! the tools do, at the edge. Only the tools that talk to Glance link it
//! (and so TLS).

pub mod args;
pub mod glance;
pub mod http;
pub mod http_source;
pub mod keystone;
