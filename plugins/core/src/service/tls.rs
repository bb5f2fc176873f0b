//! The TLS configuration of the core service, built with an explicit crypto provider
//! (ring): the library never installs a process-wide rustls provider, so it does not
//! decide for the application, nor fail where the application installed another.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::{Error, Result};

/// A client config: the platform's roots and `extra_roots` (PEM bundles), or no
/// verification at all (`insecure`); `identity` (a PEM with a certificate chain and
/// its key) as the client certificate; ALPN for HTTP/2 and HTTP/1.1.
pub(super) fn config(
    extra_roots: &[Vec<u8>],
    identity: Option<&[u8]>,
    insecure: bool,
) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid(format!("cannot set up TLS: {e}")))?;
    let mut roots = Vec::new();
    for pem in extra_roots {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| {
                Error::invalid(format!("the extra CA certificate is not valid PEM: {e}"))
            })?;
        if certs.is_empty() {
            return Err(Error::invalid(
                "the extra CA certificate file holds no certificate",
            ));
        }
        roots.extend(certs);
    }
    let verifier: Arc<dyn ServerCertVerifier> = if insecure {
        Arc::new(NoVerifier(provider.signature_verification_algorithms))
    } else if roots.is_empty() {
        Arc::new(
            rustls_platform_verifier::Verifier::new(Arc::clone(&provider))
                .map_err(|e| Error::invalid(format!("cannot load the system's CAs: {e}")))?,
        )
    } else {
        extra_roots_verifier(roots, &provider)?
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let bad = || {
                Error::invalid(
                    "the client certificate is not a PEM with a certificate and a private key",
                )
            };
            let chain = CertificateDer::pem_slice_iter(pem)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| bad())?;
            let key = PrivateKeyDer::from_pem_slice(pem).map_err(|_| bad())?;
            if chain.is_empty() {
                return Err(bad());
            }
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|_| bad())?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The platform's roots and `roots` (not offered on Android by the platform verifier).
#[cfg(not(target_os = "android"))]
fn extra_roots_verifier(
    roots: Vec<CertificateDer<'static>>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>> {
    let v = rustls_platform_verifier::Verifier::new_with_extra_roots(roots, Arc::clone(provider))
        .map_err(|e| Error::invalid(format!("cannot use the extra CA certificate: {e}")))?;
    Ok(Arc::new(v))
}

#[cfg(target_os = "android")]
fn extra_roots_verifier(
    _roots: Vec<CertificateDer<'static>>,
    _provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>> {
    Err(Error::invalid(
        "extra CA certificates are not supported on Android (the platform's store is used)",
    ))
}

/// Accepts any certificate (`danger_accept_invalid_certs`); handshake signatures are
/// still checked, so the peer holds the key of the certificate it shows.
#[derive(Debug)]
struct NoVerifier(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
