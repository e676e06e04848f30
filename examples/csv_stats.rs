//! Per-key statistics over a CSV file: for every value of one column, how
//! many rows have it, and the mean and the maximum of another column.
//!
//!     redmap run examples/csv_stats.rs -- sales.csv region amount
//!
//! reads `sales.csv` (a header line naming the columns, then plain
//! comma-separated rows, no quoting) and prints `region<TAB>rows<TAB>mean
//! <TAB>max` lines, one per region. A row whose value is not a number
//! fails its task, with the line in the error.
use std::io::BufRead;

use redmap::job::{input, Emit, Error, KeyedJob, TypedTasks};

struct Stats {
    file: String,
    key: String,
    value: String,
}

impl KeyedJob for Stats {
    /// The key's and the value's column numbers, and a chunk of rows.
    type Task = (u32, u32, String);
    type Key = String;
    /// Rows, sum and maximum: partial results that merge in any order.
    type Value = (u64, f64, f64);

    fn load(&self) -> TypedTasks<(u32, u32, String)> {
        // The header is read here, where the file is (the manager, on a
        // cluster): the workers get column numbers with each task.
        let columns = match header(&self.file) {
            Ok(columns) => columns,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let find = |name: &String| {
            let at = columns.iter().position(|c| c == name);
            at.map(|i| i as u32).ok_or_else(|| {
                Error::msg(format!("{} has no column {name:?}: {columns:?}", self.file))
            })
        };
        let (key, value) = match (find(&self.key), find(&self.value)) {
            (Ok(k), Ok(v)) => (k, v),
            (Err(e), _) | (_, Err(e)) => return Box::new(std::iter::once(Err(e))),
        };
        let chunks = input::text_chunks(&self.file, 1 << 20).enumerate();
        Box::new(chunks.map(move |(i, chunk)| {
            let chunk = chunk?;
            // The first chunk starts with the header line.
            let rows = match i {
                0 => chunk.split_once('\n').map_or("", |(_, rest)| rest).to_owned(),
                _ => chunk,
            };
            Ok((key, value, rows))
        }))
    }

    fn map(&self, task: (u32, u32, String), out: &mut Emit<'_, Self>) -> Result<(), Error> {
        let (key, value, rows) = task;
        for line in rows.lines().filter(|l| !l.is_empty()) {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let (Some(k), Some(v)) = (fields.get(key as usize), fields.get(value as usize)) else {
                return Err(Error::msg(format!("too few columns: {line:?}")));
            };
            let x: f64 = v
                .parse()
                .map_err(|_| Error::msg(format!("not a number: {v:?} in {line:?}")))?;
            out.emit_borrowed(*k, (1, x, x));
        }
        Ok(())
    }

    fn reduce(&self, acc: &mut (u64, f64, f64), (rows, sum, max): (u64, f64, f64)) {
        acc.0 += rows;
        acc.1 += sum;
        acc.2 = acc.2.max(max);
    }

    fn done(&self, output: Vec<(String, (u64, f64, f64))>) -> Result<(), Error> {
        for (key, (rows, sum, max)) in output {
            println!("{key}\t{rows}\t{}\t{max}", sum / rows as f64);
        }
        Ok(())
    }
}

/// The file's header line, split into column names.
fn header(file: &str) -> Result<Vec<String>, Error> {
    let mut first = String::new();
    std::io::BufReader::new(std::fs::File::open(file)?).read_line(&mut first)?;
    Ok(first.trim_end().split(',').map(|c| c.trim().to_owned()).collect())
}

fn new(args: &[String]) -> Result<Stats, Error> {
    match args {
        [file, key, value] => Ok(Stats { file: file.clone(), key: key.clone(), value: value.clone() }),
        _ => Err(Error::msg("usage: csv_stats.rs -- FILE KEY_COLUMN VALUE_COLUMN")),
    }
}

redmap::export_keyed_job!(Stats, new);
