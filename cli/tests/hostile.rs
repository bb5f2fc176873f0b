//! Hostile or broken servers: a corpus of canned answers served on loopback, each met
//! by the `tusflow` CLI. Every case must end with exit code 1 and a clear error (after
//! bounded retries), never a panic, a hang or memory without bound. And credentials
//! never go to an origin a server names.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the server does with one request.
#[derive(Clone)]
enum Answer {
    /// Write these bytes, then close.
    Raw(String),
    /// Read the request, then never answer.
    Hang,
    /// A 200 whose chunked body never ends.
    Endless,
    /// Write these bytes as soon as the request head is read, before its body, and
    /// keep the connection a while.
    Early(String),
    /// Write this head, then drip a byte of body every 300 ms for a minute.
    Drip(String),
    /// Write this head, then nothing for a minute.
    HeadOnly(String),
}

/// What was asked: the method, the request's `Upload-Offset`, every header line.
struct Asked {
    method: String,
    offset: Option<u64>,
    headers: Vec<String>,
}

type Script = Arc<dyn Fn(&Asked, u16) -> Answer + Send + Sync>;

fn tus(status: &str, headers: &str) -> Answer {
    Answer::Raw(format!(
        "HTTP/1.1 {status}\r\nTus-Resumable: 1.0.0\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    ))
}

/// A well-behaved answer for a 100,000-byte upload, so a case can break one thing.
fn normal(a: &Asked, port: u16) -> Answer {
    match a.method.as_str() {
        "OPTIONS" => tus(
            "204 No Content",
            "Tus-Version: 1.0.0\r\nTus-Extension: creation\r\n",
        ),
        "POST" => tus(
            "201 Created",
            &format!("Location: http://127.0.0.1:{port}/files/1\r\n"),
        ),
        "HEAD" => tus(
            "200 OK",
            "Upload-Offset: 0\r\nUpload-Length: 100000\r\nCache-Control: no-store\r\n",
        ),
        _ => tus("204 No Content", "Upload-Offset: 100000\r\n"),
    }
}

/// Serve `script` on a free loopback port, a thread per connection.
fn serve(script: Script) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let script = Arc::clone(&script);
            std::thread::spawn(move || {
                let _ = handle(conn, &*script, port);
            });
        }
    });
    port
}

fn handle(
    mut conn: TcpStream,
    script: &dyn Fn(&Asked, u16) -> Answer,
    port: u16,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut asked = Asked {
        method: line.split(' ').next().unwrap_or("").to_owned(),
        offset: None,
        headers: Vec::new(),
    };
    let mut length = 0u64;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        let lower = h.trim().to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if let Some(v) = lower.strip_prefix("upload-offset:") {
            asked.offset = v.trim().parse().ok();
        }
        asked.headers.push(lower);
    }
    let answer = script(&asked, port);
    if let Answer::Early(bytes) = &answer {
        conn.write_all(bytes.as_bytes())?;
        std::thread::sleep(Duration::from_secs(2));
        return Ok(());
    }
    std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink())?;
    match answer {
        Answer::Early(_) => unreachable!("answered above"),
        Answer::Raw(bytes) => conn.write_all(bytes.as_bytes())?,
        Answer::Hang => std::thread::sleep(Duration::from_secs(60)),
        Answer::HeadOnly(head) => {
            conn.write_all(head.as_bytes())?;
            std::thread::sleep(Duration::from_secs(60));
        }
        Answer::Drip(head) => {
            conn.write_all(head.as_bytes())?;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) {
                conn.write_all(b"x")?;
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        Answer::Endless => {
            conn.write_all(
                b"HTTP/1.1 200 OK\r\nTus-Resumable: 1.0.0\r\nTus-Version: 1.0.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            )?;
            let chunk = format!("{:x}\r\n{}\r\n", 65536, "x".repeat(65536));
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) {
                conn.write_all(chunk.as_bytes())?;
            }
        }
    }
    Ok(())
}

