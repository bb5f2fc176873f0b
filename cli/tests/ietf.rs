//! `tusflow --protocol ietf` against the IETF draft's test server, interop 8 and 6:
//! standard input, `--stop-at` then `--url`, a batch of 200 files, `terminate`, and
//! the errors a person sees. Every test checks what the server stored.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::ietf::IetfServer;
use support::make_file;

fn tusflow(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tusflow"));
    cmd.args(args)
        .current_dir(dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env_remove("TUSFLOW_PROTOCOL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run(dir: &Path, args: &[&str]) -> Output {
    tusflow(dir, args).output().unwrap()
}

/// `-e ENDPOINT --protocol ietf --interop N --no-store --json` after `args`.
fn ietf<'a>(args: &[&'a str], endpoint: &'a str, interop: &'a str) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend([
        "-e",
        endpoint,
        "--protocol",
        "ietf",
        "--interop",
        interop,
        "--no-store",
        "--json",
    ]);
    all
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect()
}

#[test]
fn standard_input_of_100_mib_and_the_answer_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = make_file(d, "stdin.bin", 100 << 20, 11);
    for interop in ["8", "6"] {
        let server = IetfServer::start(interop.parse().unwrap(), &[]);
        let out = tusflow(d, &ietf(&["upload", "-"], &server.endpoint, interop))
            .stdin(std::fs::File::open(&src).unwrap())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let r = &json_lines(&out)[0];
        assert_eq!(
            (&r["status"], &r["offset"]),
            (&"complete".into(), &(100u64 << 20).into())
        );
        assert_eq!(r["answer"]["status"], 200, "{r}");
        let body: serde_json::Value =
            serde_json::from_str(r["answer"]["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["size"], 100u64 << 20);
        server.assert_complete(r["url"].as_str().unwrap(), &src);
    }
}

#[test]
fn stop_at_then_url_and_terminate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = make_file(d, "half.bin", 5 << 20, 12);
    for interop in ["8", "6"] {
        let server = IetfServer::start(interop.parse().unwrap(), &["--max-append-size", "4194304"]);
        let ep = &server.endpoint;
        let out = run(
            d,
            &ietf(&["upload", "half.bin", "--stop-at", "1MiB"], ep, interop),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let r = &json_lines(&out)[0];
        assert_eq!(
            (&r["status"], &r["offset"]),
            (&"partial".into(), &(1u64 << 20).into())
        );
        let url = r["url"].as_str().unwrap().to_owned();
        assert_eq!(server.state(&url)["offset"], 1 << 20);
        let out = run(
            d,
            &ietf(&["upload", "half.bin", "--url", &url], ep, interop),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let r = &json_lines(&out)[0];
        assert_eq!(
            (&r["status"], &r["resumed"]),
            (&"complete".into(), &true.into())
        );
        server.assert_complete(&url, &src);
        let out = run(
            d,
            &[
                "terminate",
                &url,
                "--protocol",
                "ietf",
                "--interop",
                interop,
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(!server.stored_path(&url).exists());
    }
}

#[test]
fn a_batch_of_200_files_each_complete_and_exact() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("in")).unwrap();
    let files: Vec<_> = (0..200u64)
        .map(|i| make_file(&d.join("in"), &format!("f{i:03}.bin"), 1000 + i * 997, i))
        .collect();
    for interop in ["8", "6"] {
        let server = IetfServer::start(interop.parse().unwrap(), &[]);
        let out = run(
            d,
            &ietf(
                &["batch", "in", "--concurrency", "8"],
                &server.endpoint,
                interop,
            ),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let reports: Vec<_> = json_lines(&out)
            .into_iter()
            .filter(|r| r.get("path").is_some())
            .collect();
        assert_eq!(reports.len(), 200);
        for r in &reports {
            assert_eq!(r["status"], "complete", "{r}");
            assert_eq!(r["answer"]["status"], 200, "{r}");
            let path = Path::new(r["path"].as_str().unwrap());
            server.assert_complete(r["url"].as_str().unwrap(), &d.join(path));
        }
        assert_eq!(server.states().len(), files.len(), "one upload per file");
    }
}

#[test]
fn bad_protocol_settings_say_what_and_where_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_file(d, "a.bin", 10, 1);
    let out = run(
        d,
        &[
            "upload",
            "a.bin",
            "-e",
            "http://127.0.0.1:9/u",
            "--protocol",
            "ietf",
            "--interop",
            "7",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("interop version 7") && err.contains("6 or 8"),
        "{err}"
    );
    std::fs::write(d.join("tusflow.toml"), "protocol = \"ietff\"\n").unwrap();
    let out = run(d, &["upload", "a.bin", "-e", "http://127.0.0.1:9/u"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("protocol") && err.contains("tusflow.toml") && err.contains("\"ietff\""),
        "{err}"
    );
    std::fs::write(d.join("tusflow.toml"), "interop = 6\n").unwrap();
    let out = run(d, &["upload", "a.bin", "-e", "http://127.0.0.1:9/u"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("set the protocol to \"ietf\""),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_file(d.join("tusflow.toml")).unwrap();
    // A server of another interop version makes no upload resource: said once.
    let server = IetfServer::start(8, &[]);
    let out = run(
        d,
        &[
            "upload",
            "a.bin",
            "-e",
            &server.endpoint,
            "--protocol",
            "ietf",
            "--interop",
            "6",
            "--no-store",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("speaks interop version 8 of the IETF draft, not 6"),
        "{err}"
    );
    // A batch of files to a server of another protocol: said once, for all of them.
    for i in 0..5 {
        make_file(d, &format!("b{i}.bin"), 100 + i, i);
    }
    let out = run(
        d,
        &[
            "batch",
            "b*.bin",
            "-e",
            &server.endpoint,
            "--no-store",
            "--quiet",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("not tus 1.0: choose the protocol ietf") && err.contains("5 of 5 files"),
        "{err}"
    );
    // The environment sets it too.
    let out = tusflow(
        d,
        &[
            "upload",
            "a.bin",
            "-e",
            &server.endpoint,
            "--no-store",
            "--json",
        ],
    )
    .env("TUSFLOW_PROTOCOL", "ietf")
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = &json_lines(&out)[0];
    server.assert_complete(r["url"].as_str().unwrap(), &d.join("a.bin"));
}

#[test]
fn list_asks_each_stored_upload_in_its_own_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_file(d, "l.bin", 3 << 20, 13);
    let server = IetfServer::start(6, &[]);
    let out = run(
        d,
        &[
            "upload",
            "l.bin",
            "-e",
            &server.endpoint,
            "--protocol",
            "ietf",
            "--interop",
            "6",
            "--stop-at",
            "1MiB",
            "--store",
            "s.redb",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // No protocol flag: the record says which.
    let out = run(d, &["list", "--store", "s.redb"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("1048576/3145728 bytes on the server"),
        "{said}"
    );
}
