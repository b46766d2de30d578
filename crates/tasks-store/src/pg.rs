//! Opening PostgreSQL connections without libpq, with TLS through rustls.
//!
//! `sslmode` in the URL is honoured as libpq does: `disable` is plain TCP;
//! `prefer` (the default) and `require` encrypt without checking the server's
//! certificate; `verify-ca` and `verify-full` check it against the Mozilla root
//! store compiled into the binary (what Neon and other hosted services use).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Everything needed to open connections to one server, parsed once.
#[derive(Clone)]
pub struct PgConnector {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

impl PgConnector {
    /// Parses `url` and prepares TLS.
    ///
    /// # Errors
    /// The URL is not a valid PostgreSQL connection string, or names an
    /// `sslmode` this build does not know.
    pub fn new(url: &str, connect_timeout: Duration) -> anyhow::Result<Self> {
        let (url, verify) = rewrite_sslmode(url)?;
        let mut config = tokio_postgres::Config::from_str(&url)
            .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("tasks-server");
        }
        Ok(Self {
            config,
            tls: MakeRustlsConnect::new(tls_config(verify)?),
        })
    }

    /// Opens one connection.
    ///
    /// # Errors
    /// Connecting or the TLS handshake failed.
    pub async fn connect(&self) -> Result<AsyncPgConnection, ConnectionError> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
        AsyncPgConnection::try_from_client_and_connection(client, connection).await
    }

    /// Opens one connection through a transaction-pooling PgBouncer.
    /// diesel-async sets the session up with prepared statements; behind
    /// PgBouncer their prepare and execute could land on different servers,
    /// so the set-up runs inside one transaction, which pins one server.
    ///
    /// # Errors
    /// Connecting, the TLS handshake or the set-up failed.
    pub async fn connect_pooled(&self) -> Result<AsyncPgConnection, ConnectionError> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection closed");
            }
        });
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
        let mut conn = AsyncPgConnection::try_from(client).await?;
        diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, "COMMIT")
            .await
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    }
}

/// Maps libpq's `verify-ca`/`verify-full`, which tokio-postgres does not
/// parse, to `require` plus certificate verification.
fn rewrite_sslmode(url: &str) -> anyhow::Result<(String, bool)> {
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
                    "DATABASE_URL has sslmode={mode}; expected disable, prefer, require, verify-ca or verify-full"
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

fn tls_config(verify: bool) -> anyhow::Result<rustls::ClientConfig> {
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
        let (url, verify) =
            rewrite_sslmode("postgres://u@h/db?sslmode=verify-full&channel_binding=require")
                .unwrap();
        assert_eq!(
            url,
            "postgres://u@h/db?sslmode=require&channel_binding=require"
        );
        assert!(verify);
    }

    #[test]
    fn sslmode_require_does_not_verify() {
        let (url, verify) = rewrite_sslmode("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(url, "postgres://u@h/db?sslmode=require");
        assert!(!verify);
    }

    #[test]
    fn unknown_sslmode_is_an_error_naming_the_variable() {
        let err = rewrite_sslmode("postgres://u@h/db?sslmode=sometimes").unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL"));
    }

    #[test]
    fn url_without_query_is_untouched() {
        assert_eq!(
            rewrite_sslmode("postgres://u@h/db").unwrap(),
            ("postgres://u@h/db".to_owned(), false)
        );
    }

    #[test]
    fn connector_parses_neon_style_urls() {
        let c = PgConnector::new(
            "postgresql://app:pw@ep-x-pooler.region.aws.neon.tech/neondb?sslmode=require&channel_binding=require",
            Duration::from_secs(3),
        );
        assert!(c.is_ok());
        assert!(PgConnector::new("postgres://h/db?nonsense=1", Duration::from_secs(1)).is_err());
    }
}
