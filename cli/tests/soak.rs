//! Fault soak: a batch of uploads of mixed sizes through the fault proxy, which draws
//! each request's fate from a seeded random schedule (cuts at random bytes, 5xx bursts,
//! 423 for a while, 409s, stalls longer than the stall timeout), while the real server
//! is killed and restarted at random moments. Every stored file must be exact, no file
//! may get a second upload once the client learned the first one's URL, and the batch
//! must end on its own.
//!
//! CI runs 40 uploads. `cargo test --test soak -- --ignored` runs 200;
//! `SOAK_UPLOADS=N` and `SOAK_SEED=N` pick another size and schedule.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::proxy::{Chaos, FaultProxy};
use support::{Rng, TusServer, assert_same_files, make_file};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sizes: a quarter small (some empty), half up to 2 MiB, a fifth up to 8 MiB, the rest
/// up to 24 MiB.
fn size(rng: &mut Rng) -> u64 {
    match rng.below(100) {
        0..=4 => 0,
        5..=24 => 1 + rng.below(64 << 10),
        25..=74 => (64 << 10) + rng.below(2 << 20),
        75..=94 => (2 << 20) + rng.below(6 << 20),
        _ => (8 << 20) + rng.below(16 << 20),
    }
}

const CONFIG: &str = r#"
[middleware.retry]
max_attempts = 20
max_total_attempts = 100000
initial_delay = "50ms"
max_delay = "1s"
"#;

fn soak(uploads: usize, seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let server = TusServer::start();
    let upstream = server.addr.clone();
    let endpoint = server.endpoint.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(FaultProxy::start(&upstream));
    proxy.chaos(Chaos {
        seed,
        cut: 60,
        server_error: 30,
        locked: 15,
        conflict: 30,
        stall: 15,
        stall_for: Duration::from_millis(2500),
    });

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let files: Vec<_> = (0..uploads as u64)
        .map(|i| {
            let len = size(&mut rng);
            make_file(&input, &format!("f{i:03}.bin"), len, seed ^ i)
        })
        .collect();
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    std::fs::write(dir.path().join("soak.toml"), CONFIG).unwrap();

    // The server is killed and restarted every 0.5-2.5 s while the batch runs.
    let server = Arc::new(Mutex::new(server));
    let done = Arc::new(AtomicBool::new(false));
    let restarts = Arc::new(AtomicU64::new(0));
    let killer = {
        let (server, done, restarts) = (
            Arc::clone(&server),
            Arc::clone(&done),
            Arc::clone(&restarts),
        );
        let mut rng = Rng(rng.below(u64::MAX) | 1);
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let wait = Duration::from_millis(500 + rng.below(2000));
                let until = Instant::now() + wait;
                while Instant::now() < until && !done.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if done.load(Ordering::SeqCst) {
                    break;
                }
                server.lock().unwrap().restart();
                restarts.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    let endpoint = proxy.url(&endpoint);
    let batch = |report: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tusflow"))
            .current_dir(dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .args(["batch", "-c", "soak.toml", "-e", &endpoint])
            .args(["--concurrency", "4", "--chunk-size", "1MiB"])
            .args(["--stall-timeout", "1", "--connect-timeout", "2"])
            .args(["--quiet", "--report", report, "in"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Every wait of the client is bounded, so the batch ends on its own.
        let limit = Duration::from_secs(120 + uploads as u64 * 3);
        let started = Instant::now();
        let mut stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the batch hung: still running after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (status, reader.join().unwrap(), started.elapsed())
    };

    let (status, stderr, took) = batch("report.json");
    done.store(true, Ordering::SeqCst);
    killer.join().unwrap();
    let restarts = restarts.load(Ordering::SeqCst);
    // Retries are logged as warnings; what failed is in the rest.
    let failures: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains(" WARN retrying "))
        .collect();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        status.code(),
        Some(0),
        "the batch failed (seed {seed}):\n{}",
        failures.join("\n")
    );

    proxy.wait_idle(Duration::from_secs(10));
    let injected = proxy.injected();
    let creations = proxy.creations();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["totals"]["complete"], uploads as u64,
        "{}",
        report["totals"]
    );
    let server = server.lock().unwrap();
    for entry in report["files"].as_array().unwrap() {
        let path = dir.path().join(entry["path"].as_str().unwrap());
        assert_same_files(&server.stored_path(entry["url"].as_str().unwrap()), &path);
    }

    // One answered creation per file: once the client knew a file's upload, it
    // resumed that upload through every fault and never created another.
    assert_eq!(
        creations.len(),
        uploads,
        "creations by metadata: {creations:?}"
    );
    for (meta, c) in &creations {
        assert_eq!(c.created, 1, "{meta}: {c:?}");
    }
    // Any other upload on the server is one whose creation never got an answer to the
    // client (the proxy cut it, or the server was killed first), or got an error
    // answer from a server that had created it all the same.
    let unanswered: u64 = creations.values().map(|c| c.unanswered).sum();
    let refused: u64 = creations.values().map(|c| c.refused).sum();
    let orphans = server.upload_count() - uploads;
    assert!(
        orphans as u64 <= unanswered + refused,
        "{orphans} uploads beyond one per file, but only {unanswered} unanswered and \
         {refused} refused creations"
    );
    // And none of them is complete: only a request to a URL the client knows
    // completes an upload, so no file is stored twice.
    assert_eq!(
        server.complete_count(),
        uploads,
        "complete uploads on the server"
    );

    // A second run finds every file complete and creates nothing.
    proxy.chaos(Chaos {
        seed: 0,
        cut: 0,
        server_error: 0,
        locked: 0,
        conflict: 0,
        stall: 0,
        stall_for: Duration::ZERO,
    });
    let (status, stderr, _) = batch("again.json");
    proxy.wait_idle(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{stderr}");
    let again: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("again.json")).unwrap()).unwrap();
    let not_skipped: Vec<_> = again["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] != "skipped")
        .collect();
    assert!(
        not_skipped.is_empty(),
        "not skipped on the second run: {not_skipped:?}"
    );
    assert_eq!(
        again["totals"]["skipped"], uploads as u64,
        "{}",
        again["totals"]
    );
    assert!(
        proxy.creations() == creations,
        "the second run created uploads"
    );

    eprintln!(
        "soak seed {seed}: {uploads} uploads, {:.1} MiB, exact, in {:.1} s; {} requests, \
         faults: {} cuts, {} 5xx, {} 423, {} 409, {} stalls, {} server restarts \
         ({} connections refused while down); {unanswered} creations unanswered and {refused} refused, \
         {orphans} unfinished orphan uploads on the server, 0 complete copies",
        total as f64 / (1 << 20) as f64,
        took.as_secs_f64(),
        injected.requests,
        injected.cuts,
        injected.server_errors,
        injected.locked,
        injected.conflicts,
        injected.stalls,
        restarts,
        injected.refused,
    );
}

#[test]
fn uploads_survive_a_seeded_fault_schedule() {
    soak(env_or("SOAK_UPLOADS", 40) as usize, env_or("SOAK_SEED", 1));
}

#[test]
#[ignore = "the long form: 200 uploads, about N minutes"]
fn soak_200_uploads() {
    soak(200, env_or("SOAK_SEED", 2));
}
