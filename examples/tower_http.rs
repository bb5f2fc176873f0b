//! tower-http layers in a tusflow stack, unchanged: a `SetRequestHeaderLayer` that
//! stamps every request, and a `TimeoutLayer` that bounds each request. tower-http's
//! timeout answers 408, which tusflow turns into a retryable error, so the retry layer
//! around it tries again.
//!
//!     cargo run --example tower_http -- http://127.0.0.1:1080/files/ FILE

use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use tower_http::set_header::SetRequestHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tusflow::Client;
use tusflow::retry::RetryLayer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(endpoint), Some(file)) = (args.next(), args.next()) else {
        eprintln!("usage: tower_http ENDPOINT FILE");
        std::process::exit(2);
    };
    let client = Client::builder()
        .endpoint(endpoint)
        .layer(RetryLayer::new())
        .layer(SetRequestHeaderLayer::overriding(
            HeaderName::from_static("x-uploaded-by"),
            HeaderValue::from_static("tusflow tower-http example"),
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(120),
        ))
        .build()?;
    let done = client.uploader(file.as_str()).upload().await?;
    println!("uploaded {} bytes to {}", done.offset, done.url);
    Ok(())
}
