//! The worker's map thread pool. Batches arrive from the reactor through a
//! channel; each thread maps and folds whole batches, and hands the result
//! back through a channel and the reactor's waker. User code never runs on
//! the event loop.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use log::warn;
use mio::Waker;

use crate::net::ConnId;
use crate::plugin::fold::{fold_batch, FailedIn};
use crate::plugin::Plugin;
use crate::proto::msg::{BatchResult, MapBatch, TaskFailure};

pub struct Work {
    pub conn: ConnId,
    pub request_id: u32,
    pub plugin: Arc<Plugin>,
    pub batch: MapBatch,
}

pub struct Done {
    pub conn: ConnId,
    pub request_id: u32,
    pub hash: [u8; 32],
    pub result: BatchResult,
}

pub struct Pool {
    work: Sender<Work>,
    pub done: Receiver<Done>,
}

fn run_batch(work: &Work) -> BatchResult {
    let started = Instant::now();
    let folded = fold_batch(&work.plugin, work.batch.tasks.iter());
    let busy_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    BatchResult {
        busy_us,
        batch_id: work.batch.batch_id,
        processed: folded.processed,
        value: folded.value,
        failures: folded
            .failures
            .into_iter()
            .map(|f| TaskFailure {
                index: f.index,
                panicked: f.error.panicked,
                message: match f.stage {
                    FailedIn::Map => f.error.message,
                    FailedIn::Reduce => format!("reduce: {}", f.error.message),
                },
            })
            .collect(),
    }
}

impl Pool {
    pub fn new(threads: usize, waker: Arc<Waker>) -> Pool {
        let (work_tx, work_rx) = mpsc::channel::<Work>();
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let work_rx = Arc::new(Mutex::new(work_rx));
        for i in 0..threads.max(1) {
            let (rx, tx, waker) = (Arc::clone(&work_rx), done_tx.clone(), Arc::clone(&waker));
            thread::Builder::new()
                .name(format!("map-{i}"))
                .spawn(move || loop {
                    let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(work) = next else {
                        return;
                    };
                    let result = run_batch(&work);
                    let done = Done {
                        conn: work.conn,
                        request_id: work.request_id,
                        hash: work.batch.hash,
                        result,
                    };
                    if tx.send(done).is_err() {
                        return;
                    }
                    if let Err(e) = waker.wake() {
                        warn!("cannot wake the event loop: {e}");
                    }
                })
                .expect("spawn map thread");
        }
        Pool {
            work: work_tx,
            done: done_rx,
        }
    }

    pub fn submit(&self, work: Work) {
        // The threads live as long as the pool; a send cannot fail.
        let _ = self.work.send(work);
    }
}
