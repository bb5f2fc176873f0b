//! The retry layer against an in-memory tus upload behind `tower::service_fn`.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::StatusCode;
use tower::ServiceExt;
use tusflow_core::{Body, Error, Operation, Request, Response, Stack};

use super::*;

/// What the fake server does with the next request.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Keep this many bytes of the append, then fail with a transport-like 502.
    Cut(u64),
    Status(u16),
}

#[derive(Default)]
struct Upload {
    data: Vec<u8>,
    /// Declared by an append's `Upload-Length` (a deferred length).
    length: Option<u64>,
    /// Faults for the next requests of each operation, in order.
    faults: Vec<(Operation, Fault)>,
    calls: Vec<(Operation, u64)>,
}

fn server(up: Arc<Mutex<Upload>>) -> Stack {
    Stack::new(tower::service_fn(move |req: Request| {
        let up = Arc::clone(&up);
        async move {
            let op = *req.extensions().get::<Operation>().unwrap();
            let offset = protocol::upload_offset(req.headers()).unwrap_or(0);
            let declared = req
                .headers()
                .get(header::UPLOAD_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let body = http_body_util::BodyExt::collect(req.into_body())
                .await?
                .to_bytes();
            let mut u = up.lock().unwrap();
            u.calls.push((op, offset));
            let fault = match u.faults.first() {
                Some((o, _)) if *o == op => Some(u.faults.remove(0).1),
                _ => None,
            };
            match (op, fault) {
                (_, Some(Fault::Status(s))) => {
                    Err(
                        Error::from_status(StatusCode::from_u16(s).unwrap(), b"", None)
                            .with_operation(op),
                    )
                }
                (Operation::Offset, _) => {
                    let mut r = resp(u.data.len() as u64);
                    if let Some(l) = u.length {
                        r.headers_mut().insert(header::UPLOAD_LENGTH, l.into());
                    }
                    Ok(r)
                }
                (Operation::Append, f) => {
                    if offset != u.data.len() as u64 {
                        return Err(Error::from_status(StatusCode::CONFLICT, b"", None));
                    }
                    u.length = u.length.or(declared);
                    let keep = match f {
                        Some(Fault::Cut(n)) => n.min(body.len() as u64) as usize,
                        _ => body.len(),
                    };
                    u.data.extend_from_slice(&body[..keep]);
                    match f {
                        Some(Fault::Cut(_)) => {
                            Err(Error::from_status(StatusCode::BAD_GATEWAY, b"", None))
                        }
                        _ => Ok(resp(u.data.len() as u64)),
                    }
                }
                _ => Ok(resp(0)),
            }
        }
    }))
}

fn resp(offset: u64) -> Response {
    http::Response::builder()
        .status(204)
        .header(header::UPLOAD_OFFSET, offset)
        .body(Bytes::new())
        .unwrap()
}

fn append(offset: u64, body: &'static [u8]) -> Request {
    http::Request::patch("http://h/files/1")
        .extension(Operation::Append)
        .header(header::UPLOAD_OFFSET, offset)
        .body(Body::from_static(body))
        .unwrap()
}

fn fast() -> RetryLayer {
    RetryLayer::new().initial_delay(Duration::from_millis(10))
}

const DATA: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

#[tokio::test(start_paused = true)]
async fn cut_appends_resume_from_the_servers_offset() {
    let up = Arc::new(Mutex::new(Upload {
        faults: vec![
            (Operation::Append, Fault::Cut(10)),
            (Operation::Append, Fault::Cut(5)),
        ],
        ..Default::default()
    }));
    let svc = fast().layer(server(Arc::clone(&up)));
    let r = svc.oneshot(append(0, DATA)).await.unwrap();
    assert_eq!(
        protocol::upload_offset(r.headers()).unwrap(),
        DATA.len() as u64
    );
    let u = up.lock().unwrap();
    assert_eq!(u.data, DATA);
    use Operation::*;
    assert_eq!(
        u.calls,
        [
            (Append, 0),
            (Offset, 0),
            (Append, 10),
            (Offset, 0),
            (Append, 15)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn status_503_three_times_then_success_and_403_at_once() {
    let up = Arc::new(Mutex::new(Upload {
        faults: vec![(Operation::Create, Fault::Status(503)); 3],
        ..Default::default()
    }));
    let svc = fast().layer(server(Arc::clone(&up)));
    let req = http::Request::post("http://h/files/")
        .extension(Operation::Create)
        .body(Body::empty())
        .unwrap();
    svc.oneshot(req).await.unwrap();
    assert_eq!(up.lock().unwrap().calls.len(), 4);

    let up = Arc::new(Mutex::new(Upload {
        faults: vec![(Operation::Append, Fault::Status(403))],
        ..Default::default()
    }));
    let svc = fast().layer(server(Arc::clone(&up)));
    let err = svc.oneshot(append(0, DATA)).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
    assert_eq!(up.lock().unwrap().calls.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts_without_progress() {
    let up = Arc::new(Mutex::new(Upload {
        faults: vec![(Operation::Offset, Fault::Status(500)); 50],
        ..Default::default()
    }));
    let svc = fast().max_attempts(3).layer(server(Arc::clone(&up)));
    let req = http::Request::head("http://h/files/1")
        .extension(Operation::Offset)
        .body(Body::empty())
        .unwrap();
    let err = svc.oneshot(req).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(up.lock().unwrap().calls.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn progress_resets_the_count_but_the_total_bounds_it() {
    // Every append is cut after 2 bytes: progress each time, so 3 tries in a row
    // never run out, but the total bound ends it.
    let up = Arc::new(Mutex::new(Upload {
        faults: vec![(Operation::Append, Fault::Cut(2)); 40],
        ..Default::default()
    }));
    let svc = fast()
        .max_attempts(3)
        .max_total_attempts(12)
        .layer(server(Arc::clone(&up)));
    let err = svc.oneshot(append(0, DATA)).await.unwrap_err();
    assert!(err.is_retryable());
    let u = up.lock().unwrap();
    assert!(
        u.data.len() >= 10 && u.data.len() < DATA.len(),
        "{}",
        u.data.len()
    );
    let appends = u
        .calls
        .iter()
        .filter(|(op, _)| *op == Operation::Append)
        .count();
    assert_eq!(appends, 12);
    assert_eq!(u.data.len(), 24);
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_to_a_complete_append_is_success() {
    let up = Arc::new(Mutex::new(Upload {
        // All bytes kept, but the answer is an error.
        faults: vec![(Operation::Append, Fault::Cut(u64::MAX))],
        ..Default::default()
    }));
    let svc = fast().layer(server(Arc::clone(&up)));
    let r = svc.oneshot(append(0, DATA)).await.unwrap();
    assert_eq!(
        protocol::upload_offset(r.headers()).unwrap(),
        DATA.len() as u64
    );
    assert_eq!(up.lock().unwrap().calls.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_empty_append_declaring_the_length_is_sent_until_the_server_knows_it() {
    // The server never saw the first try: its offset is where the append ends, but
    // it does not know the length yet. Found by the fault soak.
    let up = Arc::new(Mutex::new(Upload {
        faults: vec![(Operation::Append, Fault::Status(502))],
        ..Default::default()
    }));
    let svc = fast().layer(server(Arc::clone(&up)));
    let mut req = append(0, b"");
    req.headers_mut()
        .insert(header::UPLOAD_LENGTH, HeaderValue::from(0u64));
    svc.oneshot(req).await.unwrap();
    let u = up.lock().unwrap();
    assert_eq!(u.length, Some(0));
    use Operation::*;
    assert_eq!(u.calls, [(Append, 0), (Offset, 0), (Append, 0)]);
}

#[tokio::test(start_paused = true)]
async fn a_head_that_fails_with_5xx_is_retried_not_taken_for_gone() {
    let up = Arc::new(Mutex::new(Upload {
        faults: vec![
            (Operation::Append, Fault::Cut(4)),
            (Operation::Offset, Fault::Status(500)),
            (Operation::Offset, Fault::Status(503)),
        ],
        ..Default::default()
    }));
    let svc = fast().layer(server(Arc::clone(&up)));
    svc.oneshot(append(0, DATA)).await.unwrap();
    let u = up.lock().unwrap();
    assert_eq!(u.data, DATA);
    use Operation::*;
    assert_eq!(
        u.calls,
        [
            (Append, 0),
            (Offset, 0),
            (Offset, 0),
            (Offset, 0),
            (Append, 4)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn checksum_mismatch_resends_and_409_resyncs() {
    let up = Arc::new(Mutex::new(Upload {
        faults: vec![
            (Operation::Append, Fault::Status(460)),
            (Operation::Append, Fault::Status(409)),
        ],
        ..Default::default()
    }));
    let svc = fast().layer(server(Arc::clone(&up)));
    svc.oneshot(append(0, DATA)).await.unwrap();
    assert_eq!(up.lock().unwrap().data, DATA);
    // But a 409 on a creation is not retried.
    let up = Arc::new(Mutex::new(Upload {
        faults: vec![(Operation::Create, Fault::Status(409))],
        ..Default::default()
    }));
    let svc = fast().layer(server(Arc::clone(&up)));
    let req = http::Request::post("http://h/files/")
        .extension(Operation::Create)
        .body(Body::empty())
        .unwrap();
    assert!(svc.oneshot(req).await.is_err());
    assert_eq!(up.lock().unwrap().calls.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_capped_by_max_tries_gets_no_more() {
    let up = Arc::new(Mutex::new(Upload {
        faults: vec![(Operation::Create, Fault::Status(503)); 6],
        ..Default::default()
    }));
    let svc = fast().layer(server(Arc::clone(&up)));
    let req = http::Request::post("http://h/files/")
        .extension(Operation::Create)
        .extension(tusflow_core::attempts::MaxTries(2))
        .body(Body::empty())
        .unwrap();
    let err = svc.oneshot(req).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(up.lock().unwrap().calls.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_resync_finding_another_length_is_not_this_upload() {
    let up = Arc::new(Mutex::new(Upload {
        length: Some(999),
        faults: vec![(Operation::Append, Fault::Cut(10))],
        ..Default::default()
    }));
    let svc = fast().layer(server(Arc::clone(&up)));
    let mut req = append(0, DATA);
    req.extensions_mut()
        .insert(tusflow_core::UploadLength(DATA.len() as u64));
    let err = svc.oneshot(req).await.unwrap_err();
    assert!(err.is_protocol(), "{err}");
    assert!(
        err.to_string()
            .contains("the upload is 999 bytes long on the server but 36 bytes here"),
        "{err}"
    );
    // Nothing more was sent to it after the HEAD.
    assert_eq!(up.lock().unwrap().calls.len(), 2);
}

#[test]
fn a_long_retry_after_is_capped_at_a_minute_by_default() {
    let b = RetryLayer::new().policy().clone();
    assert_eq!(
        b.delay(1, Some(Duration::from_secs(300))),
        Duration::from_secs(60)
    );
    let b = RetryLayer::new()
        .max_retry_after(Duration::from_secs(5))
        .policy()
        .clone();
    assert_eq!(
        b.delay(1, Some(Duration::from_secs(300))),
        Duration::from_secs(5)
    );
}
