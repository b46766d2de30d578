//! Opening PostgreSQL connections without libpq, with TLS through rustls.
//!
//! Shared by the two adapters that talk to PostgreSQL (the task store and the
//! Better Auth session verifier). `sslmode` in the URL is honoured as libpq
//! does: `disable` is plain TCP; `prefer` (the default) and `require` encrypt
//! without checking the server's certificate; `verify-ca` and `verify-full`
//! check it against the Mozilla root store compiled into the binary (what Neon
//! and other hosted services use).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
pub use tokio_postgres_rustls::MakeRustlsConnect;

/// A parsed connection URL and the TLS set-up it asks for.
#[derive(Clone)]
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
}

impl PgTarget {
    /// Parses `url`; `var` names the setting it came from, for error messages.
    /// `connect_timeout` and `application_name` apply unless the URL sets them.
    ///
    /// # Errors
    /// The URL is not a valid PostgreSQL connection string, or names an
    /// `sslmode` this build does not know.
    pub fn parse(
        url: &str,
        var: &str,
        connect_timeout: Duration,
        application_name: &str,
    ) -> anyhow::Result<Self> {
        let (url, verify) = rewrite_sslmode(url, var)?;
        let mut config = tokio_postgres::Config::from_str(&url)
            .map_err(|e| anyhow::anyhow!("{var} is not a valid PostgreSQL URL: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name(application_name);
        }
        Ok(Self {
            config,
            tls: MakeRustlsConnect::new(tls_config(verify)?),
        })
    }
}

/// The URL with any password replaced by `***` and the query string and
/// fragment dropped (they may carry credentials too): what may be logged or
/// shown of a database URL, a JWKS URL, or any other configured URL. The one
/// redaction helper of the workspace; the store re-exports it.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or(url);
    let Some((scheme, rest)) = without_query.split_once("://") else {
        return "<unparseable url>".to_owned();
    };
    // User info ends at the last `@`: a password may hold a raw `/` or `@`,
    // so over-redacting a path that contains `@` is the safe mistake.
    let (userinfo, host_and_path) = match rest.rsplit_once('@') {
        Some((userinfo, after)) => (Some(userinfo), after),
        None => (None, rest),
    };
    let (host, path) = host_and_path.split_once('/').unwrap_or((host_and_path, ""));
    match userinfo {
        Some(userinfo) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') || userinfo.contains('/') {
                let user = user.split('/').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}/{path}")
            } else {
                format!("{scheme}://{user}@{host}/{path}")
            }
        }
        None => format!("{scheme}://{host}/{path}"),
    }
}

/// Maps libpq's `verify-ca`/`verify-full`, which tokio-postgres does not
/// parse, to `require` plus certificate verification.
fn rewrite_sslmode(url: &str, var: &str) -> anyhow::Result<(String, bool)> {
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
                    "{var} has sslmode={mode}; expected disable, prefer, require, verify-ca or verify-full"
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
    fn redacts_passwords_and_query() {
        assert_eq!(
            redact_url("postgres://alice:s3cret@db.example:5432/app?sslmode=require"),
            "postgres://alice:***@db.example:5432/app"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(
            redact_url("postgresql://u:p:q@h/db"),
            "postgresql://u:***@h/db"
        );
        assert_eq!(redact_url("nonsense"), "<unparseable url>");
    }

    #[test]
    fn redacts_http_urls_with_credentials_anywhere() {
        assert_eq!(
            redact_url("http://user:pa55@auth.example:3000/api/auth/jwks?token=t0k#frag"),
            "http://user:***@auth.example:3000/api/auth/jwks"
        );
        assert_eq!(redact_url("https://auth.example"), "https://auth.example/");
        // Raw `/` and `@` in a password (invalid, but pasted all the same).
        for url in [
            "http://u:pa/ss@h/jwks",
            "http://u:p@ss@h/jwks",
            "http://u:a/b@c@h/x",
        ] {
            let r = redact_url(url);
            assert!(r.starts_with("http://u:***@h/"), "{url} -> {r}");
            for secret in ["pa", "ss", "a/b", "c@"] {
                assert!(!r.contains(secret), "{url} -> {r}");
            }
        }
    }

    #[test]
    fn sslmode_verify_full_becomes_require_with_verification() {
        let (url, verify) = rewrite_sslmode(
            "postgres://u@h/db?sslmode=verify-full&channel_binding=require",
            "DATABASE_URL",
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://u@h/db?sslmode=require&channel_binding=require"
        );
        assert!(verify);
    }

    #[test]
    fn sslmode_require_does_not_verify() {
        let (url, verify) =
            rewrite_sslmode("postgres://u@h/db?sslmode=require", "DATABASE_URL").unwrap();
        assert_eq!(url, "postgres://u@h/db?sslmode=require");
        assert!(!verify);
    }

    #[test]
    fn unknown_sslmode_is_an_error_naming_the_variable() {
        let err = rewrite_sslmode("postgres://u@h/db?sslmode=sometimes", "SOME_URL").unwrap_err();
        assert!(err.to_string().contains("SOME_URL"));
    }

    #[test]
    fn url_without_query_is_untouched() {
        assert_eq!(
            rewrite_sslmode("postgres://u@h/db", "DATABASE_URL").unwrap(),
            ("postgres://u@h/db".to_owned(), false)
        );
    }

    #[test]
    fn connector_parses_neon_style_urls() {
        let c = PgTarget::parse(
            "postgresql://app:pw@ep-x-pooler.region.aws.neon.tech/neondb?sslmode=require&channel_binding=require",
            "DATABASE_URL",
            Duration::from_secs(3),
            "test",
        );
        assert!(c.is_ok());
        let err = PgTarget::parse(
            "postgres://h/db?nonsense=1",
            "BETTER_AUTH_DATABASE_URL",
            Duration::from_secs(1),
            "test",
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("BETTER_AUTH_DATABASE_URL"));
    }
}
