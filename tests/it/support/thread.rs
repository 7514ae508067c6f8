//! A test server on a thread of its own, with its own single-threaded runtime: the tests
//! poll daemons with blocking waits, which would starve a server running on the test's own
//! runtime. Stopping it drops that runtime, which cancels every task the server spawned, so
//! open streams are cut as a dead server's would be.

use std::future::Future;

/// A running server loop.
pub struct OwnThread {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl OwnThread {
    /// Runs the future `serve` makes (an accept loop, say) until it ends or [`OwnThread::stop`].
    pub fn spawn<F, Fut>(serve: F) -> OwnThread
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                tokio::select! {
                    _ = serve() => {}
                    _ = stopped => {}
                }
            });
            drop(rt);
        });
        OwnThread { stop, thread }
    }

    /// Stops the loop, cuts its connections and waits for the thread (blocking).
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
