//! TLS for the session database, with libpq's `sslmode` semantics.
//!
//! A copy of the few functions tasks-store uses for the same purpose: the
//! two adapters must not depend on each other, and this is too small to earn
//! a shared crate. Keep the two in step.

use std::sync::Arc;

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Maps libpq's `verify-ca`/`verify-full`, which tokio-postgres does not
/// parse, to `require` plus certificate verification.
pub(super) fn rewrite_sslmode(url: &str) -> anyhow::Result<(String, bool)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), false));
    };
    let mut verify = false;
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", "verify-ca" | "verify-full")) => {
                verify = true;
                params.push("sslmode=require".to_owned());
            }
            Some(("sslmode", mode))
                if !matches!(mode, "disable" | "allow" | "prefer" | "require") =>
            {
                anyhow::bail!(
                    "BETTER_AUTH_DATABASE_URL has sslmode={mode}; expected disable, prefer, require, verify-ca or verify-full"
                );
            }
            // libpq's `allow` tries plain first; `prefer` is the nearest we have.
            Some(("sslmode", "allow")) => params.push("sslmode=prefer".to_owned()),
            // Certificates come from the built-in root store.
            Some(("sslrootcert", _)) => verify = true,
            _ => params.push(pair.to_owned()),
        }
    }
    if params.is_empty() {
        return Ok((base.to_owned(), verify));
    }
    Ok((format!("{base}?{}", params.join("&")), verify))
}

pub(super) fn tls_config(verify: bool) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let config = if verify {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth()
    };
    Ok(config)
}

/// libpq's `sslmode=require`: the channel is encrypted and the handshake
/// signatures are checked, but the certificate chain is not.
#[derive(Debug)]
struct EncryptOnly(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

// Keep the provider type referenced so a feature change is a compile error here.
const _: fn() -> CryptoProvider = rustls::crypto::ring::default_provider;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_verify_full_becomes_require_with_verification() {
        let (url, verify) = rewrite_sslmode("postgres://u@h/db?sslmode=verify-full").unwrap();
        assert_eq!(url, "postgres://u@h/db?sslmode=require");
        assert!(verify);
    }

    #[test]
    fn unknown_sslmode_names_the_variable() {
        let err = rewrite_sslmode("postgres://u@h/db?sslmode=sometimes").unwrap_err();
        assert!(err.to_string().contains("BETTER_AUTH_DATABASE_URL"));
    }
}
