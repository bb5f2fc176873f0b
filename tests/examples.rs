//! The programs in `examples/` run against the real tus server and store exact bytes.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use support::{TusServer, make_file};

/// The path of an example binary. `cargo test` builds the examples before it runs the
/// tests (building them from here would wait forever on cargo's lock of `target/`).
fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test` (which builds the examples) or `cargo build --examples`",
        path.display()
    );
    path
}

fn stored_url(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {stdout:?}"))
        .trim_matches(|c| c == '"' || c == ',' || c == '}')
        .to_owned()
}

#[test]
fn custom_middleware_and_tower_http_examples_upload() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = make_file(dir.path(), "ex.bin", 9 << 20, 31);
    for name in ["custom_middleware", "tower_http"] {
        let out = Command::new(example(name))
            .arg(&server.endpoint)
            .arg(&file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.assert_stored_file(&stored_url(&stdout), &file);
        if name == "custom_middleware" {
            // 9 MiB in 4 MiB chunks: the first in the creation (creation-with-upload),
            // two appends, and one OPTIONS for the client.
            for line in [
                "create: 1 requests, 4194304 body bytes",
                "append: 2 requests, 5242880 body bytes",
                "discover: 1 requests, 0 body bytes",
            ] {
                assert!(stdout.contains(line), "{line}: {stdout}");
            }
        }
    }
}

/// A child process killed (by its PID) when dropped, even when the test panics.
struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn axum_relay_streams_what_it_receives_into_a_tus_upload() {
    let server = TusServer::start();
    let mut relay = KillOnDrop(
        Command::new(example("axum_relay"))
            .args([&server.endpoint, "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(relay.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("relay address")
        .to_owned();

    let data = support::pattern(10 << 20, 41);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answer = rt.block_on(async {
        // The pooled client of tusflow's own transport (it sets up TLS once).
        let http = tusflow::core::TusService::builder()
            .build()
            .unwrap()
            .http_client()
            .clone();
        http.put(format!("http://{addr}/relay/video.bin"))
            .body(data.clone())
            .send()
            .await
            .unwrap()
    });
    let status = answer.status();
    let body = rt.block_on(answer.text()).unwrap();
    drop(relay);
    assert_eq!(status.as_u16(), 201, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["size"], 10 << 20);
    server.assert_stored(answer["url"].as_str().unwrap(), &data);
}
