//! The shuffle (issue 13), as a user meets it: a keyed job's partitions,
//! reduced on the workers, give the answer of one machine whatever the
//! number of workers and partitions, and a worker killed while it holds a
//! partition costs time, never a pair.

use crate::keyed::{corpus, plain_count};
use crate::util::{self, copy_job, run_job, stderr, stdout, Rng, TempDir};

/// A keyed word count and a count of seeded ids (many keys, each met
/// several times), on 1, 2 and 3 workers with 1, 2 and 7 partitions: each
/// answer equals the embedded run's, and the job says where its
/// partitions were reduced.
#[test]
fn any_number_of_workers_and_partitions_gives_the_embedded_answer() {
    let dir = TempDir::new("shuffle");
    let text = corpus(13, 8_000);
    std::fs::write(dir.join("corpus.txt"), &text).unwrap();
    let wc = copy_job(dir.path(), "tests/jobs/keyed_wordcount.rs", "wc.rs");
    let ids = copy_job(dir.path(), "benches/jobs/manykeys.rs", "ids.rs");
    let ids_args = ["--", "250000", "30000"];
    let embedded = run_job(&dir, &[&ids, ids_args[0], ids_args[1], ids_args[2]], &[]);
    assert!(embedded.status.success(), "{}", stderr(&embedded));
    let want_ids = stdout(&embedded);
    assert!(
        want_ids.lines().count() > 29_000,
        "{}",
        want_ids.lines().count()
    );
    let want_wc = plain_count(&text);

    for workers in 1..=3 {
        let cluster = util::Cluster::start(workers, &[], &[]);
        let corpus = dir.join("corpus.txt").display().to_string();
        for reducers in ["1", "2", "7"] {
            let out = util::run(cluster.cli(&["run", "--reducers", reducers, &wc, "--", &corpus]));
            assert!(out.status.success(), "{}", stderr(&out));
            assert!(
                cluster.result() == want_wc,
                "word count, {workers} workers, {reducers} partitions: the counts differ"
            );
            let out = util::run(cluster.cli(&[
                "run",
                "--reducers",
                reducers,
                &ids,
                "--",
                "250000",
                "30000",
            ]));
            assert!(out.status.success(), "{}", stderr(&out));
            assert!(
                stdout(&out) == want_ids,
                "ids, {workers} workers, {reducers} partitions: the counts differ"
            );
        }
        // The last job's partitions, each done on one of the workers.
        let manager = cluster.manager.addr_arg();
        let last = util::job_summary(&manager, 6).expect("job 6");
        assert_eq!(last.shuffle.partitions, 7);
        assert_eq!(last.shuffle.done, 7);
        assert!(last.shuffle.shuffled > 0);
        let addrs: Vec<String> = cluster.workers.iter().map(|w| w.addr_arg()).collect();
        for part in &last.shuffle.parts {
            assert!(addrs.contains(&part.worker), "{part:?} is on no worker");
        }
        // Without --reducers: one partition per worker.
        let out = util::run(cluster.cli(&["run", &ids, "--", "250000", "30000"]));
        assert!(out.status.success(), "{}", stderr(&out));
        let json = util::run(cluster.cli(&["jobs", "stats", "--json", "7"]));
        let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!(json["shuffle"]["partitions"], workers, "{json}");
        assert_eq!(json["shuffle"]["parts"][0]["state"], "done", "{json}");
    }
}

