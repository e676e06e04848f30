//! protocol.md cannot drift from the code: every hex example in it is
//! decoded and re-encoded by the codec, and every opcode, error code and
//! text command the code knows is in its tables.

use redmap::proto::msg::shuffle::{Part, ReduceOutcome, Source};
use redmap::proto::msg::{
    DropShuffle, ErrorReply, Fetch, Info, JobArgs, JobsPage, JobsQuery, MapOutput, Parts, Reduce,
    Reduced, ShuffleSpec,
};
use redmap::proto::text::TextCommand;
use redmap::proto::{encode_frame, Decoder, ErrorCode, Message, Opcode, ProtoError, ReadBuf};

const DOC: &str = include_str!("../protocol.md");

/// Every ```` ```hex NAME ```` block in the document, as (name, bytes).
fn hex_blocks() -> Vec<(String, Vec<u8>)> {
    let mut blocks = Vec::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("```hex ") else {
            continue;
        };
        let mut bytes = Vec::new();
        for body in lines.by_ref() {
            if body.starts_with("```") {
                break;
            }
            for pair in body.split_whitespace() {
                bytes.push(
                    u8::from_str_radix(pair, 16)
                        .unwrap_or_else(|_| panic!("bad hex '{pair}' in block {name}")),
                );
            }
        }
        blocks.push((name.trim().to_owned(), bytes));
    }
    blocks
}

