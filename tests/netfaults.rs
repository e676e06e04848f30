//! Network faults between real hosts: a manager and two workers, each in
//! its own network namespace with its own 10.x address on a test bridge
//! (the bridge lives in a namespace of its own too, so nothing touches the
//! machine's network). One worker's link is then slowed and made lossy
//! (with `tc netem`, else a token bucket that drops what it cannot queue),
//! or cut in the middle of a job and restored: the job's
//! result must stay exact. Runs only as root where `ip netns` works, and
//! says so when it skips. Every namespace is removed, even on failure.

use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::util::{self, eventually, repo, spawn_server, stderr, Server, TempDir};

/// The test's namespaces, deleted on drop.
struct Net {
    prefix: String,
    names: Vec<String>,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Net {
    fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    /// hub (bridge) + manager, w1, w2 on 10.213.N.{1,2,3}/24.
    fn build(subnet: u8) -> Option<Net> {
        let prefix = format!("rmt{}s{subnet}", std::process::id());
        let mut net = Net {
            prefix,
            names: Vec::new(),
        };
        let hub = net.ns("hub");
        if !ip(&["netns", "add", &hub]) {
            return None;
        }
        net.names.push(hub.clone());
        let ok = ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])
            && ip(&["-n", &hub, "link", "set", "br0", "up"]);
        if !ok {
            return None;
        }
        for (i, node) in ["m", "w1", "w2"].iter().enumerate() {
            let ns = net.ns(node);
            if !ip(&["netns", "add", &ns]) {
                return None;
            }
            net.names.push(ns.clone());
            let veth = format!("v{node}");
            let addr = format!("10.213.{subnet}.{}/24", i + 1);
            let ok = ip(&[
                "-n", &hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]) && ip(&["-n", &hub, "link", "set", &veth, "master", "br0", "up"])
                && ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])
                && ip(&["-n", &ns, "link", "set", "eth0", "up"])
                && ip(&["-n", &ns, "link", "set", "lo", "up"]);
            if !ok {
                return None;
            }
        }
        Some(net)
    }

    fn exec(&self, node: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.ns(node),
            env!("CARGO_BIN_EXE_redmap"),
        ])
        .env_remove("RUST_LOG")
        // Across "machines", the cluster runs with a secret (protected mode
        // refuses non-loopback addresses without one).
        .env("REDMAP_SECRET", "netns-test-secret");
        cmd
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            ip(&["netns", "del", name]);
        }
    }
}

fn setup(subnet: u8) -> Option<(Net, TempDir, Server, Vec<Server>, String)> {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root {
        eprintln!("SKIPPED network fault test: needs root for ip netns");
        return None;
    }
    let Some(net) = Net::build(subnet) else {
        eprintln!("SKIPPED network fault test: cannot create network namespaces here");
        return None;
    };
    let dir = TempDir::new("netns");
    let m = format!("10.213.{subnet}.1:9899");
    let mut cmd = net.exec("m");
    cmd.args(["manager", "start", &m, "--read-timeout", "2s"])
        .current_dir(dir.path());
    let manager = spawn_server(cmd);
    let workers: Vec<Server> = ["w1", "w2"]
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut cmd = net.exec(node);
            cmd.args([
                "worker",
                "start",
                &format!("10.213.{subnet}.{}:9876", i + 2),
            ]);
            spawn_server(cmd)
        })
        .collect();
    let mut attach = net.exec("m");
    attach.args([
        "manager",
        "attach",
        "-m",
        &m,
        &format!("10.213.{subnet}.2:9876"),
        &format!("10.213.{subnet}.3:9876"),
    ]);
    let out = util::run(&mut attach);
    assert!(
        out.status.success(),
        "attach across namespaces: {}",
        stderr(&out)
    );
    Some((net, dir, manager, workers, m))
}

