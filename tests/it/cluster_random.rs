//! A seeded random run: Hotsock and SocketCluster clients join and leave
//! two channels on three nodes while nodes b and c are killed (SIGKILL) or
//! stopped (SIGTERM) and started again. At the end every node's member
//! lists equal the live subscriptions, and the watchers on node a (which
//! stays up) saw a consistent join/leave sequence leading to them.
//!
//! The seed is printed first; rerun a failure with
//! `ROLLCALL_TEST_SEED=<seed> cargo test --test it cluster_random:: -- --nocapture`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common;
use crate::common::cluster::*;

const CHANNELS: [&str; 2] = ["presence.r0", "presence.r1"];
/// How long random operations run.
const RUN: Duration = Duration::from_secs(16);

/// xorshift64*: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

enum Conn {
    Hs(common::Client),
    Sc(Sc),
}

struct Live {
    node: usize,
    uid: String,
    channel: &'static str,
    conn: Conn,
}

fn options() -> NodeOptions {
    NodeOptions::timings("200ms", "1000ms")
}

#[tokio::test]
async fn random_joins_leaves_and_node_restarts_converge() {
    let _serial = serial().await;
    let seed: u64 = std::env::var("ROLLCALL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    println!("cluster_random: seed {seed} (rerun with ROLLCALL_TEST_SEED={seed})");
    let mut rng = Rng(seed);
    let redis = Redis::start();
    let url = redis.url();
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| Node::start(n, &url, &options()))
        .collect();
    {
        let refs: Vec<&Node> = nodes.iter().collect();
        wait_for_cluster(&refs, 3).await;
    }
    let mut watchers = Vec::new();
    for ch in CHANNELS {
        watchers.push(Watcher::join(&nodes[0], &format!("watch-{ch}"), ch).await);
    }
    let mut live: Vec<Live> = Vec::new();
    let started = Instant::now();
    let mut last_restart = Instant::now();
    let (mut joins, mut leaves, mut restarts) = (0, 0, 0);
    while started.elapsed() < RUN {
        let roll = rng.below(100);
        if roll < 4 && last_restart.elapsed() > Duration::from_secs(3) {
            // Restart node b or c, hard or soft.
            let idx = 1 + rng.below(2) as usize;
            let hard = rng.below(2) == 0;
            let name = nodes[idx].name.clone();
            if hard {
                nodes[idx].kill();
            } else {
                nodes[idx].terminate();
            }
            live.retain(|l| l.node != idx);
            let pause = 200 + rng.below(1300);
            for w in watchers.iter_mut() {
                w.pump(pause / 2).await;
            }
            nodes[idx] = Node::start(&name, &url, &options());
            restarts += 1;
            last_restart = Instant::now();
            println!(
                "cluster_random: {} node {name} at {:?}",
                if hard { "killed" } else { "stopped" },
                started.elapsed()
            );
        } else if roll < 60 || live.is_empty() {
            let node = rng.below(3) as usize;
            let uid = format!("u{}", rng.below(10));
            let channel = CHANNELS[rng.below(2) as usize];
            if live
                .iter()
                .any(|l| l.node == node && l.uid == uid && l.channel == channel)
            {
                continue;
            }
            let conn = if rng.below(3) == 0 {
                let mut c = Sc::connect(&nodes[node], &uid).await;
                c.subscribe(channel).await;
                Conn::Sc(c)
            } else {
                let mut c = nodes[node].hotsock(user(&uid, Value::Null)).await;
                c.join(channel).await;
                Conn::Hs(c)
            };
            live.push(Live {
                node,
                uid,
                channel,
                conn,
            });
            joins += 1;
        } else {
            let i = rng.below(live.len() as u64) as usize;
            let gone = live.swap_remove(i);
            match gone.conn {
                Conn::Hs(c) => c.close().await,
                Conn::Sc(c) => c.close().await,
            }
            leaves += 1;
        }
        let pause = rng.below(60);
        for w in watchers.iter_mut() {
            w.pump(pause / 2 + 1).await;
        }
    }
    println!(
        "cluster_random: {joins} joins, {leaves} leaves, {restarts} node restarts in {:?}",
        started.elapsed()
    );
    // The truth: users with a live subscription, plus the watchers.
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for_cluster(&refs, 3).await;
    for (ch, w) in CHANNELS.iter().zip(watchers.iter_mut()) {
        let mut want: BTreeSet<String> = live
            .iter()
            .filter(|l| l.channel == *ch)
            .map(|l| l.uid.clone())
            .collect();
        want.insert(format!("watch-{ch}"));
        let want: Vec<String> = want.into_iter().collect();
        let want_refs: Vec<&str> = want.iter().map(String::as_str).collect();
        wait_for_members(&refs, ch, &want_refs, Duration::from_secs(10)).await;
        w.pump(300).await;
        assert_eq!(
            w.uids(),
            want,
            "seed {seed}: the watcher of {ch} on node a ended with other members"
        );
    }
}
