//! One node cut off from Redis while the others go on: a privacy choice
//! stored meanwhile through another node reaches the cut-off node when its
//! link comes back (it re-reads the shared store), not only on restart.
//! The cut is a TCP proxy between that node and Redis that the test can
//! open and close.
#![cfg(all(feature = "redis", feature = "hotsock"))]

mod common;
#[path = "cluster_support/mod.rs"]
mod support;

use std::time::Duration;

use common::WAIT;
use serde_json::Value;
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy to `upstream` that drops every connection, and refuses new
/// ones, while it is cut.
struct Proxy {
    port: u16,
    cut: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let (cut, cut_rx) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *cut_rx.borrow() {
                    continue; // dropped: refused
                }
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy { port, cut }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn set_cut(&self, cut: bool) {
        let _ = self.cut.send(cut);
    }
}

// Multi-threaded: the proxy must keep running while the test thread waits
// for a node's banner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privacy_change_made_while_a_node_was_cut_off_applies_when_it_reconnects() {
    let _serial = serial().await;
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port).await;
    let opts = NodeOptions::default();
    let a = Node::start("a", &redis.url(), &opts);
    let c = Node::start("c", &proxy.url(), &opts);
    wait_for_cluster(&[&a, &c], 2).await;

    // eve is a member on c; a watcher on c sees her.
    let mut eve = c.hotsock(user("eve", Value::Null)).await;
    eve.join("presence.room").await;
    let mut watcher = Watcher::join(&c, "wat", "presence.room").await;
    wait_for_members(&[&a, &c], "presence.room", &["eve", "wat"], WAIT).await;

    // c loses Redis; a hides eve meanwhile (stored in Redis; c misses the
    // bus op).
    proxy.set_cut(true);
    let cut_off = common::eventually(Duration::from_secs(5), || async {
        c.readyz().await.0 == 503
    })
    .await;
    assert!(cut_off, "node c never noticed it lost Redis");
    a.set_visible("eve", false).await;
    watcher.pump(300).await;
    assert_eq!(watcher.count("removed", "eve"), 0, "c cannot know yet");

    // The link comes back: c re-reads the choices and hides eve.
    proxy.set_cut(false);
    watcher
        .until(
            "eve hidden on c after it reconnects",
            Duration::from_secs(8),
            |w| w.count("removed", "eve") == 1,
        )
        .await;
    let (status, body) = c.http("GET", "/api/users/eve/privacy", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["visible"], false, "{body}");
    wait_for_members(&[&a, &c], "presence.room", &["wat"], WAIT).await;
    drop(eve);
}
