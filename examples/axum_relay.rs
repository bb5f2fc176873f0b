//! An axum service that relays the files it receives to a tus server through the
//! tusflow stack: tusflow embedded in a tower-based service.
//!
//! `PUT /relay/{name}` with a body of known length streams the body into a new tus
//! upload (buffered one chunk at a time, with retries) and answers the upload URL as
//! JSON. The relay never holds a whole file.
//!
//!     cargo run --example axum_relay -- http://127.0.0.1:1080/files/ [127.0.0.1:3000]
//!     curl -T file http://127.0.0.1:3000/relay/file

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::put;
use futures_util::TryStreamExt;
use tokio_util::io::StreamReader;
use tusflow::retry::RetryLayer;
use tusflow::{Client, Source};

async fn relay(
    State(client): State<Client>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> (StatusCode, String) {
    let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return (
            StatusCode::LENGTH_REQUIRED,
            "{\"error\":\"Content-Length required\"}".into(),
        );
    };
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let source = Source::reader(StreamReader::new(stream), len);
    let uploader = match client
        .uploader(source)
        .chunk_size(4 << 20)
        .metadata("filename", &name)
    {
        Ok(u) => u,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": e.to_string() }).to_string(),
            );
        }
    };
    let mut uploader = uploader;
    match uploader.upload().await {
        Ok(done) => (
            StatusCode::CREATED,
            serde_json::json!({ "url": done.url.as_str(), "size": done.length }).to_string(),
        ),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            serde_json::json!({ "error": e.to_string() }).to_string(),
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(endpoint) = args.next() else {
        eprintln!("usage: axum_relay ENDPOINT [ADDR]");
        std::process::exit(2);
    };
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let client = Client::builder()
        .endpoint(endpoint)
        .layer(RetryLayer::new())
        .build()?;
    let app = Router::new()
        .route("/relay/{name}", put(relay))
        .with_state(client);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
