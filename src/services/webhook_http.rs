//! The webhook requests: receiver URLs (`http://` and `https://`) and one
//! signed JSON POST, sent with the shared [`HttpClient`] (kept-alive
//! connections, TLS with the roots of [`crate::tls`]: the platform's plus
//! `--tls-ca-file`).

use std::path::Path;
use std::time::Duration;

use axum::http::Method;
use bytes::Bytes;

use super::webhooks::{ID_HEADER, SIGNATURE_HEADER};
use crate::http_client::{Body, HttpClient, Target, UserInfo};

/// Parses every `--webhook-url` and makes the client that sends to them
/// (see [`HttpClient::for_targets`]: a bad CA file for an https receiver
/// stops the server at start).
pub fn parse_targets(
    urls: &[String],
    ca_file: Option<&Path>,
) -> Result<(Vec<Target>, HttpClient), String> {
    let targets = urls
        .iter()
        .map(|u| {
            Target::parse(
                "--webhook-url",
                u,
                UserInfo::Refused("use --webhook-secret to sign requests"),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let client = HttpClient::for_targets(&targets, ca_file)?;
    Ok((targets, client))
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

/// One POST, answered within `timeout`; returns the status code.
pub async fn post(
    client: &HttpClient,
    target: &Target,
    request: Signed<'_>,
    timeout: Duration,
) -> Result<u16, String> {
    let attempt = request.attempt.to_string();
    let mut headers = vec![
        (ID_HEADER, request.id),
        ("X-Rollcall-Attempt", attempt.as_str()),
    ];
    headers.extend(request.signature.map(|sig| (SIGNATURE_HEADER, sig)));
    let body = Body::json(request.body.clone());
    let answer = client
        .send(target, Method::POST, &headers, Some(body), 0, timeout)
        .await
        .map_err(|e| e.to_string())?;
    Ok(answer.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_https_needs_a_readable_ca_file() {
        let urls = ["http://127.0.0.1:1/a".to_string(), "https://h/b".into()];
        assert_eq!(parse_targets(&urls, None).unwrap().0.len(), 2);
        let missing = std::path::Path::new("/nonexistent/rollcall-ca.pem");
        let err = parse_targets(&urls, Some(missing)).unwrap_err();
        assert!(err.contains("no such file"), "{err}");
        // Only http: the CA file is not needed here (startup checks it).
        assert!(parse_targets(&urls[..1], Some(missing)).is_ok());
        let err = parse_targets(&["https://u:p@h/x".to_string()], None).unwrap_err();
        assert!(err.contains("--webhook-secret"), "{err}");
    }
}
