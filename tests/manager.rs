//! The manager's own bounds (issue 11): what a queue of jobs, and the
//! libraries they hold, may cost it.

use redmap::net::{Client, ClientError};
use redmap::proto::msg::RunJob;
use redmap::proto::{ErrorCode, Message};

use crate::field::{client, sized_job};
use crate::util::{self, start_manager, TempDir};

/// A user queues jobs of one 4 MiB library on a manager with no worker
/// yet. Each waiting job used to read its own copy of the library on the
/// event loop (200 jobs: 800 MB); they now share the store's one copy. And
/// the queue has an end: past 1000 waiting jobs, RUN_JOB is refused BUSY,
/// and a cancelled one makes room again.
#[test]
fn queued_jobs_share_one_copy_of_their_library_and_the_queue_is_bounded() {
    let dir = TempDir::new("queued");
    let lib = sized_job(&dir, "big.so", &["-DPAD_BYTES=4194304"]);
    let library = std::fs::read(lib).unwrap();
    assert!(library.len() > 4 << 20, "{} bytes", library.len());
    let manager = start_manager(&["--max-jobs", "1"], &[], dir.path());
    let addr = manager.addr_arg();
    let mut c = client(&addr);
    match c.request(&util::install_whole(&library)) {
        Ok(Message::InstallReply(r)) => assert!(r.complete),
        other => panic!("install: {other:?}"),
    }
    let hash = redmap::plugin::PluginHash::of(&library).0;
    let run = |c: &mut Client, i: usize| {
        let run = RunJob {
            hash,
            name: format!("job-{i}"),
            args: Default::default(),
            options: Default::default(),
        };
        c.request(&Message::RunJob(run))
    };
    let rss_before = manager.rss_kib();
    let mut ids = Vec::new();
    // One runs (waiting for a worker), 1000 wait for a turn.
    for i in 0..=1000 {
        match run(&mut c, i) {
            Ok(Message::JobAccepted(id)) => ids.push(id),
            other => panic!("job {i}: {other:?}"),
        }
        if i == 200 {
            let grown = manager.rss_kib().saturating_sub(rss_before);
            assert!(
                grown < 64 * 1024,
                "200 queued jobs grew the manager by {grown} KiB"
            );
        }
    }
    match run(&mut c, 1001) {
        Err(ClientError::Remote(e)) => {
            assert_eq!(e.code, ErrorCode::BUSY, "{e}");
            assert!(e.message.contains("1000 jobs are waiting"), "{e}");
        }
        other => panic!("the 1002nd job: {other:?}"),
    }
    let last = *ids.last().unwrap();
    assert!(matches!(
        c.request(&Message::CancelJob(last)),
        Ok(Message::Cancelled)
    ));
    assert!(matches!(run(&mut c, 1002), Ok(Message::JobAccepted(_))));
}
