//! Codec throughput: encoding and decoding frames, in frames/s and bytes/s.
//!
//! Run with `cargo bench --bench codec`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use redmap::proto::msg::Info;
use redmap::proto::{encode_frame, Decoder, Message, ReadBuf};

fn info() -> Message {
    Message::Info(Info {
        version: "0.1.0".into(),
        address: "127.0.0.1:9876".into(),
        protocol: 1,
        active_jobs: 1,
        installed_jobs: 2,
        uptime_ms: 61_000,
        tasks_processed: 123_456,
        role: redmap::proto::msg::Role::Worker,
        server_id: 0x0123_4567_89ab_cdef,
        max_size: 209_715_200,
        manager: "10.0.0.5:9899".into(),
        memory_limit: 1 << 30,
        executors: 1,
        executor_deaths: 0,
    })
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, msg) in [("ping", Message::Ping), ("info", info())] {
        let mut out = Vec::with_capacity(1 << 20);
        group.throughput(Throughput::Elements(1000));
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                for id in 0..1000 {
                    encode_frame(&mut out, id, black_box(&msg));
                }
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, msg) in [("ping", Message::Ping), ("info", info())] {
        let mut stream = Vec::new();
        for id in 0..1000 {
            encode_frame(&mut stream, id, &msg);
        }
        group.throughput(Throughput::Bytes(stream.len() as u64));
        let mut buf = ReadBuf::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut dec = Decoder::new(1 << 20);
                buf.extend(&stream);
                let mut n = 0;
                while let Ok(Some(frame)) = dec.decode(&mut buf) {
                    black_box(Message::decode(&frame).ok());
                    n += 1;
                }
                assert_eq!(n, 1000);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
