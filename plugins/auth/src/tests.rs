use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tower::ServiceExt;
use tusflow_core::{Body, Operation, Stack};

use super::*;

/// Records the Authorization header of every request; answers 401 unless it is `ok`.
fn server(seen: Arc<Mutex<Vec<Option<String>>>>, ok: &'static str) -> Stack {
    Stack::new(tower::service_fn(move |req: Request| {
        let seen = Arc::clone(&seen);
        async move {
            let auth = req
                .headers()
                .get(AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_owned());
            seen.lock().unwrap().push(auth.clone());
            if auth.as_deref() == Some(ok) || ok.is_empty() {
                Ok(http::Response::new(Bytes::new()))
            } else {
                Err(Error::from_status(
                    http::StatusCode::UNAUTHORIZED,
                    b"",
                    None,
                ))
            }
        }
    }))
}

fn req(url: &str, endpoint: &str) -> Request {
    http::Request::head(url)
        .extension(Operation::Offset)
        .extension(Endpoint(endpoint.parse().unwrap()))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn credentials_go_only_to_the_endpoints_origin() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let svc = AuthLayer::bearer("tok").layer(server(Arc::clone(&seen), ""));
    let ep = "https://tus.example.com/files/";
    svc.clone()
        .oneshot(req("https://tus.example.com/files/1", ep))
        .await
        .unwrap();
    svc.clone()
        .oneshot(req("https://evil.example.net/files/1", ep))
        .await
        .unwrap();
    svc.clone()
        .oneshot(req("http://tus.example.com/files/1", ep))
        .await
        .unwrap();
    svc.clone()
        .oneshot(req("https://tus.example.com:8443/files/1", ep))
        .await
        .unwrap();
    let allowed = AuthLayer::bearer("tok")
        .allow_origin("https://cdn.example.com/x")
        .unwrap();
    allowed
        .layer(server(Arc::clone(&seen), ""))
        .oneshot(req("https://cdn.example.com/u/2", ep))
        .await
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Some("Bearer tok".to_owned()),
            None,
            None,
            None,
            Some("Bearer tok".to_owned())
        ]
    );
}

#[tokio::test]
async fn basic_and_header_credentials_are_sensitive() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let svc = AuthLayer::basic("aladdin", "opensesame").layer(server(Arc::clone(&seen), ""));
    svc.oneshot(req("http://h/files/1", "http://h/files/"))
        .await
        .unwrap();
    assert_eq!(
        seen.lock().unwrap()[0].as_deref(),
        Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l")
    );

    let mut h = HeaderMap::new();
    h.insert("x-api-key", HeaderValue::from_static("k3y"));
    let layer = AuthLayer::headers(h);
    assert!(!format!("{layer:?}").contains("k3y"));
    let probe = Stack::new(tower::service_fn(|req: Request| async move {
        let v = req.headers().get("x-api-key").unwrap();
        assert!(v.is_sensitive());
        assert!(!format!("{:?}", req.headers()).contains("k3y"));
        Ok(http::Response::new(Bytes::new()))
    }));
    layer
        .layer(probe)
        .oneshot(req("http://h/files/1", "http://h/files/"))
        .await
        .unwrap();
}

struct Rotating(AtomicUsize);
impl TokenProvider for Rotating {
    fn token(&self) -> TokenFuture<'_> {
        let n = self.0.load(Ordering::SeqCst);
        Box::pin(async move { Ok(Secret::new(format!("t{n}"))) })
    }
    fn refresh(&self) -> TokenFuture<'_> {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move { Ok(Secret::new(format!("t{n}"))) })
    }
}

#[tokio::test]
async fn a_401_refreshes_once_and_replays() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let svc = AuthLayer::provider(Rotating(AtomicUsize::new(0)))
        .layer(server(Arc::clone(&seen), "Bearer t1"));
    svc.clone()
        .oneshot(req("http://h/files/1", "http://h/files/"))
        .await
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [Some("Bearer t0".into()), Some("Bearer t1".into())]
    );

    // A second 401 is the answer: no loop of refreshes.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let svc = AuthLayer::provider(Rotating(AtomicUsize::new(0)))
        .layer(server(Arc::clone(&seen), "never"));
    let err = svc
        .oneshot(req("http://h/files/1", "http://h/files/"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::UNAUTHORIZED));
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert!(!err.to_string().contains("t0") && !err.to_string().contains("t1"));
}
