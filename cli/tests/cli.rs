//! The `tusflow` command against the real tus server: output, exit codes, stored bytes.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::{Command, Output};

use support::{TusServer, make_file};

/// The data directory of these tests (so the default store is not the user's).
fn data_home() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn tusflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tusflow"))
        .args(args)
        .env("XDG_DATA_HOME", data_home())
        .output()
        .expect("run tusflow")
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn upload_json_reports_each_file_and_stores_exact_bytes() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = make_file(dir.path(), "a.bin", 3_000_001, 1);
    let b = make_file(dir.path(), "empty.txt", 0, 2);
    let out = tusflow(&[
        "upload",
        "-e",
        &server.endpoint,
        "--json",
        "--chunk-size",
        "1MiB",
        "-m",
        "k=v",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);
    // Files run concurrently: one line each, as each ends.
    let line_of = |p: &std::path::Path| {
        lines
            .iter()
            .find(|l| l["path"] == p.to_str().unwrap())
            .unwrap()
    };
    for (line, path, size) in [(line_of(&a), &a, 3_000_001u64), (line_of(&b), &b, 0)] {
        assert_eq!(line["size"], size);
        assert_eq!(line["offset"], size);
        assert_eq!(line["complete"], true);
        assert_eq!(line["resumed"], false);
        server.assert_stored_file(line["url"].as_str().unwrap(), path);
    }
}