/// Run `tusflow upload` of `file` to the server on `port`, bounded to 60 s.
fn upload(port: u16, file: &std::path::Path, extra: &[&str], name: &str) -> Output {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tusflow"))
        .args(["upload", "-e", &format!("http://127.0.0.1:{port}/files/")])
        .args(if extra.contains(&"--retries") {
            &[][..]
        } else {
            &["--retries", "1"][..]
        })
        .args(["--stall-timeout", "1", "--connect-timeout", "2"])
        .args(["--no-store"])
        .args(extra)
        .arg(file)
        .env("XDG_DATA_HOME", data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{name}: tusflow did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_hostile_case_is_a_clear_error_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("up.bin");
    std::fs::write(&file, vec![7u8; 100_000]).unwrap();
    let big_header = format!("X-Junk: {}\r\n", "a".repeat(2 << 20));
    let html = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 28\r\nConnection: close\r\n\r\n<html><body>hi</body></html>";

    let patch = |answer: Answer| -> Script {
        Arc::new(move |a: &Asked, p: u16| {
            if a.method == "PATCH" {
                answer.clone()
            } else {
                normal(a, p)
            }
        })
    };
    let post = |answer: Answer| -> Script {
        Arc::new(move |a: &Asked, p: u16| {
            if a.method == "POST" {
                answer.clone()
            } else {
                normal(a, p)
            }
        })
    };
    let every = |answer: Answer| -> Script { Arc::new(move |_: &Asked, _: u16| answer.clone()) };
    // (name, server, extra flags, what stderr must say)
    let cases: Vec<(&str, Script, &[&str], &str)> = vec![
        (
            "no Upload-Offset",
            patch(tus("204 No Content", "")),
            &[],
            "Upload-Offset",
        ),
        (
            "negative offset",
            patch(tus("204 No Content", "Upload-Offset: -5\r\n")),
            &[],
            "\"-5\" is not a non-negative integer",
        ),
        (
            "non-numeric offset",
            patch(tus("204 No Content", "Upload-Offset: lots\r\n")),
            &[],
            "\"lots\" is not a non-negative integer",
        ),
        (
            "huge offset",
            patch(tus(
                "204 No Content",
                "Upload-Offset: 123456789012345678901234567890\r\n",
            )),
            &[],
            "is too large",
        ),
        (
            "offset beyond the length",
            patch(tus("204 No Content", "Upload-Offset: 100100\r\n")),
            &[],
            "Upload-Offset 100100 after bytes up to 100000",
        ),
        (
            "offset going backwards",
            Arc::new(|a: &Asked, p: u16| match (a.method.as_str(), a.offset) {
                ("PATCH", Some(0)) => tus("204 No Content", "Upload-Offset: 50000\r\n"),
                ("PATCH", _) => tus("500 Internal Server Error", ""),
                ("HEAD", _) => tus("200 OK", "Upload-Offset: 10\r\nUpload-Length: 100000\r\n"),
                _ => normal(a, p),
            }),
            &["--chunk-size", "50000"],
            "went back from 50000 to 10",
        ),
        (
            "201 without Location",
            post(tus("201 Created", "")),
            &[],
            "Location",
        ),
        (
            "Location not http",
            post(tus("201 Created", "Location: javascript:alert(1)\r\n")),
            &[],
            "is not http or https",
        ),
        (
            "redirect loop",
            Arc::new(|a: &Asked, p: u16| {
                if a.method == "POST" {
                    tus(
                        "307 Temporary Redirect",
                        &format!("Location: http://127.0.0.1:{p}/files/\r\n"),
                    )
                } else {
                    normal(a, p)
                }
            }),
            &[],
            "too many redirects",
        ),
        (
            "a web server answering HTML",
            every(Answer::Raw(html.into())),
            &[],
            "Location",
        ),
        (
            "megabytes of headers",
            every(Answer::Raw(format!(
                "HTTP/1.1 204 No Content\r\n{big_header}Content-Length: 0\r\n\r\n"
            ))),
            &[],
            "message head is too large",
        ),
        (
            "a body that never ends",
            every(Answer::Endless),
            &[],
            "Location",
        ),
        (
            "accepts and never answers",
            every(Answer::Hang),
            &[],
            "stall timeout",
        ),
        (
            "a 409, and the upload already at its end (a URL given to two files)",
            Arc::new(|a: &Asked, p: u16| match a.method.as_str() {
                "PATCH" => tus("409 Conflict", ""),
                "HEAD" => tus(
                    "200 OK",
                    "Upload-Offset: 100000\r\nUpload-Length: 100000\r\n",
                ),
                _ => normal(a, p),
            }),
            &[],
            "though every try of it was refused",
        ),
    ];
    let mut tried = 0;
    for (name, script, extra, needle) in cases {
        let port = serve(script);
        let out = upload(port, &file, extra, name);
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("{name}: {}", err.lines().last().unwrap_or(""));
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains(needle),
            "{name}: expected {needle:?} in: {err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(err.len() < 8192, "{name}: {} bytes of errors", err.len());
        tried += 1;
    }
    assert_eq!(tried, 14);
}

#[test]
fn credentials_never_go_to_an_origin_the_server_names() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("up.bin");
    std::fs::write(&file, vec![7u8; 100_000]).unwrap();
    // The other origin records what it was sent, and behaves.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&seen);
    let other = serve(Arc::new(move |a: &Asked, p: u16| {
        log.lock().unwrap().extend(a.headers.iter().cloned());
        normal(a, p)
    }));
    let endpoint = serve(Arc::new(move |a: &Asked, p: u16| {
        if a.method == "POST" {
            tus(
                "201 Created",
                &format!("Location: http://127.0.0.1:{other}/files/1\r\n"),
            )
        } else {
            normal(a, p)
        }
    }));
    let creds = [
        "-H",
        "Authorization: Bearer s3cr3t",
        "-H",
        "X-Api-Key: k3y",
        "-H",
        "X-Trace: fine",
    ];
    let out = upload(endpoint, &file, &creds, "another origin");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let headers = seen.lock().unwrap().clone();
    assert!(headers.iter().any(|h| h == "x-trace: fine"), "{headers:?}");
    assert!(
        !headers
            .iter()
            .any(|h| h.contains("s3cr3t") || h.contains("k3y")),
        "credentials reached the other origin: {headers:?}"
    );

    // Unless that origin is trusted.
    seen.lock().unwrap().clear();
    let trust = format!("[\"http://127.0.0.1:{other}\"]");
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tusflow"))
        .args([
            "upload",
            "-e",
            &format!("http://127.0.0.1:{endpoint}/files/"),
        ])
        .args(["--no-store"])
        .args(creds)
        .arg(&file)
        .env("XDG_DATA_HOME", data.path())
        .env("TUSFLOW_TRUSTED_ORIGINS", trust)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let headers = seen.lock().unwrap().clone();
    assert!(headers.iter().any(|h| h.contains("s3cr3t")), "{headers:?}");
}

