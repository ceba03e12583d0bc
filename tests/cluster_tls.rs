//! The cluster bus over TLS: redis-server speaking only TLS, with a
//! certificate from a private CA (made with `openssl`), alone
//! (`rediss://`) and as a three-master Redis Cluster
//! (`rediss+cluster://`), and two `rollcall serve` nodes on it with
//! `--tls-ca-file ca.pem`. A join on one node is seen by a Hotsock client
//! on the other, and a privacy choice goes through the same Redis. A node
//! without `--tls-ca-file` refuses the certificate and says what to do.
#![cfg(all(feature = "hotsock", feature = "redis"))]

mod cluster_support;
mod common;
mod tls_support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster_support::{Node, NodeOptions, Redis, Watcher, wait_for_cluster};
use serde_json::json;
use tls_support::TestPki;

/// Two nodes on `bus` trusting `pki`'s CA: they form a cluster, a join on
/// one is seen on the other, a privacy choice stored through one is read
/// through the other.
async fn two_nodes_work_over(bus: &str, pki: &TestPki, prefix: &str) {
    let opts = NodeOptions {
        heartbeat: "100ms",
        node_timeout: "1000ms",
        extra: vec!["--tls-ca-file".into(), pki.ca.display().to_string()],
    };
    let a = Node::start(&format!("{prefix}-a"), bus, &opts);
    let b = Node::start(&format!("{prefix}-b"), bus, &opts);
    wait_for_cluster(&[&a, &b], 2).await;
    let (_, ready) = a.readyz().await;
    assert_eq!(ready["cluster"]["bus_state"], "connected", "{ready}");

    // bob on b watches the channel; alice joins it on a.
    let mut bob = Watcher::join(&b, "bob", "presence.tls").await;
    let mut alice = a.hotsock(cluster_support::user("alice", json!(null))).await;
    alice.join("presence.tls").await;
    bob.until(
        "alice's join on the other node",
        Duration::from_secs(5),
        |w| w.count("added", "alice") == 1,
    )
    .await;
    assert_eq!(bob.uids(), ["alice", "bob"]);

    // The privacy store uses the same Redis, with the same roots.
    let (status, body) = a
        .http(
            "PUT",
            "/api/users/zed/privacy",
            Some(json!({"visible": false})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = b.http("GET", "/api/users/zed/privacy", None).await;
    assert_eq!((status, &body["choice"]), (200, &json!(false)), "{body}");

    alice.close().await;
    bob.client.close().await;
}

#[tokio::test]
async fn nodes_replicate_over_rediss_with_the_ca_file() {
    let _serial = cluster_support::serial().await;
    let pki = TestPki::generate("redis");
    let redis = Redis::start_tls(&pki.cert, &pki.key, &pki.ca);
    let bus = format!("rediss://127.0.0.1:{}", redis.port);
    two_nodes_work_over(&bus, &pki, "tls").await;
}

#[tokio::test]
async fn without_the_ca_file_the_redis_certificate_is_refused() {
    let _serial = cluster_support::serial().await;
    let pki = TestPki::generate("redis-untrusted");
    let redis = Redis::start_tls(&pki.cert, &pki.key, &pki.ca);
    let bus = format!("rediss://127.0.0.1:{}", redis.port);
    let node = Node::start("tls-untrusted", &bus, &NodeOptions::default());
    let explained = common::eventually(Duration::from_secs(10), || async {
        let (_, ready) = node.readyz().await;
        let error = ready["cluster"]["last_error"].as_str().unwrap_or_default();
        ready["cluster"]["bus_state"] != "connected"
            && error.contains("not trusted")
            && error.contains("--tls-ca-file")
    })
    .await;
    let (status, ready) = node.readyz().await;
    assert!(
        explained,
        "readyz does not explain the refused certificate: {status} {ready}\nlog:\n{}",
        node.log_text()
    );
    assert_ne!(status, 200, "a node cut off from the bus is not ready");
}

/// Three Redis Cluster masters speaking only TLS (clients and the
/// cluster bus), killed on drop.
struct TlsRedisCluster {
    ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Child>,
}

impl TlsRedisCluster {
    fn start(pki: &TestPki) -> TlsRedisCluster {
        let dir = pki.dir.join("cluster");
        std::fs::create_dir_all(&dir).expect("create the cluster dir");
        let mut cluster = TlsRedisCluster {
            ports: Vec::new(),
            dir,
            children: Vec::new(),
        };
        while cluster.ports.len() < 3 {
            // The cluster bus listens on port + 10000.
            let p = cluster_support::free_port();
            let clash = cluster
                .ports
                .iter()
                .any(|&t| t == p || t + 10_000 == p || p + 10_000 == t);
            if p < 55_000
                && !clash
                && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
            {
                cluster.ports.push(p);
            }
        }
        for &port in &cluster.ports {
            let child = Command::new("redis-server")
                .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(&pki.cert)
                .arg("--tls-key-file")
                .arg(&pki.key)
                .arg("--tls-ca-cert-file")
                .arg(&pki.ca)
                .args(["--tls-auth-clients", "no", "--tls-cluster", "yes"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(cluster.dir.join(format!("nodes-{port}.conf")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run redis-server ({e}); install it (apt-get install redis-server)"
                    )
                });
            cluster.children.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for &port in &cluster.ports {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "redis-server (TLS) did not listen on {port}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let mut create = cluster.cli(pki, &["--cluster", "create"]);
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
        let deadline = Instant::now() + Duration::from_secs(20);
        for &port in &cluster.ports {
            loop {
                let info = cluster
                    .cli(pki, &["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .expect("run redis-cli cluster info");
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the TLS Redis Cluster was not ok within 20 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// `redis-cli` over TLS, bounded to 20 s.
    fn cli(&self, pki: &TestPki, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["20", "redis-cli", "--tls", "--cacert"])
            .arg(&pki.ca)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("rediss+cluster://{}", hosts.join(","))
    }
}

impl Drop for TlsRedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn nodes_replicate_over_a_rediss_cluster_with_the_ca_file() {
    let _serial = cluster_support::serial().await;
    let pki = TestPki::generate("redis-cluster");
    let cluster = TlsRedisCluster::start(&pki);
    two_nodes_work_over(&cluster.url(), &pki, "tls-cluster").await;
}
