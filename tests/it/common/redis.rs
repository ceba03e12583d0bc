//! Private engines for tests: a `redis-server` or a three-master Redis
//! Cluster on free ports of 127.0.0.1, optionally speaking only TLS.
//! Every server is killed when its guard drops, so a failing test leaves
//! nothing running.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on right now, for a redis-server that binds it
/// later (and again after a restart or an outage), so below the kernel's
/// ephemeral range: the client sockets and `127.0.0.1:0` listeners of the
/// tests running alongside (in this process: every test is in one binary)
/// never get it in between. Picked at random, 10,000 to 20,000 below the
/// range, so that a Redis Cluster node's bus port (port + 10,000) is below
/// the range too.
pub fn free_port() -> u16 {
    let low = ephemeral_ports_start();
    for _ in 0..1_000 {
        let port = rand::random_range(low - 20_000..low - 10_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {}..{}", low - 20_000, low - 10_000);
}

/// The first port of the kernel's ephemeral range
/// (/proc/sys/net/ipv4/ip_local_port_range; Linux's default is 32768),
/// at least 25,000 so the range [`free_port`] picks from exists.
fn ephemeral_ports_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
        .max(25_000)
}

/// A private redis-server (no persistence) on 127.0.0.1.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts redis-server on a free port and waits until it answers PING.
    pub fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
        };
        r.spawn();
        r
    }

    /// Starts redis-server speaking only TLS (`rediss://`, no plain port)
    /// on a free port with this certificate and key (clients need no
    /// certificate), and waits until it accepts connections. Not for
    /// [`Redis::spawn`], which restarts it without TLS.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Redis {
        let port = free_port();
        let mut cmd = redis_server();
        RedisTls::new(cert, key, ca).serve_on(&mut cmd, port);
        let redis = Redis {
            port,
            child: Some(spawn_redis(&mut cmd)),
        };
        wait_listening(port, Instant::now() + Duration::from_secs(5));
        redis
    }

    /// A Redis that is not running (yet), on a free port.
    pub fn not_running() -> Redis {
        Redis {
            port: free_port(),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let mut cmd = redis_server();
        cmd.args(["--port", &self.port.to_string()]);
        self.child = Some(spawn_redis(&mut cmd));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.pings() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on port {} within 5 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// SIGKILL, as if the machine running Redis died.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-server` without persistence, bound to 127.0.0.1, quiet.
fn redis_server() -> Command {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn spawn_redis(cmd: &mut Command) -> Child {
    cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run redis-server ({e}); install it (apt-get install redis-server)")
    })
}

/// Waits until something accepts connections on `port` (a TLS-only
/// redis-server cannot be PINGed in plain text); panics at `deadline`.
fn wait_listening(port: u16, deadline: Instant) {
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server (TLS) did not listen on port {port} in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The files of a TLS-only redis-server: its certificate and key, and the
/// CA that `redis-cli` checks them with (clients need no certificate).
#[derive(Clone, Debug)]
struct RedisTls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl RedisTls {
    fn new(cert: &Path, key: &Path, ca: &Path) -> RedisTls {
        RedisTls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            ca: ca.to_path_buf(),
        }
    }

    /// Makes `cmd` serve TLS only, on `port`.
    fn serve_on(&self, cmd: &mut Command, port: u16) {
        cmd.args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&self.cert)
            .arg("--tls-key-file")
            .arg(&self.key)
            .arg("--tls-ca-cert-file")
            .arg(&self.ca)
            .args(["--tls-auth-clients", "no"]);
    }
}

/// A private Redis Cluster on 127.0.0.1: three masters (no replicas, no
/// persistence) in their own temp dir, slots assigned by
/// `redis-cli --cluster create`, optionally speaking only TLS (clients
/// and the cluster bus). Every server is killed on drop.
pub struct RedisCluster {
    /// The masters' client ports (each also uses port + 10000 for the
    /// cluster bus).
    pub ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Option<Child>>,
    tls: Option<RedisTls>,
}

