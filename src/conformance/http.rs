//! A minimal HTTP/1.1 client for the conformance runner's `http` steps.
//!
//! One request per connection with `Connection: close`; the body is sent
//! with `Content-Length`. The response is read to the end of the stream and
//! its body decoded by `Content-Length`, `Transfer-Encoding: chunked`, or
//! up to the close. Plain `http://` only, which is all the runner needs to
//! talk to a rollcall HTTP API.
//!
//! # Format
//! ```text
//! > POST /api/publish HTTP/1.1\r\nHost: h:p\r\nConnection: close\r\n
//! > Content-Length: 42\r\n\r\n{"channel":..}
//! < HTTP/1.1 202 Accepted\r\n...\r\n\r\n<body>
//! ```

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Responses larger than this are refused.
const MAX_RESPONSE: usize = 64 << 20;

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, e.g. 202.
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request to `authority` (`host:port`) and reads the response.
/// `headers` are added after `Host`, `Connection` and `Content-Length`.
pub async fn request(
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> Result<Response, String> {
    let mut stream = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect to {authority}: {e}"))?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    if body.is_some() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!(
            "Content-Length: {}\r\n",
            body.map_or(0, <[u8]>::len)
        ));
    }
    for (k, v) in headers {
        if k.contains(['\r', '\n']) || v.contains(['\r', '\n']) {
            return Err(format!("header {k:?} contains a line break"));
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("write request: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            // A reset after a complete response is not an error for us.
            Err(e) if !raw.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(format!("read response: {e}")),
        };
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_RESPONSE {
            return Err(format!("response larger than {MAX_RESPONSE} bytes"));
        }
        // Stop early once a Content-Length body is complete, in case the
        // server keeps the connection open despite `Connection: close`.
        if let Ok(Some(done)) = complete_length(&raw)
            && raw.len() >= done
        {
            break;
        }
    }
    parse_response(&raw)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// When the head is complete and has a Content-Length (and no chunking),
/// the total response length.
fn complete_length(raw: &[u8]) -> Result<Option<usize>, String> {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return Ok(None);
    };
    let (_, headers) = parse_head(&raw[..end])?;
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return Ok(None);
    }
    Ok(headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .map(|n| end + 4 + n))
}

type Head = (u16, Vec<(String, String)>);

fn parse_head(head: &[u8]) -> Result<Head, String> {
    let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x response: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok((status, headers))
}

/// Parses a complete raw response (head and body).
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| {
        format!(
            "incomplete response head ({} bytes): {:?}",
            raw.len(),
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        )
    })?;
    let (status, headers) = parse_head(&raw[..end])?;
    let rest = &raw[end + 4..];
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        decode_chunked(rest)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .trim()
            .parse()
            .map_err(|_| format!("bad content-length {len:?}"))?;
        if rest.len() < len {
            return Err(format!(
                "body shorter than content-length: {} < {len}",
                rest.len()
            ));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Decodes a chunked body (chunk extensions and trailers are ignored).
fn decode_chunked(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").ok_or("truncated chunk size line")?;
        let line = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size line")?;
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size..];
        data = data
            .strip_prefix(b"\r\n")
            .ok_or("missing CRLF after chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn parses_content_length_and_chunked() {
        let r =
            parse_response(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nX-A: b\r\n\r\n{}junk");
        assert_eq!(
            r,
            Ok(Response {
                status: 202,
                headers: vec![
                    ("content-length".into(), "2".into()),
                    ("x-a".into(), "b".into())
                ],
                body: b"{}".to_vec()
            })
        );
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
        );
        assert_eq!(r.map(|r| r.body), Ok(b"{\"a\":1}".to_vec()));
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope");
        assert_eq!(r.map(|r| (r.status, r.body)), Ok((404, b"nope".to_vec())));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
    }

    #[tokio::test]
    async fn round_trip() {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let server = tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return String::new();
            };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while find(&req, b"{\"x\":1}").is_none() {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s
                .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")
                .await;
            String::from_utf8_lossy(&req).into_owned()
        });
        let r = request(
            &addr,
            "POST",
            "/api/publish",
            &[("Authorization".into(), "Bearer k".into())],
            Some(b"{\"x\":1}"),
        )
        .await;
        let r = match r {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(r.status, 202);
        assert_eq!(r.body, b"{\"ok\":true}");
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        let req = server.await.unwrap_or_default();
        assert!(req.starts_with("POST /api/publish HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Content-Length: 7\r\n"), "{req}");
        assert!(req.contains("Authorization: Bearer k\r\n"), "{req}");
        assert!(req.contains("Connection: close\r\n"), "{req}");
    }
}
