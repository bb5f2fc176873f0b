//! `tusflow batch`, and the front end of the batch engine for `upload` too: progress
//! bars, a line or a JSON object per file, the report written as files end, Ctrl-C.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use tusflow::Url;
use tusflow::batch::Job;

use crate::args::{BatchArgs, CommonArgs, common_overrides};
use crate::stack::client_and_metadata;
use crate::walk::Walk;
use crate::{FAILED, Failure, OK};

pub(crate) async fn batch(config: Option<&Path>, args: BatchArgs) -> Result<u8, Failure> {
    let mut overrides = common_overrides(&args.common)?;
    let mut ledger = args.ledger.overrides();
    if let Some(l) = &args.lease {
        ledger.insert("lease".into(), json!(l));
    }
    if !ledger.is_empty()
        && let Some(o) = overrides.as_object_mut()
    {
        o.insert("ledger".into(), serde_json::Value::Object(ledger));
    }
    let loaded = crate::config::load(config, overrides)?;
    if loaded.config.endpoint.is_none() {
        return Err(Failure::Usage(
            "batch needs an endpoint: --endpoint URL or `endpoint` in the config".into(),
        ));
    }
    let paths = if args.paths.is_empty() {
        loaded.config.batch.paths.clone()
    } else {
        args.paths.clone()
    };
    // A ledger URL (flag, file or TUSFLOW_LEDGER__URL) means a shared batch.
    let shared = loaded.config.ledger.kind == crate::config::LedgerKind::Postgres
        || loaded.config.ledger.url.is_some();
    if paths.is_empty() && !shared {
        return Err(Failure::Usage(
            "batch needs files: PATH or GLOB arguments, or batch.paths in the config (or a shared ledger, --ledger URL --name NAME, to work on what is queued)".into(),
        ));
    }
    let mut exclude = loaded.config.batch.exclude.clone();
    exclude.extend(args.exclude.iter().cloned());
    // Every argument is checked now; the files are found as the batch goes.
    match Walk::new(&paths, &exclude) {
        Ok(_) => {}
        Err(e) if e.is_io() => return Err(Failure::Usage(e.to_string())),
        Err(e) => return Err(e.into()),
    }
    let stop_at = args
        .stop_at
        .as_deref()
        .map(tusflow::size::parse_size)
        .transpose()?;
    if shared {
        return crate::shared::batch(&loaded, &args.common, paths, exclude, stop_at).await;
    }
    let jobs = Jobs::Walk(Box::new(move || Walk::new(&paths, &exclude).ok()));
    run_jobs(&loaded, &args.common, jobs, stop_at, None, true, args.force).await
}

/// Where a run's files come from.
pub(crate) enum Jobs {
    /// The files `upload` was given.
    List(Vec<Job>),
    /// A fresh walk of a batch's arguments, each time it is called (one walk to total
    /// the bytes for the progress bars, one to upload).
    Walk(Box<dyn Fn() -> Option<Walk> + Send>),
    /// A shared batch's worker, the bytes left in the batch, and the paths that could
    /// not be listed when it enqueued.
    Shared(Box<crate::shared::Shared>),
}

/// The report file, written as files end: `{"files": [...], "totals": {...}}`, under
/// a temporary name until the totals are in.
struct ReportFile {
    path: PathBuf,
    partial: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    first: bool,
}

