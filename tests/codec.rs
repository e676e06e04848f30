//! The codec on its own: every message round-trips, a byte stream may be
//! split anywhere, and no input, however broken, makes it panic or allocate
//! past its limit.

use redmap::proto::msg::shuffle;
use redmap::proto::msg::{
    BatchResult, ErrorReply, Info, Install, InstallReply, JobStatus, JobSummary, JobsPage,
    JobsQuery, ManagerStats, MapBatch, RunJob, TaskFailure, TaskList,
};
use redmap::proto::{
    encode_frame, Decoder, ErrorCode, Frame, Message, Opcode, ProtoError, ReadBuf, HEADER_LEN,
};

use crate::util::Rng;

/// One sample of every message, with payloads that exercise every field.
pub fn samples() -> Vec<Message> {
    vec![
        Message::Ping,
        Message::InfoRequest,
        Message::Pong,
        Message::Info(Info {
            version: "0.1.0".into(),
            address: "[::1]:9876".into(),
            protocol: 1,
            active_jobs: 3,
            installed_jobs: u32::MAX,
            uptime_ms: 1 << 40,
            tasks_processed: u64::MAX,
            role: redmap::proto::msg::Role::Manager,
            server_id: 7,
            max_size: 4096,
            manager: String::new(),
            memory_limit: 0,
            executors: 0,
            executor_deaths: 0,
        }),
        Message::Error(ErrorReply {
            code: ErrorCode::CRC_MISMATCH,
            message: "naïve message ✓".into(),
        }),
        Message::Error(ErrorReply {
            code: ErrorCode(60000),
            message: String::new(),
        }),
        Message::Install(Install {
            hash: [7; 32],
            total: 10,
            offset: 4,
            chunk: b"abcdef".to_vec(),
        }),
        Message::InstallReply(InstallReply {
            complete: false,
            next_offset: 10,
        }),
        Message::Uninstall([9; 32]),
        Message::Uninstalled,
        Message::OutputRequest(redmap::proto::msg::OutputRequest {
            job: 3,
            form: redmap::proto::msg::OutputForm::Binary,
            offset: 1 << 40,
            max: 0,
        }),
        Message::Output(redmap::proto::msg::OutputChunk {
            total: 10,
            offset: 4,
            chunk: vec![0, 1, 2],
        }),
        Message::Fetch(shuffle::Fetch {
            job: 2,
            file: 9,
            segment: 3,
            offset: 1 << 40,
            max: 4096,
            range: Some(shuffle::KeyRange {
                lo: Some(b"a".to_vec()),
                hi: None,
            }),
        }),
        Message::Fetched(redmap::proto::msg::OutputChunk {
            total: 3,
            offset: 0,
            chunk: vec![7, 8, 9],
        }),
        Message::Reduce(shuffle::Reduce {
            hash: [4; 32],
            job: 12,
            partition: 6,
            args: redmap::proto::msg::JobArgs::new(&["a", ""]).unwrap(),
            sources: vec![shuffle::Source {
                addr: "[::1]:9000".into(),
                files: vec![(1, 2), (3, 4)],
            }],
            range: None,
            output_dir: "/out".into(),
            output_form: 0,
        }),
        Message::Reduced(shuffle::Reduced {
            partition: 6,
            outcome: shuffle::ReduceOutcome::Unreachable,
            message: "cannot fetch".into(),
            unreachable: "[::1]:9000".into(),
            file: 0,
            binary_len: 1,
            text_len: 2,
            text_error: "no".into(),
            fetched: 3,
            spills: 4,
            spilled_bytes: 5,
            preview: vec![6],
            path: "/out/part-00006".into(),
        }),
        Message::DropShuffle(shuffle::DropShuffle { job: 12, what: 3 }),
        Message::Dropped,
        Message::PartsRequest(12),
        Message::Parts(shuffle::Parts {
            parts: vec![shuffle::Part {
                addr: "w:1".into(),
                file: 2,
                binary_len: 3,
                text_len: 4,
                text_error: String::new(),
                path: String::new(),
            }],
        }),
        Message::MapBatch(MapBatch {
            hash: [1; 32],
            batch_id: u64::MAX - 1,
            tasks: {
                let mut list = TaskList::new();
                list.push(b"1");
                list.push(b"");
                list.push(&[0xFF; 300]);
                list
            },
            reply_limit: 1_000_000,
            args: Default::default(),
            shuffle: None,
        }),
        Message::BatchResult(BatchResult {
            batch_id: 77,
            processed: 2,
            value: Some(b"65".to_vec()),
            failures: vec![
                TaskFailure {
                    index: 1,
                    panicked: true,
                    fatal: false,
                    deferred: false,
                    message: "panic: boom".into(),
                },
                TaskFailure {
                    index: 2,
                    panicked: false,
                    fatal: true,
                    deferred: false,
                    message: "too big".into(),
                },
                TaskFailure {
                    index: 3,
                    panicked: false,
                    fatal: false,
                    deferred: true,
                    message: String::new(),
                },
            ],
            busy_us: 1234,
            map_output: None,
        }),
        Message::BatchResult(BatchResult {
            batch_id: 78,
            processed: 0,
            value: None,
            failures: vec![],
            busy_us: 0,
            map_output: None,
        }),
        Message::RunJob(RunJob {
            hash: [2; 32],
            name: "test-job".into(),
            args: Default::default(),
            options: Default::default(),
        }),
        Message::JobAccepted(5),
        Message::JobStatsRequest(5),
        Message::JobStats({
            let mut s = summary();
            s.shuffle.parts = vec![redmap::proto::msg::shuffle::PartView {
                state: 2,
                worker: "w:1".into(),
                fetched: 300,
                bytes: 40,
                failures: 1,
            }];
            s
        }),
        Message::JobsListRequest(JobsQuery {
            limit: 20,
            before: 41,
        }),
        Message::JobsList(JobsPage {
            jobs: vec![summary(), summary()],
            more: 3,
        }),
        Message::Attach(redmap::proto::msg::AttachWorker {
            addr: "127.0.0.1:9876".into(),
            force: true,
            join: false,
        }),
        Message::Claim(redmap::proto::msg::Claim {
            manager: "10.0.0.1:9899".into(),
            manager_id: 0x0123_4567_89ab_cdef,
            force: false,
        }),
        Message::Claimed(redmap::proto::msg::Claimed {
            worker_id: 42,
            max_size: 4096,
        }),
        Message::Attached,
        Message::Detach(":9877".into()),
        Message::Detached,
        Message::ManagerStatsRequest,
        Message::Hello([4; 32]),
        Message::Challenge(redmap::proto::msg::Challenge {
            nonce: [5; 32],
            proof: [6; 32],
        }),
        Message::Auth([7; 32]),
        Message::AuthOk,
        Message::CancelJob(7),
        Message::Cancelled,
        Message::ManagerStats(ManagerStats {
            address: "127.0.0.1:9899".into(),
            workers_active: 2,
            workers_total: 3,
            jobs_completed: 4,
            tasks_per_sec_milli: 1_500_000_000,
            bytes_in: 1 << 33,
            ..ManagerStats::default()
        }),
    ]
}

