//! A fault-injection proxy between the client and a real tus server, on loopback.
//!
//! It understands just enough HTTP/1.1 (request heads and `Content-Length` bodies) to
//! act on whole requests: cut a connection after N bytes from the client, answer a
//! canned status instead of forwarding, flip a byte of an append body, or stall. Answers
//! from the server are relayed untouched.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A canned answer for the next request whose method matches (`None`: any).
#[derive(Clone, Debug)]
pub struct Canned {
    pub method: Option<&'static str>,
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
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
}

#[derive(Default)]
struct Shared {
    plan: Mutex<Plan>,
    /// Body bytes of PATCH requests received from the client (forwarded or cut).
    patch_bytes: AtomicU64,
    cuts: AtomicU64,
    requests: Mutex<Vec<String>>,
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
                tokio::spawn(async move {
                    let _ = connection(client, &upstream, s).await;
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
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut cr, cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let cw = Arc::new(tokio::sync::Mutex::new(cw));
    let cw2 = Arc::clone(&cw);
    let relay = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
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
            let mut lines = head.lines();
            let first = lines.next().unwrap_or_default().to_owned();
            let method = first.split(' ').next().unwrap_or_default().to_owned();
            let path = first.split(' ').nth(1).unwrap_or_default().to_owned();
            let len: u64 = lines
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            let offset = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("upload-offset"))
                .map(|(_, v)| v.trim().to_owned());
            s.requests.lock().unwrap().push(match offset {
                Some(o) => format!("{method} {path} offset={o}"),
                None => format!("{method} {path}"),
            });
            let is_patch = method == "PATCH"
                || head.to_ascii_lowercase().contains("x-http-method-override: patch");

            // Decide this request's fate.
            let (canned, stall, flip_at, cut_after) = {
                let mut plan = s.plan.lock().unwrap();
                let canned = match plan.canned.front() {
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
                (canned, stall, flip_at, plan.cut_after)
            };
            if let Some(d) = stall {
                tokio::time::sleep(d).await;
                return Ok(());
            }

            // The head, then the body, counting and maybe cutting or corrupting.
            let mut pending: Vec<u8> = buf.drain(..head_len).collect();
            if canned.is_none() {
                sw.write_all(&pending).await?;
            }
            sent += pending.len() as u64;
            pending.clear();
            let mut left = len;
            let mut body_pos = 0u64;
            while left > 0 {
                if buf.is_empty() {
                    let mut tmp = vec![0u8; 64 * 1024];
                    let n = cr.read(&mut tmp).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                let mut take = (buf.len() as u64).min(left) as usize;
                if let Some(limit) = cut_after
                    && sent + take as u64 >= limit {
                        take = limit.saturating_sub(sent) as usize;
                        let mut piece: Vec<u8> = buf.drain(..take).collect();
                        if canned.is_none() {
                            sw.write_all(&piece).await?;
                        }
                        if is_patch {
                            s.patch_bytes.fetch_add(piece.len() as u64, Ordering::SeqCst);
                        }
                        piece.clear();
                        s.cuts.fetch_add(1, Ordering::SeqCst);
                        return Ok(());
                    }
                let mut piece: Vec<u8> = buf.drain(..take).collect();
                if let Some(at) = flip_at
                    && at >= body_pos && at < body_pos + take as u64 {
                        piece[(at - body_pos) as usize] ^= 0xff;
                    }
                if canned.is_none() {
                    sw.write_all(&piece).await?;
                }
                if is_patch {
                    s.patch_bytes.fetch_add(take as u64, Ordering::SeqCst);
                }
                sent += take as u64;
                body_pos += take as u64;
                left -= take as u64;
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
    let _ = cw.lock().await.shutdown().await;
    let _ = sw.shutdown().await;
    result
}