/// The sum job over `tasks` tasks (its argument), run from the manager's
/// namespace.
fn run_sum(net: &Net, dir: &TempDir, manager: &str, tasks: u64) -> std::process::Child {
    let mut cmd = net.exec("m");
    cmd.args([
        "run",
        "-m",
        manager,
        &repo().join("examples/sum.rs").display().to_string(),
        "--",
        &tasks.to_string(),
    ])
    .env("REDMAP_CACHE_DIR", dir.join("cache"))
    .current_dir(dir.path())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd.spawn().expect("redmap run in the manager's namespace")
}

/// The sum job's result for `n` tasks (n + 1 each).
fn expected(n: u64) -> String {
    (n * (n + 1) / 2 + n).to_string()
}

/// Packets the qdisc on `dev` in namespace `ns` has dropped so far.
fn qdisc_drops(ns: &str, dev: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "tc", "-s", "qdisc", "show", "dev", dev])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // "Sent 1234 bytes 56 pkt (dropped 7, overlimits 8 requeues 0)"
    out.split("dropped ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_slow_lossy_link_to_one_worker_leaves_the_result_exact() {
    let Some((net, dir, _manager, _workers, m)) = setup(41) else {
        return;
    };
    let w1 = net.ns("w1");
    let hub = net.ns("hub");
    let netem = [
        "netns", "exec", &w1, "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay",
        "100ms", "loss", "2%",
    ];
    // Without sch_netem (some kernels lack it), a token bucket does it the
    // way a thin, congested link would: 2 Mbit/s each way, packets queued
    // up to 100 ms and dropped past that.
    let shaped = !ip(&netem);
    if shaped {
        let tbf = |ns: &str, dev: &str| {
            ip(&[
                "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                "2mbit", "burst", "4kb", "latency", "100ms",
            ])
        };
        if !(tbf(&w1, "eth0") && tbf(&hub, "vw1")) {
            eprintln!(
                "SKIPPED a_slow_lossy_link_to_one_worker_leaves_the_result_exact: \
                 this kernel has neither the netem nor the tbf qdisc"
            );
            return;
        }
        eprintln!("note: no tc netem here; the link is shaped with tbf instead");
    }
    let out = run_sum(&net, &dir, &m, 300_000).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let result = std::fs::read_to_string(dir.join("result")).unwrap();
    assert_eq!(result, expected(300_000));
    if shaped {
        let dropped = qdisc_drops(&w1, "eth0") + qdisc_drops(&hub, "vw1");
        eprintln!("packets dropped on the shaped link: {dropped}");
        assert!(dropped > 0, "the shaped link never dropped a packet");
    }
}

#[test]
fn a_link_cut_mid_job_and_restored_leaves_the_result_exact() {
    let tasks = 3_000_000;
    let Some((net, dir, _manager, _workers, m)) = setup(42) else {
        return;
    };
    let job = run_sum(&net, &dir, &m, tasks);
    // Cut once the job is under way (its first results are in).
    let mut jobs = net.exec("m");
    jobs.args(["jobs", "list", "--json", &m]);
    assert!(
        eventually(util::WAIT, || {
            let text = util::stdout(&util::run(&mut jobs));
            text.contains("\"status\":\"running\"") && !text.contains("\"processed\":0,")
        }),
        "the job did not start"
    );
    assert!(
        ip(&["-n", &net.ns("w1"), "link", "set", "eth0", "down"]),
        "cut"
    );
    assert!(
        !dir.join("result").exists(),
        "the job was over before the cut"
    );
    thread::sleep(Duration::from_secs(4));
    assert!(
        ip(&["-n", &net.ns("w1"), "link", "set", "eth0", "up"]),
        "restore"
    );
    let out = job.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let result = std::fs::read_to_string(dir.join("result")).unwrap();
    assert_eq!(result, expected(tasks));
    // The worker behind the restored link is used again.
    let mut stats = net.exec("m");
    stats.args(["manager", "stats", "--json", &m]);
    assert!(
        eventually(Duration::from_secs(20), || {
            util::stdout(&util::run(&mut stats)).contains("\"active\":2")
        }),
        "the worker behind the restored link was not taken back"
    );
}
