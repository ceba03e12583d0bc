//! Accepting TCP connections: caps on open connections in total and per
//! client address, and a deadline for the request head, so that a client
//! that opens sockets and sends nothing, or a few header bytes at a time
//! (slowloris), cannot exhaust the process's file descriptors. Refused
//! connections are counted, and logged once per address per minute. A
//! client that stops reading is cut by the kernel after
//! [`UNACKNOWLEDGED_DATA_TIMEOUT`], whatever front end it speaks.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::shutdown::Shutdown;

/// How often a refused address is logged at most.
const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Addresses remembered for that; beyond, the memory starts over.
const MAX_LOGGED_ADDRESSES: usize = 10_000;
/// A connection whose sent data the client has not taken (acknowledged,
/// or made room for by reading) for this long is aborted by the kernel
/// (TCP_USER_TIMEOUT, which Linux also applies to a zero receive window).
/// The front ends give up on such a client after their own 10 s write
/// timeout; this frees the socket and its buffers even if a writer were
/// stuck with no deadline of its own.
pub const UNACKNOWLEDGED_DATA_TIMEOUT: Duration = Duration::from_secs(10);
/// File descriptors kept free for everything but client sockets (Redis,
/// webhooks, files) when the connection cap is derived from the limit.
const RESERVED_FDS: usize = 256;

/// Connection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Open client connections at most (HTTP and WebSocket).
    pub max_connections: usize,
    /// Open client connections from one IP address at most.
    pub max_connections_per_address: usize,
    /// A client must send a complete request head within this long.
    pub header_timeout: Duration,
}

impl ListenerConfig {
    /// The limits, with `None` derived from the process's file limit: all
    /// descriptors but a reserve, and half of that per address, so one
    /// client can never take every slot.
    pub fn new(
        max_connections: Option<usize>,
        per_address: Option<usize>,
        header_timeout: Duration,
    ) -> Self {
        let max_connections = max_connections
            .unwrap_or_else(|| {
                open_files_limit().map_or(10_000, |n| n.saturating_sub(RESERVED_FDS))
            })
            .max(1);
        ListenerConfig {
            max_connections,
            max_connections_per_address: per_address.unwrap_or(max_connections / 2).max(1),
            header_timeout,
        }
    }
}

/// The soft `Max open files` of this process (Linux `/proc/self/limits`).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` reached.
    Total,
    /// `max_connections_per_address` reached for its address.
    PerAddress,
}

/// Counts of refused connections, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    /// Refused at the total cap.
    pub refused_total_cap: u64,
    /// Refused at the per-address cap.
    pub refused_address_cap: u64,
    /// Closed because the request head did not arrive in time.
    pub header_timeouts: u64,
    /// Open now.
    pub open: usize,
}

#[derive(Default)]
struct Counters {
    open: AtomicUsize,
    refused_total_cap: AtomicU64,
    refused_address_cap: AtomicU64,
    header_timeouts: AtomicU64,
}

struct Inner {
    config: ListenerConfig,
    counters: Counters,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    logged: Mutex<HashMap<IpAddr, Instant>>,
}