/// `kill -9` of a worker at seeded moments after every task is mapped,
/// while the partitions are being reduced: its map outputs are mapped
/// again on the other worker and its partitions reduced again there; the
/// count is exact, and the job says it made map outputs again.
#[test]
fn killing_a_worker_during_the_reduce_leaves_the_count_exact() {
    let cluster = util::Cluster::start_with(1, &[], &["--reduce-memory", "256K"], &[]);
    let dir = TempDir::new("shuffle-kill");
    let ids = copy_job(dir.path(), "benches/jobs/manykeys.rs", "ids.rs");
    let args = ["--", "3000000", "400000"];
    let embedded = run_job(&dir, &[&ids, args[0], args[1], args[2]], &[]);
    assert!(embedded.status.success(), "{}", stderr(&embedded));
    let want = stdout(&embedded);
    let manager = cluster.manager.addr_arg();
    let victim_addr = format!("127.0.0.1:{}", util::free_low_port());
    let mut rng = Rng(0x7265_6475_6365);
    for round in 1..=3u64 {
        let victim = util::start_worker_at(&victim_addr, &[]);
        let out = util::run(cluster.cli(&["manager", "attach", &victim_addr]));
        assert!(out.status.success(), "{}", stderr(&out));
        let child = cluster
            .cli(&["run", "--reducers", "4", &ids, args[0], args[1], args[2]])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn redmap run");
        // Once the reduces are out, and a seeded moment later.
        assert!(
            util::eventually(util::WAIT, || {
                util::job_summary(&manager, round).is_some_and(|j| {
                    j.shuffle.parts.iter().any(|p| p.state != 0) || j.status.is_over()
                })
            }),
            "round {round}: no partition was ever placed"
        );
        std::thread::sleep(std::time::Duration::from_millis(rng.below(150) as u64));
        // With 256 KiB each, the reduces spill and merge for much longer
        // than that: the job is still reducing when the worker dies.
        let before = util::job_summary(&manager, round).expect("the job");
        assert!(
            !before.status.is_over() && before.shuffle.done < 4,
            "round {round}: the reduce ended before the kill: {:?}",
            before.shuffle
        );
        let mut victim = victim;
        let _ = victim.child.kill();
        let _ = victim.child.wait();
        let out = child.wait_with_output().expect("redmap run");
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        assert!(stdout(&out) == want, "round {round}: the counts differ");
        let job = util::job_summary(&manager, round).expect("the job");
        assert_eq!(job.failed, 0, "round {round}: {job:?}");
        let out = util::run(cluster.cli(&["manager", "detach", &victim_addr]));
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

/// `--total-order`: partitions cut at sampled keys, so the parts in order
/// are the output sorted: fetched with `--output`, and written by the
/// reducers themselves with `--output-dir`, exactly one part file per
/// partition. Map outputs are gone from the workers once the job ends.
#[test]
fn total_order_parts_are_sorted_across_part_files() {
    let tmp = TempDir::new("shuffle-tmp");
    let tmp_env = [("TMPDIR", tmp.path().to_str().unwrap())];
    let cluster = util::Cluster::start_with(2, &[], &[], &tmp_env);
    let text = corpus(21, 10_000);
    let corpus = cluster.dir.join("corpus.txt").display().to_string();
    std::fs::write(&corpus, &text).unwrap();
    let wc = copy_job(cluster.dir.path(), "tests/jobs/keyed_wordcount.rs", "wc.rs");
    let want = plain_count(&text);

    let out = util::run(cluster.cli(&[
        "run",
        "--total-order",
        "--reducers",
        "3",
        "-o",
        "sorted.txt",
        &wc,
        "--",
        &corpus,
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let sorted = std::fs::read_to_string(cluster.dir.join("sorted.txt")).unwrap();
    assert!(
        sorted == want,
        "the parts in order are not the sorted output"
    );

    // The reducers write the parts; `redmap run` lists them.
    let out = util::run(cluster.cli(&[
        "run",
        "--total-order",
        "--reducers",
        "3",
        "--output-dir",
        "parts",
        &wc,
        "--",
        &corpus,
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("wrote 3 part files"),
        "{}",
        stderr(&out)
    );
    let mut names: Vec<String> = std::fs::read_dir(cluster.dir.join("parts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["part-00000", "part-00001", "part-00002"]);
    let joined: String = names
        .iter()
        .map(|n| std::fs::read_to_string(cluster.dir.join("parts").join(n)).unwrap())
        .collect();
    assert!(
        joined == want,
        "the part files in order are not the sorted output"
    );
    // A job whose output is in part files has nothing to fetch, and says so.
    let out = util::run(cluster.cli(&["jobs", "output", "2"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("part files"), "{}", stderr(&out));

    // Many integer keys, in 5 ranges: in order across the parts.
    let ids = copy_job(cluster.dir.path(), "benches/jobs/manykeys.rs", "ids.rs");
    let out = util::run(cluster.cli(&[
        "run",
        "--total-order",
        "--reducers",
        "5",
        &ids,
        "--",
        "300000",
        "50000",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let keys: Vec<u64> = stdout(&out)
        .lines()
        .map(|l| l.split('\t').next().unwrap().parse().unwrap())
        .collect();
    assert!(keys.len() > 49_000);
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys out of order");
    let job = util::job_summary(&cluster.manager.addr_arg(), 3).unwrap();
    let sizes: Vec<u64> = job.shuffle.parts.iter().map(|p| p.bytes).collect();
    assert!(
        sizes.iter().all(|&b| b > 0),
        "sampled ranges left a partition empty: {sizes:?}"
    );
    // Each partition fetched its range of each map output, not the whole:
    // three map outputs of at most 50,000 keys, 50,000 keys out.
    let out: u64 = sizes.iter().sum();
    assert!(
        job.shuffle.shuffled < 4 * out,
        "{} bytes shuffled for {out} bytes out",
        job.shuffle.shuffled
    );

    // The map outputs are gone from the workers; the kept partitions stay.
    let map_files = || {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("redmap-map-")
            })
            .count()
    };
    assert!(
        util::eventually(util::WAIT, || map_files() == 0),
        "map outputs left after the jobs ended"
    );
}