/// A success that acknowledges bytes the client never finished sending (answered
/// right after the request head, before the body was read) is a protocol error, never
/// "complete".
#[test]
fn an_acknowledgement_before_the_body_was_read_is_not_complete() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    let size = 64u64 << 20;
    let f = std::fs::File::create(&file).unwrap();
    f.set_len(size).unwrap();
    let early = Answer::Early(format!(
        "HTTP/1.1 204 No Content\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: {size}\r\n\r\n"
    ));
    let port = serve(Arc::new(move |a: &Asked, p: u16| match a.method.as_str() {
        "PATCH" => early.clone(),
        "POST" => tus(
            "201 Created",
            &format!("Location: http://127.0.0.1:{p}/files/1\r\n"),
        ),
        _ => normal(a, p),
    }));
    let out = upload(port, &file, &[], "early acknowledgement");
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!stdout.contains("complete"), "{stdout}");
    assert!(err.contains("it answered before reading them"), "{err}");
}

/// Serve `script`, counting the requests of each method.
fn counted(script: Script) -> (u16, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&seen);
    let port = serve(Arc::new(move |a: &Asked, p: u16| {
        log.lock().unwrap().push(a.method.clone());
        script(a, p)
    }));
    (port, seen)
}

fn count(seen: &Mutex<Vec<String>>, method: &str) -> usize {
    seen.lock().unwrap().iter().filter(|m| *m == method).count()
}

