//! The ledger alone, against a real PostgreSQL: rows enqueued per second, and files
//! claimed and completed per second by 1, 2 and 4 workers (each its own connection,
//! claiming 8 at a time, completing each file with its own statement, as a worker of
//! `tusflow batch --ledger` does). `scripts/fleet-bench` starts a PostgreSQL and runs
//! it; by hand:
//!
//! ```sh
//! TUSFLOW_BENCH_PG=postgres://tus:pw@127.0.0.1:5432/bench cargo bench -p tusflow-ledger-postgres --bench claims
//! ```

use std::time::{Duration, Instant};

use tusflow_core::ledger::{Ledger, NewEntry};
use tusflow_ledger_postgres::PgLedger;

fn main() {
    let Ok(url) = std::env::var("TUSFLOW_BENCH_PG") else {
        eprintln!("claims: set TUSFLOW_BENCH_PG to a PostgreSQL URL (scripts/fleet-bench does)");
        return;
    };
    let rows: usize = std::env::var("TUSFLOW_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let lease = Duration::from_secs(30);
    let entries: Vec<NewEntry> = (0..rows)
        .map(|i| NewEntry::new(format!("dir{:03}/file{i:07}.bin", i % 997), 1 << 20))
        .collect();
    for workers in [1usize, 2, 4] {
        let name = format!("bench-{workers}");
        let ledger = PgLedger::connect(&url, &name).expect("connect");
        ledger.forget().expect("forget");
        let started = Instant::now();
        ledger.enqueue(&entries).expect("enqueue");
        let enqueue = started.elapsed();
        let started = Instant::now();
        let claims: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let (url, name) = (url.clone(), name.clone());
                    s.spawn(move || {
                        let l = PgLedger::connect(&url, &name).expect("connect");
                        let owner = format!("w{w}");
                        let mut calls = 0;
                        loop {
                            let got = l.claim(&owner, 8, lease, &[]).expect("claim");
                            calls += 1;
                            if got.is_empty() {
                                return calls;
                            }
                            for c in got {
                                assert!(l.complete(&owner, &c.key).expect("complete"));
                            }
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a worker"))
                .sum()
        });
        let took = started.elapsed();
        let t = ledger.totals().expect("totals");
        assert_eq!(t.complete as usize, rows);
        println!(
            "{workers} worker(s): enqueue {rows} rows in {:.2} s ({:.0} rows/s); claimed and completed {rows} files in {:.2} s: {:.0} files/s, {:.0} claim statements/s",
            enqueue.as_secs_f64(),
            rows as f64 / enqueue.as_secs_f64(),
            took.as_secs_f64(),
            rows as f64 / took.as_secs_f64(),
            claims as f64 / took.as_secs_f64(),
        );
        ledger.forget().expect("forget");
    }
}
