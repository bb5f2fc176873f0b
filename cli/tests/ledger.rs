//! `tusflow ledger status | retry-failed | forget` against a real PostgreSQL: the totals
//! every worker sees, from flags, a config file or the environment, and never the
//! database password in what a person reads.

#[path = "../../tests/support/pg.rs"]
mod pg;

use std::process::{Command, Output};
use std::time::Duration;

use tusflow::ledger::postgres::PgLedger;
use tusflow::ledger::{Ledger, NewEntry};

fn tusflow(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tusflow"))
        .args(args)
        .current_dir(dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env_remove("TUSFLOW_LEDGER__URL")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn ledger_status_retry_failed_and_forget() {
    let server = pg::server();
    let url = server.database("cli_ledger");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Five files; a worker completes one and fails one.
    let ledger = PgLedger::connect(&url, "media").unwrap();
    let sizes = [100u64, 200, 300, 400, 500];
    let entries: Vec<NewEntry> = sizes
        .iter()
        .enumerate()
        .map(|(i, s)| NewEntry::new(format!("f{i}"), *s))
        .collect();
    ledger.enqueue(&entries).unwrap();
    let got = ledger.claim("w", 2, Duration::from_secs(30), &[]).unwrap();
    assert!(ledger.complete("w", &got[0].key).unwrap());
    assert!(
        ledger
            .fail("w", &got[1].key, "server answered 500")
            .unwrap()
    );

    let status = |extra: &[&str]| {
        let mut args = vec!["ledger", "status", "--ledger", &url, "--name", "media"];
        args.extend_from_slice(extra);
        tusflow(&args, d)
    };
    let out = status(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            &t["total"],
            &t["complete"],
            &t["failed"],
            &t["pending"],
            &t["active"]
        ),
        (&5.into(), &1.into(), &1.into(), &3.into(), &0.into()),
        "{t}"
    );
    assert_eq!(
        (&t["bytes_total"], &t["bytes_done"]),
        (&1500.into(), &100.into())
    );

    let out = status(&[]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!(
            "5 files in 127.0.0.1:{}/cli_ledger: 1 complete",
            server.port
        )),
        "{shown}"
    );
    assert!(!shown.contains(pg::PASSWORD) && !text(&out.stderr).contains(pg::PASSWORD));
    // Why each failed file failed, and what to do.
    assert!(
        shown.contains(&format!("  failed: {}: server answered 500", got[1].key)),
        "{shown}"
    );
    assert!(shown.contains("tusflow ledger retry-failed"), "{shown}");
    assert_eq!(t["failures"][0]["error"], "server answered 500", "{t}");

    let out = tusflow(
        &[
            "ledger",
            "retry-failed",
            "--ledger",
            &url,
            "--name",
            "media",
        ],
        d,
    );
    assert_eq!(text(&out.stdout).trim(), "1 failed files are pending again");
    let t: serde_json::Value = serde_json::from_slice(&status(&["--json"]).stdout).unwrap();
    assert_eq!((&t["pending"], &t["failed"]), (&4.into(), &0.into()), "{t}");

    // The same from a config file, with the URL from the environment; `config show`
    // hides the password.
    std::fs::write(
        d.join("tusflow.toml"),
        "[ledger]\nkind = \"postgres\"\nname = \"media\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tusflow"))
        .args(["ledger", "status", "--json"])
        .current_dir(d)
        .env("TUSFLOW_LEDGER__URL", &url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["total"], 5);
    let out = Command::new(env!("CARGO_BIN_EXE_tusflow"))
        .args(["config", "show"])
        .current_dir(d)
        .env("TUSFLOW_LEDGER__URL", &url)
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    assert!(
        shown.contains("ledger.url = \"postgres://tus:<redacted>@127.0.0.1:"),
        "{shown}"
    );
    assert!(!shown.contains(pg::PASSWORD), "{shown}");
    std::fs::remove_file(d.join("tusflow.toml")).unwrap();

    let out = tusflow(
        &["ledger", "forget", "--ledger", &url, "--name", "media"],
        d,
    );
    assert_eq!(
        text(&out.stdout).trim(),
        "forgot the batch (5 files); the server keeps their uploads"
    );
    let t: serde_json::Value = serde_json::from_slice(&status(&["--json"]).stdout).unwrap();
    assert_eq!(t["total"], 0);
}

#[test]
fn a_dead_or_missing_ledger_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("postgres://tus:{}@127.0.0.1:{closed}/x", pg::PASSWORD);
    let out = tusflow(&["ledger", "status", "--ledger", &dead, "--name", "b"], d);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("127.0.0.1:{closed}/x")), "{err}");
    assert!(!err.contains(pg::PASSWORD), "{err}");

    let out = tusflow(&["ledger", "status", "--ledger", &dead], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--name NAME"),
        "{}",
        text(&out.stderr)
    );
    let out = tusflow(&["ledger", "status", "--name", "b"], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--ledger postgres://"),
        "{}",
        text(&out.stderr)
    );
}