fn file_of_100k() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("up.bin");
    std::fs::write(&file, vec![7u8; 100_000]).unwrap();
    (dir, file)
}

/// An answer whose body drips a byte at a time has the stall timeout to end, in all:
/// the head's acknowledgement stands (the upload completes), an error's excerpt is
/// what arrived.
#[test]
fn an_answer_that_drips_cannot_hold_an_upload() {
    let (_dir, file) = file_of_100k();
    let ok = Answer::Drip(
        "HTTP/1.1 200 OK\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 100000\r\nContent-Length: 5000\r\n\r\n".into(),
    );
    let port = serve(Arc::new(move |a: &Asked, p: u16| match a.method.as_str() {
        "PATCH" => ok.clone(),
        _ => normal(a, p),
    }));
    let out = upload(port, &file, &[], "a 2xx that drips");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("complete"));

    let failing =
        Answer::Drip("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5000\r\n\r\n".into());
    let port = serve(Arc::new(move |a: &Asked, p: u16| match a.method.as_str() {
        "PATCH" => failing.clone(),
        _ => normal(a, p),
    }));
    let out = upload(port, &file, &[], "a 500 that drips");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("500 Internal Server Error: xxx"), "{err}");
}

/// Two different `Upload-Offset` headers in one answer: which one the server meant
/// cannot be known, so neither is believed.
#[test]
fn conflicting_upload_offset_headers_are_an_error() {
    let (_dir, file) = file_of_100k();
    let port = serve(Arc::new(|a: &Asked, p: u16| match a.method.as_str() {
        "PATCH" => tus(
            "204 No Content",
            "Upload-Offset: 100000\r\nUpload-Offset: 5\r\n",
        ),
        _ => normal(a, p),
    }));
    let out = upload(port, &file, &[], "two Upload-Offset headers");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad Upload-Offset from server: given twice with different values (\"100000\" and \"5\")"),
        "{err}"
    );
}

/// A 204 that acknowledges fewer bytes than were sent: the client asks the server
/// where it is (`HEAD`) and sends the rest from there.
#[test]
fn a_short_acknowledgement_resyncs_and_goes_on() {
    let (_dir, file) = file_of_100k();
    let stored = Arc::new(Mutex::new(0u64));
    let at = Arc::clone(&stored);
    let (port, seen) = counted(Arc::new(move |a: &Asked, p: u16| {
        let mut at = at.lock().unwrap();
        match a.method.as_str() {
            // The first append is taken only in part.
            "PATCH" if a.offset == Some(0) => {
                *at = 40_000;
                tus("204 No Content", "Upload-Offset: 40000\r\n")
            }
            "PATCH" => {
                *at = 100_000;
                tus("204 No Content", "Upload-Offset: 100000\r\n")
            }
            "HEAD" => tus(
                "200 OK",
                &format!("Upload-Offset: {at}\r\nUpload-Length: 100000\r\n"),
            ),
            _ => normal(a, p),
        }
    }));
    let out = upload(port, &file, &[], "a short acknowledgement");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(count(&seen, "PATCH"), 2);
    assert_eq!(count(&seen, "HEAD"), 1);

    // One that never takes anything ends after three re-syncs.
    let (port, seen) = counted(Arc::new(|a: &Asked, p: u16| match a.method.as_str() {
        "PATCH" => tus("204 No Content", "Upload-Offset: 0\r\n"),
        _ => normal(a, p),
    }));
    let out = upload(port, &file, &[], "an acknowledgement of nothing");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("took none of the 100000 bytes"), "{err}");
    assert_eq!(count(&seen, "PATCH"), 3);
}

/// The retry path's `HEAD` checks `Upload-Length` as resuming does: an upload of
/// another length at the URL is not this one, and gets no bytes.
#[test]
fn a_resync_that_finds_another_length_stops() {
    let (_dir, file) = file_of_100k();
    let (port, seen) = counted(Arc::new(|a: &Asked, p: u16| match a.method.as_str() {
        "PATCH" => tus("500 Internal Server Error", ""),
        "HEAD" => tus("200 OK", "Upload-Offset: 0\r\nUpload-Length: 999\r\n"),
        _ => normal(a, p),
    }));
    let out = upload(port, &file, &["--retries", "3"], "another length");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the upload is 999 bytes long on the server but 100000 bytes here"),
        "{err}"
    );
    assert_eq!(count(&seen, "PATCH"), 1);
}

