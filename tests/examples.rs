//! The examples do what their headers say, run as a user runs them
//! (issue 12): word count with the file as an argument, the inverted index
//! and the CSV statistics, embedded and on a cluster.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::util::{self, repo, run_job, stderr, stdout, TempDir};

fn example(name: &str) -> String {
    repo().join("examples").join(name).display().to_string()
}

/// What a keyed job's run printed: its standard output, which holds
/// nothing else (the summary is on standard error).
fn printed(out: &std::process::Output, summary_from: &str) -> String {
    let text = stdout(out);
    assert!(
        !text.contains(summary_from),
        "the summary is on stdout: {text}"
    );
    text
}

#[test]
fn wordcount_counts_the_file_it_is_given_embedded_and_on_a_cluster() {
    let dir = TempDir::new("ex-wc");
    let text = "the cat\nthe dog  the end\n\nA cat\n";
    dir.write("book.txt", text);
    let want = "A\t1\ncat\t2\ndog\t1\nend\t1\nthe\t3\n";
    let out = run_job(&dir, &[&example("wordcount.rs"), "--", "book.txt"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(printed(&out, "wordcount:"), want);
    let out = run_job(
        &dir,
        &[&example("wordcount.rs"), "--", "book.txt", "--top", "2"],
        &[],
    );
    assert_eq!(printed(&out, "wordcount:"), "the\t3\ncat\t2\n");

    // On a cluster the counts come back to the user's directory.
    let cluster = util::Cluster::start(2, &[], &[]);
    let book = dir.join("book.txt").display().to_string();
    let out = util::run(
        cluster
            .cli(&[
                "run",
                &example("wordcount.rs"),
                "-o",
                "counts.txt",
                "--",
                &book,
            ])
            .current_dir(dir.path()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Reduced in two partitions (one per worker), each sorted by key and
    // written in partition order.
    let mut lines: Vec<String> = std::fs::read_to_string(dir.join("counts.txt"))
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect();
    lines.sort_by_key(|l| l.split('\t').next().unwrap_or("").to_owned());
    assert_eq!(lines.concat(), want);
}

#[test]
fn inverted_index_lists_each_words_files_in_order() {
    let dir = TempDir::new("ex-index");
    dir.write("a.txt", "Red fish, blue fish\n");
    dir.write("b.txt", "one fish\nred sky\n");
    dir.write("c.txt", "blue\n");
    let out = run_job(
        &dir,
        &[
            &example("inverted_index.rs"),
            "--",
            "c.txt",
            "a.txt",
            "b.txt",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        printed(&out, "inverted_index:"),
        "blue\t[a.txt, c.txt]\nfish\t[a.txt, b.txt]\none\t[b.txt]\n\
         red\t[a.txt, b.txt]\nsky\t[b.txt]\n"
    );
}

#[test]
fn csv_stats_gives_each_keys_rows_mean_and_max() {
    let dir = TempDir::new("ex-csv");
    let mut csv = String::from("day,region,amount\n");
    let mut want: BTreeMap<&str, (u64, f64, f64)> = BTreeMap::new();
    for i in 0..3000u64 {
        let region = ["north", "south", "east"][(i % 3) as usize];
        let amount = (i * 37 % 1000) as f64 / 4.0;
        let _ = writeln!(csv, "d{i},{region},{amount}");
        let e = want.entry(region).or_insert((0, 0.0, f64::MIN));
        e.0 += 1;
        e.1 += amount;
        e.2 = e.2.max(amount);
    }
    dir.write("sales.csv", &csv);
    let out = run_job(
        &dir,
        &[
            &example("csv_stats.rs"),
            "--",
            "sales.csv",
            "region",
            "amount",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let got = printed(&out, "csv_stats:");
    let mut expected = String::new();
    for (region, (rows, sum, max)) in want {
        let _ = writeln!(expected, "{region}\t{rows}\t{}\t{max}", sum / rows as f64);
    }
    // Sums of quarters are exact in f64, in any order.
    assert_eq!(got, expected);

    // A missing column is a load error that names the columns there are.
    let out = run_job(
        &dir,
        &[
            &example("csv_stats.rs"),
            "--",
            "sales.csv",
            "region",
            "price",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("has no column \"price\""),
        "{}",
        stderr(&out)
    );
}

/// The README's word count, copied as a new user would, counts a file in
/// under 30 lines, and says how to call it when the file is missing.
#[test]
fn the_readmes_keyed_word_count_runs_as_shown() {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```rust\nuse redmap::job::{input, Emit")
        .expect("the README shows its word count")
        + "```rust\n".len();
    let source = &readme[start..start + readme[start..].find("```").unwrap()];
    assert!(
        source.lines().count() < 30,
        "{} lines",
        source.lines().count()
    );
    let dir = TempDir::new("readme-wc");
    dir.write("wc.rs", source);
    dir.write("book.txt", "b a\nb\n");
    let out = run_job(&dir, &["wc.rs", "--", "book.txt"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(printed(&out, "wc:"), "a\t1\nb\t2\n");
    let out = run_job(&dir, &["wc.rs"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("usage: wc.rs -- FILE"),
        "{}",
        stderr(&out)
    );
}
