//! One node cut off from Redis while the others go on: a privacy choice
//! stored meanwhile through another node reaches the cut-off node when its
//! link comes back (it re-reads the shared store), not only on restart.
//! And a node whose Redis connections hang (open, but nothing flows)
//! notices that its own heartbeats stopped coming back and reconnects.
//! The cut is a TCP proxy between that node and Redis that the test can
//! open, close or freeze.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::common::cluster::*;

/// A TCP proxy to `upstream` that drops every connection, and refuses new
/// ones, while it is cut; and that can freeze its latest connection (it
/// stays open, nothing flows) while the others go on. (`cluster_nats`
/// uses it too.)
pub struct Proxy {
    pub port: u16,
    cut: watch::Sender<bool>,
    /// The number (1, 2, …) of the connection that is frozen; 0: none.
    frozen: watch::Sender<u64>,
    opened: Arc<AtomicU64>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let (cut, cut_rx) = watch::channel(false);
        let (frozen, frozen_rx) = watch::channel(0u64);
        let opened = Arc::new(AtomicU64::new(0));
        let counter = opened.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *cut_rx.borrow() {
                    continue; // dropped: refused
                }
                let number = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let mut cut_rx = cut_rx.clone();
                let mut frozen_rx = frozen_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => return,
                        _ = frozen_rx.wait_for(|n| *n == number) => {}
                    }
                    // Frozen: both ends stay open, nothing is read or
                    // written, until the proxy is cut.
                    let _ = cut_rx.wait_for(|cut| *cut).await;
                    drop((client, server));
                });
            }
        });
        Proxy {
            port,
            cut,
            frozen,
            opened,
        }
    }

    /// Freezes the connection opened last.
    pub fn freeze_latest(&self) {
        let _ = self.frozen.send(self.opened.load(Ordering::SeqCst));
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn set_cut(&self, cut: bool) {
        let _ = self.cut.send(cut);
    }
}

/// A private Redis; node a on it directly, node c through a [`Proxy`];
/// both ready. (Tests using it run multi-threaded: the proxy must keep
/// running while the test thread waits for a node's banner.)
async fn two_nodes_c_behind_a_proxy() -> (Redis, Proxy, Node, Node) {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port).await;
    let opts = NodeOptions::default();
    let a = Node::start("a", &redis.url(), &opts);
    let c = Node::start("c", &proxy.url(), &opts);
    wait_for_cluster(&[&a, &c], 2).await;
    (redis, proxy, a, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privacy_change_made_while_a_node_was_cut_off_applies_when_it_reconnects() {
    let _serial = serial().await;
    let (_redis, proxy, a, c) = two_nodes_c_behind_a_proxy().await;
    crate::common::cluster::scenarios::privacy_change_reaches_a_node_that_was_cut_off(
        &a,
        &c,
        |cut| proxy.set_cut(cut),
        "presence.room",
        "Redis",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_redis_connections_hang_reconnects() {
    let _serial = serial().await;
    let (_redis, proxy, a, c) = two_nodes_c_behind_a_proxy().await;
    let mut watcher = Watcher::join(&c, "wat", "presence.room").await;

    // Node c's SUBSCRIBE connection (its last: after the privacy store's
    // and the publishing one) hangs: no error, no close, nothing arrives,
    // while its publishes still succeed.
    proxy.freeze_latest();
    let frozen = std::time::Instant::now();
    let mut pam = a.hotsock(user("pam", Value::Null)).await;
    pam.join("presence.room").await;
    // Without a reset c would wait forever; with it, c sees its own
    // heartbeats stop coming back (node timeout 2.5 s), reconnects and
    // resyncs.
    watcher
        .until(
            "pam's join on c after its bus reconnected",
            Duration::from_secs(10),
            |w| w.count("added", "pam") == 1,
        )
        .await;
    println!(
        "cluster: a node with hung Redis connections recovered {} ms after they froze",
        frozen.elapsed().as_millis()
    );
    wait_for_cluster(&[&a, &c], 2).await;
    let (_, ready) = c.readyz().await;
    assert!(
        ready["cluster"]["bus_recoveries"].as_u64().unwrap_or(0) >= 1,
        "{ready}"
    );
    assert!(c.log_text().contains("heartbeats stopped coming back"));
    drop(pam);
}