impl ReportFile {
    fn create(path: &Path) -> Result<Self, Failure> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let cannot = |e: std::io::Error| {
            Failure::Usage(format!("cannot write the report {}: {e}", path.display()))
        };
        let file = std::fs::File::create(&partial).map_err(cannot)?;
        let mut out = std::io::BufWriter::new(file);
        out.write_all(b"{\n  \"files\": [").map_err(cannot)?;
        Ok(ReportFile {
            path: path.to_owned(),
            partial,
            out,
            first: true,
        })
    }

    fn add(&mut self, r: &tusflow::batch::FileReport) -> std::io::Result<()> {
        let sep = if self.first { "\n    " } else { ",\n    " };
        self.first = false;
        self.out.write_all(sep.as_bytes())?;
        serde_json::to_writer(&mut self.out, r).map_err(std::io::Error::other)
    }

    fn finish(mut self, totals: serde_json::Value) -> Result<(), Failure> {
        let cannot = |e: std::io::Error| {
            Failure::Usage(format!(
                "cannot write the report {}: {e}",
                self.path.display()
            ))
        };
        let totals = serde_json::to_string_pretty(&totals).expect("serializes");
        let totals = totals.replace('\n', "\n  ");
        write!(self.out, "\n  ],\n  \"totals\": {totals}\n}}\n").map_err(cannot)?;
        self.out.flush().map_err(cannot)?;
        std::fs::rename(&self.partial, &self.path).map_err(cannot)
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_jobs(
    loaded: &crate::config::Loaded,
    common: &CommonArgs,
    jobs: Jobs,
    stop_at: Option<u64>,
    url: Option<Url>,
    ledger: bool,
    force: bool,
) -> Result<u8, Failure> {
    let (client, metadata) = client_and_metadata(loaded, common, ledger)?;
    let mut opts = tusflow::batch::Options::default();
    opts.concurrency = loaded.config.batch.concurrency;
    opts.chunk_size = loaded.config.chunk_size;
    opts.parallel = loaded.config.parallel;
    opts.stop_at = stop_at;
    opts.metadata = metadata;
    opts.templates = loaded.config.batch.metadata.clone();
    opts.skip_complete = ledger;
    opts.force = force;
    opts.url = url;
    let (json_out, quiet) = (common.json, common.quiet);
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut report = common
        .report
        .as_deref()
        .map(ReportFile::create)
        .transpose()?;
    // Files that could not be listed: each a failed entry, and the run goes on.
    let unlisted = Arc::new(std::sync::Mutex::new(
        Vec::<tusflow::batch::FileReport>::new(),
    ));
    let bars = (!json_out && !quiet && tty).then(|| {
        let total = match &jobs {
            Jobs::List(list) => list
                .iter()
                .filter_map(|j| std::fs::metadata(&j.path).ok())
                .map(|m| m.len())
                .sum(),
            Jobs::Walk(walk) => walk()
                .into_iter()
                .flatten()
                .filter_map(|j| j.ok())
                .filter_map(|j| std::fs::metadata(&j.path).ok())
                .map(|m| m.len())
                .sum(),
            Jobs::Shared(s) => s.bytes_left,
        };
        // The bars show no more than the cap: bytes a socket buffer took at once
        // are not the rate.
        let limited = common.rate_limit.is_some()
            || loaded
                .config
                .middleware
                .stack
                .iter()
                .any(|s| s == "rate-limit");
        let cap = limited
            .then(|| {
                loaded
                    .figment
                    .extract_inner::<tusflow::rate_limit::RateLimitConfig>("middleware.rate-limit")
                    .ok()
            })
            .flatten()
            .map(|c| c.bytes_per_second)
            .filter(|&b| b > 0);
        let (multi, all) = progress_bars(total, cap);
        (multi, all, cap)
    });
    let mut shared = None;
    let jobs: Box<dyn Iterator<Item = Job> + Send> = match jobs {
        Jobs::List(list) => Box::new(list.into_iter()),
        Jobs::Shared(s) => {
            let s = *s;
            unlisted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(s.unlisted);
            shared = Some(s.worker);
            Box::new(std::iter::empty())
        }
        Jobs::Walk(walk) => {
            let unlisted = Arc::clone(&unlisted);
            Box::new(walk().into_iter().flatten().filter_map(move |j| match j {
                Ok(job) => Some(job),
                Err(u) => {
                    let r = tusflow::batch::FileReport::failed(u.path, u.reason);
                    unlisted.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                    None
                }
            }))
        }
    };
    let started = std::time::Instant::now();
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
        // tokio's handler replaces the default one: a second Ctrl-C quits at once.
        tokio::spawn(async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("tusflow: interrupted again: quitting now");
            std::process::exit(130);
        });
    };
    let on_start = bars
        .as_ref()
        .map(|(multi, all, cap)| file_bar_hook(multi.clone(), all.clone(), *cap));
    let printer = bars.as_ref().map(|(multi, ..)| multi.clone());
    let mut write_error = None;
    let mut on_done = |r: &tusflow::batch::FileReport| {
        let say = |line: String| match &printer {
            Some(m) => {
                let _ = m.println(line);
            }
            None => println!("{line}"),
        };
        let path = crate::text::shown(&r.path);
        // One line per failure, on stderr; an unreachable endpoint is said once, at
        // the end, for all the files it failed.
        if let Some(e) = &r.error
            && !r.unreachable
        {
            // (An error that names the file already is not prefixed with it again.)
            let e = e
                .strip_prefix(&format!("reading {}: ", r.path))
                .unwrap_or(e);
            let line = if e.starts_with(&format!("{} ", r.path)) {
                format!("tusflow: {}", crate::text::shown(e))
            } else {
                format!("tusflow: {path}: {}", crate::text::shown(e))
            };
            match &printer {
                Some(m) => m.suspend(|| eprintln!("{line}")),
                None => eprintln!("{line}"),
            }
        }
        if let Some(file) = &mut report
            && let Err(e) = file.add(r)
        {
            write_error.get_or_insert(e);
        }
        if json_out {
            println!("{}", serde_json::to_string(r).expect("a report serializes"));
        } else if !quiet {
            let url = crate::text::shown(r.url.as_deref().unwrap_or("-"));
            let size = r.size.unwrap_or(0);
            say(match r.status {
                "complete" if r.resumed => {
                    format!("{}: complete (resumed), {size} bytes -> {url}", path)
                }
                "complete" => format!("{}: complete, {size} bytes -> {url}", path),
                "skipped" => format!("{}: already uploaded -> {url}", path),
                "unfinished" => match (&r.url, r.offset) {
                    (Some(_), Some(o)) => {
                        format!("{path}: stopped at {o} of {size} bytes, resumable -> {url}")
                    }
                    _ => format!("{path}: stopped, resumable"),
                },
                "partial" => format!(
                    "{}: stopped at {} of {size} bytes -> {url}",
                    path,
                    r.offset.unwrap_or(0)
                ),
                // Said on stderr, in the one line above.
                _ => return,
            });
        }
    };
    let (mut summary, interrupted) = match &shared {
        Some(worker) => {
            tusflow::fleet::run(&client, worker, &opts, on_start, &mut on_done, stop).await
        }
        None => tusflow::batch::run(&client, jobs, &opts, on_start, &mut on_done, stop).await,
    };
    for r in std::mem::take(&mut *unlisted.lock().unwrap_or_else(|p| p.into_inner())) {
        summary.add(&r);
        on_done(&r);
    }
    if let Some((multi, all, _)) = &bars {
        // A stopped run keeps the total where it was; and nothing redraws over the
        // lines that follow.
        if interrupted {
            all.abandon();
        } else {
            all.finish();
        }
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        // The bars end where they are drawn: what follows starts on a line of its own.
        eprintln!();
    }
    if let Some(e) = write_error {
        let path = common.report.as_deref().unwrap_or(Path::new("?"));
        return Err(Failure::Usage(format!(
            "cannot write the report {}: {e}",
            path.display()
        )));
    }
    if let Some(file) = report {
        file.finish(json!({
            "files": summary.total(),
            "complete": summary.complete,
            "skipped": summary.skipped,
            "partial": summary.partial,
            "failed": summary.failed,
            "unfinished": summary.unfinished,
            "not_started": summary.not_started,
            "resumed": summary.resumed,
            "bytes": summary.bytes,
            "seconds": started.elapsed().as_secs_f64(),
            "interrupted": interrupted,
        }))?;
    }
    let stored = !matches!(
        loaded.config.store.kind,
        crate::config::StoreKind::None | crate::config::StoreKind::Memory
    );
    if let Some(why) = &summary.unreachable {
        let left = summary.failed + summary.not_started;
        let again = if summary.mismatch {
            "run it again with the protocol it speaks"
        } else if stored {
            "uploads begun are stored: run the same command again when it is up"
        } else {
            "run the same command again when it is up"
        };
        if summary.total() > 1 || summary.unread {
            let of = if summary.unread {
                format!("{left} files not uploaded and the rest not read")
            } else {
                format!("{left} of {} files not uploaded", summary.total())
            };
            eprintln!("tusflow: {}; {of} ({again})", crate::text::shown(why));
        } else {
            eprintln!("tusflow: {}", crate::text::shown(why));
        }
    }
    // (`ledger` is true for `batch`, which always ends with the totals.)
    if !json_out && !quiet && (summary.total() > 1 || ledger || shared.is_some()) {
        println!("{}", summary_line(&summary, started.elapsed()));
    }
    if let Some(worker) = &shared {
        return crate::shared::finish(worker, &summary, interrupted, json_out || quiet).await;
    }
    if interrupted {
        let done = summary.complete + summary.skipped;
        if !stored {
            eprintln!(
                "tusflow: interrupted: {done} files done, {} stopped in flight; with no store on disk, a run again starts the unfinished ones over",
                summary.unfinished
            );
        } else {
            // `--force` would start every file over: the continuation goes without it.
            let (command, redacted) = continuation(std::env::args());
            let note = if redacted {
                " (secrets shown as <redacted>: give them as before)"
            } else {
                ""
            };
            eprintln!(
                "tusflow: interrupted: {done} files done, {} stopped in flight; unfinished uploads are stored. To continue, run{note}:\n  {}",
                summary.unfinished,
                crate::text::shown(&command)
            );
        }
        return Ok(FAILED);
    }
    Ok(if summary.failed > 0 { FAILED } else { OK })
}

