//! A fault-injection proxy between the client and a real tus server, on loopback.
//!
//! It understands just enough HTTP/1.1 (request heads and `Content-Length` bodies) to
//! act on whole requests: cut a connection after N bytes from the client, answer a
//! canned status instead of forwarding, flip a byte of an append body, or stall. Answers
//! from the server are relayed untouched.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A canned answer for the next request whose method matches (`None`: any).
#[derive(Clone, Debug)]
pub struct Canned {
    pub method: Option<&'static str>,
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
}

/// A seeded random fault schedule: each request draws its fate. Rates are per mille
/// of requests.
#[derive(Clone, Debug)]
pub struct Chaos {
    pub seed: u64,
    /// Cut the connection at a random byte of the request (head or body).
    pub cut: u32,
    /// Answer 500, 502 or 503 to this request and up to 2 more after it.
    pub server_error: u32,
    /// Answer 423 to every HEAD and PATCH for 100-600 ms.
    pub locked: u32,
    /// Answer 409 to a PATCH (as a server does when the offset does not match).
    pub conflict: u32,
    /// Forward up to a random byte of the request, then hold the connection this long
    /// without moving a byte, then close it.
    pub stall: u32,
    pub stall_for: Duration,
}

/// Faults injected so far, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    pub requests: u64,
    pub cuts: u64,
    pub server_errors: u64,
    pub locked: u64,
    pub conflicts: u64,
    pub stalls: u64,
    /// Connections refused because the server was down.
    pub refused: u64,
}

struct ChaosState {
    chaos: Chaos,
    rng: super::Rng,
    burst: u32,
    locked_until: Option<Instant>,
    injected: Injected,
}

impl ChaosState {
    fn below(&mut self, n: u64) -> u64 {
        self.rng.below(n)
    }
}

/// What the proxy does at a byte position of a request.
#[derive(Clone, Copy)]
enum Stop {
    Cut,
    Stall(Duration),
}

#[derive(Default)]
struct Plan {
    /// Cut each connection after this many bytes from the client.
    cut_after: Option<u64>,
    canned: VecDeque<Canned>,
    /// Flip a byte at this body offset of the next N PATCH requests.
    flip: Option<(u64, u32)>,
    /// Hold the next N requests this long without forwarding, then close.
    stall: Option<(Duration, u32)>,
    chaos: Option<ChaosState>,
}

/// What became of each creation (`POST`), by its `Upload-Metadata`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Creations {
    /// Answered `201 Created`: the client learned the upload's URL.
    pub created: u64,
    /// Forwarded to the server, but the connection ended before any answer: the server
    /// may hold an upload the client cannot know of.
    pub unanswered: u64,
    /// Answered by the server with another status (it may still have created one).
    pub refused: u64,
}

#[derive(Default)]
struct Shared {
    plan: Mutex<Plan>,
    /// Body bytes of PATCH requests received from the client (forwarded or cut).
    patch_bytes: AtomicU64,
    cuts: AtomicU64,
    requests: Mutex<Vec<String>>,
    creations: Mutex<BTreeMap<String, Creations>>,
    refused: AtomicU64,
    /// Connections open now.
    open: AtomicU64,
}

