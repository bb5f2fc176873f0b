//! TLS: the server's certificate is verified by default; `--cacert` adds a trusted CA;
//! `--insecure` turns verification off, and says so on stderr every time. Against
//! @tus/server over HTTPS with a certificate made by `openssl` for this run.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::{TusServer, make_file};

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=tusflow test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
}

#[test]
fn tls_is_verified_by_default_and_insecure_is_loud() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certificates(d);
    let cert = d.join("cert.pem");
    let key = d.join("key.pem");
    let tls = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let file = make_file(d, "a.bin", 200_000, 3);

    // @tus/server builds an absolute Location with http:// even when it serves HTTPS
    // (as any server behind a TLS proxy that does not tell it): refused, clearly.
    let plain = TusServer::start_with(&tls);
    let out = Command::new(env!("CARGO_BIN_EXE_tusflow"))
        .args([
            "upload",
            "a.bin",
            "-e",
            &plain.endpoint,
            "--no-store",
            "--insecure",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Location") && stderr.contains("from https to plain http"),
        "{stderr}"
    );
    drop(plain);

    let server = TusServer::start_with(&[&tls[..], &["--relative-location"]].concat());
    assert!(server.endpoint.starts_with("https://127.0.0.1:"));
    // `TUSFLOW_INSECURE` is cleared unless a case sets it (it is config).
    let upload_with = |extra: &[&str], insecure_env: Option<&str>| -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tusflow"));
        c.args([
            "upload",
            "a.bin",
            "-e",
            &server.endpoint,
            "--no-store",
            "--json",
        ])
        .args(extra)
        .env_remove("TUSFLOW_INSECURE")
        .current_dir(d);
        if let Some(v) = insecure_env {
            c.env("TUSFLOW_INSECURE", v);
        }
        c.output().unwrap()
    };
    let upload = |extra: &[&str]| upload_with(extra, None);

    // An unknown issuer: refused before any request, with the reason, and not tried
    // again (it would be refused again).
    // (-v: retries are logged from -v up.)
    let out = upload(&["-v"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("invalid peer certificate"), "{stderr}");
    assert!(!stderr.contains("retrying"), "{stderr}");
    assert!(!stderr.contains("cannot be reached"), "{stderr}");
    assert!(!stderr.contains("insecure"), "{stderr}");
    assert_eq!(server.upload_count(), 0);

    // The CA given: verified, and uploaded.
    let out = upload(&["--cacert", "ca.pem"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("insecure"), "{stderr}");
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    server.assert_stored_file(done["url"].as_str().unwrap(), &file);

    // --insecure (or `insecure = true` in the config): uploads, and warns each time.
    for (flag, env) in [(&["--insecure"][..], None), (&[][..], Some("true"))] {
        let out = upload_with(flag, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(
            stderr.contains("WARNING: insecure: the server's TLS certificate is NOT verified"),
            "{stderr}"
        );
        let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        server.assert_stored_file(done["url"].as_str().unwrap(), &file);
    }
}