/// What each example in the document claims to be.
fn expected(name: &str) -> (u32, Message) {
    match name {
        "ping-request" => (1, Message::Ping),
        "ping-reply" => (1, Message::Pong),
        "info-request" => (2, Message::InfoRequest),
        "info-reply" => (
            2,
            Message::Info(Info {
                version: "0.1.0".into(),
                address: "127.0.0.1:9876".into(),
                protocol: 1,
                active_jobs: 0,
                installed_jobs: 2,
                uptime_ms: 61_000,
                tasks_processed: 123_456,
                role: redmap::proto::msg::Role::Worker,
                server_id: 0x0123_4567_89ab_cdef,
                max_size: 209_715_200,
                manager: "10.0.0.5:9899".into(),
                memory_limit: 1 << 30,
                executors: 1,
                executor_deaths: 2,
            }),
        ),
        "error-frame-too-large" => (
            7,
            Message::Error(ErrorReply::from(&ProtoError::FrameTooLarge {
                len: u32::MAX,
                max: redmap::proto::DEFAULT_MAX_SIZE,
            })),
        ),
        "handshake-hello" => (1, Message::Hello(std::array::from_fn(|i| i as u8))),
        "handshake-challenge" => (
            1,
            Message::Challenge(redmap::proto::msg::Challenge {
                nonce: std::array::from_fn(|i| 32 + i as u8),
                proof: worked_example().0,
            }),
        ),
        "handshake-auth" => (2, Message::Auth(worked_example().1)),
        "handshake-ok" => (2, Message::AuthOk),
        "jobs-list-request" => (
            3,
            Message::JobsListRequest(JobsQuery {
                limit: 20,
                before: 41,
            }),
        ),
        "jobs-list-reply" => (3, Message::JobsList(JobsPage::default())),
        "claim-request" => (
            1,
            Message::Claim(redmap::proto::msg::Claim {
                manager: "10.0.0.5:9899".into(),
                manager_id: 0x1122_3344_5566_7788,
                force: false,
            }),
        ),
        "claim-reply" => (
            1,
            Message::Claimed(redmap::proto::msg::Claimed {
                worker_id: 0x0123_4567_89ab_cdef,
                max_size: 4096,
            }),
        ),
        "run-job-args" => (
            1,
            Message::RunJob(redmap::proto::msg::RunJob {
                hash: std::array::from_fn(|i| 0x10 + i as u8),
                name: "wc".into(),
                args: JobArgs::new(&["corpus.txt", "--top", "20"]).unwrap(),
                options: Default::default(),
            }),
        ),
        "map-batch-args" => (9, {
            let mut tasks = redmap::proto::msg::TaskList::new();
            tasks.push(b"42");
            Message::MapBatch(redmap::proto::msg::MapBatch {
                hash: std::array::from_fn(|i| 0x10 + i as u8),
                batch_id: 7,
                tasks,
                reply_limit: 4096,
                args: JobArgs::new(&["corpus.txt"]).unwrap(),
                shuffle: None,
            })
        }),
        "output-request" => (
            4,
            Message::OutputRequest(redmap::proto::msg::OutputRequest {
                job: 7,
                form: redmap::proto::msg::OutputForm::Text,
                offset: 0,
                max: 64512,
            }),
        ),
        "output-reply" => (
            4,
            Message::Output(redmap::proto::msg::OutputChunk {
                total: 14,
                offset: 0,
                chunk: b"apple\t3\nfig\t1\n".to_vec(),
            }),
        ),
        "map-batch-shuffle" => (9, {
            let mut tasks = redmap::proto::msg::TaskList::new();
            tasks.push(b"42");
            Message::MapBatch(redmap::proto::msg::MapBatch {
                hash: std::array::from_fn(|i| 0x10 + i as u8),
                batch_id: 7,
                tasks,
                reply_limit: 4096,
                args: JobArgs::default(),
                shuffle: Some(ShuffleSpec {
                    job: 3,
                    partitions: 2,
                    total_order: false,
                }),
            })
        }),
        "batch-result-map-output" => (
            9,
            Message::BatchResult(redmap::proto::msg::BatchResult {
                batch_id: 7,
                processed: 1,
                value: None,
                failures: vec![],
                busy_us: 1500,
                map_output: Some(MapOutput {
                    file: 12,
                    segments: vec![10, 0],
                    samples: vec![],
                }),
            }),
        ),
        "batch-result-samples" => (
            9,
            Message::BatchResult(redmap::proto::msg::BatchResult {
                batch_id: 7,
                processed: 1,
                value: None,
                failures: vec![],
                busy_us: 1500,
                map_output: Some(MapOutput {
                    file: 12,
                    segments: vec![10],
                    samples: vec![b"\x02ab".to_vec(), b"\x02cd".to_vec()],
                }),
            }),
        ),
        "reduce-range" => (
            14,
            Message::Reduce(Reduce {
                hash: std::array::from_fn(|i| 0x10 + i as u8),
                job: 3,
                partition: 1,
                args: JobArgs::default(),
                sources: vec![Source {
                    addr: "10.0.0.2:7001".into(),
                    files: vec![(4, 6)],
                }],
                range: Some(redmap::proto::msg::shuffle::KeyRange {
                    lo: Some(b"m".to_vec()),
                    hi: None,
                }),
                output_dir: "/shared/wc".into(),
                output_form: 1,
            }),
        ),
        "fetch" => (
            5,
            Message::Fetch(Fetch {
                job: 3,
                file: 12,
                segment: 0,
                offset: 0,
                max: 65536,
                range: None,
            }),
        ),
        "fetched" => (
            5,
            Message::Fetched(redmap::proto::msg::OutputChunk {
                total: 10,
                offset: 0,
                chunk: b"\x02ab\x012\x02cd\x011".to_vec(),
            }),
        ),
        "reduce" => (
            11,
            Message::Reduce(Reduce {
                hash: std::array::from_fn(|i| 0x10 + i as u8),
                job: 3,
                partition: 0,
                args: JobArgs::default(),
                sources: vec![
                    Source {
                        addr: String::new(),
                        files: vec![(12, 10)],
                    },
                    Source {
                        addr: "10.0.0.2:7001".into(),
                        files: vec![(4, 6)],
                    },
                ],
                range: None,
                output_dir: String::new(),
                output_form: 1,
            }),
        ),
        "reduced" => (11, {
            let mut r = Reduced::failed(0, ReduceOutcome::Done, String::new());
            r.file = 13;
            r.binary_len = 16;
            r.text_len = 12;
            r.fetched = 16;
            r.preview = b"\x02ab\x013".to_vec();
            Message::Reduced(r)
        }),
        "drop-shuffle" => (12, Message::DropShuffle(DropShuffle { job: 3, what: 1 })),
        "dropped" => (12, Message::Dropped),
        "parts-request" => (6, Message::PartsRequest(3)),
        "parts" => (
            6,
            Message::Parts(Parts {
                parts: vec![
                    Part {
                        addr: "10.0.0.1:7001".into(),
                        file: 13,
                        binary_len: 16,
                        text_len: 12,
                        text_error: String::new(),
                        path: String::new(),
                    },
                    Part {
                        addr: "10.0.0.2:7001".into(),
                        file: 5,
                        binary_len: 0,
                        text_len: 0,
                        text_error: String::new(),
                        path: String::new(),
                    },
                ],
            }),
        ),
        other => panic!("protocol.md has a hex block '{other}' that no test checks"),
    }
}

