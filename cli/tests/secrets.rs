//! Secrets never reach the output: with credentials in headers, the most verbose log
//! (`-vvv`), retries after faults, a failed file, `--json` and the batch report hold
//! neither the secret values nor the URL's query, while the server gets them.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::Command;

use support::proxy::FaultProxy;
use support::{TusServer, make_file};

#[test]
fn secrets_stay_out_of_logs_errors_json_and_the_report() {
    let server = TusServer::start_with(&[
        "--require-header",
        "authorization=Bearer s3cr3t-t0ken",
        "--max-size",
        "450000",
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(FaultProxy::start(&server.addr));
    // Faults, so errors and retries are logged: 503s, then a connection cut mid-body.
    proxy.answer(None, 503, 2);
    proxy.cut_every_connection_after(300_000);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in");
    std::fs::create_dir_all(&input).unwrap();
    for i in 0..3 {
        make_file(&input, &format!("f{i}.bin"), 400_000 + i, i);
    }
    // A file that fails: larger than the server's Tus-Max-Size.
    make_file(&input, "big.bin", 500_000, 9);
    let endpoint = format!("{}?api_key=q5ecret-query", proxy.url(&server.endpoint));
    let out = Command::new(env!("CARGO_BIN_EXE_tusflow"))
        .args([
            "batch",
            "-vvv",
            "--json",
            "--report",
            "report.json",
            "--no-store",
        ])
        .args(["-e", &endpoint, "--chunk-size", "256KiB"])
        .args([
            "-H",
            "Authorization: Bearer s3cr3t-t0ken",
            "-H",
            "X-Api-Key: k3y-value",
        ])
        .args(["in/f0.bin", "in/f1.bin", "in/f2.bin", "in/big.bin"])
        .current_dir(d)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = std::fs::read_to_string(d.join("report.json")).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("retrying"), "faults were met: {stderr}");
    assert!(stderr.contains("big.bin"), "{stderr}");
    let r: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(r["totals"]["complete"], 3, "{}", r["totals"]);
    for secret in ["s3cr3t-t0ken", "k3y-value", "q5ecret-query"] {
        for (what, text) in [
            ("stderr", &*stderr),
            ("stdout", &*stdout),
            ("report", &*report),
        ] {
            assert!(!text.contains(secret), "{secret} in {what}:\n{text}");
        }
    }
}

/// `tusflow upload -vvv --json --store st.redb -e ENDPOINT EXTRA.. FILE` in `dir`: its
/// exit code, stdout and stderr.
fn upload_vvv(
    dir: &std::path::Path,
    endpoint: &str,
    extra: &[&str],
    file: &std::path::Path,
) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tusflow"))
        .args([
            "upload", "-vvv", "--json", "--store", "st.redb", "-e", endpoint,
        ])
        .args(extra)
        .arg(file)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// User info in the endpoint is Basic credentials, as curl reads it: the server gets
/// them, and neither `-vvv`, the output, nor the store holds the password (or the
/// user info at all). Terminal control bytes in a server's metadata are shown escaped.
#[test]
fn endpoint_userinfo_is_basic_auth_and_stays_out_of_logs_and_the_store() {
    let basic = "Basic dXMgZXI6cEBzcw=="; // base64("us er:p@ss")
    let server = TusServer::start_with(&["--require-header", &format!("authorization={basic}")]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = make_file(d, "f.bin", 200_000, 4);
    let endpoint = server
        .endpoint
        .replacen("http://", "http://us%20er:p%40ss@", 1);
    let (code, stdout, stderr) = upload_vvv(d, &endpoint, &[], &file);
    assert_eq!(code, Some(0), "{stderr}");
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    server.assert_stored_file(line["url"].as_str().unwrap(), &file);
    for secret in ["p%40ss", "p@ss", "us%20er", "dXMgZXI6cEBzcw"] {
        assert!(!stderr.contains(secret), "{secret} in the log");
        assert!(!stdout.contains(secret), "{secret} in the output");
    }
    let store = std::fs::read(d.join("st.redb")).unwrap();
    for secret in ["p%40ss", "p@ss", "us%20er"] {
        assert!(
            !store.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} in the store"
        );
    }
    // A wrong scheme names the URL without its user info.
    let out = Command::new(env!("CARGO_BIN_EXE_tusflow"))
        .args(["upload", "-e", "ftp://us:pw@127.0.0.1/files/"])
        .arg(&file)
        .current_dir(d)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("ftp://127.0.0.1/files/") && !stderr.contains("pw"),
        "{stderr}"
    );
}

#[test]
fn status_shows_control_bytes_in_metadata_escaped() {
    let server = TusServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(async {
        let client = tusflow::Client::new(server.endpoint.clone()).unwrap();
        let mut meta = tusflow::Metadata::new();
        meta.insert("filename", "\u{1b}]52;c;aGk=\u{7}evil\u{1b}[2J")
            .unwrap();
        client.create(Some(10), &meta).await.unwrap().url
    });
    let out = Command::new(env!("CARGO_BIN_EXE_tusflow"))
        .args(["status", url.as_str()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !out.stdout.contains(&0x1b) && !out.stdout.contains(&0x07),
        "raw control bytes"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\\u{1b}]52;c;aGk=\\u{7}evil"), "{stdout}");
}

/// A token in the endpoint's query goes to the server and nowhere else: not the log at
/// `-vvv`, not the output, not the store's records.
#[test]
fn a_token_in_the_endpoints_query_stays_out_of_logs_and_the_store() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = make_file(d, "f.bin", 200_000, 5);
    let endpoint = format!("{}?token=s3cr3tq", server.endpoint);
    // Stopped halfway, so its record stays in the store.
    let extra = ["--chunk-size", "50000", "--stop-at", "100000"];
    let (code, stdout, stderr) = upload_vvv(d, &endpoint, &extra, &file);
    assert_eq!(code, Some(0), "{stderr}");
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["offset"], 100_000, "{stdout}");
    assert!(!stderr.contains("s3cr3tq"), "the token in the log");
    assert!(!stdout.contains("s3cr3tq"), "the token in the output");
    let store = std::fs::read(d.join("st.redb")).unwrap();
    assert!(
        !store.windows(7).any(|w| w == b"s3cr3tq"),
        "the token in the store"
    );
}
