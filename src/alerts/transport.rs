//! How an alert reaches a receiver over the network: one HTTP/1.1 POST per delivery through
//! hyper, over TLS (rustls, the system roots plus the receiver's own CA bundle) for
//! `https://`, through the proxy `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` name as every HTTP
//! tool does (an HTTPS target is tunnelled with CONNECT, a plain one sent in absolute form).
//!
//! Every failure is named by what failed (the URL, DNS, the TCP connection, the proxy, TLS,
//! the deadline, HTTP itself, or the answer's status), so that `/status` and the metrics can
//! say which without reading a message. An error shows a receiver's origin only
//! (`https://host:port`), never its path or query: a Slack webhook's path is its secret.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderValue, LOCATION, USER_AGENT};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tower_service::Service;

/// DNS, TCP, the proxy's CONNECT and the TLS handshake together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One delivery from connecting to the end of the answer, redirects included.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer's body read (it is drained, never used: the status says it all).
const ANSWER_LIMIT: usize = 64 << 10;
/// Same-origin 307/308 redirects followed at most.
const MAX_REDIRECTS: usize = 3;

/// The kinds of failure, as `/status` and the metrics name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// The receiver's configuration (URL, CA bundle, a credential) is unusable.
    Config,
    /// The name did not resolve.
    Dns,
    /// The TCP connection failed.
    Connect,
    /// The proxy refused or failed the tunnel.
    Proxy,
    /// The TLS handshake failed (an untrusted certificate, say).
    Tls,
    /// No answer within the deadline.
    Timeout,
    /// The HTTP exchange itself broke.
    Http,
    /// The receiver answered with a non-2xx status (or a redirect not followed).
    Status,
}

impl FailureKind {
    /// The kind as one lowercase word (metrics label, status field).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Config => "config",
            FailureKind::Dns => "dns",
            FailureKind::Connect => "connect",
            FailureKind::Proxy => "proxy",
            FailureKind::Tls => "tls",
            FailureKind::Timeout => "timeout",
            FailureKind::Http => "http",
            FailureKind::Status => "status",
        }
    }
}

/// Why a delivery failed. Names the receiver's origin, never its path, query or any header.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The URL is not one this client speaks.
    #[error("the receiver's URL is not an absolute http:// or https:// URL with a host")]
    Url,
    /// A credential, a header or the CA bundle could not be used.
    #[error("{0}")]
    Config(String),
    /// The host name did not resolve.
    #[error("{origin}: DNS lookup of {host} failed: {source}")]
    Dns {
        /// Where.
        origin: String,
        /// The name.
        host: String,
        /// What.
        #[source]
        source: std::io::Error,
    },
    /// No address resolved, or none accepted the connection.
    #[error("{origin}: TCP connection failed: {source}")]
    Connect {
        /// Where.
        origin: String,
        /// What.
        #[source]
        source: std::io::Error,
    },
    /// The proxy could not be reached or refused the tunnel.
    #[error("{origin}: through proxy {proxy}: {source}")]
    Proxy {
        /// Where.
        origin: String,
        /// The proxy's origin (never its credentials).
        proxy: String,
        /// What.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The TLS handshake failed.
    #[error("{origin}: TLS handshake failed: {source}")]
    Tls {
        /// Where.
        origin: String,
        /// What (rustls' own error when it is one: an unknown issuer, a name mismatch…).
        #[source]
        source: std::io::Error,
    },
    /// No answer within a deadline.
    #[error("{origin}: no {phase} within {after:?}")]
    Timeout {
        /// Where.
        origin: String,
        /// `connection` or `answer`.
        phase: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// The HTTP exchange broke.
    #[error("{origin}: HTTP exchange failed: {source}")]
    Http {
        /// Where.
        origin: String,
        /// What.
        #[source]
        source: hyper::Error,
    },
    /// The receiver answered with an error status, or redirected where we do not follow.
    #[error("{origin}: answered HTTP {status}{}", if *redirect { " (a redirect to another origin is not followed)" } else { "" })]
    Status {
        /// Where.
        origin: String,
        /// The status code.
        status: u16,
        /// Whether it was a redirect left unfollowed.
        redirect: bool,
    },
}

impl DeliveryError {
    /// What kind of failure this is.
    pub fn kind(&self) -> FailureKind {
        match self {
            DeliveryError::Url | DeliveryError::Config(_) => FailureKind::Config,
            DeliveryError::Dns { .. } => FailureKind::Dns,
            DeliveryError::Connect { .. } => FailureKind::Connect,
            DeliveryError::Proxy { .. } => FailureKind::Proxy,
            DeliveryError::Tls { .. } => FailureKind::Tls,
            DeliveryError::Timeout { .. } => FailureKind::Timeout,
            DeliveryError::Http { .. } => FailureKind::Http,
            DeliveryError::Status { .. } => FailureKind::Status,
        }
    }
}

/// `scheme://host:port` of a URI: what an error or a log line may show of a receiver.
pub fn origin(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("?");
    let host = uri.host().unwrap_or("?");
    match uri.port_u16() {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    }
}

/// The system's trusted roots, loaded once (rustls-native-certs reads the same bundle
/// OpenSSL would: /etc/ssl/certs, SSL_CERT_FILE; the container image carries it).
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if !found.errors.is_empty() {
            tracing::warn!(
                errors = found.errors.len(),
                "some system CA certificates could not be loaded"
            );
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "system CA certificates loaded");
        roots
    })
}