impl RedisCluster {
    /// Starts three masters, creates the cluster and waits (at most 20 s)
    /// until every node says `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(None)
    }

    /// [`RedisCluster::start`] with masters speaking only TLS, with this
    /// certificate and key (which must also serve as a client certificate,
    /// for the cluster bus) signed by `ca`.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> RedisCluster {
        RedisCluster::start_with(Some(RedisTls::new(cert, key, ca)))
    }

    fn start_with(tls: Option<RedisTls>) -> RedisCluster {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 3 {
            let p = cluster_port(&ports);
            ports.push(p);
        }
        let dir = std::env::temp_dir().join(format!(
            "rollcall-redis-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the Redis Cluster temp dir");
        let mut cluster = RedisCluster {
            children: ports.iter().map(|_| None).collect(),
            ports,
            dir,
            tls,
        };
        for i in 0..cluster.ports.len() {
            cluster.spawn(i);
        }
        let mut create = cluster.redis_cli(20);
        create.args(["--cluster", "create"]);
        for p in &cluster.ports {
            create.arg(format!("127.0.0.1:{p}"));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    }

    /// The `--bus` URL listing every master as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let scheme = if self.tls.is_some() {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        format!("{scheme}://{}", hosts.join(","))
    }

    /// Starts master `i` on its port with its own nodes file (so a
    /// restarted master rejoins with its slots), waiting until it answers.
    fn spawn(&mut self, i: usize) {
        assert!(
            self.children[i].is_none(),
            "redis-server {i} already running"
        );
        let port = self.ports[i];
        let log = std::fs::File::create(
            super::process::log_dir().join(format!("redis-cluster-{port}.log")),
        )
        .expect("create the redis-server log");
        let mut cmd = redis_server();
        cmd.args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(self.dir.join(format!("nodes-{port}.conf")))
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::from(log));
        match &self.tls {
            Some(tls) => {
                tls.serve_on(&mut cmd, port);
                cmd.args(["--tls-cluster", "yes"]);
            }
            None => {
                cmd.args(["--port", &port.to_string()]);
            }
        }
        self.children[i] = Some(spawn_redis(&mut cmd));
        let deadline = Instant::now() + Duration::from_secs(5);
        if self.tls.is_some() {
            wait_listening(port, deadline);
            return;
        }
        let probe = Redis { port, child: None };
        while !probe.pings() {
            assert!(
                Instant::now() < deadline,
                "redis-server (cluster) did not answer PING on port {port} within 5 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis-cli` (over TLS when the cluster speaks it), stopped after
    /// `secs` seconds.
    fn redis_cli(&self, secs: u32) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg(secs.to_string())
            .arg("redis-cli")
            .stdin(Stdio::null());
        if let Some(tls) = &self.tls {
            cmd.args(["--tls", "--cacert"]).arg(&tls.ca);
        }
        cmd
    }

    /// Runs `redis-cli -p port args…` (at most 3 s); None if it failed.
    fn cli(&self, port: u16, args: &[&str]) -> Option<String> {
        let out = self
            .redis_cli(3)
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until every running master says `cluster_state:ok` (and knows
    /// all the others), or panics after `within`.
    pub fn wait_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let mut states = Vec::new();
            for (i, p) in self.ports.iter().enumerate() {
                if self.children[i].is_none() {
                    continue;
                }
                let info = self.cli(*p, &["CLUSTER", "INFO"]).unwrap_or_default();
                let field = |name: &str| {
                    info.lines()
                        .find_map(|l| l.trim().strip_prefix(name).map(str::to_string))
                        .unwrap_or_default()
                };
                states.push((*p, field("cluster_state:"), field("cluster_known_nodes:")));
            }
            let want = self.ports.len().to_string();
            if states.iter().all(|(_, s, n)| s == "ok" && *n == want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster is not ok within {within:?}: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index of the master serving `key`'s slot.
    pub fn owner_of(&self, key: &str) -> usize {
        let port = self.ports[0];
        let slot: u16 = self
            .cli(port, &["CLUSTER", "KEYSLOT", key])
            .and_then(|s| s.trim().parse().ok())
            .expect("CLUSTER KEYSLOT");
        let nodes = self
            .cli(port, &["CLUSTER", "NODES"])
            .expect("CLUSTER NODES");
        for line in nodes.lines() {
            // <id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges…>
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") {
                continue;
            }
            let owns = fields[8..].iter().any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
            });
            let node_port = fields[1]
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok());
            if owns && let Some(i) = self.ports.iter().position(|p| Some(*p) == node_port) {
                return i;
            }
        }
        panic!("no master serves slot {slot} ({key}):\n{nodes}");
    }

    /// Moves `key`'s slot (which must hold no keys) to master `to`, as a
    /// resharding does: the old owner drops its sharded subscribers
    /// (a `sunsubscribe` push) and answers MOVED from then on.
    pub fn move_slot_of(&self, key: &str, to: usize) {
        let from = self.owner_of(key);
        assert_ne!(from, to, "{key} is already served by master {to}");
        let id = |i: usize| {
            self.cli(self.ports[i], &["CLUSTER", "MYID"])
                .map(|s| s.trim().to_string())
                .expect("CLUSTER MYID")
        };
        let (from_id, to_id) = (id(from), id(to));
        let slot = self
            .cli(self.ports[0], &["CLUSTER", "KEYSLOT", key])
            .map(|s| s.trim().to_string())
            .expect("CLUSTER KEYSLOT");
        let steps = [
            (to, vec!["IMPORTING", from_id.as_str()]),
            (from, vec!["MIGRATING", to_id.as_str()]),
            (to, vec!["NODE", to_id.as_str()]),
            (from, vec!["NODE", to_id.as_str()]),
        ];
        for (i, args) in steps {
            let mut cmd = vec!["CLUSTER", "SETSLOT", slot.as_str()];
            cmd.extend(args);
            let out = self.cli(self.ports[i], &cmd).unwrap_or_default();
            assert_eq!(out.trim(), "OK", "{cmd:?} on master {i}: {out}");
        }
        for i in (0..self.ports.len()).filter(|i| *i != from && *i != to) {
            let out = self
                .cli(
                    self.ports[i],
                    &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id],
                )
                .unwrap_or_default();
            assert_eq!(out.trim(), "OK", "SETSLOT NODE on master {i}: {out}");
        }
        self.wait_ok(Duration::from_secs(10));
        assert_eq!(self.owner_of(key), to, "{key}'s slot did not move");
    }

    /// SIGKILL master `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts master `i` again (same port, same nodes file) and waits until
    /// the cluster is ok on every node.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_ok(Duration::from_secs(20));
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port P whose cluster bus port P + 10000 is free too (both below
/// the ephemeral range, see [`free_port`]), distinct from the ports (and
/// bus ports) already `taken`.
fn cluster_port(taken: &[u16]) -> u16 {
    for _ in 0..200 {
        let p = free_port();
        let clash = taken
            .iter()
            .any(|&t| t == p || t + 10_000 == p || t == p + 10_000);
        if !clash && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
    panic!("found no free port P with P + 10000 free for a Redis Cluster node");
}