/// Decides which connections are admitted; cheap to clone.
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// An admitted connection's slot, given back when dropped.
pub struct Permit {
    inner: Arc<Inner>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inner.counters.open.fetch_sub(1, Ordering::AcqRel);
        let mut map = lock(&self.inner.per_address);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Admission {
    /// Admission with these limits.
    pub fn new(config: ListenerConfig) -> Self {
        Admission {
            inner: Arc::new(Inner {
                config,
                counters: Counters::default(),
                per_address: Mutex::new(HashMap::new()),
                logged: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> ListenerConfig {
        self.inner.config
    }

    /// Takes a slot for a connection from `ip`, or says which cap is hit.
    pub fn admit(&self, ip: IpAddr) -> Result<Permit, Refused> {
        let cfg = &self.inner.config;
        let mut map = lock(&self.inner.per_address);
        let from_ip = map.get(&ip).copied().unwrap_or(0);
        if from_ip >= cfg.max_connections_per_address {
            return Err(Refused::PerAddress);
        }
        let open = &self.inner.counters.open;
        if open.fetch_add(1, Ordering::AcqRel) >= cfg.max_connections {
            open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Total);
        }
        *map.entry(ip).or_insert(0) += 1;
        Ok(Permit {
            inner: self.inner.clone(),
            ip,
        })
    }

    /// The counts so far.
    pub fn stats(&self) -> AdmissionStats {
        let c = &self.inner.counters;
        AdmissionStats {
            refused_total_cap: c.refused_total_cap.load(Ordering::Relaxed),
            refused_address_cap: c.refused_address_cap.load(Ordering::Relaxed),
            header_timeouts: c.header_timeouts.load(Ordering::Relaxed),
            open: c.open.load(Ordering::Relaxed),
        }
    }

    fn refused(&self, addr: SocketAddr, why: Refused) {
        let c = &self.inner.counters;
        let cfg = &self.inner.config;
        let (counter, limit, what) = match why {
            Refused::Total => (
                &c.refused_total_cap,
                cfg.max_connections,
                "--max-connections",
            ),
            Refused::PerAddress => (
                &c.refused_address_cap,
                cfg.max_connections_per_address,
                "--max-connections-per-address",
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if self.first_in_interval(addr.ip()) {
            tracing::warn!(
                target: crate::access::TARGET,
                client = %addr.ip(),
                limit,
                "connection refused: {what} ({limit}) reached; further refusals of this address are not logged for a minute"
            );
        }
    }

    fn first_in_interval(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut logged = lock(&self.inner.logged);
        if logged.len() >= MAX_LOGGED_ADDRESSES {
            logged.retain(|_, at| now.duration_since(*at) < LOG_INTERVAL);
            if logged.len() >= MAX_LOGGED_ADDRESSES {
                logged.clear();
            }
        }
        match logged.get(&ip) {
            Some(at) if now.duration_since(*at) < LOG_INTERVAL => false,
            _ => {
                logged.insert(ip, now);
                true
            }
        }
    }
}

/// A client socket that keeps its slot for as long as it lives, through a
/// WebSocket upgrade too.
pub struct Admitted {
    stream: TcpStream,
    _permit: Permit,
}

impl Admitted {
    /// The socket and its slot, for a connection that leaves hyper
    /// (a WebSocket upgrade); the slot stays taken until the permit drops.
    pub fn into_parts(self) -> (TcpStream, Permit) {
        (self.stream, self._permit)
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Serves `router` on `listener` until `stop` fires: admits each
/// connection (or closes it at once when a cap is hit), serves HTTP/1.1
/// with upgrades and the request-head deadline, and on stop lets
/// in-flight requests finish.
pub async fn serve(listener: TcpListener, router: Router, admission: Admission, stop: Shutdown) {
    let mut stop_accepting = stop.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop_accepting.wait() => return,
        };
        let (stream, addr) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match admission.admit(addr.ip()) {
            Ok(p) => p,
            Err(why) => {
                admission.refused(addr, why);
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ =
            socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(UNACKNOWLEDGED_DATA_TIMEOUT));
        let io = TokioIo::new(Admitted {
            stream,
            _permit: permit,
        });
        let service = TowerToHyperService::new(crate::access::WithPeer::new(router.clone(), addr));
        let admission = admission.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(admission.config().header_timeout)
                .serve_connection(io, service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = stop.wait() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result
                && e.is_timeout()
            {
                admission
                    .inner
                    .counters
                    .header_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(client = %addr.ip(), "request head not received in time; connection closed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(total: usize, per_address: usize) -> Admission {
        Admission::new(ListenerConfig::new(
            Some(total),
            Some(per_address),
            Duration::from_secs(10),
        ))
    }

    #[test]
    fn caps_hold_per_address_and_in_total_and_slots_come_back() {
        let a = admission(3, 2);
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = a.admit(one).unwrap();
        let _p2 = a.admit(one).unwrap();
        assert_eq!(a.admit(one).err(), Some(Refused::PerAddress));
        let _p3 = a.admit(two).unwrap();
        assert_eq!(a.admit(two).err(), Some(Refused::Total));
        drop(p1);
        let _p4 = a.admit(one).expect("a slot came back");
        assert_eq!(a.stats().open, 3);
    }

    #[test]
    fn defaults_leave_room_for_other_clients() {
        let cfg = ListenerConfig::new(None, None, Duration::from_secs(10));
        assert!(cfg.max_connections >= 1);
        assert!(cfg.max_connections_per_address < cfg.max_connections || cfg.max_connections == 1);
    }

    #[test]
    fn refusals_are_logged_once_per_address_per_interval() {
        let a = admission(1, 1);
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        assert!(a.first_in_interval(ip));
        assert!(!a.first_in_interval(ip));
        assert!(a.first_in_interval("10.0.0.10".parse().unwrap()));
    }
}
