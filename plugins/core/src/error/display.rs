//! How an [`Error`] reads: short, lowercase, never a secret.

use super::*;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        if let Some(op) = i.operation {
            write!(f, "{} ({}", op.doing(), op.method())?;
            if let Some(url) = &i.url {
                write!(f, " {url}")?;
            }
            f.write_str("): ")?;
        } else if let Some(url) = &i.url {
            write!(f, "{url}: ")?;
        }
        match &i.kind {
            Kind::Status {
                status,
                body,
                tus_version,
                problem,
                completed,
                ..
            } => {
                if *completed {
                    write!(
                        f,
                        "the upload is complete, but the target resource answered {status}"
                    )?;
                    if !body.is_empty() {
                        write!(f, ": {body}")?;
                    }
                    return Ok(());
                }
                if let Some(p) = problem {
                    // The problem says it better than its JSON.
                    return write!(f, "server answered {status}: {p}");
                }
                if *status == StatusCode::PRECONDITION_FAILED {
                    write!(
                        f,
                        "server does not support tus 1.0.0 (412; it speaks Tus-Version: {})",
                        tus_version.as_deref().unwrap_or("not given")
                    )?;
                } else {
                    write!(f, "server answered {status}")?;
                }
                if !body.is_empty() {
                    write!(f, ": {body}")?;
                }
                Ok(())
            }
            Kind::Protocol { header, detail } => write!(f, "bad {header} from server: {detail}"),
            Kind::OffsetMismatch { expected, got } => write!(
                f,
                "server acknowledged Upload-Offset {got} after bytes up to {expected} were sent"
            ),
            Kind::Transport if self.is_connect() => {
                let src = i.source.as_ref().expect("is_connect");
                write!(f, "cannot connect ({src})")
            }
            Kind::Unreachable { endpoint, seconds } => {
                write!(
                    f,
                    "the server at {endpoint} cannot be reached (tried for {seconds} s)"
                )?;
                if let Some(src) = &i.source {
                    write!(f, ": {src}")?;
                }
                Ok(())
            }
            Kind::Transport => {
                f.write_str("connection failed")?;
                if let Some(src) = &i.source {
                    write!(f, ": {}", chain(src.as_ref()))?;
                }
                Ok(())
            }
            Kind::Timeout { what } => write!(f, "{what} timeout"),
            Kind::Io { path } => {
                match path {
                    Some(p) => write!(f, "reading {}", p.display())?,
                    None => f.write_str("reading the source")?,
                }
                if let Some(src) = &i.source {
                    write!(f, ": {src}")?;
                }
                Ok(())
            }
            Kind::Invalid { what } | Kind::Store { what } => f.write_str(what),
            Kind::Middleware { .. } => {
                f.write_str("middleware failed")?;
                if let Some(src) = &i.source {
                    write!(f, ": {}", chain(src.as_ref()))?;
                }
                Ok(())
            }
            Kind::Cancelled { terminated: false } => f.write_str("upload aborted"),
            Kind::Cancelled { terminated: true } => {
                f.write_str("upload aborted and terminated on the server")
            }
            Kind::Internal { what } => write!(f, "internal error (a bug in tusflow): {what}"),
        }
    }
}
