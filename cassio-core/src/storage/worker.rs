//! Background threads: one flusher, one compactor and (in periodic mode) one
//! syncer. They are woken through bounded crossbeam channels and poll a
//! closing flag, so shutdown never waits longer than one poll interval plus
//! the job in progress. A failed job marks the engine failed (writes are then
//! refused) instead of retrying forever on a broken disk.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::config::SyncMode;
use super::engine::{Engine, Shared};
use crate::error::{Error, Result};

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Wake-up channels; capacity 1 each, since one pending wake-up is enough.
pub(crate) struct WorkSignals {
    flush_tx: Sender<()>,
    flush_rx: Receiver<()>,
    compact_tx: Sender<()>,
    compact_rx: Receiver<()>,
}

impl WorkSignals {
    pub(crate) fn new() -> Self {
        let (flush_tx, flush_rx) = bounded(1);
        let (compact_tx, compact_rx) = bounded(1);
        WorkSignals {
            flush_tx,
            flush_rx,
            compact_tx,
            compact_rx,
        }
    }

    pub(crate) fn wake_flusher(&self) {
        let _ = self.flush_tx.try_send(());
    }

    pub(crate) fn wake_compactor(&self) {
        let _ = self.compact_tx.try_send(());
    }
}

pub(crate) fn start(shared: &Arc<Shared>) -> Result<Vec<JoinHandle<()>>> {
    let Some(work) = &shared.work else {
        return Ok(Vec::new());
    };
    let mut handles = Vec::new();
    let flusher = {
        let shared = shared.clone();
        let wake = work.flush_rx.clone();
        move || {
            run_on_wake(&shared, &wake, "flush", |s| {
                while s.flush_oldest()? {
                    s.signal_compaction();
                }
                Ok(())
            })
        }
    };
    handles.push(spawn("cassio-flush", flusher)?);
    let compactor = {
        let shared = shared.clone();
        let wake = work.compact_rx.clone();
        move || {
            run_on_wake(&shared, &wake, "compaction", |s| {
                while s.compact_once(false)? {}
                Ok(())
            })
        }
    };
    handles.push(spawn("cassio-compact", compactor)?);
    if shared.config.sync_mode == SyncMode::Periodic {
        let shared = shared.clone();
        let period = Duration::from_millis(shared.config.sync_period_ms);
        handles.push(spawn("cassio-sync", move || {
            let mut waited = Duration::ZERO;
            while !shared.closing.load(Ordering::Acquire) {
                std::thread::sleep(POLL_INTERVAL.min(period));
                waited += POLL_INTERVAL.min(period);
                if waited >= period {
                    waited = Duration::ZERO;
                    if let Err(e) = shared.log.sync_all() {
                        shared.fail("periodic commit-log sync", &e);
                        return;
                    }
                }
            }
        })?);
    }
    Ok(handles)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| Error::io(name, e))
}

fn run_on_wake(
    shared: &Shared,
    wake: &Receiver<()>,
    what: &str,
    job: impl Fn(&Shared) -> Result<()>,
) {
    while !shared.closing.load(Ordering::Acquire) {
        if wake.recv_timeout(POLL_INTERVAL).is_err() {
            continue;
        }
        if shared.failed.load(Ordering::Acquire) || shared.closing.load(Ordering::Acquire) {
            continue;
        }
        if let Err(e) = job(shared) {
            shared.fail(what, &e);
        }
    }
}

impl Engine {
    /// Asks the background threads to stop and waits for them.
    pub(crate) fn stop_workers(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        for handle in self.workers.drain(..) {
            if handle.join().is_err() {
                tracing::error!("a storage background thread panicked");
            }
        }
    }
}