#[test]
fn stop_at_then_continue_with_url() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let f = make_file(dir.path(), "f.bin", 5 << 20, 3);
    let path = f.to_str().unwrap();
    let out = tusflow(&[
        "upload",
        "-e",
        &server.endpoint,
        "--stop-at",
        "2MiB",
        "--json",
        path,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first = &json_lines(&out)[0];
    assert_eq!(first["offset"], 2 << 20);
    assert_eq!(first["complete"], false);
    let url = first["url"].as_str().unwrap();

    let st = tusflow(&["status", url, "--json"]);
    let st = &json_lines(&st)[0];
    assert_eq!(
        (st["offset"].as_u64(), st["length"].as_u64()),
        (Some(2 << 20), Some(5 << 20))
    );
    assert_eq!(st["metadata"]["filename"], "f.bin");

    let out = tusflow(&["upload", "--url", url, "--json", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let second = &json_lines(&out)[0];
    assert_eq!(second["resumed"], true);
    assert_eq!(second["complete"], true);
    assert_eq!(second["url"], url);
    server.assert_stored_file(url, &f);
    assert_eq!(server.upload_count(), 1);
}

#[test]
fn usage_and_config_errors_exit_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let f = make_file(dir.path(), "f.bin", 10, 1);
    let path = f.to_str().unwrap();
    let ep = "http://127.0.0.1:9/files/";
    let cases: &[(&[&str], &str)] = &[
        (
            &["upload", "-e", ep, "-m", "bad key=1", path],
            "\"bad key\"",
        ),
        (&["upload", "-e", ep, "-m", "novalue", path], "\"novalue\""),
        (
            &["upload", "-e", ep, "-H", "X-Token s3cr3t", path],
            "\"X-Token\"",
        ),
        (
            &["upload", "-e", ep, "--chunk-size", "8 parsecs", path],
            "\"8 parsecs\"",
        ),
        (&["upload", "-e", "ftp://h/files/", path], "ftp://h/files/"),
        (
            &["upload", "--url", "http://h/files/1", path, path],
            "exactly one file",
        ),
        (&["upload", path], "--endpoint"),
        (
            &["upload", "-e", ep, "--cacert", "/nonexistent/ca.pem", path],
            "/nonexistent/ca.pem",
        ),
        (&["upload", "-e", ep, "--bogus-flag", path], "--bogus-flag"),
    ];
    for (args, needle) in cases {
        let out = tusflow(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}

#[test]
fn a_failed_file_exits_1_and_the_others_still_complete() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let good = make_file(dir.path(), "good.bin", 100_000, 4);
    let missing = dir.path().join("missing.bin");
    let out = tusflow(&[
        "upload",
        "-e",
        &server.endpoint,
        "--json",
        missing.to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing.bin"), "{}", stderr(&out));
    let lines = json_lines(&out);
    let bad = lines.iter().find(|l| l["status"] == "failed").unwrap();
    assert_eq!(bad["complete"], false);
    assert!(bad["error"].as_str().unwrap().contains("missing.bin"));
    let ok = lines.iter().find(|l| l["status"] == "complete").unwrap();
    server.assert_stored_file(ok["url"].as_str().unwrap(), &good);

    // An unreachable server is a failure too, not a usage error.
    let out = tusflow(&[
        "upload",
        "-e",
        "http://127.0.0.1:9/files/",
        good.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
}

#[test]
fn info_and_status() {
    let server = TusServer::start();
    let out = tusflow(&["info", &server.endpoint]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1.0.0") && text.contains("creation-with-upload"),
        "{text}"
    );

    let out = tusflow(&["info", &server.endpoint, "--json"]);
    let caps = &json_lines(&out)[0];
    assert!(
        caps["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "termination")
    );

    let gone = format!("{}doesnotexist", server.endpoint);
    let out = tusflow(&["status", &gone]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
}

#[test]
fn checksum_rate_limit_and_retries_flags() {
    let rustus = support::RustusServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let f = make_file(dir.path(), "sum.bin", 1_000_000, 9);
    let path = f.to_str().unwrap();
    let out = tusflow(&[
        "upload",
        "-e",
        &rustus.endpoint,
        "--checksum",
        "sha1",
        "--chunk-size",
        "200KB",
        "--rate-limit",
        "50MB/s",
        "--retries",
        "3",
        "--json",
        path,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let line = &json_lines(&out)[0];
    support::assert_same_files(&rustus.stored_path(line["url"].as_str().unwrap()), &f);

    // @tus/server has no checksum extension: a clear failure, not a usage error.
    let server = TusServer::start();
    let out = tusflow(&[
        "upload",
        "-e",
        &server.endpoint,
        "--checksum",
        "sha256",
        path,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not support the tus checksum extension"),
        "{}",
        stderr(&out)
    );
    // Refused before the creation: no empty upload left on the server.
    assert_eq!(server.upload_count(), 0);

    for (args, needle) in [
        (&["--checksum", "sha3"][..], "\"sha3\""),
        (&["--rate-limit", "fast"][..], "\"fast\""),
    ] {
        let mut all = vec!["upload", "-e", server.endpoint.as_str()];
        all.extend_from_slice(args);
        all.push(path);
        let out = tusflow(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
    }
}

/// A header that frames a request or carries the tus protocol cannot be a default
/// header (`-H`): it would corrupt the request, or the next one on a kept-alive
/// connection. A clear error naming it, exit 2, and nothing created.
#[test]
fn framing_and_tus_headers_are_refused_as_default_headers() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = make_file(dir.path(), "f.bin", 1000, 1);
    let path = file.to_str().unwrap();
    for header in [
        "Content-Length: 5",
        "Transfer-Encoding: chunked",
        "Host: evil.example",
        "Upload-Offset: 7",
    ] {
        let out = tusflow(&[
            "upload",
            "-e",
            &server.endpoint,
            "-H",
            header,
            "--no-store",
            path,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{header}: {err}");
        let name = header.split(':').next().unwrap().to_ascii_lowercase();
        assert!(
            err.contains(&format!("the header {name} cannot be a default header")),
            "{header}: {err}"
        );
    }
    assert_eq!(server.upload_count(), 0, "nothing was created");
}

/// Config messages name the flag or the key as the user wrote it, say durations with
/// their unit, and every command checks the config file the same way.
#[test]
fn config_messages_name_the_flag_or_key_the_user_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let f = make_file(dir.path(), "f.bin", 10, 3);
    let f = f.to_str().unwrap();
    let clean = |err: &str| {
        assert!(!err.contains("default."), "{err}");
        assert!(!err.contains("``"), "{err}");
        assert!(!err.contains(".rs:"), "{err}");
        assert!(!err.contains("variant"), "{err}");
    };

    let out = Command::new(env!("CARGO_BIN_EXE_tusflow"))
        .args(["config", "show"])
        .env("XDG_DATA_HOME", data_home())
        .env("TUSFLOW_HEADERS__X_TOKEN", "t0k3n")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    // An env var cannot spell `-` in a header name: `_` stands for it.
    assert!(
        shown.contains("headers.x-token = \"<redacted>\""),
        "{shown}"
    );
    assert!(!shown.contains("t0k3n"), "{shown}");
    assert!(
        shown.contains("stall_timeout = \"30s\"    # default"),
        "{shown}"
    );
    assert!(
        shown.contains("store.wait = \"30s\"    # default"),
        "{shown}"
    );
    clean(&shown);

    let out = tusflow(&["upload", "--parallel", "0", "-e", "http://127.0.0.1:9/", f]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid --parallel 0"),
        "{}",
        stderr(&out)
    );
    clean(&stderr(&out));

    let size = dir.path().join("size.toml");
    std::fs::write(
        &size,
        "[middleware]\nstack = [\"rate-limit\"]\n[middleware.rate-limit]\nbytes_per_second = true\n",
    )
    .unwrap();
    let out = tusflow(&[
        "-c",
        size.to_str().unwrap(),
        "upload",
        "-e",
        "http://127.0.0.1:9/",
        f,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("expected a size") && err.contains("`middleware.rate-limit.bytes_per_second`"),
        "{err}"
    );
    clean(&err);

    let kind = dir.path().join("kind.toml");
    std::fs::write(&kind, "[store]\nkind = \"redbb\"\n").unwrap();
    let k = kind.to_str().unwrap();
    let commands: [&[&str]; 6] = [
        &["-c", k, "upload", "-e", "http://127.0.0.1:9/", f],
        &["-c", k, "list"],
        &["-c", k, "forget", "--all"],
        &["-c", k, "info", "http://127.0.0.1:9/"],
        &["-c", k, "status", "http://127.0.0.1:9/files/x"],
        &["-c", k, "config", "show"],
    ];
    for args in commands {
        let out = tusflow(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(
                "unknown value `redbb`: expected one of redb, memory, postgres, none for key `store.kind` in"
            ),
            "{args:?}: {err}"
        );
        clean(&err);
    }
}

/// One rule for exit codes in `upload` and `batch`: a name that does not exist and a
/// glob that matches nothing are failed files (exit 1, one line each, the others still
/// go); `--stop-at` is an ending as asked (exit 0). A run of several files ends with a
/// summary line.
#[test]
fn exit_codes_follow_one_rule_and_a_batch_ends_with_a_summary() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let good = make_file(dir.path(), "good.bin", 300_000, 8);
    let missing = dir.path().join("missing.bin");
    let glob = dir.path().join("nothing-*.bin");
    let (good, missing, glob) = (
        good.to_str().unwrap(),
        missing.to_str().unwrap(),
        glob.to_str().unwrap(),
    );
    for cmd in ["upload", "batch"] {
        let mut args = vec![cmd, "-e", &server.endpoint, "--no-store", missing, good];
        if cmd == "batch" {
            args.push(glob);
        }
        let out = tusflow(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        let lines: Vec<&str> = err.lines().collect();
        let failures = if cmd == "batch" { 2 } else { 1 };
        assert_eq!(lines.len(), failures, "{cmd}: {err}");
        assert!(
            lines[0].ends_with("missing.bin: no such file or directory")
                || lines[0].contains("missing.bin: No such file or directory"),
            "{cmd}: {err}"
        );
        if cmd == "batch" {
            assert!(
                lines[1].ends_with("nothing-*.bin: matches no file"),
                "{err}"
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = format!("1 complete, {failures} failed, 292.97 KiB in ");
        assert!(stdout.contains(&summary), "{cmd}: {stdout}");
    }
    let out = tusflow(&[
        "upload",
        "-e",
        &server.endpoint,
        "--no-store",
        "--stop-at",
        "1000",
        good,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped at 1000 of 300000 bytes"));
}