/// A 201 whose body is cut short is still a creation: the head holds the answer, and
/// trying again would leave orphan uploads. One whose head is not HTTP is an error at
/// once, for the same reason.
#[test]
fn a_creation_with_a_broken_frame_is_not_retried_into_orphans() {
    let (_dir, file) = file_of_100k();
    // Each POST answer, made for the server's port; what the run must end with.
    type Make = fn(u16) -> Answer;
    let cases: [(&str, Make, i32, &str); 3] = [
        (
            "a 201 cut short",
            |p| {
                Answer::Raw(format!(
                    "HTTP/1.1 201 Created\r\nTus-Resumable: 1.0.0\r\nLocation: http://127.0.0.1:{p}/files/1\r\nContent-Length: 50\r\nConnection: close\r\n\r\nshort"
                ))
            },
            0,
            "",
        ),
        // A 201 whose promised body never comes: the head stands.
        (
            "a 201 without its body",
            |p| {
                Answer::HeadOnly(format!(
                    "HTTP/1.1 201 Created\r\nTus-Resumable: 1.0.0\r\nLocation: http://127.0.0.1:{p}/files/1\r\nContent-Length: 50\r\n\r\n"
                ))
            },
            0,
            "",
        ),
        (
            "a 201 that is not HTTP",
            |p| {
                Answer::Raw(format!(
                    "HTTP/1.1 201 Created\r\nLocation: http://127.0.0.1:{p}/files/1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy"
                ))
            },
            1,
            "not valid HTTP",
        ),
    ];
    for (name, post, code, needle) in cases {
        let (port, seen) = counted(Arc::new(move |a: &Asked, p: u16| match a.method.as_str() {
            "POST" => post(p),
            _ => normal(a, p),
        }));
        let out = upload(port, &file, &["--retries", "7"], name);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{name}: {err}");
        assert!(err.contains(needle), "{name}: {err}");
        assert_eq!(count(&seen, "POST"), 1, "{name}");
    }
}

/// A stream (its length deferred, declared with its first append) that gets a short
/// acknowledgement: the server has the length then, so the rest goes without
/// declaring it again (tusd answers 400 to a second `Upload-Length`).
#[cfg(unix)]
#[test]
fn a_short_acknowledgement_of_a_stream_does_not_declare_its_length_twice() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stream");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(fifo, vec![9u8; 100_000]).unwrap())
    };
    let state = Arc::new(Mutex::new((0u64, false)));
    let (port, seen) = counted(Arc::new(move |a: &Asked, p: u16| {
        let mut st = state.lock().unwrap();
        let declares = a.headers.iter().any(|h| h.starts_with("upload-length:"));
        match a.method.as_str() {
            "OPTIONS" => tus(
                "204 No Content",
                "Tus-Version: 1.0.0\r\nTus-Extension: creation,creation-defer-length\r\n",
            ),
            "POST" => tus(
                "201 Created",
                &format!("Location: http://127.0.0.1:{p}/files/1\r\n"),
            ),
            "PATCH" if declares && st.1 => tus("400 Bad Request", ""),
            "PATCH" => {
                st.1 |= declares;
                st.0 = if st.0 == 0 { 40_000 } else { 100_000 };
                tus("204 No Content", &format!("Upload-Offset: {}\r\n", st.0))
            }
            "HEAD" => {
                let length = if st.1 {
                    "Upload-Length: 100000\r\n".to_owned()
                } else {
                    "Upload-Defer-Length: 1\r\n".to_owned()
                };
                tus("200 OK", &format!("Upload-Offset: {}\r\n{length}", st.0))
            }
            _ => normal(a, p),
        }
    }));
    let out = upload(port, &fifo, &[], "a short acknowledgement of a stream");
    writer.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(count(&seen, "PATCH"), 2, "{err}");
}
