//! A minimal tus endpoint that reads every byte it is sent and keeps none: what a
//! client reaches when the server costs nothing (`scripts/bench` runs it).
//!
//! `discard [PORT]` binds 127.0.0.1 (port 0 or none: a free one) and prints one JSON
//! line once it listens: `{"port": N, "endpoint": "http://127.0.0.1:N/files/"}`.
//! It speaks creation, creation-with-upload, creation-defer-length and termination,
//! and checks `Upload-Offset` like a real server (409 on a mismatch).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http_body_util::BodyExt;

#[derive(Default)]
struct Uploads {
    next: AtomicU64,
    /// id -> (length, offset)
    all: Mutex<HashMap<u64, (Option<u64>, u64)>>,
}

fn number(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

/// Read and drop the body; return how many bytes it had.
async fn drain(body: Body) -> Result<u64, StatusCode> {
    let mut body = body;
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| StatusCode::BAD_REQUEST)?;
        if let Some(data) = frame.data_ref() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

fn reply(status: StatusCode, headers: &[(&'static str, String)]) -> Response {
    let mut r = status.into_response();
    r.headers_mut()
        .insert("tus-resumable", HeaderValue::from_static("1.0.0"));
    for (k, v) in headers {
        r.headers_mut().insert(*k, v.parse().unwrap());
    }
    r
}

async fn endpoint(State(up): State<Arc<Uploads>>, req: Request) -> Response {
    match *req.method() {
        Method::OPTIONS => reply(
            StatusCode::NO_CONTENT,
            &[
                ("tus-version", "1.0.0".into()),
                (
                    "tus-extension",
                    "creation,creation-with-upload,creation-defer-length,termination".into(),
                ),
            ],
        ),
        Method::POST => {
            let h = req.headers().clone();
            let length = number(&h, "upload-length");
            if length.is_none() && number(&h, "upload-defer-length") != Some(1) {
                return reply(StatusCode::BAD_REQUEST, &[]);
            }
            let host = h
                .get("host")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("127.0.0.1")
                .to_owned();
            let offset = match drain(req.into_body()).await {
                Ok(n) => n,
                Err(s) => return reply(s, &[]),
            };
            let id = up.next.fetch_add(1, Ordering::Relaxed);
            up.all.lock().unwrap().insert(id, (length, offset));
            reply(
                StatusCode::CREATED,
                &[
                    ("location", format!("http://{host}/files/{id}")),
                    ("upload-offset", offset.to_string()),
                ],
            )
        }
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, &[]),
    }
}

async fn upload(State(up): State<Arc<Uploads>>, Path(id): Path<u64>, req: Request) -> Response {
    let Some((length, offset)) = up.all.lock().unwrap().get(&id).copied() else {
        return reply(StatusCode::NOT_FOUND, &[]);
    };
    match *req.method() {
        Method::HEAD => {
            let mut h = vec![
                ("upload-offset", offset.to_string()),
                ("cache-control", "no-store".into()),
            ];
            match length {
                Some(l) => h.push(("upload-length", l.to_string())),
                None => h.push(("upload-defer-length", "1".into())),
            }
            reply(StatusCode::OK, &h)
        }
        Method::PATCH => {
            if number(req.headers(), "upload-offset") != Some(offset) {
                return reply(StatusCode::CONFLICT, &[]);
            }
            let length = length.or(number(req.headers(), "upload-length"));
            let n = match drain(req.into_body()).await {
                Ok(n) => n,
                Err(s) => return reply(s, &[]),
            };
            let offset = offset + n;
            up.all.lock().unwrap().insert(id, (length, offset));
            reply(
                StatusCode::NO_CONTENT,
                &[("upload-offset", offset.to_string())],
            )
        }
        Method::DELETE => {
            up.all.lock().unwrap().remove(&id);
            reply(StatusCode::NO_CONTENT, &[])
        }
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, &[]),
    }
}

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse().expect("PORT is a number"))
        .unwrap_or(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let app = Router::new()
            .route("/files/", any(endpoint))
            .route("/files/{id}", any(upload))
            .with_state(Arc::new(Uploads::default()));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        println!("{{\"port\": {port}, \"endpoint\": \"http://127.0.0.1:{port}/files/\"}}");
        axum::serve(listener, app).await.unwrap();
    });
}