#[test]
fn every_hex_example_decodes_to_what_the_text_says_and_back() {
    let blocks = hex_blocks();
    assert!(blocks.len() >= 5, "found only {} hex blocks", blocks.len());
    for (name, bytes) in &blocks {
        let (id, msg) = expected(name);
        // Document → codec.
        let mut buf = ReadBuf::new();
        buf.extend(bytes);
        let frame = Decoder::new(redmap::proto::DEFAULT_MAX_SIZE)
            .decode(&mut buf)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: incomplete frame"));
        assert!(buf.is_empty(), "{name}: trailing bytes");
        assert_eq!(frame.request_id, id, "{name}");
        assert_eq!(Message::decode(&frame).unwrap(), msg, "{name}");
        // Codec → document.
        let mut out = Vec::new();
        encode_frame(&mut out, id, &msg);
        assert_eq!(&out, bytes, "{name}: encoding differs from the document");
    }
    let names: Vec<&str> = blocks.iter().map(|(n, _)| n.as_str()).collect();
    for required in ["ping-request", "ping-reply", "info-request", "info-reply"] {
        assert!(names.contains(&required), "protocol.md lacks {required}");
    }
}

#[test]
fn every_opcode_is_in_the_opcode_table() {
    for op in Opcode::ALL {
        let row = format!("| 0x{:02X} | {} |", op.as_u8(), op.name());
        assert!(DOC.contains(&row), "protocol.md lacks the row {row}");
    }
}

#[test]
fn every_error_code_is_in_the_error_table_with_its_flags() {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    for row in ErrorCode::ALL {
        let line = format!(
            "| {} | {} | {} | {} |",
            row.code.0,
            row.name,
            yes_no(row.retriable),
            yes_no(row.closes)
        );
        assert!(DOC.contains(&line), "protocol.md lacks the row {line}");
    }
}

#[test]
fn every_text_command_is_documented() {
    for (_, name, _) in TextCommand::ALL {
        let row = format!("| `{name}` |");
        assert!(
            DOC.contains(&row),
            "protocol.md lacks the text command {name}"
        );
    }
}

/// The keys of `key: value` lines.
fn keys(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once(": ").map(|(k, _)| k.to_owned()))
        .collect()
}

#[test]
fn every_key_the_text_session_prints_is_documented() {
    use redmap::proto::msg::ManagerStats;
    use redmap::proto::text::{render_info, render_stats};
    let info = Info {
        version: "0.1.0".into(),
        address: "127.0.0.1:9876".into(),
        protocol: 1,
        active_jobs: 0,
        installed_jobs: 0,
        uptime_ms: 0,
        tasks_processed: 0,
        role: redmap::proto::msg::Role::Worker,
        server_id: 1,
        max_size: 1,
        manager: String::new(),
        memory_limit: 0,
        executors: 0,
        executor_deaths: 0,
    };
    let stats = render_stats(&ManagerStats::default());
    for (command, text) in [("info", render_info(&info)), ("stats", stats)] {
        let keys = keys(&text);
        assert!(keys.len() >= 7, "{command}: {text}");
        for key in keys {
            let row = format!("| `{key}` |");
            assert!(
                DOC.contains(&row),
                "protocol.md lacks the row {row} for `{command}`"
            );
        }
    }
}

#[test]
fn the_documented_header_constants_match() {
    assert!(DOC.contains("always `A5 4D`"));
    assert_eq!(redmap::proto::MAGIC, [0xA5, 0x4D]);
    assert_eq!(redmap::proto::HEADER_LEN, 16);
    assert!(DOC.contains("Every frame is a 16-byte header"));
    assert!(DOC.contains(&format!(
        "Protocol version: **{}**",
        redmap::proto::PROTOCOL_VERSION
    )));
    assert!(DOC.contains("default 200 MiB =\n209715200 bytes"));
    assert_eq!(redmap::proto::DEFAULT_MAX_SIZE, 209_715_200);
}

