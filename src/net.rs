//! TCP and TLS connections to mail servers, shared by IMAP intake and the SMTP outbox.
//!
//! Certificates are verified with rustls against the Mozilla roots, the system store and an
//! optional CA file (for private CAs). TCP_NODELAY is set on every socket: both protocols are
//! chatty request/response exchanges, and Nagle plus delayed ACKs would add ~40 ms to every
//! exchange that ends in a small write.

use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::ServerName, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("connecting to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("connecting to {addr}: timed out after {secs} s")]
    Timeout { addr: String, secs: u64 },
    #[error("TLS handshake with {name}: {source}")]
    Tls { name: String, source: io::Error },
    #[error("{0:?} is not a valid TLS server name")]
    BadName(String),
    #[error("CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
}

/// A rustls client configuration trusting the public roots, the system store, and `ca_file`.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, NetError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // The system store is best-effort: a minimal container may have none.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let ca_err = |reason: String| NetError::CaFile { path: path.display().to_string(), reason };
        let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| ca_err(e.to_string()))?;
            roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(ca_err("no PEM certificate in it".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| NetError::Tls { name: String::new(), source: io::Error::other(e) })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Open a TCP connection with TCP_NODELAY, within `timeout`.
pub async fn connect_tcp(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, NetError> {
    let addr = format!("{host}:{port}");
    let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| NetError::Timeout { addr: addr.clone(), secs: timeout.as_secs() })?
        .map_err(|source| NetError::Connect { addr: addr.clone(), source })?;
    stream.set_nodelay(true).map_err(|source| NetError::Connect { addr, source })?;
    Ok(stream)
}

/// Wrap a stream in TLS, verifying the certificate for `name`.
pub async fn tls_wrap<S>(
    config: Arc<ClientConfig>,
    name: &str,
    stream: S,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<S>, NetError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let server_name = ServerName::try_from(name.to_string()).map_err(|_| NetError::BadName(name.to_string()))?;
    let connector = TlsConnector::from(config);
    tokio::time::timeout(timeout, connector.connect(server_name, stream))
        .await
        .map_err(|_| NetError::Tls { name: name.to_string(), source: io::Error::other("handshake timed out") })?
        .map_err(|source| NetError::Tls { name: name.to_string(), source })
}

/// A connection that is plain or TLS, so one session type serves every `security` setting.
pub enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl fmt::Debug for MaybeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaybeTls::Plain(_) => f.write_str("MaybeTls::Plain"),
            MaybeTls::Tls(_) => f.write_str("MaybeTls::Tls"),
        }
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Exponential backoff: 1 s, 2 s, 4 s … capped at `max`; reset after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff { next: Duration::from_secs(1), max }
    }
    /// The delay to wait now; doubles the next one.
    pub fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
    pub fn reset(&mut self) {
        self.next = Duration::from_secs(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(64));
        let steps: Vec<u64> = (0..9).map(|_| b.step().as_secs()).collect();
        assert_eq!(steps, vec![1, 2, 4, 8, 16, 32, 64, 64, 64]);
        b.reset();
        assert_eq!(b.step(), Duration::from_secs(1));
    }

    #[test]
    fn ca_file_without_certificates_is_refused() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "not a pem\n").unwrap();
        assert!(matches!(tls_config(Some(f.path())), Err(NetError::CaFile { .. })));
    }

    #[tokio::test]
    async fn unreachable_server_is_a_typed_error() {
        // Port 1 on loopback: nothing listens there.
        let e = connect_tcp("127.0.0.1", 1, Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(e, NetError::Connect { .. } | NetError::Timeout { .. }), "{e}");
    }
}