/// Reads a PEM CA bundle (bounded like every file the daemon reads).
fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, DeliveryError> {
    let shown = path.display();
    let text = crate::manifest::files::Reader::default()
        .read(path, crate::manifest::files::FileRole::Source)
        .map_err(|e| DeliveryError::Config(format!("CA bundle {shown}: {e}")))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| DeliveryError::Config(format!("CA bundle {shown}: not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(DeliveryError::Config(format!(
            "CA bundle {shown} holds no CERTIFICATE block"
        )));
    }
    Ok(certs)
}

/// A receiver's HTTP client: its TLS trust and the proxy settings, fixed when the receiver
/// is configured.
#[derive(Clone)]
pub struct Client {
    /// The receiver's own CA certificates (read and checked when it is configured).
    ca: Arc<Vec<CertificateDer<'static>>>,
    /// Built at the first `https://` connection: a plain-HTTP receiver never loads the
    /// system's roots (a few MB of an idle daemon's memory).
    tls: Arc<OnceLock<Arc<rustls::ClientConfig>>>,
    proxy: Arc<Matcher>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The matcher's Debug hides proxy credentials; the TLS config has nothing to show.
        f.debug_struct("Client")
            .field("proxy", &self.proxy)
            .finish()
    }
}

impl Client {
    /// A client trusting the system roots plus `ca_file`'s certificates, through `proxy`
    /// (see [`proxy_from`]).
    pub fn new(ca_file: Option<&Path>, proxy: Matcher) -> Result<Client, DeliveryError> {
        let ca = match ca_file {
            Some(path) => {
                let certs = read_ca(path)?;
                // Checked now, so that a bad bundle is a configuration error, not a failure
                // at the first delivery.
                let mut probe = RootCertStore::empty();
                for cert in &certs {
                    probe.add(cert.clone()).map_err(|e| {
                        DeliveryError::Config(format!(
                            "CA bundle {}: a certificate is unusable: {e}",
                            path.display()
                        ))
                    })?;
                }
                certs
            }
            None => Vec::new(),
        };
        Ok(Client {
            ca: Arc::new(ca),
            tls: Arc::new(OnceLock::new()),
            proxy: Arc::new(proxy),
        })
    }

