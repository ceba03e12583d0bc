//! The webhook HTTP client: receiver URLs (`http://` and `https://`) and
//! one signed POST over HTTP/1.1, on TLS for `https://` (the roots of
//! [`crate::tls`]: the platform's plus `--tls-ca-file`).
//!
//! One connection per request: receivers are few and batches are spaced
//! by `--webhook-batch-ms`, so a pool would save little and keep sockets
//! open on every receiver.

use std::path::Path;
use std::sync::Arc;

use axum::http::Uri;
use bytes::Bytes;
use rustls::ClientConfig;

use super::webhooks::{ID_HEADER, SIGNATURE_HEADER};

/// A parsed receiver URL.
#[derive(Clone, Debug)]
pub struct Target {
    /// The URL as given, for logs.
    pub url: String,
    /// Host name or IP address (IPv6 without brackets).
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    path: String,
    /// `https://`: the TLS settings to connect with.
    tls: Option<Arc<ClientConfig>>,
    https: bool,
}

impl Target {
    /// Uses `tls` for this https target.
    pub fn set_tls(&mut self, tls: Arc<ClientConfig>) {
        self.tls = Some(tls);
    }

    /// A target every request to which fails (for a URL refused at start).
    pub fn unusable() -> Self {
        Target {
            url: "(unusable)".into(),
            host: String::new(),
            port: 0,
            authority: String::new(),
            path: "/".into(),
            tls: None,
            https: false,
        }
    }

    /// The URL without its query string (which may carry a key), for the
    /// banner and logs.
    pub fn display(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let path = self.path.split('?').next().unwrap_or("/");
        format!("{scheme}://{}{path}", self.authority)
    }
}

/// Parses one `--webhook-url`; for https the TLS settings are added by
/// [`parse_targets`].
pub fn parse_target(url: &str) -> Result<Target, String> {
    parse_target_for(
        "--webhook-url",
        url,
        "use --webhook-secret to sign requests",
    )
}

/// Parses the URL given to `flag`; errors name the flag. `credentials_hint`
/// says what to do instead of putting a password in the URL.
pub fn parse_target_for(flag: &str, url: &str, credentials_hint: &str) -> Result<Target, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{flag} {url:?} is not a URL: {e}"))?;
    let (https, default_port) = match uri.scheme_str() {
        Some("http") => (false, 80),
        Some("https") => (true, 443),
        _ => {
            return Err(format!(
                "{flag} {url:?} must start with http:// or https://"
            ));
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{flag} {url:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{flag}: credentials in the URL are not sent; {credentials_hint}"
        ));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(format!("{flag} {url:?} has no host"));
    }
    Ok(Target {
        url: url.to_string(),
        host,
        port: authority.port_u16().unwrap_or(default_port),
        authority: authority.to_string(),
        path: uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
        tls: None,
        https,
    })
}

/// Parses every URL; if any is https, builds the TLS settings once (the
/// platform's roots plus `ca_file`) and gives them to the https ones.
pub fn parse_targets(urls: &[String], ca_file: Option<&Path>) -> Result<Vec<Target>, String> {
    let mut targets = urls
        .iter()
        .map(|u| parse_target(u))
        .collect::<Result<Vec<_>, _>>()?;
    if targets.iter().any(|t| t.https) {
        let tls = crate::tls::client_config(ca_file)?;
        for t in targets.iter_mut().filter(|t| t.https) {
            t.tls = Some(tls.clone());
        }
    }
    Ok(targets)
}

/// One signed request: the batch id, its signature (if a secret is set),
/// which attempt this is, and the JSON body.
#[derive(Clone, Copy, Debug)]
pub struct Signed<'a> {
    /// The batch id ([`ID_HEADER`]).
    pub id: &'a str,
    /// `sha256=<hex>` ([`SIGNATURE_HEADER`]).
    pub signature: Option<&'a str>,
    /// 1 for the first try (`X-Rollcall-Attempt`).
    pub attempt: u32,
    /// The JSON body.
    pub body: &'a Bytes,
}

/// One POST; returns the status code. The caller bounds the time.
pub async fn post(target: &Target, request: Signed<'_>) -> Result<u16, String> {
    let attempt = request.attempt.to_string();
    let mut headers = vec![
        (ID_HEADER, request.id),
        ("X-Rollcall-Attempt", attempt.as_str()),
    ];
    headers.extend(request.signature.map(|sig| (SIGNATURE_HEADER, sig)));
    let (status, _) = post_json(target, &headers, request.body.clone(), 0).await?;
    Ok(status)
}

/// One JSON POST with extra headers; returns the status code and up to
/// `max_body` bytes of the response body (0: the body is not read). The
/// caller bounds the time.
pub async fn post_json(
    target: &Target,
    headers: &[(&str, &str)],
    body: Bytes,
    max_body: usize,
) -> Result<(u16, Bytes), String> {
    use http_body_util::{BodyExt, Full, Limited};
    use hyper_util::rt::TokioIo;

    let stream = crate::tls::connect(&target.host, target.port, target.tls.as_ref()).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::post(target.path.as_str())
        .header(hyper::header::HOST, target.authority.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("rollcall/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| format!("bad request: {e}"))?;
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        if max_body == 0 {
            return Ok((status, Bytes::new()));
        }
        let body = Limited::new(resp.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| format!("reading the response failed: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let t = parse_target("http://127.0.0.1:9000/hooks?x=1").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 9000));
        assert_eq!(t.path, "/hooks?x=1");
        assert!(!t.https);
        assert_eq!(parse_target("http://example.com").unwrap().port, 80);
        let t = parse_target("https://example.com").unwrap();
        assert!(t.https);
        assert_eq!((t.port, t.path.as_str()), (443, "/"));
        let t = parse_target("https://[::1]:8443/h").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
        assert_eq!(t.authority, "[::1]:8443");
        let err = parse_target("ftp://x").unwrap_err();
        assert!(err.contains("http:// or https://"), "{err}");
        assert!(parse_target("not a url").is_err());
        assert!(parse_target("https://u:p@h/x").is_err());
    }

    #[test]
    fn https_targets_get_the_tls_settings() {
        let urls = ["http://127.0.0.1:1/a".to_string(), "https://h/b".into()];
        let targets = parse_targets(&urls, None).unwrap();
        assert!(targets[0].tls.is_none());
        assert!(targets[1].tls.is_some());
        let missing = std::path::Path::new("/nonexistent/rollcall-ca.pem");
        let err = parse_targets(&urls, Some(missing)).unwrap_err();
        assert!(err.contains("no such file"), "{err}");
        // Only http: the CA file is not needed here (startup checks it).
        assert!(parse_targets(&urls[..1], Some(missing)).is_ok());
    }
}
