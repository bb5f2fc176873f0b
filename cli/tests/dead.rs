//! A dead endpoint, found out once: a batch against a closed port or a server that
//! accepts connections and never answers ends with one message naming the endpoint,
//! after a few tries of the first request, not a retry budget per file.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A server that accepts, reads, and never answers; it counts the requests.
fn silent() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&requests);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let count = Arc::clone(&count);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    // One request head in, never an answer.
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        count.fetch_add(1, Ordering::Relaxed);
                        head.clear();
                    }
                }
            });
        }
    });
    (port, requests)
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

fn files(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..n {
        std::fs::write(
            dir.path().join(format!("f{i:02}.bin")),
            vec![i as u8; 10_000],
        )
        .unwrap();
    }
    dir
}

fn tusflow(args: &[&str], data: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tusflow"))
        .args(args)
        .env("XDG_DATA_HOME", data)
        .output()
        .unwrap()
}

fn lines(out: &Output) -> (Vec<String>, String) {
    let err = String::from_utf8_lossy(&out.stderr);
    (err.lines().map(str::to_owned).collect(), err.into_owned())
}

#[test]
fn a_batch_against_a_closed_port_says_so_once() {
    let dir = files(24);
    let endpoint = format!("http://127.0.0.1:{}/files/", closed_port());
    let store = dir.path().join("store.redb");
    let out = tusflow(
        &[
            "batch",
            "-e",
            &endpoint,
            "--concurrency",
            "8",
            "--store",
            store.to_str().unwrap(),
            dir.path().join("*.bin").to_str().unwrap(),
        ],
        dir.path(),
    );
    let (lines, err) = lines(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(lines.len(), 1, "one line on stderr: {err}");
    assert!(
        lines[0].contains(&format!("the server at {endpoint} cannot be reached"))
            && lines[0].contains("cannot connect")
            && lines[0].contains("24 files not uploaded"),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0 complete"), "{stdout}");
    assert!(stdout.contains("not started"), "{stdout}");
}

#[test]
fn a_batch_against_a_server_that_never_answers_tries_its_first_request_four_times() {
    let dir = files(24);
    let (port, requests) = silent();
    let endpoint = format!("http://127.0.0.1:{port}/files/");
    let out = tusflow(
        &[
            "batch",
            "-e",
            &endpoint,
            "--concurrency",
            "8",
            "--stall-timeout",
            "1",
            "--no-store",
            dir.path().join("*.bin").to_str().unwrap(),
        ],
        dir.path(),
    );
    let (lines, err) = lines(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("cannot be reached"), "{err}");
    assert!(
        lines[0].contains("asking the server for its capabilities (OPTIONS"),
        "{err}"
    );
    // The first request, tried four times; no file tried on its own.
    assert_eq!(requests.load(Ordering::Relaxed), 4);
}

#[test]
fn a_single_upload_to_a_closed_port_is_one_line() {
    let dir = files(1);
    let endpoint = format!("http://127.0.0.1:{}/files/", closed_port());
    let out = tusflow(
        &[
            "upload",
            "-e",
            &endpoint,
            "--no-store",
            dir.path().join("f00.bin").to_str().unwrap(),
        ],
        dir.path(),
    );
    let (lines, err) = lines(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("tusflow: the server at "), "{err}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A failure at the default verbosity is one line: no log-middleware line, no retry
/// line, no "failed" line on stdout besides it.
#[test]
fn one_failed_upload_is_one_line_at_the_default_verbosity() {
    let dir = files(1);
    // A server that answers OPTIONS, then 500 to everything (the retries go quietly).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                use std::io::{BufRead, BufReader, Write};
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let options = line.starts_with("OPTIONS");
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let _ = std::io::copy(&mut (&mut reader).take(len as u64), &mut std::io::sink());
                let answer = if options {
                    "HTTP/1.1 204 No Content\r\nTus-Version: 1.0.0\r\nTus-Extension: creation\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                } else {
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nboom"
                };
                let _ = conn.write_all(answer.as_bytes());
            });
        }
    });
    let endpoint = format!("http://127.0.0.1:{port}/files/");
    let file = dir.path().join("f00.bin");
    let run = |verbose: &[&str]| {
        let mut args = vec!["upload", "-e", &endpoint, "--no-store", "--retries", "2"];
        args.extend_from_slice(verbose);
        args.push(file.to_str().unwrap());
        tusflow(&args, dir.path())
    };
    let out = run(&[]);
    let (lines, err) = lines(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("creating the upload (POST http://127.0.0.1:")
            && lines[0].contains("server answered 500 Internal Server Error: boom"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // From -v up, the log says what happened on the way.
    let out = run(&["-v"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retrying"), "{err}");
}