/// The command line to run again after Ctrl-C, shell-quoted, without `--force`, and
/// with its secrets (credential header values, a URL's password and query) shown as
/// `<redacted>`; true when any was.
fn continuation(args: impl Iterator<Item = String>) -> (String, bool) {
    let mut redacted = false;
    let mut out: Vec<String> = Vec::new();
    let mut header_next = false;
    for arg in args {
        if arg == "--force" {
            continue;
        }
        let shown = if header_next {
            header_next = false;
            redact_header(&arg, &mut redacted)
        } else if arg == "-H" || arg == "--header" {
            header_next = true;
            arg
        } else if let Some(h) = arg.strip_prefix("--header=") {
            format!("--header={}", redact_header(h, &mut redacted))
        } else if let Some(h) = arg.strip_prefix("-H").filter(|h| !h.is_empty()) {
            format!("-H{}", redact_header(h, &mut redacted))
        } else {
            redact_url_arg(&arg, &mut redacted)
        };
        out.push(shell_quote(&shown));
    }
    (out.join(" "), redacted)
}

/// `Name: value` with the value of a credential header redacted.
fn redact_header(h: &str, redacted: &mut bool) -> String {
    match h.split_once(':') {
        Some((name, _))
            if http::HeaderName::from_bytes(name.trim().as_bytes())
                .is_ok_and(|n| tusflow::client::is_sensitive_header(&n)) =>
        {
            *redacted = true;
            format!("{}: <redacted>", name.trim())
        }
        _ => h.to_owned(),
    }
}

