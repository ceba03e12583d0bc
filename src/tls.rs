//! Outgoing TLS: what rollcall trusts when it connects to a `rediss://`
//! bus, an `https://` webhook receiver or an `https://` OAuth
//! introspection endpoint.
//!
//! Trusted roots are the platform's (through rustls-native-certs, e.g.
//! `/etc/ssl/certs` or `SSL_CERT_FILE`) plus the PEM certificates of
//! `--tls-ca-file`, for servers signed by a private CA. Verification is
//! always on: a server whose certificate does not chain to one of those
//! roots, or is not valid for the host connected to, is refused.
//!
//! [`connect`] opens a TCP connection, wrapped in TLS when given a
//! [`ClientConfig`]; the HTTP clients (webhooks, introspection) speak
//! HTTP/1.1 over the [`Stream`] it returns.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Reads the CA certificates of `--tls-ca-file`. Errors name the file,
/// the problem and what the file must hold.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!(
            "--tls-ca-file {shown}: no such file; give the path of a PEM file with the CA certificate(s) to trust"
        ),
        io::ErrorKind::PermissionDenied => format!(
            "--tls-ca-file {shown}: permission denied; make it readable by the user running rollcall"
        ),
        _ => format!("--tls-ca-file {shown}: cannot read it: {e}"),
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "--tls-ca-file {shown} is not valid PEM ({e}); it must hold -----BEGIN CERTIFICATE----- blocks"
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-ca-file {shown} contains no PEM certificate; it must hold the CA certificate(s) as -----BEGIN CERTIFICATE----- blocks"
        ));
    }
    // Refuse what rustls cannot use as a root now rather than at the
    // first connection.
    let mut check = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        check.add(cert.clone()).map_err(|e| {
            format!(
                "--tls-ca-file {shown}: certificate {} of {} cannot be used as a root: {e}",
                i + 1,
                certs.len()
            )
        })?;
    }
    Ok(certs)
}

/// The platform's root certificates, loaded once per process (a few
/// hundred files at most; unreadable ones are skipped with a warning).
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "cannot load some of the system's root certificates");
        }
        if found.certs.is_empty() {
            tracing::warn!(
                "no system root certificates found (install ca-certificates or set SSL_CERT_FILE): outgoing TLS trusts only --tls-ca-file"
            );
        }
        found.certs
    })
}

/// The platform's roots plus those of `ca_file`.
pub fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    // Some platform stores hold certificates rustls cannot use; skip them.
    roots.add_parsable_certificates(native_roots().iter().cloned());
    if let Some(path) = ca_file {
        for cert in read_ca_file(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("--tls-ca-file {}: {e}", path.display()))?;
        }
    }
    Ok(roots)
}

/// Client settings (ring, TLS 1.2 and 1.3, no client certificate)
/// trusting [`root_store`]. Build once and share: it holds every root.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(root_store(ca_file)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The roots of [`root_store`] as one PEM bundle, for the redis client
/// (it takes PEM bytes and then trusts only those, so the platform's
/// roots go in too).
pub fn roots_pem(ca_file: &Path) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let extra = read_ca_file(ca_file)?;
    let mut pem = Vec::new();
    // The redis client refuses the whole bundle over one unusable root.
    let mut check = RootCertStore::empty();
    for cert in native_roots().iter().cloned().chain(extra) {
        if check.add(cert.clone()).is_err() {
            continue;
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    Ok(pem)
}

/// What a failed TLS handshake means and what to do about it.
pub fn explain(e: &io::Error) -> String {
    use rustls::{CertificateError, Error};
    let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return e.to_string();
    };
    match tls {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "certificate not trusted (unknown issuer); pass --tls-ca-file with the CA certificate that signed the server's certificate".into()
        }
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("{tls}; connect with a host name or IP address the certificate lists"),
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => format!("{tls}; the server must renew its certificate"),
        other => other.to_string(),
    }
}

/// `host:port`, with brackets around an IPv6 address.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Connects to `host` (a name or an IP address, without brackets) on
/// `port`; with `tls`, then handshakes, sending `host` as SNI (not for an
/// IP address) and checking the certificate against it.
pub async fn connect(
    host: &str,
    port: u16,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Stream, String> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", host_port(host, port)))?;
    let Some(config) = tls else {
        return Ok(Stream::Plain(tcp));
    };
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
    let stream = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| {
            format!(
                "TLS handshake with {} failed: {}",
                host_port(host, port),
                explain(&e)
            )
        })?;
    Ok(Stream::Tls(Box::new(stream)))
}

/// A connection from [`connect`]: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://` (boxed: the TLS state is large).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("rollcall-tls-unit-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn ca_file_errors_name_the_problem() {
        let missing = std::env::temp_dir().join("rollcall-tls-unit-does-not-exist.pem");
        let err = read_ca_file(&missing).unwrap_err();
        assert!(err.contains("no such file"), "{err}");
        assert!(err.starts_with("--tls-ca-file "), "{err}");

        let empty = temp_file("empty.pem", b"just text\n");
        let err = read_ca_file(&empty).unwrap_err();
        assert!(err.contains("contains no PEM certificate"), "{err}");

        // A key is not a certificate.
        let key = temp_file(
            "key.pem",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        let err = read_ca_file(&key).unwrap_err();
        assert!(err.contains("contains no PEM certificate"), "{err}");

        let cut = temp_file("cut.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n");
        let err = read_ca_file(&cut).unwrap_err();
        assert!(err.contains("not valid PEM"), "{err}");

        let junk = temp_file(
            "junk.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let err = read_ca_file(&junk).unwrap_err();
        assert!(err.contains("cannot be used as a root"), "{err}");

        for p in [empty, key, cut, junk] {
            let _ = std::fs::remove_file(p);
        }
    }

    #[test]
    fn hosts_are_bracketed_when_ipv6() {
        assert_eq!(host_port("::1", 443), "[::1]:443");
        assert_eq!(host_port("example.com", 443), "example.com:443");
    }

    #[test]
    fn handshake_errors_say_what_to_do() {
        let unknown = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let text = explain(&unknown);
        assert!(text.contains("certificate not trusted"), "{text}");
        assert!(text.contains("--tls-ca-file"), "{text}");
        let plain = io::Error::other("boom");
        assert_eq!(explain(&plain), "boom");
    }
}