fn summary() -> JobSummary {
    JobSummary {
        id: 5,
        name: "test-job".into(),
        status: JobStatus::Running,
        estimate: Some(1_000_000),
        loaded: 500_000,
        processed: 400_000,
        failed: 3,
        retried: 9,
        running: 8192,
        elapsed_ms: 1234,
        load_errors: 1,
        reduce_errors: 0,
        result_len: 0,
        result_preview: Vec::new(),
        errors: vec!["map of task 7: panic: boom".into()],
        backups: 2,
        backups_won: 1,
        duplicates: 3,
        waiting_for_workers: true,
        spills: 2,
        spilled_bytes: 4096,
        shuffle: Box::new(redmap::proto::msg::shuffle::ShuffleView {
            partitions: 2,
            done: 1,
            shuffled: 300,
            remapped: 1,
            // Each partition travels in JOB_STATS only.
            parts: vec![],
        }),
    }
}

fn stream_of_samples() -> (Vec<u8>, Vec<(u32, Message)>) {
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for (i, msg) in samples().into_iter().enumerate() {
        let id = 1000 + i as u32;
        encode_frame(&mut bytes, id, &msg);
        expected.push((id, msg));
    }
    (bytes, expected)
}

fn decode_all(dec: &mut Decoder, buf: &mut ReadBuf, into: &mut Vec<(u32, Message)>) {
    while let Some(frame) = dec.decode(buf).expect("valid stream") {
        into.push((
            frame.request_id,
            Message::decode(&frame).expect("valid message"),
        ));
    }
}

#[test]
fn every_message_round_trips() {
    let covered: Vec<Opcode> = samples().iter().map(Message::opcode).collect();
    for op in Opcode::ALL {
        assert!(covered.contains(op), "no sample for {op}");
    }
    for msg in samples() {
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, 42, &msg);
        let mut buf = ReadBuf::new();
        buf.extend(&bytes);
        let frame = Decoder::new(1 << 20).decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.request_id, 42);
        assert_eq!(Message::decode(&frame).unwrap(), msg);
        assert!(buf.is_empty());
    }
}

