use super::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use tower::ServiceExt;

/// Serve one canned answer per connection on loopback, returning the requests seen.
fn canned(answer: &'static str) -> (String, std::thread::JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}/files/", l.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 8192];
        let mut req = Vec::new();
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        s.write_all(answer.as_bytes()).unwrap();
        String::from_utf8_lossy(&req).into_owned()
    });
    (addr, h)
}

fn request(op: Operation, url: &str) -> Request<Body> {
    Request::builder()
        .method(op.method())
        .uri(url)
        .extension(op)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn status_412_names_the_servers_versions() {
    let (url, h) = canned(
        "HTTP/1.1 412 Precondition Failed\r\nTus-Version: 0.2.2, 0.2.1\r\nContent-Length: 0\r\n\r\n",
    );
    let svc = TusService::builder().build().unwrap();
    let err = svc
        .oneshot(request(Operation::Create, &url))
        .await
        .unwrap_err();
    let sent = h.join().unwrap().to_ascii_lowercase();
    assert!(sent.contains("tus-resumable: 1.0.0"), "{sent}");
    assert!(err.is_version_unsupported());
    assert_eq!(err.tus_version(), Some("0.2.2, 0.2.1"));
    assert!(err.to_string().contains("0.2.2, 0.2.1"), "{err}");
    assert_eq!(err.operation(), Some(Operation::Create));
}

#[tokio::test]
async fn options_has_no_tus_resumable_and_method_override_rewrites() {
    let (url, h) = canned("HTTP/1.1 204 No Content\r\nTus-Version: 1.0.0\r\n\r\n");
    let svc = TusService::builder().build().unwrap();
    svc.oneshot(request(Operation::Discover, &url))
        .await
        .unwrap();
    let sent = h.join().unwrap().to_ascii_lowercase();
    assert!(
        sent.starts_with("options ") && !sent.contains("tus-resumable"),
        "{sent}"
    );

    let (url, h) = canned("HTTP/1.1 204 No Content\r\n\r\n");
    let svc = TusService::builder().method_override(true).build().unwrap();
    svc.oneshot(request(Operation::Terminate, &url))
        .await
        .unwrap();
    let sent = h.join().unwrap().to_ascii_lowercase();
    assert!(
        sent.starts_with("post ") && sent.contains("x-http-method-override: delete"),
        "{sent}"
    );
}

#[tokio::test]
async fn redirects_to_another_origin_are_not_followed() {
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let other_url = format!("http://{}/files/x", other.local_addr().unwrap());
    let answer: &'static str = Box::leak(
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {other_url}\r\nContent-Length: 0\r\n\r\n"
        )
        .into_boxed_str(),
    );
    let (url, h) = canned(answer);
    let svc = TusService::builder().build().unwrap();
    let mut req = request(Operation::Offset, &url);
    req.headers_mut()
        .insert("x-api-key", HeaderValue::from_static("s3cr3t"));
    let err = svc.oneshot(req).await.unwrap_err();
    h.join().unwrap();
    assert_eq!(
        err.status(),
        Some(http::StatusCode::TEMPORARY_REDIRECT),
        "{err:?}"
    );
    // Nobody connected to the other origin.
    other.set_nonblocking(true).unwrap();
    assert!(other.accept().is_err());
}

#[tokio::test]
async fn error_answer_body_is_kept_short() {
    let (url, h) =
        canned("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 11\r\n\r\ndisk broken");
    let svc = TusService::builder().build().unwrap();
    let err = svc
        .oneshot(request(Operation::Offset, &url))
        .await
        .unwrap_err();
    h.join().unwrap();
    assert_eq!(err.status(), Some(http::StatusCode::INTERNAL_SERVER_ERROR));
    assert!(err.is_retryable() && !err.is_gone());
    // HEAD answers have no body, whatever Content-Length says.
    assert_eq!(err.response_body(), Some(""));
}

#[tokio::test]
async fn a_silent_server_is_a_stall_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/files/x", l.local_addr().unwrap());
    let keep = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        drop(s);
    });
    let svc = TusService::builder()
        .stall_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = svc
        .oneshot(request(Operation::Offset, &url))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(err.to_string().contains("stall timeout"), "{err}");
    keep.join().unwrap();
}

#[tokio::test]
async fn https_to_a_plain_http_server_says_so_and_is_not_retried() {
    // A plain HTTP server: it answers whatever arrives (a TLS hello) in HTTP.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/files/", l.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let svc = TusService::builder().build().unwrap();
    let err = svc
        .oneshot(request(Operation::Discover, &url))
        .await
        .unwrap_err();
    let _ = h.join();
    assert!(
        err.to_string().contains("plain HTTP on a TLS connection"),
        "{err}"
    );
    assert!(!err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn a_refused_connection_is_a_retryable_transport_error() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/files/x", l.local_addr().unwrap());
    drop(l);
    let svc = TusService::builder().build().unwrap();
    let err = svc
        .oneshot(request(Operation::Offset, &url))
        .await
        .unwrap_err();
    assert!(err.is_transport() && err.is_retryable(), "{err:?}");
}
