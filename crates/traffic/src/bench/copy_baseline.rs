//! The PostgreSQL floor for `vigia bench ingest --store postgres://…`: the same readings
//! the batched mode sends, loaded by `psql` (an independent client) with one `COPY` into a
//! table keyed like Vigía's readings, in the same run. Vigía's end-to-end rate divided
//! by this says how much of the database's own bulk-load speed survives HTTP, the bus,
//! the rules and the workers.

use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::workload::Body;

/// What the COPY baseline measured.
#[derive(Debug, Clone, Serialize)]
pub struct CopyBaselineReport {
    /// Rows loaded.
    pub rows: u64,
    /// From psql's start to its exit (table creation and drop included; both are
    /// milliseconds next to the load).
    pub seconds: f64,
    /// `rows / seconds`.
    pub rows_per_sec: f64,
}

#[derive(Deserialize)]
struct Wire<'a> {
    sensor: &'a str,
    ts: i64,
    value: f64,
}

/// The readings of `bodies` as CSV lines `sensor,metric,ts,value` (metric: temperature,
/// as the ingest endpoint defaults it).
pub fn csv_of(bodies: &[Body]) -> anyhow::Result<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    let mut rows = 0;
    for body in bodies {
        let readings: Vec<Wire> = if body.readings == 1 {
            vec![serde_json::from_slice(&body.bytes)?]
        } else {
            serde_json::from_slice(&body.bytes)?
        };
        for r in readings {
            // Benchmark sensor keys are `bench-NNNN`: nothing to quote.
            out.extend_from_slice(
                format!("{},temperature,{},{}\n", r.sensor, r.ts, r.value).as_bytes(),
            );
            rows += 1;
        }
    }
    Ok((out, rows))
}

/// Loads `csv` into a fresh table of the database at `url` with `psql`, timing it, then
/// drops the table.
pub async fn copy_into_postgres(
    url: &str,
    csv: &[u8],
    rows: u64,
) -> anyhow::Result<CopyBaselineReport> {
    let table = format!("vigia_bench_copy_{:08x}", rand::random::<u32>());
    let mut script = format!(
        "\\set ON_ERROR_STOP on\n\
         CREATE TABLE {table} (sensor text NOT NULL, metric text NOT NULL, ts bigint NOT NULL, \
         value double precision NOT NULL, PRIMARY KEY (sensor, metric, ts));\n\
         COPY {table} FROM STDIN WITH (FORMAT csv);\n"
    )
    .into_bytes();
    script.extend_from_slice(csv);
    script.extend_from_slice(format!("\\.\nDROP TABLE {table};\n").as_bytes());

    let started = Instant::now();
    let mut child = Command::new("psql")
        .arg("--no-psqlrc")
        .arg("--quiet")
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting psql for the COPY baseline (is postgresql-client installed?)")?;
    let mut stdin = child.stdin.take().context("psql stdin")?;
    stdin.write_all(&script).await.context("feeding psql")?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "the COPY baseline failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(CopyBaselineReport {
        rows,
        seconds,
        rows_per_sec: rows as f64 / seconds.max(f64::EPSILON),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::ReadingGenerator;

    #[test]
    fn csv_holds_every_reading_once() {
        let mut generator = ReadingGenerator::new(3, 1_000, 7);
        let mut bodies = generator.bodies(10, 4);
        bodies.extend(generator.bodies(1, 1));
        let (csv, rows) = csv_of(&bodies).unwrap();
        let text = String::from_utf8(csv).unwrap();
        assert_eq!(rows, 11);
        assert_eq!(text.lines().count(), 11);
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("bench-0000,temperature,1000,"), "{first}");
    }
}
