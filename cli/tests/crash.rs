//! Crash safety: a batch killed with SIGKILL at 20 seeded random moments, and run
//! again after each kill, ends complete and exact; the redb store opens cleanly after
//! every kill. `CRASH_TEST_KILLS=100` kills more.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Rng, TusServer, assert_same_files, make_file};

#[test]
fn a_batch_killed_20_times_ends_complete_and_exact() {
    let kills: usize = std::env::var("CRASH_TEST_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let mut rng = Rng(0x5eed_cafe);
    // More files for a longer schedule, so every kill lands before the batch is done.
    let n = 40.max(2 * kills);
    let files: Vec<_> = (0..n as u64)
        .map(|i| {
            let size = 1 + rng.below(2 << 20);
            make_file(&input, &format!("f{i:02}.bin"), size, i)
        })
        .collect();
    let tusflow = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tusflow"));
        c.current_dir(dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let batch = [
        "batch",
        "-e",
        server.endpoint.as_str(),
        "--concurrency",
        "4",
        "--rate-limit",
        "8MB/s",
        "--chunk-size",
        "256KiB",
        "--quiet",
        "--report",
        "report.json",
        "in",
    ];
    let mut killed = 0;
    for _ in 0..kills {
        let mut child = tusflow().args(batch).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(30 + rng.below(300)));
        if child.try_wait().unwrap().is_some() {
            break; // finished before this kill
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        killed += 1;
        // The store opens cleanly after the kill.
        let list = tusflow()
            .args(["list", "--json"])
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            list.status.success(),
            "the store did not open after kill {killed}: {}",
            String::from_utf8_lossy(&list.stderr)
        );
    }
    // The batch may finish before a long schedule ends; 20 kills always land.
    assert!(killed >= kills.min(20), "only {killed} kills landed");

    let started = Instant::now();
    let out = tusflow()
        .args(batch)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(120));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    let t = &report["totals"];
    assert_eq!(
        t["complete"].as_u64().unwrap() + t["skipped"].as_u64().unwrap(),
        n as u64,
        "{t}"
    );
    for entry in report["files"].as_array().unwrap() {
        let path = dir.path().join(entry["path"].as_str().unwrap());
        assert_same_files(&server.stored_path(entry["url"].as_str().unwrap()), &path);
    }
    assert_eq!(files.len(), n);
    // A kill between the server taking a creation and the client recording its URL
    // leaves an upload the client never heard of: unfinished, since only a request to
    // a URL the client knows completes an upload. At most one per file in flight per
    // kill; never a second complete copy.
    assert_eq!(server.complete_count(), n, "complete uploads on the server");
    let orphans = server.upload_count() - n;
    assert!(orphans <= 4 * killed, "{orphans} orphans");
    eprintln!(
        "{killed} kills survived; {} uploads on the server for {n} files: {orphans} unfinished orphans, 0 complete copies",
        server.upload_count()
    );
}