/// An http(s) URL argument (`-e URL`, `--endpoint=URL`, `--url URL`) with its
/// password and query redacted.
fn redact_url_arg(arg: &str, redacted: &mut bool) -> String {
    let (prefix, text) = match arg.split_once('=') {
        Some((flag, v)) if flag.starts_with("--") => (format!("{flag}="), v),
        _ => (String::new(), arg),
    };
    let Ok(mut url) = tusflow::Url::parse(text) else {
        return arg.to_owned();
    };
    if !matches!(url.scheme(), "http" | "https")
        || (url.password().is_none() && url.query().is_none())
    {
        return arg.to_owned();
    }
    *redacted = true;
    if url.password().is_some() {
        let _ = url.set_password(Some("<redacted>"));
    }
    if url.query().is_some() {
        url.set_query(Some("<redacted>"));
    }
    // (The URL crate escapes `<` and `>`; shown as typed.)
    let shown = url.as_str().replace("%3Credacted%3E", "<redacted>");
    format!("{prefix}{shown}")
}

/// `arg` as a POSIX shell reads it back: bare when it is safe, else in single quotes.
fn shell_quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c));
    if safe {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// "9 complete, 0 failed, 266.00 MiB in 5.6 s", with the other counts when not 0.
fn summary_line(s: &tusflow::batch::Summary, took: std::time::Duration) -> String {
    let mut parts = vec![format!("{} complete", s.complete)];
    for (n, what) in [
        (s.skipped, "already uploaded"),
        (s.partial, "stopped at --stop-at"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.push(format!("{} failed", s.failed));
    for (n, what) in [
        (s.unfinished, "interrupted"),
        (s.not_started, "not started"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    format!(
        "{}, {} in {:.1} s",
        parts.join(", "),
        indicatif::HumanBytes(s.bytes),
        took.as_secs_f64()
    )
}

/// A total bar (bytes, rate, ETA) under a set of per-file bars, on stderr.
pub(crate) fn progress_bars(
    total_bytes: u64,
    cap: Option<u64>,
) -> (indicatif::MultiProgress, indicatif::ProgressBar) {
    let multi = indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
    let all = multi.add(indicatif::ProgressBar::new(total_bytes));
    all.set_style(style(
        "total {bar:30} {bytes}/{total_bytes} {rate} eta {eta}",
        cap,
    ));
    (multi, all)
}

/// A bar style whose `{rate}` is the bytes per second, at most `cap`.
fn style(template: &str, cap: Option<u64>) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .expect("a valid template")
        .with_key(
            "rate",
            move |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let rate = s.per_sec();
                let rate = cap.map_or(rate, |c| rate.min(c as f64));
                let _ = write!(w, "{}/s", indicatif::BinaryBytes(rate as u64));
            },
        )
}

/// A path as the result lines show it, cut at the front to fit a bar's label.
fn label(path: &str) -> String {
    let shown = crate::text::shown(path);
    let n = shown.chars().count();
    if n <= 40 {
        shown
    } else {
        let tail: String = shown.chars().skip(n - 39).collect();
        format!("…{tail}")
    }
}

/// For each file that starts: a bar of its own that follows its progress, and the
/// total bar moved by the same bytes. The bar goes when the upload ends.
pub(crate) fn file_bar_hook(
    multi: indicatif::MultiProgress,
    all: indicatif::ProgressBar,
    cap: Option<u64>,
) -> tusflow::batch::OnStart {
    Arc::new(move |job, size, mut rx| {
        let bar = multi.insert_before(&all, indicatif::ProgressBar::new(size));
        bar.set_style(style("{msg:40} {bar:30} {bytes}/{total_bytes} {rate}", cap));
        bar.set_message(label(&job.path.display().to_string()));
        let all = all.clone();
        tokio::spawn(async move {
            let mut seen = rx.borrow().acknowledged;
            bar.set_position(seen);
            all.inc(seen);
            while rx.changed().await.is_ok() {
                let now = rx.borrow().sent;
                if now > seen {
                    all.inc(now - seen);
                    seen = now;
                }
                bar.set_position(seen);
            }
            bar.finish_and_clear();
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_to_continue_is_quoted_and_holds_no_secret() {
        let args = [
            "tusflow",
            "batch",
            "-e",
            "http://us:PASSWD@127.0.0.1:1/files/?token=QTOKEN",
            "-H",
            "Authorization: Bearer SECRET123",
            "--header=X-Api-Key: K3Y",
            "-H",
            "X-Trace: on",
            "--force",
            "--exclude",
            "**/r5.bin",
            "files/my file.bin",
            "it's",
        ]
        .map(String::from);
        let (cmd, redacted) = continuation(args.into_iter());
        assert!(redacted);
        for secret in ["PASSWD", "QTOKEN", "SECRET123", "K3Y", "--force"] {
            assert!(!cmd.contains(secret), "{secret} in {cmd}");
        }
        assert_eq!(
            cmd,
            "tusflow batch -e 'http://us:<redacted>@127.0.0.1:1/files/?<redacted>' -H 'Authorization: <redacted>' '--header=X-Api-Key: <redacted>' -H 'X-Trace: on' --exclude '**/r5.bin' 'files/my file.bin' 'it'\\''s'"
        );
        let (plain, redacted) =
            continuation(["tusflow", "batch", "in"].map(String::from).into_iter());
        assert_eq!((plain.as_str(), redacted), ("tusflow batch in", false));
    }
}
