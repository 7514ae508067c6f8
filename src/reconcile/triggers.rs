//! What wakes the loop: file changes under the manifests (and the content files they name),
//! debounced into one trigger per burst. Watching directories rather than files means an
//! editor that saves by writing a temporary file and renaming it over the old one is seen
//! like any other write. The resync timer, Docker events and `POST /reconcile` are wired in
//! the loop itself.

use crate::status::Trigger;
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time that ends a burst of file events: long enough to cover an editor's
/// write-rename-chmod sequence, short enough to apply an edit well within 2 s.
pub const DEBOUNCE: Duration = Duration::from_millis(300);
/// A burst that never goes quiet still triggers this often. Generous: a script rewriting
/// many files on a loaded machine is still one burst (an editor's save goes quiet within
/// [`DEBOUNCE`], so this never delays one).
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(5);

/// A running file watcher; dropping it stops watching.
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
    dirs: BTreeSet<PathBuf>,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch")
            .field("dirs", &self.dirs)
            .finish()
    }
}

impl FileWatch {
    /// The directories watched.
    pub fn dirs(&self) -> &BTreeSet<PathBuf> {
        &self.dirs
    }
}

/// Watches `recursive` (the manifests) and `flat` (directories of content files), sending one
/// [`Trigger::Manifest`] per debounced burst into `wake`.
pub fn watch_files(
    recursive: PathBuf,
    flat: BTreeSet<PathBuf>,
    wake: mpsc::Sender<Trigger>,
) -> notify::Result<FileWatch> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Access events (reads, our own loads) are not changes.
        if let Ok(ev) = res
            && !matches!(ev.kind, notify::EventKind::Access(_))
        {
            let _ = raw_tx.send(());
        }
    })?;
    watcher.watch(&recursive, RecursiveMode::Recursive)?;
    let mut dirs = BTreeSet::from([recursive.clone()]);
    for dir in flat {
        if dir.starts_with(&recursive) || !dir.is_dir() {
            continue;
        }
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        dirs.insert(dir);
    }
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            let burst_end = tokio::time::Instant::now() + DEBOUNCE_MAX;
            loop {
                let quiet = tokio::time::sleep(DEBOUNCE);
                tokio::select! {
                    more = raw_rx.recv() => {
                        if more.is_none() { return; }
                        if tokio::time::Instant::now() >= burst_end { break; }
                    }
                    _ = quiet => break,
                }
            }
            if wake.send(Trigger::Manifest).await.is_err() {
                return;
            }
        }
    });
    Ok(FileWatch {
        _watcher: watcher,
        dirs,
    })
}
