use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tower::ServiceExt;
use tusflow_core::{Body, Error, Response, Stack};

use super::*;

/// A tracing writer into a shared buffer.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture<F: std::future::Future>(f: F) -> (F::Output, String) {
    let buf = Buf::default();
    let b2 = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(Level::TRACE)
        .with_ansi(false)
        .with_writer(move || b2.clone())
        .finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = tracing::subscriber::with_default(sub, || rt.block_on(f));
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

#[test]
fn spans_carry_operation_url_offset_and_outcome_without_secrets() {
    let seen_id = Arc::new(Mutex::new(None));
    let s2 = Arc::clone(&seen_id);
    let inner = Stack::new(tower::service_fn(move |req: Request| {
        *s2.lock().unwrap() = req.headers().get(X_REQUEST_ID).cloned();
        async move {
            Ok(http::Response::builder()
                .status(204)
                .header("upload-offset", "10")
                .body(Bytes::new())
                .unwrap())
        }
    }));
    let svc = LogLayer::new().request_id(true).headers(true).layer(inner);
    let mut auth = HeaderValue::from_static("Bearer s3cr3t");
    auth.set_sensitive(true);
    let req = http::Request::patch("http://h/files/abc?sig=qu3ry")
        .extension(Operation::Append)
        .header("upload-offset", "4")
        .header("authorization", auth)
        .header("x-api-key", "k3y")
        .body(Body::from_static(b"123456"))
        .unwrap();
    let (result, logs) = capture(svc.oneshot(req));
    result.unwrap();
    let id = seen_id.lock().unwrap().clone().expect("x-request-id sent");
    assert!(logs.contains("tus.request"), "{logs}");
    assert!(
        logs.contains("op=\"append\"") || logs.contains("op=append"),
        "{logs}"
    );
    assert!(
        logs.contains("offset=4") && logs.contains("len=6"),
        "{logs}"
    );
    assert!(
        logs.contains("status=204") && logs.contains("new_offset=10"),
        "{logs}"
    );
    assert!(logs.contains(id.to_str().unwrap()), "{logs}");
    assert!(logs.contains("authorization: <redacted>"), "{logs}");
    for secret in ["s3cr3t", "k3y", "qu3ry"] {
        assert!(!logs.contains(secret), "{secret} leaked: {logs}");
    }
}

#[test]
fn errors_are_logged_with_their_status() {
    let inner = Stack::new(tower::service_fn(|_req: Request| async {
        Err::<Response, _>(Error::from_status(
            http::StatusCode::FORBIDDEN,
            b"nope",
            None,
        ))
    }));
    let svc = LogLayer::new().layer(inner);
    let req = http::Request::post("http://h/files/")
        .extension(Operation::Create)
        .body(Body::empty())
        .unwrap();
    let (result, logs) = capture(svc.oneshot(req));
    assert!(result.is_err());
    assert!(
        logs.contains("ERROR") && logs.contains("status=403"),
        "{logs}"
    );
}
