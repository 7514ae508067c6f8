//! A loopback TCP proxy a test can cut and restore: "the endpoint is unreachable" made real
//! for one client (connections refused, open streams cut) while the server behind it, and
//! every other test using it, carries on. It runs on a thread of its own, like the Docker
//! socket proxy, so blocking waits in the test do not starve it.

use std::net::SocketAddr;

/// Forwards `127.0.0.1:port` to a target while up.
pub struct TcpProxy {
    /// The port clients connect to; the same across a cut and a restore.
    pub port: u16,
    target: SocketAddr,
    running: Option<super::thread::OwnThread>,
}

impl TcpProxy {
    /// Listens on a free loopback port, forwarding to `target`.
    pub fn start(target: SocketAddr) -> TcpProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        let port = listener.local_addr().expect("proxy address").port();
        let mut proxy = TcpProxy {
            port,
            target,
            running: None,
        };
        proxy.serve(listener);
        proxy
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn serve(&mut self, listener: std::net::TcpListener) {
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let target = self.target;
        self.running = Some(super::thread::OwnThread::spawn(move || async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Stops listening and cuts every open connection: connecting is refused until
    /// [`TcpProxy::restore`].
    pub fn cut(&mut self) {
        if let Some(server) = self.running.take() {
            server.stop();
        }
    }

    /// Listens on the same port again.
    pub fn restore(&mut self) {
        if self.running.is_none() {
            let listener = std::net::TcpListener::bind(("127.0.0.1", self.port))
                .expect("the proxy's port binds again");
            self.serve(listener);
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
