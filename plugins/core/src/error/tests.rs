//! The error's predicates and messages.

use super::*;

#[test]
fn predicates_follow_status_and_operation() {
    let e = Error::from_status(StatusCode::NOT_FOUND, b"", None).with_operation(Operation::Offset);
    assert!(e.is_gone() && !e.is_retryable());
    let e = Error::from_status(StatusCode::FORBIDDEN, b"", None).with_operation(Operation::Offset);
    assert!(e.is_gone());
    let e = Error::from_status(StatusCode::FORBIDDEN, b"", None).with_operation(Operation::Append);
    assert!(!e.is_gone() && !e.is_retryable());
    let e = Error::from_status(StatusCode::SERVICE_UNAVAILABLE, b"", None);
    assert!(e.is_retryable() && !e.is_gone());
    let e = Error::from_status(StatusCode::CONFLICT, b"", None);
    assert!(e.is_offset_mismatch() && e.is_retryable());
    let e = Error::from_status(StatusCode::from_u16(460).unwrap(), b"", None);
    assert!(e.is_checksum_mismatch() && e.is_retryable());
    assert!(Error::timeout("stall").is_timeout());
    assert!(Error::offset_mismatch(10, 5).is_offset_mismatch());
}

#[test]
fn message_names_status_version_and_body_excerpt() {
    let e = Error::from_status(StatusCode::PRECONDITION_FAILED, b"", Some("0.2.2".into()))
        .with_operation(Operation::Create)
        .with_url("http://h/files/");
    let msg = e.to_string();
    assert!(msg.contains("412") && msg.contains("0.2.2"), "{msg}");
    assert!(
        msg.starts_with("creating the upload (POST http://h/files/): "),
        "{msg}"
    );

    let long = vec![b'x'; 4000];
    let e = Error::from_status(StatusCode::INTERNAL_SERVER_ERROR, &long, None);
    assert_eq!(e.response_body().unwrap().len(), BODY_EXCERPT_LEN + 3);
    let e = Error::from_status(StatusCode::BAD_REQUEST, b"bad\r\nthing\x1b[31m", None);
    assert_eq!(e.response_body(), Some("bad  thing [31m"));
}

#[test]
fn middleware_errors_unwrap_tusflow_errors() {
    let inner: BoxError = Box::new(Error::timeout("stall"));
    assert!(Error::from(inner).is_timeout());
    let other: BoxError = "boom".into();
    let e = Error::from(other);
    assert_eq!(e.to_string(), "middleware failed: boom");
}

#[test]
fn tower_errors_are_found_in_the_source_chain() {
    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("buffered service failed")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(self.0.as_ref())
        }
    }
    let inner: BoxError = Box::new(Error::from_status(StatusCode::LOCKED, b"", None));
    let e = Error::from(Box::new(Wrapper(inner)) as BoxError);
    assert_eq!(e.status(), Some(StatusCode::LOCKED));
    let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
    assert!(Error::from(elapsed).is_timeout());
    let shed: BoxError = Box::new(tower::load_shed::error::Overloaded::new());
    let e = Error::from(shed);
    assert!(e.is_retryable() && !e.is_timeout(), "{e:?}");
}

#[test]
fn clone_then_annotate_leaves_original() {
    let a = Error::timeout("stall");
    let b = a.clone().with_operation(Operation::Append);
    assert_eq!(a.operation(), None);
    assert_eq!(b.operation(), Some(Operation::Append));
}