#[test]
fn the_plugin_abi_section_matches_the_abi() {
    use redmap::job::abi;
    assert!(DOC.contains(&format!("ABI version: **{}**", abi::ABI_VERSION)));
    for (value, name) in [
        (abi::STATUS_OK, "OK"),
        (abi::STATUS_ERROR, "ERROR"),
        (abi::STATUS_END, "END"),
        (abi::STATUS_PANIC, "PANIC"),
    ] {
        let row = format!("| {value} | `{name}` |");
        assert!(DOC.contains(&row), "protocol.md lacks the status row {row}");
    }
    let size = std::mem::size_of::<abi::JobEntry>();
    if cfg!(target_pointer_width = "64") {
        let v1 = abi::V1_ENTRY_SIZE;
        assert!(DOC.contains(&format!("({v1} and {size} on 64-bit platforms")));
    }
    // The C header declares the same fields, in the same order, as the doc's table.
    let header = redmap::plugin::compile::C_HEADER;
    let fields = [
        "abi_version",
        "struct_size",
        "load_open",
        "load_next",
        "load_close",
        "map",
        "reduce",
        "done",
        "count",
        "free",
        "kind",
        "flags",
        "instance_new",
        "instance_drop",
        "load_open_v3",
        "count_v3",
        "map_v3",
        "reduce_v3",
        "done_v3",
        "map_batch",
        "reducer_new",
        "reducer_add",
        "reducer_finish",
        "reducer_free",
        "format",
        "fold_batch",
        "load_batch",
    ];
    let mut last_doc = 0;
    let mut last_header = 0;
    for field in fields {
        let row = format!("| `{field}` |");
        let at = DOC
            .find(&row)
            .unwrap_or_else(|| panic!("no doc row for {field}"));
        assert!(at > last_doc, "{field} out of order in protocol.md");
        last_doc = at;
        let decl = header
            .find(&format!("{field};"))
            .or_else(|| header.find(&format!("(*{field})")))
            .unwrap_or_else(|| panic!("redmap_job.h lacks {field}"));
        assert!(decl > last_header, "{field} out of order in redmap_job.h");
        last_header = decl;
    }
    // The declarations written out in the document are the header's own.
    assert_eq!(
        c_tokens(c_block()),
        c_tokens(header_declarations(header)),
        "protocol.md's ```c block differs from src/plugin/redmap_job.h"
    );
    for (value, name) in [(0, "OK"), (1, "ERROR"), (2, "END"), (3, "PANIC")] {
        assert!(header.contains(&format!("#define REDMAP_{name} {value}")));
    }
    assert!(header.contains(&format!("#define REDMAP_ABI_VERSION {}", abi::ABI_VERSION)));
}

/// The document's one ```` ```c ```` block.
fn c_block() -> &'static str {
    let start = DOC.find("```c\n").expect("protocol.md has no ```c block") + 5;
    let len = DOC[start..].find("```").expect("unterminated ```c block");
    &DOC[start..start + len]
}

/// The header from its first `#define` through `redmap_job_entry`'s
/// prototype: what a job's author needs (the guard and includes aside).
fn header_declarations(header: &str) -> &str {
    let start = header
        .find("#define REDMAP_ABI_VERSION")
        .expect("redmap_job.h lacks REDMAP_ABI_VERSION");
    let end = header
        .find("redmap_job_entry(void);")
        .expect("redmap_job.h lacks redmap_job_entry")
        + "redmap_job_entry(void);".len();
    &header[start..end]
}

/// C source without comments, in words split at blanks and punctuation,
/// so that layout and comments may differ but not one declaration.
fn c_tokens(source: &str) -> Vec<String> {
    let mut code = String::new();
    let mut rest = source;
    while let Some(at) = rest.find("/*") {
        code.push_str(&rest[..at]);
        code.push(' ');
        rest = rest[at..]
            .find("*/")
            .map_or("", |end| &rest[at + end + 2..]);
    }
    code.push_str(rest);
    let mut tokens = Vec::new();
    let mut word = String::new();
    for c in code.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            tokens.push(c.to_string());
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
}

/// The handshake's worked example, computed by the code: (server proof,
/// client proof) for the documented secret and nonces.
fn worked_example() -> ([u8; 32], [u8; 32]) {
    let secret = redmap::net::auth::Secret::new(b"correct horse battery staple".to_vec()).unwrap();
    let client: [u8; 32] = std::array::from_fn(|i| i as u8);
    let server: [u8; 32] = std::array::from_fn(|i| 32 + i as u8);
    (
        secret.server_proof(&client, &server),
        secret.client_proof(&client, &server),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_handshake_worked_example_matches_the_code() {
    let (server, client) = worked_example();
    assert!(DOC.contains(&format!("server proof = {}", hex(&server))));
    assert!(DOC.contains(&format!("client proof = {}", hex(&client))));
    assert!(DOC.contains("\"redmap-v1-server\" ‖ client nonce ‖ server nonce"));
    assert!(DOC.contains("\"redmap-v1-client\" ‖ client nonce ‖ server nonce"));
    // The key is the secret's bytes, written out, line end or not.
    let key = b"correct horse battery staple";
    let spaced: Vec<String> = key.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        DOC.contains(&format!("key = {}", spaced.join(" "))),
        "protocol.md lacks the key bytes"
    );
    let from_file =
        redmap::net::auth::Secret::new(b"correct horse battery staple\r\n".to_vec()).unwrap();
    let (c, n): ([u8; 32], [u8; 32]) = (
        std::array::from_fn(|i| i as u8),
        std::array::from_fn(|i| 32 + i as u8),
    );
    assert_eq!(from_file.server_proof(&c, &n), server);
}