#[test]
fn a_stream_split_at_every_offset_decodes_the_same() {
    let (bytes, expected) = stream_of_samples();
    for split in 0..=bytes.len() {
        let mut dec = Decoder::new(1 << 20);
        let mut buf = ReadBuf::new();
        let mut got = Vec::new();
        buf.extend(&bytes[..split]);
        decode_all(&mut dec, &mut buf, &mut got);
        buf.extend(&bytes[split..]);
        decode_all(&mut dec, &mut buf, &mut got);
        assert_eq!(got, expected, "split at {split}");
    }
    // And one byte at a time.
    let mut dec = Decoder::new(1 << 20);
    let mut buf = ReadBuf::new();
    let mut got = Vec::new();
    for b in &bytes {
        buf.extend(std::slice::from_ref(b));
        decode_all(&mut dec, &mut buf, &mut got);
    }
    assert_eq!(got, expected);
}

#[test]
fn payloads_with_appended_fields_still_decode() {
    // The compatibility rule: newer peers may append fields.
    let Message::Info(info) = &samples()[3] else {
        unreachable!()
    };
    let mut payload = Vec::new();
    info.encode(&mut payload);
    payload.extend_from_slice(b"future field");
    assert_eq!(Info::decode(&payload).unwrap(), *info);
}

#[test]
fn truncated_payloads_are_malformed_not_panics() {
    let mut payload = Vec::new();
    let Message::Info(info) = &samples()[3] else {
        unreachable!()
    };
    info.encode(&mut payload);
    // An INFO that ends after tasks processed, or after the manager, is
    // an older server's, whole.
    let newest = 8 + 4 + 8;
    let older = payload.len() - newest - (1 + 8 + 4 + 2 + info.manager.len());
    for cut in 0..payload.len() {
        let decoded = Message::decode_payload(Opcode::Info, &payload[..cut]);
        if cut == older || cut == payload.len() - newest {
            assert!(decoded.is_ok(), "an older server's INFO: {decoded:?}");
            continue;
        }
        let err = decoded.unwrap_err();
        assert_eq!(err.code(), ErrorCode::MALFORMED_PAYLOAD, "cut at {cut}");
    }
}

#[test]
fn an_oversize_declaration_is_refused_before_any_payload_is_buffered() {
    let mut header = [0u8; HEADER_LEN];
    redmap::proto::Header {
        opcode: Opcode::Ping.as_u8(),
        request_id: 5,
        length: u32::MAX,
        crc: 0,
    }
    .write(&mut header);
    let mut dec = Decoder::new(1024 * 1024);
    let mut buf = ReadBuf::new();
    buf.extend(&header);
    let err = dec.decode(&mut buf).unwrap_err();
    assert_eq!(
        err.error,
        ProtoError::FrameTooLarge {
            len: u32::MAX,
            max: 1024 * 1024
        }
    );
    assert_eq!(err.error.code(), ErrorCode::FRAME_TOO_LARGE);
    assert_eq!(
        buf.len(),
        HEADER_LEN,
        "nothing beyond the header was needed"
    );
}

/// Feeds one input through decoder and message decoding the way a server
/// does, checking the decoder's promises on the way.
fn feed(input: &[u8], rng: &mut Rng, buf: &mut ReadBuf, max_size: u32) -> usize {
    let mut dec = Decoder::new(max_size);
    buf.clear();
    let mut frames = 0;
    let mut pos = 0;
    while pos < input.len() {
        let step = 1 + rng.below(64);
        let end = (pos + step).min(input.len());
        buf.extend(&input[pos..end]);
        pos = end;
        loop {
            match dec.decode(buf) {
                Ok(Some(Frame {
                    opcode, payload, ..
                })) => {
                    assert!(payload.len() <= max_size as usize);
                    frames += 1;
                    // Any outcome is fine but a panic.
                    let _ = Message::decode_payload(
                        match Opcode::try_from(opcode) {
                            Ok(op) => op,
                            Err(_) => continue,
                        },
                        &payload,
                    );
                }
                Ok(None) => break,
                Err(e) if e.error.is_fatal() => return frames,
                Err(_) => {}
            }
        }
        // The buffer never holds more than one frame's worth plus a step.
        assert!(buf.len() <= HEADER_LEN + max_size as usize + 64);
    }
    frames
}

