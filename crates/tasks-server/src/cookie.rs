//! Better Auth's session cookie, for deployments that put the service under
//! the frontend's own origin (a reverse proxy or Next.js `rewrites()`), where
//! the browser sends the cookie and no `Authorization` header.
//!
//! A browser attaches cookies to requests a foreign page triggers (a form
//! POST, an `<img>`), so a cookie alone cannot prove the caller meant a
//! change: the CSRF rule is that a request which changes data (anything but
//! GET, HEAD, OPTIONS) and is authenticated by the cookie must carry an
//! `Origin` (or, without one, a `Referer`) whose origin is in
//! `CORS_ORIGINS`. Browsers send `Origin` on every such request, same-origin
//! fetches included.

use actix_web::HttpRequest;
use actix_web::http::{Method, header};

use crate::error::ApiError;

/// Where the session cookie is read from and which origins may make
/// cookie-authenticated changes.
#[derive(Debug, Clone)]
pub struct CookieAuth {
    /// `__Secure-{prefix}.session_token` (HTTPS) first, then
    /// `{prefix}.session_token`.
    names: [String; 2],
    allowed_origins: Vec<String>,
}

impl CookieAuth {
    #[must_use]
    pub fn new(prefix: &str, allowed_origins: &[String]) -> Self {
        Self {
            names: [
                format!("__Secure-{prefix}.session_token"),
                format!("{prefix}.session_token"),
            ],
            allowed_origins: allowed_origins
                .iter()
                .map(|o| o.to_ascii_lowercase())
                .collect(),
        }
    }

    /// The session cookie's value as sent (still percent-encoded), if any.
    #[must_use]
    pub fn session_cookie(&self, req: &HttpRequest) -> Option<String> {
        self.names
            .iter()
            .find_map(|name| cookie_value(req, name).map(str::to_owned))
    }

    /// The CSRF rule: refuses a data-changing request whose `Origin` (or,
    /// without one, `Referer`) is not an allowed origin.
    ///
    /// # Errors
    /// [`ApiError::Forbidden`] naming the missing or refused origin.
    pub fn check_origin(&self, req: &HttpRequest) -> Result<(), ApiError> {
        if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        let header_text = |name| {
            req.headers()
                .get(name)
                .and_then(|v: &header::HeaderValue| v.to_str().ok())
                .map(str::trim)
        };
        let (origin, from) = match (header_text(header::ORIGIN), header_text(header::REFERER)) {
            (Some(origin), _) => (Some(origin.to_owned()), "Origin"),
            (None, Some(referer)) => (origin_of_url(referer), "Referer"),
            (None, None) => {
                return Err(ApiError::Forbidden(
                    "Cross-site request refused: a request authenticated by the session cookie that changes data must carry an Origin or Referer header naming an origin in CORS_ORIGINS (browsers send Origin by themselves; other clients should send Authorization: Bearer instead)".into(),
                ));
            }
        };
        let origin = origin.map(|o| o.trim_end_matches('/').to_ascii_lowercase());
        if let Some(origin) = &origin
            && self.allowed_origins.iter().any(|a| a == origin)
        {
            return Ok(());
        }
        let shown = origin
            .filter(|o| o.len() <= 200 && o.bytes().all(|b| b.is_ascii_graphic()))
            .map_or_else(|| "an unreadable origin".to_owned(), |o| format!("{o:?}"));
        Err(ApiError::Forbidden(format!(
            "Cross-site request refused: the {from} header names {shown}, which is not in CORS_ORIGINS; requests authenticated by the session cookie that change data are accepted only from the frontend's own origins (add yours to CORS_ORIGINS on the tasks service)"
        )))
    }
}

/// Whether the request carries a cookie that looks like Better Auth's
/// session cookie (any prefix), for a hint when cookie sessions are off.
#[must_use]
pub fn has_session_cookie_like(req: &HttpRequest) -> bool {
    cookie_pairs(req).any(|(name, _)| name.ends_with(".session_token"))
}

fn cookie_value<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    cookie_pairs(req)
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v)
}

/// `name=value` pairs of every `Cookie` header (RFC 6265 section 4.2: pairs
/// separated by `;`, a value optionally in double quotes). Hand-written:
/// actix-web's cookie parsing is a feature this build leaves off, and it
/// fails the whole header on one malformed foreign cookie; the value is
/// percent-decoded later by the session verifier.
fn cookie_pairs(req: &HttpRequest) -> impl Iterator<Item = (&str, &str)> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            Some((name.trim(), value))
        })
}

/// `scheme://host[:port]` of an absolute http(s) URL.
fn origin_of_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn auth() -> CookieAuth {
        CookieAuth::new("better-auth", &["http://localhost:3000".to_owned()])
    }

    #[test]
    fn reads_either_cookie_name_preferring_the_secure_one() {
        let req = TestRequest::default()
            .insert_header((
                header::COOKIE,
                "a=1; better-auth.session_token=plain; x=\"y\"",
            ))
            .to_http_request();
        assert_eq!(auth().session_cookie(&req).as_deref(), Some("plain"));
        let req = TestRequest::default()
            .insert_header((
                header::COOKIE,
                "better-auth.session_token=plain;__Secure-better-auth.session_token=\"sec\"",
            ))
            .to_http_request();
        assert_eq!(auth().session_cookie(&req).as_deref(), Some("sec"));
        let req = TestRequest::default()
            .insert_header((
                header::COOKIE,
                "other.session_token=x; better-auth.session_token=",
            ))
            .to_http_request();
        assert_eq!(auth().session_cookie(&req), None);
        assert!(has_session_cookie_like(&req));
    }

    #[test]
    fn unsafe_methods_need_an_allowed_origin_or_referer() {
        let check = |method: Method, headers: &[(header::HeaderName, &str)]| {
            let mut req = TestRequest::default().method(method);
            for (name, value) in headers {
                req = req.insert_header((name.clone(), *value));
            }
            auth().check_origin(&req.to_http_request()).is_ok()
        };
        assert!(check(Method::GET, &[]));
        assert!(check(
            Method::GET,
            &[(header::ORIGIN, "https://evil.example")]
        ));
        assert!(!check(Method::POST, &[]));
        assert!(!check(
            Method::DELETE,
            &[(header::ORIGIN, "https://evil.example")]
        ));
        assert!(!check(Method::PATCH, &[(header::ORIGIN, "null")]));
        assert!(check(
            Method::PUT,
            &[(header::ORIGIN, "http://localhost:3000")]
        ));
        assert!(check(
            Method::POST,
            &[(header::REFERER, "http://localhost:3000/tasks?x=1")]
        ));
        assert!(!check(
            Method::POST,
            &[(header::REFERER, "http://localhost:3000.evil.example/")]
        ));
        assert!(!check(
            Method::POST,
            &[(header::REFERER, "http://localhost:3000@evil.example/")]
        ));
        // Origin decides when both are present.
        assert!(!check(
            Method::POST,
            &[
                (header::ORIGIN, "https://evil.example"),
                (header::REFERER, "http://localhost:3000/")
            ]
        ));
    }
}
