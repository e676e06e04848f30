//! Reporting, as an operator meets it: Prometheus scrapes /metrics, scripts
//! read /api/status, a browser shows the live page, and with a secret
//! nobody without it sees any of them.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::util::{self, eventually, redmap, repo, spawn_server, stderr, stdout, Server, TempDir};

fn example(name: &str) -> String {
    repo().join("examples").join(name).display().to_string()
}

fn get(addr: SocketAddr, path: &str, password: Option<&str>) -> (u16, String) {
    util::http_get(addr, path, password)
}

/// A manager with --http on a free port, two workers attached.
struct Monitored {
    dir: TempDir,
    manager: Server,
    http: SocketAddr,
    _workers: Vec<Server>,
}

fn monitored(env: &[(&str, &str)]) -> Monitored {
    let dir = TempDir::new("monitor");
    let mut cmd = redmap();
    cmd.args(["manager", "start", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .current_dir(dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let manager = spawn_server(cmd);
    let line = manager.next_line().expect("the monitor's address");
    let http: SocketAddr = line
        .trim()
        .trim_start_matches("redmap monitor on http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("unexpected line {line:?}"));
    let workers: Vec<Server> = (0..2)
        .map(|_| {
            let mut w = redmap();
            w.args(["worker", "start", "127.0.0.1:0"]);
            for (k, v) in env {
                w.env(k, v);
            }
            spawn_server(w)
        })
        .collect();
    let mut attach = redmap();
    attach.args(["manager", "attach", "-m", &manager.addr_arg()]);
    attach.args(workers.iter().map(Server::addr_arg));
    for (k, v) in env {
        attach.env(k, v);
    }
    let out = util::run(attach);
    assert!(out.status.success(), "{}", stderr(&out));
    Monitored {
        dir,
        manager,
        http,
        _workers: workers,
    }
}

/// Runs the sum job on the monitored manager, with `job_args` (`--`, N).
fn submit(m: &Monitored, job_args: &[&str]) -> std::process::Child {
    redmap()
        .args(["run", "-m", &m.manager.addr_arg(), &example("sum.rs")])
        .args(job_args)
        .current_dir(m.dir.path())
        .env("REDMAP_CACHE_DIR", m.dir.join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Parses Prometheus text: every sample's metric has a TYPE line, and
/// every value is a number. Returns (name with labels, value) pairs.
fn parse_metrics(text: &str) -> Vec<(String, f64, String)> {
    let mut types = std::collections::HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "bad type {kind}"
            );
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let name = series.split('{').next().unwrap();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|b| types.get(*b).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        let kind = types
            .get(base)
            .unwrap_or_else(|| panic!("{name} has no TYPE line"))
            .clone();
        samples.push((series.to_owned(), value, kind));
    }
    samples
}

fn value(samples: &[(String, f64, String)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _, _)| s == series)
        .unwrap_or_else(|| panic!("no sample {series}"))
        .1
}

#[test]
fn metrics_parse_as_prometheus_text_and_counters_move_during_a_job() {
    let m = monitored(&[]);
    let job = submit(&m, &["--", "3000000"]);
    let mut first = None;
    assert!(
        eventually(util::WAIT, || {
            let (code, body) = get(m.http, "/metrics", None);
            assert_eq!(code, 200);
            let samples = parse_metrics(&body);
            let Some(processed) = samples
                .iter()
                .find(|(s, _, _)| s == "redmap_tasks_processed_total")
                .map(|(_, v, _)| *v)
            else {
                return false; // not published yet
            };
            if processed > 0.0 && first.is_none() {
                first = Some(samples);
                return false;
            }
            first
                .as_ref()
                .is_some_and(|f| processed > value(f, "redmap_tasks_processed_total"))
        }),
        "redmap_tasks_processed_total did not move during the job"
    );
    let out = job.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    thread::sleep(Duration::from_millis(1200));
    let samples = parse_metrics(&get(m.http, "/metrics", None).1);
    for name in [
        "redmap_tasks_processed_total",
        "redmap_tasks_failed_total",
        "redmap_tasks_retried_total",
        "redmap_bytes_in_total",
        "redmap_bytes_out_total",
        "redmap_auth_failures_total",
        "redmap_duplicates_dropped_total",
        "redmap_batches_in_flight",
        "redmap_batch_rtt_seconds_count",
        "redmap_frames_received_total{opcode=\"BATCH_RESULT\"}",
        "redmap_workers{state=\"active\"}",
        "redmap_jobs{state=\"finished\"}",
    ] {
        value(&samples, name);
    }
    assert_eq!(value(&samples, "redmap_tasks_processed_total"), 3_000_000.0);
    assert_eq!(value(&samples, "redmap_workers{state=\"active\"}"), 2.0);
    assert_eq!(value(&samples, "redmap_jobs{state=\"finished\"}"), 1.0);
    assert!(value(&samples, "redmap_batch_rtt_seconds_count") > 0.0);
    for (series, _, kind) in &samples {
        if kind == "counter" {
            assert!(series.contains("_total"), "counter {series} lacks _total");
        }
    }
}

#[test]
fn api_status_matches_the_cli_json() {
    let m = monitored(&[]);
    let out = submit(&m, &[]).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    thread::sleep(Duration::from_millis(1200)); // one publication
    let (code, status) = get(m.http, "/api/status", None);
    assert_eq!(code, 200);
    let jobs = stdout(&util::run(redmap().args([
        "jobs",
        "list",
        "--json",
        &m.manager.addr_arg(),
    ])));
    assert!(
        status.contains(&format!("\"jobs\":{}", jobs.trim())),
        "/api/status jobs differ from `jobs list --json`:\n{status}\n{jobs}"
    );
    let stats = stdout(&util::run(redmap().args([
        "manager",
        "stats",
        "--json",
        &m.manager.addr_arg(),
    ])));
    // The same structure: the same keys in the same order (counters move).
    let keys = |s: &str| -> Vec<String> {
        s.split('"')
            .skip(1)
            .step_by(2)
            .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .map(str::to_owned)
            .collect()
    };
    let manager_part = status
        .split_once("\"manager\":")
        .and_then(|(_, rest)| rest.split_once(",\"workers\":["))
        .map(|(m, _)| m.to_owned())
        .expect("manager object");
    assert_eq!(keys(&manager_part), keys(stats.trim()));
    assert!(status.contains("\"workers\":[{\"address\""), "{status}");
    assert!(status.contains("\"throughput\":["), "{status}");
    let (code, page) = get(m.http, "/", None);
    assert_eq!(code, 200);
    assert!(page.contains("<title>redmap monitor</title>") && page.contains("api/status"));
}

#[test]
fn with_a_secret_the_monitor_requires_it_as_password() {
    let m = monitored(&[("REDMAP_SECRET", "monitor-secret")]);
    for path in ["/", "/api/status", "/metrics"] {
        assert_eq!(get(m.http, path, None).0, 401, "{path} without a password");
        assert_eq!(
            get(m.http, path, Some("wrong")).0,
            401,
            "{path} with a wrong one"
        );
        assert_eq!(
            get(m.http, path, Some("monitor-secret")).0,
            200,
            "{path} with the secret"
        );
    }
    // Protected mode applies to the HTTP address too.
    let out = util::run(
        redmap()
            .args(["manager", "start", "127.0.0.1:0", "--http", ":0"])
            .env_remove("REDMAP_SECRET"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("refusing to serve HTTP on :0"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_browser_shows_the_job_advancing_and_the_workers() {
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(chromium) = chromium else {
        eprintln!("SKIPPED a_browser_shows_the_job_advancing_and_the_workers: Chromium is not installed (apt-get install chromium)");
        return;
    };
    let m = monitored(&[]);
    let job = submit(&m, &["--", "6000000"]);
    let profile = TempDir::new("chromium");
    let url = format!("http://{}/", m.http);
    let dump = |shot: Option<&std::path::Path>| -> String {
        let mut cmd = Command::new(chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=2500",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
        match shot {
            Some(path) => {
                cmd.arg(format!("--screenshot={}", path.display()))
                    .arg("--window-size=1200,800");
            }
            None => {
                cmd.arg("--dump-dom");
            }
        }
        cmd.arg(&url);
        stdout(&util::run(cmd))
    };
    let processed = |dom: &str| -> Option<u64> {
        let at = dom.find("data-job=\"1\" data-processed=\"")?;
        dom[at + 29..].split('"').next()?.parse().ok()
    };
    let mut first = String::new();
    assert!(
        eventually(util::WAIT, || {
            first = dump(None);
            first.contains("data-address=\"127.0.0.1:") && processed(&first).is_some_and(|p| p > 0)
        }),
        "no worker rows or no running job row on the page:\n{first}"
    );
    let p1 = processed(&first).expect("the job row");
    let mut p2 = p1;
    assert!(
        eventually(util::WAIT, || {
            p2 = processed(&dump(None)).unwrap_or(p1);
            p2 > p1
        }),
        "the job's progress did not advance on the page ({p1} then {p2})"
    );
    let shot = m.dir.join("monitor.png");
    dump(Some(&shot));
    assert!(
        std::fs::metadata(&shot).is_ok_and(|md| md.len() > 1000),
        "no screenshot"
    );
    let out = job.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_worker_serves_its_metrics_and_status_over_http() {
    let mut cmd = redmap();
    cmd.args(["worker", "start", "127.0.0.1:0", "--http", "127.0.0.1:0"]);
    let worker = spawn_server(cmd);
    let line = worker.next_line().expect("the metrics address");
    let http: SocketAddr = line
        .trim()
        .trim_start_matches("redmap worker metrics on http://")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap_or_else(|_| panic!("unexpected line {line:?}"));
    assert!(util::ping(worker.addr));
    assert!(eventually(util::WAIT, || {
        let (code, body) = get(http, "/metrics", None);
        code == 200 && body.contains("redmap_frames_received_total{opcode=\"PING\"}")
    }));
    let samples = parse_metrics(&get(http, "/metrics", None).1);
    assert_eq!(value(&samples, "redmap_tasks_processed_total"), 0.0);
    let (code, status) = get(http, "/api/status", None);
    assert_eq!(code, 200);
    assert!(
        status.contains(&format!("\"address\":\"{}\"", worker.addr)),
        "{status}"
    );
    assert_eq!(get(http, "/", None).0, 404, "workers have no page");
}
