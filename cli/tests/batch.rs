//! Config-driven batch uploads against the real server: config files, env overrides,
//! a batch killed and re-run, reports, and config errors.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::proxy::FaultProxy;
use support::{TusServer, assert_same_files, make_file};

fn tusflow(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tusflow"));
    c.args(args)
        .current_dir(dir)
        .env("XDG_DATA_HOME", dir.join("data"));
    c
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `n` files of 1 MiB in `dir`.
fn mib_files(dir: &Path, n: u64) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        make_file(dir, &format!("f{i:02}.bin"), 1 << 20, i);
    }
}

/// Wait until the server holds `n` complete 1 MiB uploads, while `batch` still runs.
/// Ctrl-C: SIGINT to the batch this test started; its output once it ends.
async fn ctrl_c(child: std::process::Child) -> std::process::Output {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

async fn wait_for_stored_files(server: &TusServer, n: usize, batch: &mut std::process::Child) {
    while server
        .stored_sizes()
        .iter()
        .filter(|s| **s == 1 << 20)
        .count()
        < n
    {
        assert!(
            batch.try_wait().unwrap().is_none(),
            "the batch ended before it was stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_config_file_batch_of_200_nested_files() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    let mut expected = Vec::new();
    for i in 0..200u64 {
        let sub = format!("d{}/e{}", i % 7, i % 3);
        std::fs::create_dir_all(root.join(&sub)).unwrap();
        // Mostly small files, every tenth up to 8 MiB, one empty.
        let size = if i == 0 {
            0
        } else if i % 10 == 0 {
            (i * 419_430) % (8 << 20) + 1
        } else {
            i * 331
        };
        let path = make_file(&root.join(&sub), &format!("f{i}.bin"), size, i);
        expected.push(path);
    }
    // Excluded: a directory and another extension.
    std::fs::create_dir_all(root.join("skip")).unwrap();
    make_file(&root.join("skip"), "x.bin", 10, 1);
    make_file(&root.join("d1"), "notes.txt", 10, 2);
    let config = dir.path().join("tusflow.toml");
    std::fs::write(
        &config,
        format!(
            "endpoint = \"{}\"\n[batch]\npaths = [\"media/**/*.bin\"]\nexclude = [\"skip/**\"]\nconcurrency = 8\nmetadata = {{ relpath = \"{{relpath}}\" }}\n",
            server.endpoint
        ),
    )
    .unwrap();
    let out = tusflow(dir.path(), &["batch", "--report", "report.json", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = report(&dir.path().join("report.json"));
    assert_eq!(r["totals"]["files"], 200);
    assert_eq!(r["totals"]["complete"], 200);
    assert_eq!(r["totals"]["failed"], 0);
    let files = r["files"].as_array().unwrap();
    for entry in files {
        // Paths in the report are as the batch named them, here relative to its dir.
        let path = &dir.path().join(entry["path"].as_str().unwrap());
        assert!(!path.to_string_lossy().contains("skip"));
        assert_eq!(entry["status"], "complete");
        assert_eq!(
            entry["size"].as_u64(),
            Some(std::fs::metadata(path).unwrap().len())
        );
        let url = entry["url"].as_str().unwrap();
        assert_same_files(&server.stored_path(url), path);
    }
    assert_eq!(files.len(), 200);
    assert_eq!(server.upload_count(), 200);
    // The {relpath} template reached the server.
    let one = files
        .iter()
        .find(|e| e["path"].as_str().unwrap().ends_with("/f13.bin"))
        .unwrap();
    let meta = std::fs::read_to_string(
        server
            .stored_path(one["url"].as_str().unwrap())
            .with_extension("json"),
    )
    .unwrap();
    assert!(meta.contains("d6/e1/f13.bin"), "{meta}");

    // A re-run uploads nothing again.
    let out = tusflow(dir.path(), &["batch", "--report", "again.json", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        report(&dir.path().join("again.json"))["totals"]["skipped"],
        200
    );
    assert_eq!(server.upload_count(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_batch_completes_on_re_run_without_uploading_twice() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    mib_files(&dir.path().join("in"), 60);
    let args = [
        "batch",
        "-e",
        server.endpoint.as_str(),
        "--concurrency",
        "8",
        "--rate-limit",
        "24MB/s",
        "--chunk-size",
        "256KiB",
        "--quiet",
        "--report",
        "report.json",
        "in",
    ];
    let mut first = tusflow(dir.path(), &args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_stored_files(&server, 20, &mut first).await;
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let created = server.upload_count();
    assert!(created < 60, "{created}");

    let out = tusflow(dir.path(), &args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = report(&dir.path().join("report.json"));
    let t = &r["totals"];
    assert_eq!(
        t["complete"].as_u64().unwrap() + t["skipped"].as_u64().unwrap(),
        60
    );
    // Files complete at the kill are skipped (or, if the kill came between the last
    // byte and the record's update, resumed at their end); those in flight resume.
    let (skipped, resumed) = (
        t["skipped"].as_u64().unwrap(),
        t["resumed"].as_u64().unwrap(),
    );
    assert!(skipped + resumed >= 20, "{t}");
    assert!(resumed >= 1, "the files in flight resumed: {t}");
    for entry in r["files"].as_array().unwrap() {
        let path = dir.path().join(entry["path"].as_str().unwrap());
        assert_same_files(&server.stored_path(entry["url"].as_str().unwrap()), &path);
    }
    // Every file is in exactly one complete upload. A kill during a creation POST can
    // leave an unfinished upload (holding the POST's first chunk) whose URL the client
    // never heard, as creation is not idempotent: at most one per file in flight.
    assert_eq!(server.complete_count(), 60, "no file was uploaded twice");
    let count = server.upload_count();
    assert!(count <= 60 + 8, "{count} uploads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_env_var_overrides_a_plugin_setting() {
    let server = TusServer::start();
    let proxy = FaultProxy::start(&server.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let f = make_file(dir.path(), "f.bin", 1000, 1);
    std::fs::write(
        dir.path().join("tusflow.toml"),
        format!(
            "endpoint = \"{}\"\n[middleware]\nstack = [\"retry\"]\n[middleware.retry]\ninitial_delay = \"10ms\"\nmax_attempts = 4\n",
            proxy.url(&server.endpoint)
        ),
    )
    .unwrap();
    let file = f.to_str().unwrap().to_owned();
    // With the file's settings, two 503s are retried.
    proxy.answer(Some("POST"), 503, 2);
    let out = tokio::task::spawn_blocking({
        let (d, file) = (dir.path().to_owned(), file.clone());
        move || {
            tusflow(&d, &["upload", "--no-store", "--json", &file])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(line["attempts"], 3, "two 503s, then success: {line}");
    // The env var allows one try only: the same faults now fail the upload.
    proxy.answer(Some("POST"), 503, 2);
    let out = tokio::task::spawn_blocking({
        let (d, file) = (dir.path().to_owned(), file.clone());
        move || {
            tusflow(&d, &["upload", "--no-store", &file])
                .env("TUSFLOW_MIDDLEWARE__RETRY__MAX_ATTEMPTS", "1")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("503"), "{}", stderr(&out));
}

#[test]
fn config_errors_exit_2_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = make_file(dir.path(), "f.bin", 10, 1);
    let cases = [
        (
            "wrong-type.toml",
            "endpoint = \"http://127.0.0.1:9/files/\"\n[batch]\nconcurrency = \"many\"\n",
            "batch.concurrency",
        ),
        (
            "unknown-key.yaml",
            "endpoint: http://127.0.0.1:9/files/\nchunk_sise: 1MiB\n",
            "did you mean `chunk_size`?",
        ),
        (
            "unknown-plugin.json",
            "{\"endpoint\": \"http://127.0.0.1:9/files/\", \"middleware\": {\"stack\": [\"log\", \"retyr\"]}}",
            "unknown plugin \"retyr\" (did you mean \"retry\"?)",
        ),
    ];
    for (name, text, needle) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = tusflow(
            dir.path(),
            &["-c", path.to_str().unwrap(), "upload", f.to_str().unwrap()],
        )
        .output()
        .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(needle), "{name}: {err}");
        assert!(err.contains(name), "{name} names the file: {err}");
    }
    // An env var with a bad value is named too.
    let out = tusflow(
        dir.path(),
        &[
            "upload",
            "-e",
            "http://127.0.0.1:9/files/",
            f.to_str().unwrap(),
        ],
    )
    .env("TUSFLOW_STALL_TIMEOUT", "forever")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("TUSFLOW_STALL_TIMEOUT"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn config_show_names_sources_and_redacts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tusflow.toml"),
        "endpoint = \"http://127.0.0.1:9/files/\"\nheaders = { Authorization = \"Bearer s3cr3t\" }\n",
    )
    .unwrap();
    let out = tusflow(dir.path(), &["config", "show"])
        .env("TUSFLOW_BATCH__CONCURRENCY", "3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(
        text.contains("headers.Authorization = \"<redacted>\""),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("endpoint =") && l.contains("tusflow.toml")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("batch.concurrency = 3") && l.contains("TUSFLOW_")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_cleanly_and_says_how_to_continue() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    mib_files(&dir.path().join("in"), 30);
    let args = [
        "batch",
        "-e",
        server.endpoint.as_str(),
        "--concurrency",
        "4",
        "--rate-limit",
        "8MB/s",
        "--quiet",
        "--report",
        "report.json",
        "in",
    ];
    let mut child = tusflow(dir.path(), &args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_stored_files(&server, 5, &mut child).await;
    let out = ctrl_c(child).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("To continue, run:"),
        "{}",
        stderr(&out)
    );
    let r = report(&dir.path().join("report.json"));
    assert_eq!(r["totals"]["interrupted"], true);
    assert!(r["totals"]["complete"].as_u64().unwrap() < 30);
    // A file stopped in flight says where: its upload URL, and an offset the server
    // has (it acknowledged it).
    let stopped: Vec<&serde_json::Value> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "unfinished")
        .collect();
    assert!(!stopped.is_empty(), "{r}");
    for f in &stopped {
        let Some(url) = f["url"].as_str() else {
            continue;
        };
        let st = tusflow(dir.path(), &["status", "--json", url])
            .output()
            .unwrap();
        let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
        assert!(
            f["offset"].as_u64().unwrap() <= st["offset"].as_u64().unwrap(),
            "{f} {st}"
        );
    }
    assert!(stopped.iter().any(|f| f["url"].is_string()), "{r}");

    // `list` shows what each server has now, as `status` does, not the offset last
    // stored (a streaming PATCH cut by Ctrl-C leaves 0 there).
    let out = tusflow(dir.path(), &["list", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!listed.trim().is_empty(), "nothing stored after Ctrl-C");
    for line in listed.lines() {
        let rec: serde_json::Value = serde_json::from_str(line).unwrap();
        let url = rec["url"].as_str().unwrap();
        let st = tusflow(dir.path(), &["status", "--json", url])
            .output()
            .unwrap();
        let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
        assert_eq!(rec["offset"], st["offset"], "{line}");
        assert_eq!(rec["server_offset"], st["offset"], "{line}");
    }

    let out = tokio::task::spawn_blocking({
        let d = dir.path().to_owned();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            tusflow(&d, &args).output().unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let t = &report(&dir.path().join("report.json"))["totals"];
    assert_eq!(
        t["complete"].as_u64().unwrap() + t["skipped"].as_u64().unwrap(),
        30,
        "{t}"
    );
    assert!(t["skipped"].as_u64().unwrap() >= 1, "{t}");
}

/// After Ctrl-C the message is true to the run: without a store on disk it does not
/// claim the unfinished uploads are kept; with one, the command to continue drops
/// `--force` (which would start every file over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_says_what_a_run_again_does() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    mib_files(&dir.path().join("in"), 20);
    for (store, needle) in [
        (
            "--no-store",
            "with no store on disk, a run again starts the unfinished ones over",
        ),
        ("--force", "To continue, run:"),
    ] {
        let args = [
            "batch",
            "-e",
            server.endpoint.as_str(),
            "--concurrency",
            "2",
            "--rate-limit",
            "4MB/s",
            "--quiet",
            store,
            "in",
        ];
        let before = server
            .stored_sizes()
            .iter()
            .filter(|s| **s == 1 << 20)
            .count();
        let mut child = tusflow(dir.path(), &args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_stored_files(&server, before + 2, &mut child).await;
        let out = ctrl_c(child).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(needle), "{store}: {err}");
        assert!(!err.contains("--force"), "{store}: {err}");
        if store == "--no-store" {
            assert!(!err.contains("are stored"), "{err}");
        }
    }
}

/// On a terminal, Ctrl-C leaves the total bar where it was (not at 100 %), and the
/// summary and the command to continue come after the bars' last drawing, not under
/// it. (`script` gives the run a terminal; the Ctrl-C is typed into it.)
#[test]
fn ctrl_c_on_a_terminal_keeps_the_bars_true_and_the_message_last() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    mib_files(&dir.path().join("in"), 10);
    let exe = env!("CARGO_BIN_EXE_tusflow");
    let cmd = format!(
        "{exe} batch -e {} --concurrency 2 --rate-limit 2MB/s --store s.redb in",
        server.endpoint
    );
    let mut child = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .current_dir(dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while server
        .stored_sizes()
        .iter()
        .filter(|s| **s == 1 << 20)
        .count()
        < 2
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\x03").unwrap();
    stdin.flush().unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let text = String::from_utf8_lossy(&out.stdout);
    let last_bar = text.rfind("total ").expect("a total bar was drawn");
    let continue_at = text
        .rfind("To continue, run:")
        .expect("the command to continue");
    assert!(
        continue_at > last_bar,
        "the bars drew over the message: {text}"
    );
    let summary = text.rfind(" complete, ").expect("a summary line");
    assert!(summary > last_bar, "{text}");
    let bar = &text[last_bar..summary];
    assert!(
        !bar.contains("10.00 MiB/10.00 MiB"),
        "the total jumped to the end: {bar}"
    );
    // A file's bar is labelled with its path as the result lines show it (`in/f00.bin`),
    // and no rate shown goes above the 2 MB/s cap.
    assert!(
        text.contains("in/f00.bin ") && text.contains("in/f00.bin: "),
        "{text}"
    );
    let mut rates = 0;
    for (i, _) in text.match_indices("/s") {
        let mut words = text[..i].rsplit(' ');
        let (Some(unit), Some(number)) = (words.next(), words.next()) else {
            continue;
        };
        let scale = match unit {
            "B" => 1.0,
            "KiB" => 1024.0,
            "MiB" => 1048576.0,
            "GiB" => 1073741824.0,
            _ => continue,
        };
        let Ok(v) = number.parse::<f64>() else {
            continue;
        };
        rates += 1;
        assert!(
            v * scale <= 2_000_000.0 * 1.01,
            "a rate of {v} {unit}/s shown: {text}"
        );
    }
    assert!(rates > 0, "no rate shown: {text}");
}
