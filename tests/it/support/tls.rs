//! TLS on loopback for the receiver tests: a CA and a server certificate for 127.0.0.1 made
//! at test time with the openssl CLI, an HTTPS sink (rustls + hyper) that records what it is
//! sent, and Debian's tinyproxy as an HTTP CONNECT proxy whose log shows what it carried.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::alertmanager::{Received, tool};
use super::daemon::free_port;

/// A CA and a certificate it signed for `127.0.0.1` and `localhost`, as PEM files.
pub struct Pki {
    /// The CA's certificate (what a client trusts).
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key (PKCS#8).
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A fresh CA named `name` and a server certificate from it, valid for two days.
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("ca.cnf"),
            format!(
                "[req]\ndistinguished_name=dn\nprompt=no\nx509_extensions=v3\n[dn]\nCN={name}\n\
                 [v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
                 subjectKeyIdentifier=hash\n"
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            d,
            &[
                &["req", "-x509", "-config", "ca.cnf"][..],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            ]
            .concat(),
        );
        openssl(
            d,
            &[
                &["req", "-new", "-subj", "/CN=127.0.0.1"][..],
                &ec[..],
                &["-keyout", "server.key", "-out", "server.csr"],
            ]
            .concat(),
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                "2",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        Pki {
            ca: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            _dir: dir,
        }
    }
}

/// An HTTPS server on 127.0.0.1 that records every request and answers 200 with an empty
/// body. Stops on drop.
pub struct TlsSink {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsSink {
    /// Serves `pki`'s server certificate on a free loopback port.
    pub async fn start(pki: &Pki) -> TlsSink {
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&pki.key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let rec = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, rec) = (acceptor.clone(), rec.clone());
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here; that is its business.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let rec = rec.clone();
                        async move { record(req, &rec).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsSink {
            url,
            received,
            task,
        }
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for TlsSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    req: hyper::Request<hyper::body::Incoming>,
    rec: &Mutex<Vec<Received>>,
) -> Result<hyper::Response<http_body_util::Empty<bytes::Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let method = req.method().to_string();
    let path = req.uri().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    rec.lock().unwrap().push(Received {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: SystemTime::now(),
    });
    Ok(hyper::Response::new(http_body_util::Empty::new()))
}

/// Debian's tinyproxy on a free loopback port, logging each request it carries. Killed on
/// drop.
pub struct Tinyproxy {
    /// `http://127.0.0.1:PORT`: what HTTPS_PROXY names.
    pub url: String,
    /// Its log file.
    pub log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    /// Starts it and waits until it accepts connections.
    pub fn start() -> Tinyproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("tinyproxy.log");
        let conf = dir.path().join("tinyproxy.conf");
        // No ConnectPort line: CONNECT is allowed to any port (the sinks' are random).
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 10\nLogLevel Info\nLogFile \"{}\"\n",
                log.display()
            ),
        )
        .unwrap();
        let child = Command::new(tool("tinyproxy"))
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy starts (installed by scripts/dev-env up)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tinyproxy did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Tinyproxy {
            url: format!("http://127.0.0.1:{port}"),
            log,
            child,
            _dir: dir,
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