    /// The TLS configuration: the system roots plus the receiver's CA certificates.
    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, DeliveryError> {
        if let Some(c) = self.tls.get() {
            return Ok(c.clone());
        }
        let mut roots = system_roots().clone();
        for cert in self.ca.iter() {
            roots
                .add(cert.clone())
                .map_err(|e| DeliveryError::Config(format!("CA bundle: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| DeliveryError::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(self.tls.get_or_init(|| Arc::new(tls)).clone())
    }

    /// POSTs a JSON `body` to `url` with `headers`; a 2xx answer is success. Follows a
    /// 307/308 only to the same origin (the body and credentials never go elsewhere).
    pub async fn post_json(
        &self,
        url: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<(), DeliveryError> {
        let mut uri: Uri = url.parse().map_err(|_| DeliveryError::Url)?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(DeliveryError::Url);
        }
        let shown = origin(&uri);
        let attempt = async {
            for _ in 0..=MAX_REDIRECTS {
                let (status, location) = self.once(&uri, headers, body.clone()).await?;
                if status.is_success() {
                    return Ok(());
                }
                let next = location
                    .filter(|_| status.as_u16() == 307 || status.as_u16() == 308)
                    .and_then(|l| resolve(&uri, &l))
                    .filter(|next| origin(next) == origin(&uri));
                match next {
                    Some(next) => uri = next,
                    None => {
                        return Err(DeliveryError::Status {
                            origin: origin(&uri),
                            status: status.as_u16(),
                            redirect: status.is_redirection(),
                        });
                    }
                }
            }
            Err(DeliveryError::Status {
                origin: origin(&uri),
                status: 310,
                redirect: true,
            })
        };
        tokio::time::timeout(TOTAL_TIMEOUT, attempt)
            .await
            .map_err(|_| DeliveryError::Timeout {
                origin: shown,
                phase: "answer",
                after: TOTAL_TIMEOUT,
            })?
    }

    /// One request on a new connection → (status, Location).
    async fn once(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<(http::StatusCode, Option<String>), DeliveryError> {
        let shown = origin(uri);
        let proxy = self.proxy.intercept(uri);
        let (io, absolute) = tokio::time::timeout(CONNECT_TIMEOUT, self.connect(uri, &proxy))
            .await
            .map_err(|_| DeliveryError::Timeout {
                origin: shown.clone(),
                phase: "connection",
                after: CONNECT_TIMEOUT,
            })??;
        let target = if absolute {
            uri.to_string()
        } else {
            uri.path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string())
        };
        let mut req = Request::post(target)
            .body(Full::new(body))
            .map_err(|_| DeliveryError::Url)?;
        let h = req.headers_mut();
        if let Some(authority) = uri.authority() {
            h.insert(
                HOST,
                HeaderValue::from_str(authority.as_str()).map_err(|_| DeliveryError::Url)?,
            );
        }
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(USER_AGENT, HeaderValue::from_static("stackwarden"));
        if absolute && let Some(auth) = proxy.as_ref().and_then(|p| p.basic_auth()) {
            h.insert(http::header::PROXY_AUTHORIZATION, auth.clone());
        }
        for (k, v) in headers {
            h.insert(k, v.clone());
        }
        let http_err = |source| DeliveryError::Http {
            origin: shown.clone(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(http_err)?;
        // The connection is driven alongside the exchange and dropped with it.
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "alert delivery connection ended with an error");
            }
        });
        let _abort = AbortOnDrop(driver);
        // Header names only: their values include the credential.
        tracing::trace!(origin = %shown, proxied = proxy.is_some(), headers = ?req.headers().keys().collect::<Vec<_>>(), "alert delivery sent");
        let resp = sender.send_request(req).await.map_err(http_err)?;
        let status = resp.status();
        tracing::trace!(origin = %shown, status = status.as_u16(), "alert delivery answered");
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        // Drained up to the bound, so that a polite server sees its answer read; a larger
        // one is cut off rather than read whole.
        let _ = Limited::new(resp.into_body(), ANSWER_LIMIT).collect().await;
        Ok((status, location))
    }

    /// A connection to `uri` (through `proxy` when set) → (stream, whether the request must
    /// be in absolute form because a plain-HTTP proxy forwards it).
    async fn connect(
        &self,
        uri: &Uri,
        proxy: &Option<hyper_util::client::proxy::matcher::Intercept>,
    ) -> Result<(Box<dyn Io>, bool), DeliveryError> {
        let shown = origin(uri);
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or(DeliveryError::Url)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = match proxy {
            None => tcp(&shown, host, port).await?,
            Some(p) => {
                let proxy_shown = origin(p.uri());
                let proxy_err =
                    |source: Box<dyn std::error::Error + Send + Sync>| DeliveryError::Proxy {
                        origin: shown.clone(),
                        proxy: proxy_shown.clone(),
                        source,
                    };
                if p.uri().scheme_str() != Some("http") {
                    return Err(proxy_err("only an http:// proxy is supported".into()));
                }
                if !https {
                    let ph = p.uri().host().ok_or_else(|| proxy_err("no host".into()))?;
                    let ph = ph.trim_start_matches('[').trim_end_matches(']');
                    let pp = p.uri().port_u16().unwrap_or(80);
                    let stream = tcp(&proxy_shown, ph, pp)
                        .await
                        .map_err(|e| proxy_err(Box::new(e)))?;
                    return Ok((Box::new(stream), true));
                }
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
                let mut tunnel = Tunnel::new(p.uri().clone(), connector);
                if let Some(auth) = p.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                let io = tunnel
                    .call(uri.clone())
                    .await
                    .map_err(|e| proxy_err(Box::new(e)))?;
                io.into_inner()
            }
        };
        if !https {
            return Ok((Box::new(tcp), false));
        }
        let name = ServerName::try_from(host.to_string()).map_err(|_| DeliveryError::Url)?;
        let tls = tokio_rustls::TlsConnector::from(self.tls()?)
            .connect(name, tcp)
            .await
            .map_err(|source| DeliveryError::Tls {
                origin: shown.clone(),
                source,
            })?;
        Ok((Box::new(tls), false))
    }
}

/// The proxy settings `lookup` gives, read as curl reads them: `ALL_PROXY`, `HTTPS_PROXY`,
/// `HTTP_PROXY`, `NO_PROXY`, each upper case first, then lower case.
pub fn proxy_from(lookup: impl Fn(&str) -> Option<String>) -> Matcher {
    let get = |name: &str| {
        lookup(name)
            .or_else(|| lookup(&name.to_ascii_lowercase()))
            .filter(|v| !v.is_empty())
    };
    let mut b = Matcher::builder();
    if let Some(v) = get("ALL_PROXY") {
        b = b.all(v);
    }
    if let Some(v) = get("HTTPS_PROXY") {
        b = b.https(v);
    }
    if let Some(v) = get("HTTP_PROXY") {
        b = b.http(v);
    }
    if let Some(v) = get("NO_PROXY") {
        b = b.no(v);
    }
    b.build()
}

/// A byte stream a request goes over: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Aborts the connection's task when the exchange ends (or is cancelled by a deadline).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves `host` and connects to the first address that accepts.
async fn tcp(shown: &str, host: &str, port: u16) -> Result<tokio::net::TcpStream, DeliveryError> {
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| DeliveryError::Dns {
            origin: shown.to_string(),
            host: host.to_string(),
            source,
        })?
        .collect();
    let stream = tokio::net::TcpStream::connect(&addrs[..])
        .await
        .map_err(|source| DeliveryError::Connect {
            origin: shown.to_string(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A `Location` resolved against the request's URI (absolute, or an absolute path).
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with('/') {
        let mut parts = base.clone().into_parts();
        parts.path_and_query = Some(location.parse().ok()?);
        Uri::from_parts(parts).ok()
    } else {
        location.parse::<Uri>().ok().filter(|u| u.host().is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_shows_the_origin_never_the_path_or_query() {
        let uri: Uri = "https://hooks.example:8443/services/T0/B0/s3cret?token=x"
            .parse()
            .expect("uri");
        assert_eq!(origin(&uri), "https://hooks.example:8443");
    }

    #[test]
    fn a_redirect_resolves_within_its_origin_or_is_recognised_as_elsewhere() {
        let base: Uri = "https://am.example/api/v2/alerts".parse().expect("uri");
        let same = resolve(&base, "/other").expect("relative");
        assert_eq!(origin(&same), origin(&base));
        let other = resolve(&base, "https://evil.example/x").expect("absolute");
        assert_ne!(origin(&other), origin(&base));
    }

    #[tokio::test]
    async fn a_url_that_is_not_http_is_refused_as_configuration() {
        let c = Client::new(None, proxy_from(|_| None)).expect("client");
        let e = c
            .post_json("ftp://x/", &HeaderMap::new(), Bytes::new())
            .await
            .expect_err("refused");
        assert_eq!(e.kind(), FailureKind::Config);
    }

    #[test]
    fn a_ca_bundle_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let e = Client::new(Some(&path), proxy_from(|_| None)).expect_err("refused");
        assert_eq!(e.kind(), FailureKind::Config);
    }
}
