//! Local faults: a file the user may not read, the store on a full disk, the store
//! held by another process. Each is a clear error that names the file, the CLI exits 1,
//! and nothing is lost: a later run completes every file, exact, and the server never
//! holds a second complete copy. (A file deleted, truncated or grown during its upload
//! is in `tests/upload.rs`.)

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use support::{TusServer, assert_same_files, make_file};

fn tusflow(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tusflow"));
    c.current_dir(dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn report(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
}

fn assert_all_stored(server: &TusServer, dir: &Path, report: &serde_json::Value) {
    for entry in report["files"].as_array().unwrap() {
        if entry["status"] == "complete" {
            let path = dir.join(entry["path"].as_str().unwrap());
            assert_same_files(&server.stored_path(entry["url"].as_str().unwrap()), &path);
        }
    }
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

#[test]
fn an_unreadable_file_fails_alone_with_its_name() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in");
    std::fs::create_dir_all(&input).unwrap();
    for i in 0..4 {
        make_file(&input, &format!("f{i}.bin"), 100_000 + i, i);
    }
    let secret = make_file(&input, "secret.bin", 50_000, 9);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    // A directory nobody may list, and a symlink loop: one failed entry, and no file
    // walked twice.
    let locked = input.join("locked");
    std::fs::create_dir(&locked).unwrap();
    make_file(&locked, "hidden.bin", 1_000, 7);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    std::os::unix::fs::symlink(".", input.join("loop")).unwrap();
    let args = [
        "batch",
        "-e",
        &server.endpoint,
        "--store",
        "st.redb",
        "--quiet",
        "--report",
        "report.json",
        "in",
    ];
    // Root reads any file: run as nobody then, in a directory nobody may write.
    let out = if is_root() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_tusflow"))
            .args(args)
            .current_dir(d)
            .env("XDG_DATA_HOME", d.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("setpriv (util-linux)")
    } else {
        tusflow(d).args(args).output().unwrap()
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("in/secret.bin") && stderr.contains("Permission denied"),
        "{stderr}"
    );
    assert!(
        stderr.contains("in/locked: cannot list the directory: Permission denied"),
        "{stderr}"
    );
    let r = report(d, "report.json");
    assert_eq!(r["totals"]["complete"], 4, "{}", r["totals"]);
    assert_eq!(r["totals"]["failed"], 2, "{}", r["totals"]);
    assert_all_stored(&server, d, &r);
    assert_eq!(
        server.upload_count(),
        4,
        "nothing created for the unreadable file"
    );
}

#[test]
fn a_store_on_a_full_disk_fails_clearly_and_a_later_run_completes_everything() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (sub, seed) in [("warm", 0), ("in", 100)] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
        for i in 0..20u64 {
            make_file(
                &d.join(sub),
                &format!("f{i:02}.bin"),
                1 + i * 37_000,
                seed + i,
            );
        }
    }
    let batch = |sub: &str, report: &str| {
        [
            "batch",
            "-e",
            server.endpoint.as_str(),
            "--store",
            "st.redb",
            "--concurrency",
            "4",
            "--quiet",
            "--report",
            report,
            sub,
        ]
        .map(str::to_owned)
    };
    // A store with 20 completed files in it.
    let out = tusflow(d)
        .args(batch("warm", "warm.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let size = std::fs::metadata(d.join("st.redb")).unwrap().len();

    // The disk is full: the store may not grow past half its size. (A file size limit
    // stands in for a full disk; writes fail with EFBIG instead of ENOSPC.)
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {}; exec \"$0\" \"$@\"",
            size / 2048
        ))
        .arg(env!("CARGO_BIN_EXE_tusflow"))
        .args(batch("in", "full.json"))
        .current_dir(d)
        .env("XDG_DATA_HOME", d.join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let store = d.join("st.redb");
    assert!(
        stderr.contains(&format!("the store {}", "st.redb"))
            || stderr.contains(&format!("the store {}", store.display())),
        "{stderr}"
    );
    assert!(stderr.contains("File too large"), "{stderr}");
    // Each failure tells the cause, not redb's "previous I/O error" aftermath.
    assert!(!stderr.contains("Previous I/O error"), "{stderr}");

    // Room again: the next run completes every file, exact, with no second copy.
    let out = tusflow(d).args(batch("in", "again.json")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let r = report(d, "again.json");
    let t = &r["totals"];
    assert_eq!(
        t["complete"].as_u64().unwrap() + t["skipped"].as_u64().unwrap(),
        20,
        "{t}"
    );
    assert_all_stored(&server, d, &r);
    assert_eq!(
        server.complete_count(),
        40,
        "complete uploads on the server"
    );
}

/// `flock -o FILE cat`: another process holding the store's lock, as redb's own lock
/// does, until it is dropped (flock is killed; `cat`, which does not hold the lock,
/// ends with its input).
struct Holder(Child);

impl Holder {
    fn hold(file: &Path) -> Self {
        let child = Command::new("flock")
            .arg("-o")
            .arg(file)
            .arg("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("flock (util-linux)");
        // Dropped (killed and waited for) on every path from here.
        let holder = Holder(child);
        // Until flock has the lock: a second, non-blocking flock fails.
        for _ in 0..100 {
            let probe = Command::new("flock")
                .args(["--nonblock", "--conflict-exit-code", "9"])
                .arg(file)
                .arg("true")
                .status()
                .unwrap();
            if probe.code() == Some(9) {
                return holder;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("flock did not take the lock");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_store_held_by_another_process_is_waited_for_then_a_clear_error() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = make_file(d, "a.bin", 300_000, 1);
    let store = d.join("st.redb");
    let upload = |wait: &str| -> Output {
        tusflow(d)
            .env("TUSFLOW_STORE__WAIT", wait)
            .args([
                "upload",
                "a.bin",
                "-e",
                &server.endpoint,
                "--store",
                "st.redb",
            ])
            .args(["--json"])
            .stdout(Stdio::piped())
            .output()
            .unwrap()
    };
    // Created by a first upload; then held for longer than the wait: a clear error.
    let out = upload("30s");
    assert_eq!(out.status.code(), Some(0));
    let holder = Holder::hold(&store);
    let out = upload("1s");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("st.redb") && stderr.contains("in use by another process"),
        "{stderr}"
    );
    drop(holder);

    // Held for a moment: the upload waits for it and goes through.
    let holder = Holder::hold(&store);
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        drop(holder);
    });
    let out = upload("30s");
    release.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    server.assert_stored_file(done["url"].as_str().unwrap(), &file);
}

/// `--store` names what is there: a FIFO, an empty file or a directory is refused with
/// its path (exit 2) and left as it was; nothing is created on the server. A new store
/// is private (0600).
#[test]
fn a_store_path_that_is_not_a_store_file_is_refused_and_left_alone() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = make_file(d, "f.bin", 10_000, 3);
    let status = Command::new("mkfifo").arg(d.join("fifo")).status().unwrap();
    assert!(status.success());
    std::fs::write(d.join("empty.redb"), b"").unwrap();
    std::fs::create_dir(d.join("adir")).unwrap();
    for (store, what) in [
        ("fifo", "not a regular file"),
        ("empty.redb", "an empty file"),
        ("adir", "a directory"),
    ] {
        for args in [
            vec![
                "upload",
                file.to_str().unwrap(),
                "-e",
                &server.endpoint,
                "--store",
                store,
            ],
            vec!["list", "--store", store],
        ] {
            let out = tusflow(d).args(&args).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains(&format!("the store {store} is {what}")),
                "{args:?}: {stderr}"
            );
            assert!(
                std::fs::symlink_metadata(d.join(store)).is_ok(),
                "{store} was removed"
            );
        }
    }
    assert!(
        std::fs::metadata(d.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(std::fs::metadata(d.join("empty.redb")).unwrap().len(), 0);
    assert_eq!(server.upload_count(), 0, "nothing was created");
    let out = tusflow(d)
        .args([
            "upload",
            file.to_str().unwrap(),
            "-e",
            &server.endpoint,
            "--store",
            "new.redb",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(d.join("new.redb"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

/// `tusflow upload FIFO` reads it as a stream and stores its bytes; `tusflow batch`
/// says why it does not take a FIFO, never "no such file".
#[test]
fn a_fifo_is_uploaded_as_a_stream_and_batch_says_why_it_skips_one() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        Command::new("mkfifo")
            .arg(d.join("pipe"))
            .status()
            .unwrap()
            .success()
    );
    let data = support::pattern(300_000, 5);
    let writer = {
        let (path, data) = (d.join("pipe"), data.clone());
        std::thread::spawn(move || std::fs::write(path, data).unwrap())
    };
    let out = tusflow(d)
        .args([
            "upload",
            "pipe",
            "-e",
            &server.endpoint,
            "--no-store",
            "--json",
        ])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    writer.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["complete"], true, "{line}");
    assert_eq!(line["offset"], 300_000, "{line}");
    server.assert_stored(line["url"].as_str().unwrap(), &data);

    let out = tusflow(d)
        .args(["batch", "pipe", "-e", &server.endpoint, "--no-store"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pipe: not a regular file"), "{stderr}");
    assert!(!stderr.contains("no such file"), "{stderr}");
}