/// A running proxy; it stops with the test's runtime.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Proxy to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let upstream = upstream.to_owned();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let s = Arc::clone(&s);
                let upstream = upstream.clone();
                s.open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = connection(client, &upstream, Arc::clone(&s)).await;
                    s.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        FaultProxy { base, shared }
    }

    /// The proxy's URL for a URL of the upstream server (same path).
    pub fn url(&self, upstream_url: &str) -> String {
        let path = upstream_url.splitn(4, '/').nth(3).unwrap_or("");
        format!("{}/{path}", self.base)
    }

    pub fn cut_every_connection_after(&self, bytes: u64) {
        self.shared.plan.lock().unwrap().cut_after = Some(bytes);
    }

    pub fn answer(&self, method: Option<&'static str>, status: u16, times: usize) {
        let mut plan = self.shared.plan.lock().unwrap();
        for _ in 0..times {
            plan.canned.push_back(Canned {
                method,
                status,
                headers: Vec::new(),
            });
        }
    }

    pub fn answer_with(&self, canned: Canned) {
        self.shared.plan.lock().unwrap().canned.push_back(canned);
    }

    pub fn flip_byte(&self, body_offset: u64, times: u32) {
        self.shared.plan.lock().unwrap().flip = Some((body_offset, times));
    }

    pub fn stall(&self, how_long: Duration, times: u32) {
        self.shared.plan.lock().unwrap().stall = Some((how_long, times));
    }

    /// Draw every request's fate from `chaos` from now on.
    pub fn chaos(&self, chaos: Chaos) {
        let rng = super::Rng(chaos.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        self.shared.plan.lock().unwrap().chaos = Some(ChaosState {
            chaos,
            rng,
            burst: 0,
            locked_until: None,
            injected: Injected::default(),
        });
    }

    /// The faults the chaos schedule injected so far.
    pub fn injected(&self) -> Injected {
        let plan = self.shared.plan.lock().unwrap();
        let mut i = plan
            .chaos
            .as_ref()
            .map(|c| c.injected.clone())
            .unwrap_or_default();
        i.refused = self.shared.refused.load(Ordering::SeqCst);
        i
    }

    /// Wait (up to `limit`) until no connection is open, so that every request's fate
    /// is counted: a stalled one ends only when its stall does.
    pub fn wait_idle(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.shared.open.load(Ordering::SeqCst) > 0 {
            assert!(
                Instant::now() < until,
                "the proxy still has open connections"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What became of the creations, by `Upload-Metadata` (one key per upload's
    /// metadata, so per file when each file has its own name).
    pub fn creations(&self) -> BTreeMap<String, Creations> {
        self.shared.creations.lock().unwrap().clone()
    }

    /// Body bytes of PATCH requests the client sent through the proxy.
    pub fn patch_bytes(&self) -> u64 {
        self.shared.patch_bytes.load(Ordering::SeqCst)
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// `METHOD /path` of every request seen (with ` offset=N` when it had one).
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }
}

/// Read until a full request head is in `buf`; return its length.
async fn read_head(
    client: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut tmp = [0u8; 16 * 1024];
        let n = client.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

async fn connection(client: TcpStream, upstream: &str, s: Arc<Shared>) -> std::io::Result<()> {
    let server = match TcpStream::connect(upstream).await {
        Ok(server) => server,
        Err(e) => {
            // The server is down: the client sees its connection closed.
            s.refused.fetch_add(1, Ordering::SeqCst);
            return Err(e);
        }
    };
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut cr, cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let cw = Arc::new(tokio::sync::Mutex::new(cw));
    let cw2 = Arc::clone(&cw);
    // The creation forwarded on this connection and not yet answered, by its metadata.
    let awaiting: Arc<Mutex<Option<String>>> = Arc::default();
    let awaiting2 = Arc::clone(&awaiting);
    let s2 = Arc::clone(&s);
    let relay = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(meta) = awaiting2.lock().unwrap().take() {
                let mut c = s2.creations.lock().unwrap();
                let c = c.entry(meta).or_default();
                if buf[..n].starts_with(b"HTTP/1.1 201") {
                    c.created += 1;
                } else {
                    c.refused += 1;
                }
            }
            if cw2.lock().await.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw2.lock().await.shutdown().await;
    });
    let mut sent = 0u64; // bytes from the client on this connection
    let mut buf = Vec::new();
    let result = async {
        loop {
            let Some(head_len) = read_head(&mut cr, &mut buf).await else {
                return Ok(());
            };
            let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
            let header = |name: &str| {
                head.lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_owned())
            };
            let first = head.lines().next().unwrap_or_default().to_owned();
            let method = first.split(' ').next().unwrap_or_default().to_owned();
            let path = first.split(' ').nth(1).unwrap_or_default().to_owned();
            let len: u64 = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let offset = header("upload-offset");
            s.requests.lock().unwrap().push(match offset {
                Some(o) => format!("{method} {path} offset={o}"),
                None => format!("{method} {path}"),
            });
            let overridden = header("x-http-method-override").map(|m| m.to_ascii_uppercase());
            let is_patch = method == "PATCH" || overridden.as_deref() == Some("PATCH");
            let is_creation = method == "POST" && overridden.is_none();
            let total = head_len as u64 + len;

            // Decide this request's fate.
            let (canned, stall, flip_at, stop) = {
                let mut plan = s.plan.lock().unwrap();
                let mut canned = match plan.canned.front() {
                    Some(c) if c.method.is_none_or(|m| m == method) => plan.canned.pop_front(),
                    _ => None,
                };
                let stall = match &mut plan.stall {
                    Some((d, n)) if *n > 0 => {
                        *n -= 1;
                        Some(*d)
                    }
                    _ => None,
                };
                let flip_at = match &mut plan.flip {
                    Some((at, n)) if *n > 0 && is_patch && len > *at => {
                        *n -= 1;
                        Some(*at)
                    }
                    _ => None,
                };
                let mut stop = plan
                    .cut_after
                    .map(|limit| (limit.saturating_sub(sent), Stop::Cut));
                if let Some(ch) = &mut plan.chaos
                    && canned.is_none()
                    && stall.is_none()
                {
                    let (status, at) = draw(ch, &method, is_patch, total);
                    if let Some(status) = status {
                        canned = Some(Canned {
                            method: None,
                            status,
                            headers: Vec::new(),
                        });
                    }
                    if at.is_some() {
                        stop = at;
                    }
                }
                (canned, stall, flip_at, stop)
            };
            if let Some(d) = stall {
                tokio::time::sleep(d).await;
                return Ok(());
            }
            // A creation counts as seen by the server once its whole head went through.
            let mut creation = (is_creation && canned.is_none())
                .then(|| header("upload-metadata").unwrap_or_default());

            // The head, then the body, counting and maybe cutting, stalling or
            // corrupting. `at` counts bytes of this request, head included.
            let mut at = 0u64;
            let mut body_pos = 0u64;
            let mut left = total;
            while left > 0 {
                if buf.is_empty() {
                    let mut tmp = vec![0u8; 64 * 1024];
                    let n = cr.read(&mut tmp).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                let mut take = (buf.len() as u64).min(left);
                let stopping = match stop {
                    Some((pos, what)) if at + take >= pos => {
                        take = pos.saturating_sub(at);
                        Some(what)
                    }
                    _ => None,
                };
                let mut piece: Vec<u8> = buf.drain(..take as usize).collect();
                let in_body = (at + take).saturating_sub(head_len as u64);
                if let Some(flip) = flip_at
                    && in_body > 0
                {
                    let start = in_body - piece.len().min(in_body as usize) as u64;
                    if flip >= start && flip < in_body {
                        let i = piece.len() - (in_body - flip) as usize;
                        piece[i] ^= 0xff;
                    }
                }
                // Marked before the write, so the answer cannot come first.
                if at + take >= head_len as u64
                    && let Some(meta) = creation.take()
                {
                    *awaiting.lock().unwrap() = Some(meta);
                }
                if canned.is_none() {
                    sw.write_all(&piece).await?;
                }
                if is_patch {
                    let body_bytes = in_body - body_pos;
                    s.patch_bytes.fetch_add(body_bytes, Ordering::SeqCst);
                    body_pos = in_body;
                }
                at += take;
                sent += take;
                left -= take;
                match stopping {
                    Some(Stop::Cut) => {
                        s.cuts.fetch_add(1, Ordering::SeqCst);
                        return Ok(());
                    }
                    Some(Stop::Stall(d)) => {
                        tokio::time::sleep(d).await;
                        return Ok(());
                    }
                    None => {}
                }
            }
            if let Some(c) = canned {
                let mut answer = format!(
                    "HTTP/1.1 {} Injected\r\nContent-Length: 0\r\nConnection: close\r\nTus-Resumable: 1.0.0\r\n",
                    c.status
                );
                for (k, v) in &c.headers {
                    answer.push_str(&format!("{k}: {v}\r\n"));
                }
                answer.push_str("\r\n");
                cw.lock().await.write_all(answer.as_bytes()).await?;
                return Ok(());
            }
        }
    }
    .await;
    // Close both sides: the client sees the connection end.
    relay.abort();
    if let Some(meta) = awaiting.lock().unwrap().take() {
        let mut c = s.creations.lock().unwrap();
        c.entry(meta).or_default().unanswered += 1;
    }
    let _ = cw.lock().await.shutdown().await;
    let _ = sw.shutdown().await;
    result
}

/// A request's fate under chaos: a canned status, or a byte position to act at.
fn draw(
    ch: &mut ChaosState,
    method: &str,
    is_patch: bool,
    total: u64,
) -> (Option<u16>, Option<(u64, Stop)>) {
    ch.injected.requests += 1;
    let lockable = is_patch || method == "HEAD";
    if ch.burst > 0 {
        ch.burst -= 1;
        ch.injected.server_errors += 1;
        return (Some([500, 502, 503][ch.below(3) as usize]), None);
    }
    if lockable && ch.locked_until.is_some_and(|t| Instant::now() < t) {
        ch.injected.locked += 1;
        return (Some(423), None);
    }
    let c = ch.chaos.clone();
    let mut roll = ch.below(1000) as u32;
    let mut hit = |rate: u32| {
        let h = roll < rate;
        roll = roll.wrapping_sub(rate);
        h
    };
    if hit(c.cut) {
        ch.injected.cuts += 1;
        let at = ch.below(total);
        (None, Some((at, Stop::Cut)))
    } else if hit(c.server_error) {
        ch.burst = ch.below(3) as u32;
        ch.injected.server_errors += 1;
        (Some([500, 502, 503][ch.below(3) as usize]), None)
    } else if hit(c.locked) && lockable {
        ch.locked_until = Some(Instant::now() + Duration::from_millis(100 + ch.below(500)));
        ch.injected.locked += 1;
        (Some(423), None)
    } else if hit(c.conflict) && is_patch {
        ch.injected.conflicts += 1;
        (Some(409), None)
    } else if hit(c.stall) {
        ch.injected.stalls += 1;
        let at = ch.below(total);
        (None, Some((at, Stop::Stall(c.stall_for))))
    } else {
        (None, None)
    }
}
