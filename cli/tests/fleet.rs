//! Many workers over one batch on a real PostgreSQL and the real tus server: workers
//! SIGKILLed at seeded moments and others joining late, an upload stopped by one
//! worker and finished by another, a worker paused past its lease, the database
//! restarted mid-batch, and what a person reads when the input is wrong. The server's
//! store is the judge: every file once, complete and exact, and `ledger status` agrees.

#[path = "../../tests/support/mod.rs"]
mod support;

#[path = "../../tests/support/pg.rs"]
mod pg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::proxy::FaultProxy;
use support::{Rng, TusServer};

fn tusflow(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tusflow"));
    c.current_dir(dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env_remove("TUSFLOW_LEDGER__URL")
        // Every byte in a PATCH, where the proxy counts it.
        .env("TUSFLOW_CREATION_WITH_UPLOAD", "false")
        .stdin(Stdio::null());
    c
}

/// `tusflow batch -e ENDPOINT --ledger URL --name NAME` run in `cwd`.
fn shared_batch(cwd: &Path, endpoint: &str, url: &str, name: &str) -> Command {
    let mut c = tusflow(cwd);
    c.args(["batch", "-e", endpoint, "--ledger", url, "--name", name]);
    c
}

/// A file of `len` seeded bytes in `dir` (made if missing).
fn mk(dir: &Path, name: &str, len: u64, seed: u64) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    support::make_file(dir, name, len, seed)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Wait for `child` at most `limit`; its output.
fn finish(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what} did not end in {limit:?}: {}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The uploads the server holds, by the file name they were created with: (size the
/// upload declared, bytes it holds, data path).
fn stored(server: &TusServer) -> BTreeMap<String, Vec<(u64, u64, PathBuf)>> {
    let mut by_name: BTreeMap<String, Vec<(u64, u64, PathBuf)>> = BTreeMap::new();
    for e in std::fs::read_dir(server.dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let data = p.with_extension("");
        let held = std::fs::metadata(&data).map_or(0, |m| m.len());
        let name = info["metadata"]["filename"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        by_name
            .entry(name)
            .or_default()
            .push((info["size"].as_u64().unwrap_or(0), held, data));
    }
    by_name
}

/// Every file of `files` is on the server exactly once complete, with its bytes; the
/// number of uploads created in all.
fn assert_each_once_and_exact(server: &TusServer, files: &[PathBuf]) -> usize {
    let stored = stored(server);
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let uploads = stored.get(&name).cloned().unwrap_or_default();
        let complete: Vec<_> = uploads.iter().filter(|(s, h, _)| s == h).collect();
        assert_eq!(
            complete.len(),
            1,
            "{name}: {} complete uploads of {uploads:?}",
            complete.len()
        );
        assert_eq!(
            std::fs::read(&complete[0].2).unwrap(),
            std::fs::read(f).unwrap(),
            "{name}: the server's bytes"
        );
    }
    stored.values().map(Vec::len).sum()
}

fn status(dir: &Path, url: &str, name: &str) -> serde_json::Value {
    let out = tusflow(dir)
        .args([
            "ledger", "status", "--json", "--ledger", url, "--name", name,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_and_joining_late_leave_every_file_uploaded_once_and_exact() {
    let pg = pg::server();
    let url = pg.database("fleet_kills");
    let server = TusServer::start();
    let proxy = FaultProxy::start(&server.addr).await;
    let endpoint = proxy.url(&server.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    let mut rng = Rng(0xf1ee7);
    let mut files = Vec::new();
    let mut total = 0;
    for i in 0..40u64 {
        let size = if i % 10 == 3 {
            3 << 20
        } else {
            1 + rng.below(1 << 20)
        };
        let sub = if i % 2 == 0 { "" } else { "sub" };
        files.push(mk(&input.join(sub), &format!("f{i:02}.bin"), size, i));
        total += size;
    }
    let chunk = 256 * 1024;
    let d = dir.path();
    let server_wait = tokio::task::spawn_blocking({
        let input = input.clone();
        let d = d.to_owned();
        let (endpoint, url) = (endpoint.clone(), url.clone());
        move || {
            let worker = |cwd: &Path, paths: &[&str]| {
                let mut c = tusflow(cwd);
                c.args([
                    "batch", "-e", &endpoint, "--ledger", &url, "--name", "kills",
                ])
                .args([
                    "--lease",
                    "2s",
                    "--concurrency",
                    "3",
                    "--rate-limit",
                    "4MB/s",
                ])
                .args(["--chunk-size", "256KiB", "--quiet"])
                .args(paths)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
                c.spawn().unwrap()
            };
            let mut rng = Rng(0xdead);
            // Two workers bring the paths; one is killed; a late one joins from the
            // directory the keys are relative to, with no paths; the second of the
            // first two is killed; a last one joins with the paths.
            let mut w1 = worker(&d, &["in"]);
            let w2 = worker(&d, &["in"]);
            std::thread::sleep(Duration::from_millis(1500 + rng.below(1000)));
            w1.kill().unwrap();
            w1.wait().unwrap();
            let w3 = worker(&input, &[]);
            std::thread::sleep(Duration::from_millis(1000 + rng.below(1000)));
            let mut w2 = w2;
            w2.kill().unwrap();
            w2.wait().unwrap();
            let w4 = worker(&d, &["in"]);
            let o3 = finish(w3, Duration::from_secs(180), "the late worker");
            let o4 = finish(w4, Duration::from_secs(180), "the last worker");
            (o3, o4)
        }
    });
    let (o3, o4) = server_wait.await.unwrap();
    for (o, who) in [(&o3, "w3"), (&o4, "w4")] {
        assert_eq!(o.status.code(), Some(0), "{who}: {}", text(&o.stderr));
    }
    let uploads = assert_each_once_and_exact(&server, &files);
    let kills = 2;
    // The files the killed workers held were taken over: claimed again, and continued.
    let taken: u64 = pg
        .value(
            "fleet_kills",
            "SELECT count(*) FROM tusflow_files WHERE batch = 'kills' AND attempts > 1",
        )
        .parse()
        .unwrap();
    assert!(taken >= 1, "no file was taken over");
    // Every file's row keeps its upload's URL, whoever finished it.
    assert_eq!(
        pg.value(
            "fleet_kills",
            "SELECT count(*) FROM tusflow_files WHERE batch = 'kills' AND url IS NULL"
        ),
        "0"
    );
    // An upload the server made but a killed worker never recorded: at most one per
    // file in flight per kill (3 each).
    assert!(
        uploads <= files.len() + kills * 3,
        "{uploads} uploads for {} files",
        files.len()
    );
    // Bytes sent twice: at most the request in flight of each file a kill cut.
    let sent = proxy.patch_bytes();
    assert!(sent >= total, "{sent} of {total} bytes sent");
    assert!(
        sent <= total + (kills * 3 * chunk) as u64,
        "{sent} bytes sent for {total}"
    );
    let t = status(d, &url, "kills");
    assert_eq!(
        (
            &t["total"],
            &t["complete"],
            &t["pending"],
            &t["active"],
            &t["failed"]
        ),
        (&40.into(), &40.into(), &0.into(), &0.into(), &0.into()),
        "{t}"
    );
    // The ledger's bytes are what the server holds complete.
    let held: u64 = stored(&server)
        .values()
        .flatten()
        .filter(|(s, h, _)| s == h)
        .map(|(s, _, _)| s)
        .sum();
    assert_eq!(
        (t["bytes_total"].as_u64(), t["bytes_done"].as_u64()),
        (Some(total), Some(held))
    );
    eprintln!(
        "{} files, {total} bytes: {sent} bytes sent, {uploads} uploads created, {taken} taken over after {kills} kills",
        files.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_stopped_by_one_worker_is_finished_by_another_from_its_offset() {
    let pg = pg::server();
    let url = pg.database("fleet_stop_at");
    let server = TusServer::start();
    let proxy = FaultProxy::start(&server.addr).await;
    let endpoint = proxy.url(&server.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let f = mk(&d.join("in"), "one.bin", 3_000_000, 7);
    let run = move |extra: &[&str]| {
        shared_batch(&d, &endpoint, &url, "stop")
            .args(extra)
            .arg("in")
            .output()
            .unwrap()
    };
    let first = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["--stop-at", "1000000"])
    })
    .await
    .unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains("one.bin: stopped at 1000000 of 3000000 bytes"),
        "{}",
        text(&first.stdout)
    );
    let after_first = proxy.patch_bytes();
    assert_eq!(after_first, 1_000_000);
    let second = tokio::task::spawn_blocking(move || run(&[])).await.unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert!(
        text(&second.stdout).contains("one.bin: complete (resumed)"),
        "{}",
        text(&second.stdout)
    );
    assert_eq!(
        proxy.patch_bytes() - after_first,
        2_000_000,
        "only the rest is sent"
    );
    assert_eq!(assert_each_once_and_exact(&server, &[f]), 1, "one upload");
}

#[test]
fn a_worker_paused_past_its_lease_leaves_the_file_to_the_new_owner() {
    let pg = pg::server();
    let url = pg.database("fleet_pause");
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = mk(&d.join("in"), "big.bin", 6 << 20, 3);
    let worker = |extra: &[&str]| {
        shared_batch(d, &server.endpoint, &url, "pause")
            .args(["--lease", "2s", "--chunk-size", "512KiB"])
            .args(extra)
            .arg("in")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let slow = worker(&["--rate-limit", "1MB/s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let pid = slow.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    // The new owner waits for the lease to run out, then continues the upload.
    let fast = finish(worker(&[]), Duration::from_secs(60), "the new owner");
    assert_eq!(fast.status.code(), Some(0), "{}", text(&fast.stderr));
    assert!(
        text(&fast.stdout).contains("big.bin: complete (resumed)"),
        "{}",
        text(&fast.stdout)
    );
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let slow = finish(slow, Duration::from_secs(60), "the paused worker");
    let said = text(&slow.stderr);
    assert!(said.contains("another worker took the file over"), "{said}");
    assert!(
        !text(&slow.stdout).contains("big.bin: complete"),
        "{}",
        text(&slow.stdout)
    );
    assert_eq!(slow.status.code(), Some(0), "{said}");
    assert_eq!(assert_each_once_and_exact(&server, &[f]), 1, "one upload");
    let t = status(d, &url, "pause");
    assert_eq!(
        (&t["complete"], &t["active"]),
        (&1.into(), &0.into()),
        "{t}"
    );
}

#[test]
fn a_file_uploaded_by_a_worker_that_died_before_completing_it_is_completed_with_its_url() {
    let pg = pg::server();
    let url = pg.database("fleet_done_dead");
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = mk(&d.join("in"), "done.bin", 500_000, 9);
    let run = || {
        shared_batch(d, &server.endpoint, &url, "dd")
            .arg("in")
            .output()
            .unwrap()
    };
    assert_eq!(run().status.code(), Some(0));
    // As if its worker had sent every byte and died before telling the ledger.
    pg.sql(
        "fleet_done_dead",
        "UPDATE tusflow_files SET state = 'active', owner = 'dead', lease_until = now() - interval '1 second'",
    );
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("done.bin: complete (resumed)"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        pg.value(
            "fleet_done_dead",
            "SELECT count(*) FROM tusflow_files WHERE url IS NOT NULL AND state = 'complete'"
        ),
        "1"
    );
    assert_eq!(assert_each_once_and_exact(&server, &[f]), 1, "one upload");
}

#[test]
fn a_database_restarted_mid_batch_costs_a_wait_and_nothing_else() {
    let pg = pg::private();
    let url = pg.database("fleet_restart");
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let files: Vec<PathBuf> = (0..24u64)
        .map(|i| {
            mk(
                &d.join("in"),
                &format!("r{i:02}.bin"),
                300_000 + i * 1000,
                i,
            )
        })
        .collect();
    let w = shared_batch(d, &server.endpoint, &url, "restart")
        .args([
            "--lease",
            "20s",
            "--concurrency",
            "2",
            "--rate-limit",
            "2MB/s",
            "in",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    pg.restart(Duration::from_secs(2));
    let out = finish(w, Duration::from_secs(120), "the worker");
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("the ledger answers again"), "{said}");
    assert!(!said.contains(pg::PASSWORD), "{said}");
    assert_eq!(assert_each_once_and_exact(&server, &files), files.len());
    let t = status(d, &url, "restart");
    assert_eq!(
        (&t["complete"], &t["total"]),
        (&24.into(), &24.into()),
        "{t}"
    );
}

#[test]
fn wrong_input_is_one_clear_line() {
    let pg = pg::server();
    let url = pg.database("fleet_input");
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mk(&d.join("a"), "same.bin", 100, 1);
    mk(&d.join("b"), "same.bin", 200, 2);
    let batch = |args: &[&str]| {
        tusflow(d)
            .args(["batch", "-e", &server.endpoint])
            .args(args)
            .output()
            .unwrap()
    };
    // The database cannot be reached: exit 1, host and port named, no password.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("postgres://tus:{}@127.0.0.1:{port}/x", pg::PASSWORD);
    let out = batch(&["--ledger", &dead, "--name", "n", "a"]);
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.contains(&format!("127.0.0.1:{port}/x")), "{said}");
    assert!(!said.contains(pg::PASSWORD), "{said}");

    // Another set of paths under a batch's name: refused before anything is sent.
    let out = batch(&["--ledger", &url, "--name", "n", "a"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = batch(&["--ledger", &url, "--name", "n", "b"]);
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("already has \"same.bin\" with 100 bytes, but here it is 200 bytes"),
        "{said}"
    );

    // A worker in the wrong place gives the file back and stops.
    let out = batch(&["--ledger", &url, "--name", "m", "a"]);
    assert_eq!(out.status.code(), Some(0));
    let pg2 = &pg;
    pg2.sql(
        "fleet_input",
        "UPDATE tusflow_files SET state = 'pending' WHERE batch = 'm'",
    );
    let out = batch(&["--ledger", &url, "--name", "m"]);
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("same.bin: not found on this machine"),
        "{said}"
    );
    let t = status(d, &url, "m");
    assert_eq!((&t["pending"], &t["failed"]), (&1.into(), &0.into()), "{t}");

    // The password from PGPASSWORD, as libpq takes it: in no command line.
    let bare = url.replacen(&format!(":{}@", pg::PASSWORD), "@", 1);
    assert!(!bare.contains(pg::PASSWORD));
    let out = tusflow(d)
        .env("PGPASSWORD", pg::PASSWORD)
        .args(["ledger", "status", "--ledger", &bare, "--name", "m"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Partial uploads are for one machine.
    let out = batch(&["--ledger", &url, "--name", "m", "--parallel", "4", "a"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--parallel is for one machine"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_begun_on_one_machine_is_continued_on_another_through_the_shared_store() {
    let pg = pg::server();
    let url = pg.database("fleet_store");
    let server = TusServer::start();
    let proxy = FaultProxy::start(&server.addr).await;
    let endpoint = proxy.url(&server.endpoint);
    // Two "machines": their own directories, data directories and paths to the file.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fa = mk(&a.path().join("share"), "movie.bin", 2_500_000, 11);
    let fb = b.path().join("mnt/movie.bin");
    std::fs::create_dir_all(fb.parent().unwrap()).unwrap();
    std::fs::copy(&fa, &fb).unwrap();
    let mtime = std::fs::metadata(&fa).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(&fb)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let upload = move |dir: PathBuf, file: &str, extra: Vec<&'static str>| {
        let (endpoint, url, file) = (endpoint.clone(), url.clone(), file.to_owned());
        tokio::task::spawn_blocking(move || {
            tusflow(&dir)
                .env("TUSFLOW_STORE__KIND", "postgres")
                .env("TUSFLOW_STORE__URL", &url)
                .args(["upload", "-e", &endpoint, &file])
                .args(extra)
                .output()
                .unwrap()
        })
    };
    let first = upload(
        a.path().to_owned(),
        "share/movie.bin",
        vec!["--stop-at", "1000000"],
    )
    .await
    .unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let second = upload(b.path().to_owned(), "mnt/movie.bin", vec![])
        .await
        .unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert!(
        text(&second.stdout).contains("complete (resumed)"),
        "{}",
        text(&second.stdout)
    );
    assert_eq!(proxy.patch_bytes(), 2_500_000, "no byte sent twice");
    assert_eq!(assert_each_once_and_exact(&server, &[fa]), 1, "one upload");
}

/// The fleet speaks the IETF draft too: one worker stops each file at 64 KiB, the next
/// continues every upload resource from the server's offset and completes it.
#[test]
fn a_shared_batch_over_the_ietf_draft_continues_each_upload_resource() {
    let pg = pg::server();
    let url = pg.database("fleet_ietf");
    let server = support::ietf::IetfServer::start(8, &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let files: Vec<PathBuf> = (0..12u64)
        .map(|i| mk(&d.join("in"), &format!("i{i:02}.bin"), 200_000 + i * 999, i))
        .collect();
    let ietf = ["--protocol", "ietf", "in"];
    let first = shared_batch(d, &server.endpoint, &url, "ietf")
        .args(["--stop-at", "64KiB"])
        .args(ietf)
        .output()
        .unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let partial = server.states();
    assert_eq!(partial.len(), 12);
    assert!(
        partial
            .iter()
            .all(|s| s["offset"] == 65536 && s["complete"] == false)
    );
    let second = shared_batch(d, &server.endpoint, &url, "ietf")
        .args(ietf)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    let states = server.states();
    assert_eq!(states.len(), 12, "one upload resource per file");
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy();
        let st = states
            .iter()
            .find(|s| {
                s["disposition"]
                    .as_str()
                    .is_some_and(|v| v.contains(&*name))
            })
            .unwrap();
        server.assert_complete(st["id"].as_str().unwrap(), f);
    }
    let t = status(d, &url, "ietf");
    assert_eq!(
        (&t["complete"], &t["total"]),
        (&12.into(), &12.into()),
        "{t}"
    );
}
