//! End-to-end throughput on loopback: the sum job (tasks/s) and wordcount
//! (bytes/s) on a manager with two workers, next to the embedded run of the
//! same job in one process, the in-process baseline. Each measurement is a
//! whole `redmap run` of the release binary. `benches/e2e.py` prints the
//! same comparison as medians and ratios.
//!
//! Run with `cargo bench --bench loopback`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const TASKS: u64 = 1_000_000;
const TEXT_BYTES: usize = 8 * 1024 * 1024;

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_redmap")
}

fn configure(cmd: &mut Command, dir: &Path) {
    cmd.current_dir(dir)
        .env("REDMAP_CACHE_DIR", dir.join("cache"))
        .env("RUST_LOG", "warn");
}

fn start(kind: &str, dir: &Path) -> Server {
    let mut cmd = Command::new(bin());
    cmd.args([kind, "start", "127.0.0.1:0"]);
    configure(&mut cmd, dir);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("server address");
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    Server(child, addr)
}

fn run(dir: &Path, args: &[&str]) {
    let mut cmd = Command::new(bin());
    cmd.arg("run").args(args);
    configure(&mut cmd, dir);
    let out = cmd.output().expect("redmap run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_text(path: &Path) {
    let mut text = String::with_capacity(TEXT_BYTES + 100);
    let mut x: u64 = 7;
    while text.len() < TEXT_BYTES {
        for _ in 0..12 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.push_str(&format!("w{} ", (x % 4096) * (x % 7) / 7));
        }
        text.push('\n');
    }
    std::fs::write(path, text).expect("write text");
}

fn loopback(c: &mut Criterion) {
    let dir: PathBuf = std::env::temp_dir().join(format!("redmap-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    write_text(&dir.join("text.txt"));
    let manager = start("manager", &dir);
    let workers = [start("worker", &dir), start("worker", &dir)];
    let status = Command::new(bin())
        .args([
            "manager",
            "attach",
            "-m",
            &manager.1,
            &workers[0].1,
            &workers[1].1,
        ])
        .stdout(Stdio::null())
        .status()
        .expect("attach");
    assert!(status.success());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sum = repo.join("examples/sum.rs").display().to_string();
    let tasks = TASKS.to_string();
    // The byte-level word count: the original contract's heavy job.
    let wc = repo
        .join("tests/jobs/wordcount_bytes.rs")
        .display()
        .to_string();
    let text = dir.join("text.txt").display().to_string();

    let mut group = c.benchmark_group("loopback");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(TASKS));
    group.bench_function("sum/embedded", |b| {
        b.iter(|| run(&dir, &["--threads", "2", &sum, "--", &tasks]))
    });
    group.bench_function("sum/manager+2 workers", |b| {
        b.iter(|| run(&dir, &["-m", &manager.1, &sum, "--", &tasks]))
    });
    group.throughput(Throughput::Bytes(TEXT_BYTES as u64));
    group.bench_function("wordcount/embedded", |b| {
        b.iter(|| run(&dir, &["--threads", "2", &wc, "--", &text, "2000"]))
    });
    group.bench_function("wordcount/manager+2 workers", |b| {
        b.iter(|| run(&dir, &["-m", &manager.1, &wc, "--", &text, "2000"]))
    });
    group.finish();
    drop(workers);
    drop(manager);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, loopback);
criterion_main!(benches);