#[test]
fn a_hundred_thousand_random_and_mutated_inputs_never_panic() {
    let (valid, _) = stream_of_samples();
    let mut rng = Rng(0x5EED_0F4E_D0AA_AA01);
    let mut decoded_frames = 0;
    let mut buf = ReadBuf::new();
    for round in 0..100_000 {
        let input = match round % 4 {
            // Pure noise.
            0 => {
                let n = rng.below(200);
                rng.bytes(n)
            }
            // Noise behind a valid magic and version, so the header path is taken.
            1 => {
                let mut v = vec![0xA5, 0x4D, 0x01];
                let n = rng.below(120);
                v.extend(rng.bytes(n));
                v
            }
            // A valid stream with a few bytes flipped.
            2 => {
                let mut v = valid.clone();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(v.len());
                    v[i] ^= 1 << rng.below(8);
                }
                v
            }
            // A valid stream truncated, with garbage appended.
            _ => {
                let mut v = valid[..rng.below(valid.len())].to_vec();
                let n = rng.below(40);
                v.extend(rng.bytes(n));
                v
            }
        };
        decoded_frames += feed(&input, &mut rng, &mut buf, 4096);
    }
    // The mutated valid streams must still yield frames, or the loop above
    // exercised nothing but the error paths.
    assert!(
        decoded_frames > 10_000,
        "only {decoded_frames} frames decoded"
    );
}

/// Found by the `payloads` fuzz target: a summary whose result preview is
/// longer than the documented 256 bytes decoded, but did not re-encode to
/// itself (the encoder cuts previews at 256). It is now malformed.
#[test]
fn fuzz_regression_an_overlong_result_preview_is_malformed() {
    let mut long = summary();
    long.result_preview = vec![b'x'; 257];
    let mut payload = Vec::new();
    // Encode by hand with the overlong preview, as a hostile peer would.
    let mut ok = long.clone();
    ok.result_preview = vec![b'x'; 256];
    ok.encode(&mut payload);
    let at = payload
        .windows(4)
        .position(|w| w == 256u32.to_be_bytes())
        .expect("preview length field");
    payload[at..at + 4].copy_from_slice(&257u32.to_be_bytes());
    payload.insert(at + 4, b'x');
    let err = JobSummary::decode(&payload).unwrap_err();
    assert_eq!(err.code(), ErrorCode::MALFORMED_PAYLOAD);
}

#[test]
fn a_jobs_list_of_protocol_1_decodes_with_its_defaults() {
    // The original's request is empty: the newest 100 jobs.
    assert_eq!(
        Message::decode_payload(Opcode::JobsListRequest, &[]).unwrap(),
        Message::JobsListRequest(JobsQuery::default())
    );
    assert_eq!(JobsQuery::default().effective_limit(), 100);
    assert_eq!(
        JobsQuery {
            limit: 5000,
            before: 0
        }
        .effective_limit(),
        1000
    );
    // An older manager's reply ends after the summaries: nothing more (no
    // `more`, nor the spill pairs after it, 16 bytes per summary, nor the
    // shuffle counts, 24).
    let mut payload = Vec::new();
    Message::JobsList(JobsPage {
        jobs: vec![summary()],
        more: 0,
    })
    .encode_payload(&mut payload);
    payload.truncate(payload.len() - 8 - 16 - 24);
    match Message::decode_payload(Opcode::JobsList, &payload).unwrap() {
        Message::JobsList(page) => assert_eq!((page.jobs.len(), page.more), (1, 0)),
        other => panic!("{other:?}"),
    }
}

/// A jobs page from a manager before the spill fields (0.3) still reads,
/// with more than one summary, and each summary's spills come back.
#[test]
fn a_jobs_page_without_the_spill_fields_still_reads() {
    let mut a = summary();
    a.spills = 3;
    a.spilled_bytes = 1000;
    let b = JobSummary { id: 8, ..summary() };
    let page = JobsPage {
        jobs: vec![a.clone(), b.clone()],
        more: 5,
    };
    let mut bytes = Vec::new();
    page.encode(&mut bytes);
    assert_eq!(JobsPage::decode(&bytes).unwrap(), page);
    // The older form: no spill pairs (nor shuffle counts) after `more`.
    let old = &bytes[..bytes.len() - 2 * 16 - 2 * 24];
    let read = JobsPage::decode(old).unwrap();
    assert_eq!(read.more, 5);
    assert_eq!((read.jobs[0].spills, read.jobs[1].id), (0, 8));
}
