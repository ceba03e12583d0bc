//! Load generator: rollcall side by side with the Node servers its users
//! come from, one scenario after another in one run, each server fresh,
//! on 127.0.0.1. Prints a line per run and, at the end, a table of
//! rollcall / Node ratios. Server CPU time and RSS are read from
//! /proc/<pid>, because the generator shares the machine's cores; the
//! hypervisor's steal over each window is printed with it.
//!
//! ```sh
//! (cd conformance && npm ci)                  # the Node peers
//! cargo bench --bench load                    # every scenario (~10 min)
//! cargo bench --bench load -- steady burst    # some of them
//! cargo bench --bench load -- fast sc         # one protocol (hotsock, socketio, sc, sgc)
//! ```
//!
//! The Node peers (conformance/node, pinned in conformance/package-lock.json):
//! socket.io 4.8 with a room per topic, socketcluster-server 14.7 with
//! sc-stateless-presence 1.0.7, and a small Hotsock-style server on `ws`
//! (there is no Node Hotsock server to download; the stand-in is the
//! cheapest one a user could write).
//!
//! Scenarios, each for Hotsock, Socket.IO and SocketCluster, rollcall then
//! the Node peer, and for sgc (rollcall only: no Node server speaks it):
//! - `steady`: 1,000 subscribers of one channel, 100 msg/s for 5 s;
//!   `steady-no-write-delay`: the same, rollcall run with `--write-delay 0s`
//!   (every frame written at once, as Node does);
//! - `fast`: 100 subscribers, 1,000 msg/s for 2 s;
//! - `burst`: 1,000 subscribers, 500 messages back to back (each
//!   publish acknowledged before the next);
//! - `idle`: 5,000 connections held, each subscribed to one channel (sgc's
//!   only opened: sgc announces every join to every member);
//!   `idle-15k`: 15,000;
//! - `storm` (Hotsock only): 1,000 clients join one presence channel at
//!   once; time until every member list is complete;
//! - `sio-10k` (rollcall only): 10,000 Socket.IO watchers of one topic,
//!   10 msg/s for 5 s;
//! - `cluster` (rollcall only): three nodes on a private `redis-server`
//!   (installed by scripts/test): cross-node join latency over 100 joins,
//!   and how soon a SIGKILLed node's members are removed on the others.
//!
//! Publishing is over the HTTP API for Hotsock, Socket.IO and sgc, and a
//! client's `#publish` for SocketCluster, after 100 warm-up messages (the
//! Node peers' JIT, every server's buffers).
#![allow(clippy::print_stdout)]

#[path = "../../tests/it/common/mod.rs"]
mod common;

mod clients;
mod cluster;
mod deflate_client;
mod peers;

use std::time::{Duration, Instant};

use serde_json::json;

use clients::{Protocol, Publisher, Seen};
use peers::Server;

/// How a fan-out publishes: `messages` at `rate` per second, or back to
/// back (a burst) when None.
#[derive(Clone, Copy)]
struct Load {
    subscribers: usize,
    messages: u64,
    rate: Option<u64>,
}

impl Load {
    fn describe(self) -> String {
        let what = match self.rate {
            Some(rate) => format!("{rate} msg/s for {} s", self.messages / rate.max(1)),
            None => format!("{} messages back to back", self.messages),
        };
        format!("{} subscribers, {what}", self.subscribers)
    }
}

/// One server's figures in one scenario.
#[derive(Clone, Copy, Default)]
struct Figures {
    deliveries_per_s: f64,
    cpu_us_per_delivery: f64,
    /// The part of it spent in user space (the rest is the kernel's).
    user_us_per_delivery: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    rss_kib_per_connection: f64,
    /// Seconds until something converged (the join storm).
    seconds: f64,
}

/// A (scenario, protocol) with rollcall's and the Node peer's figures
/// (None: no Node server speaks the protocol).
struct Pair {
    scenario: String,
    protocol: Protocol,
    ours: Figures,
    node: Option<(&'static str, Figures)>,
}

/// Runs `run` against a fresh rollcall (with `rollcall_args`), then a
/// fresh Node peer.
async fn side_by_side<F, Fut>(
    scenario: &str,
    protocol: Protocol,
    rollcall_args: &[&str],
    run: F,
) -> Pair
where
    F: Fn(String, Server) -> Fut,
    Fut: std::future::Future<Output = Figures>,
{
    let name = |who: &str| format!("{scenario} {} {who}", protocol.name());
    // Each server is stopped (dropped inside `run`) before the next starts.
    let ours = run(name("rollcall"), Server::rollcall(rollcall_args)).await;
    let node = match protocol.node_peer() {
        Some((script, peer)) => Some((peer, run(name(peer), Server::node(script)).await)),
        None => None,
    };
    Pair {
        scenario: scenario.to_string(),
        protocol,
        ours,
        node,
    }
}

/// Connects `count` subscribers, the i-th of `channel(i)`, 200 handshakes
/// at a time.
async fn subscribe_all(
    protocol: Protocol,
    server: &Server,
    count: usize,
    channel: impl Fn(usize) -> String,
) -> Vec<clients::Ws> {
    let mut all = Vec::with_capacity(count);
    let ids: Vec<usize> = (0..count).collect();
    for batch in ids.chunks(200) {
        let joined = futures_util::future::join_all(batch.iter().map(|&i| {
            let channel = channel(i);
            async move {
                protocol
                    .subscriber(server.addr, &format!("u{i}"), &channel)
                    .await
            }
        }))
        .await;
        all.extend(joined);
    }
    all
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Fan-out: `load.subscribers` in one channel, publishes as `load` says.
async fn fanout(name: String, server: Server, protocol: Protocol, load: Load) -> Figures {
    let rss_empty = server.usage().rss;
    let total = load.messages;
    let subscribers = subscribe_all(protocol, &server, load.subscribers, |_| "bench".into()).await;
    server.wait_until_idle().await;
    let rss_held = server.usage().rss;
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|ws| tokio::spawn(clients::receive(protocol, ws, total)))
        .collect();
    let mut publisher = Publisher::new(protocol, server.addr, "bench").await;
    let interval = load
        .rate
        .map(|rate| Duration::from_secs_f64(1.0 / rate as f64));
    let mut next = Instant::now();
    for _ in 0..100 {
        publisher.publish("bench", json!({"warm": 1})).await;
        if let Some(interval) = interval {
            next += interval;
            tokio::time::sleep_until(next.into()).await;
        }
    }
    server.wait_until_idle().await;
    let usage0 = server.usage();
    let generator0 = peers::usage_of(std::process::id());
    let steal0 = peers::cpu_ticks();
    let start = Instant::now();
    let mut next = Instant::now();
    for i in 0..total {
        publisher
            .publish("bench", json!({"t": clients::micros_now(), "i": i}))
            .await;
        if let Some(interval) = interval {
            next += interval;
            tokio::time::sleep_until(next.into()).await;
        }
    }
    publisher.publish("bench", json!({"end": 1})).await;
    let mut seen = Seen::default();
    for reader in readers {
        let one = reader.await.expect("subscriber");
        seen.latencies_us.extend(one.latencies_us);
        seen.lost += one.lost;
        seen.duplicated += one.duplicated;
        seen.reordered += one.reordered;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let usage1 = server.usage();
    let generator1 = peers::usage_of(std::process::id());
    let steal = peers::steal_percent(steal0, peers::cpu_ticks());
    // Cores busy over the window: with two cores, server and generator
    // together near 2.0 means the machine, not the server, set the pace.
    let server_cores = (usage1.cpu() - usage0.cpu()) / elapsed;
    let generator_cores = (generator1.cpu() - generator0.cpu()) / elapsed;
    let lat = &mut seen.latencies_us;
    lat.sort_unstable();
    let n = lat.len() as u64;
    let f = Figures {
        deliveries_per_s: n as f64 / elapsed,
        cpu_us_per_delivery: (usage1.cpu() - usage0.cpu()) * 1e6 / n.max(1) as f64,
        user_us_per_delivery: (usage1.user - usage0.user) * 1e6 / n.max(1) as f64,
        p50_ms: percentile(lat, 0.50) as f64 / 1000.0,
        p99_ms: percentile(lat, 0.99) as f64 / 1000.0,
        max_ms: lat.last().copied().unwrap_or(0) as f64 / 1000.0,
        rss_kib_per_connection: rss_held.saturating_sub(rss_empty) as f64
            / 1024.0
            / load.subscribers as f64,
        seconds: elapsed,
    };
    println!(
        "{name}: {}: {n}/{} delivered, {} lost, {} duplicated, {} reordered, {:.0} deliveries/s, latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms, server CPU {:.2} us per delivery ({:.2} in user space), RSS {:.1} KiB per connection, cores busy: server {server_cores:.2}, generator {generator_cores:.2}, steal {steal:.1}%",
        load.describe(),
        total * load.subscribers as u64,
        seen.lost,
        seen.duplicated,
        seen.reordered,
        f.deliveries_per_s,
        f.p50_ms,
        f.p99_ms,
        f.max_ms,
        f.cpu_us_per_delivery,
        f.user_us_per_delivery,
        f.rss_kib_per_connection,
    );
    f
}

/// Idle: `connections` subscribed connections held; server RSS per
/// connection.
async fn idle(name: String, server: Server, protocol: Protocol, connections: usize) -> Figures {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_empty = server.usage().rss;
    // sgc announces every join to every member: joined, idle connections
    // would be a join storm (N² frames), so sgc's are opened, not joined.
    let held: Vec<_> = match protocol {
        Protocol::Sgc => {
            let mut all = Vec::with_capacity(connections);
            for _ in 0..connections {
                all.push(clients::sgc_open(server.addr).await.0);
            }
            all
        }
        _ => subscribe_all(protocol, &server, connections, |_| "idle".into()).await,
    }
    .into_iter()
    .map(|ws| tokio::spawn(clients::hold(protocol, ws)))
    .collect();
    server.wait_until_idle().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = server.usage().rss;
    let kib = rss.saturating_sub(rss_empty) as f64 / 1024.0 / connections as f64;
    println!(
        "{name}: {connections} idle connections, server RSS {:.1} MiB -> {:.1} MiB: {kib:.1} KiB per connection",
        rss_empty as f64 / 1048576.0,
        rss as f64 / 1048576.0,
    );
    for task in held {
        task.abort();
    }
    Figures {
        rss_kib_per_connection: kib,
        ..Figures::default()
    }
}

/// Join storm: `clients` Hotsock clients subscribe to one presence channel
/// at once; time until every one's member list holds all of them.
async fn storm(name: String, server: Server, clients: usize) -> Figures {
    let mut conns = Vec::with_capacity(clients);
    for i in 0..clients {
        conns.push(clients::hotsock_client(server.addr, &format!("m{i:04}")).await);
    }
    let usage0 = server.usage();
    let steal0 = peers::cpu_ticks();
    let start = Instant::now();
    let joiners: Vec<_> = conns
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                clients::hotsock_join_until(&mut ws, "presence.bench-storm", clients).await;
                (Instant::now(), ws)
            })
        })
        .collect();
    let mut last = start;
    let mut keep = Vec::new();
    for joiner in joiners {
        let (at, ws) = joiner.await.expect("joiner");
        last = last.max(at);
        keep.push(ws);
    }
    let seconds = (last - start).as_secs_f64();
    let server_cpu = server.usage().cpu() - usage0.cpu();
    println!(
        "{name}: {clients} clients joined one presence channel; every member list complete after {:.0} ms, server CPU {server_cpu:.2} s, steal {:.1}%",
        seconds * 1000.0,
        peers::steal_percent(steal0, peers::cpu_ticks()),
    );
    Figures {
        seconds,
        ..Figures::default()
    }
}

/// The storm with permessage-deflate: rollcall run with
/// `--websocket-compression`, every client offering the extension (as
/// browsers do). Prints the time, the server's CPU and the bytes the
/// clients received on the wire against the frames' own size.
async fn storm_deflate(server: Server, clients: usize) {
    let mut conns = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut ws = deflate_client::DeflateWs::connect(
            server.addr,
            &clients::hotsock_path(&format!("m{i:04}")),
        )
        .await;
        while !ws.next_text().await.contains("hotsock.connected") {}
        conns.push(ws);
    }
    let usage0 = server.usage();
    let start = Instant::now();
    let joiners: Vec<_> = conns
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let (wire0, bytes0) = (ws.wire_bytes, ws.message_bytes);
                ws.hotsock_join_until("presence.bench-storm", clients).await;
                (
                    Instant::now(),
                    ws.wire_bytes - wire0,
                    ws.message_bytes - bytes0,
                    ws,
                )
            })
        })
        .collect();
    let (mut last, mut wire, mut plain, mut keep) = (start, 0, 0, Vec::new());
    for joiner in joiners {
        let (at, w, p, ws) = joiner.await.expect("joiner");
        last = last.max(at);
        wire += w;
        plain += p;
        keep.push(ws);
    }
    let seconds = (last - start).as_secs_f64();
    let server_cpu = server.usage().cpu() - usage0.cpu();
    println!(
        "storm-deflate Hotsock rollcall --websocket-compression: {clients} clients joined; every member list complete after {:.0} ms, server CPU {server_cpu:.2} s; the clients received {:.1} MB on the wire for {:.1} MB of frames ({:.1} %)",
        seconds * 1000.0,
        wire as f64 / 1e6,
        plain as f64 / 1e6,
        wire as f64 * 100.0 / plain.max(1) as f64,
    );
}

/// The table of ratios, rollcall / Node peer (below 1 is better, except
/// for deliveries/s).
fn print_table(pairs: &[Pair]) {
    println!();
    println!(
        "| scenario | protocol | Node peer | deliveries/s | CPU per delivery | of which user space | p99 | RSS per connection | storm time |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let ratio = |a: f64, b: f64, unit: &str| {
        if a == 0.0 && b == 0.0 {
            "".to_string()
        } else {
            format!(
                "{a:.1}{unit} / {b:.1}{unit} = **{:.2}x**",
                a / b.max(f64::MIN_POSITIVE)
            )
        }
    };
    for p in pairs {
        let o = p.ours;
        let (peer, n) = match p.node {
            Some((peer, n)) => (peer, n),
            None => ("none", Figures::default()),
        };
        let cell = |a: f64, b: f64, unit: &str| match (a == 0.0, p.node.is_some()) {
            (true, _) => String::new(),
            (false, true) => ratio(a, b, unit),
            (false, false) => format!("{a:.1}{unit}"),
        };
        let storm = p.scenario == "storm";
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.scenario,
            p.protocol.name(),
            peer,
            cell(
                o.deliveries_per_s / 1000.0,
                n.deliveries_per_s / 1000.0,
                "k"
            ),
            cell(o.cpu_us_per_delivery, n.cpu_us_per_delivery, " µs"),
            cell(o.user_us_per_delivery, n.user_us_per_delivery, " µs"),
            cell(o.p99_ms, n.p99_ms, " ms"),
            cell(o.rss_kib_per_connection, n.rss_kib_per_connection, " KiB"),
            if storm {
                cell(o.seconds, n.seconds, " s")
            } else {
                String::new()
            },
        );
    }
}

/// rollcall's flags in `steady-no-write-delay`.
const NO_WRITE_DELAY_ARGS: &[&str] = &["--write-delay", "0s"];

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    // Arguments name scenarios, protocols (hotsock, socketio, sc), or both.
    let protocols: Vec<Protocol> = Protocol::ALL
        .into_iter()
        .filter(|p| filter.iter().any(|f| f == p.key()))
        .collect();
    let protocols = if protocols.is_empty() {
        Protocol::ALL.to_vec()
    } else {
        protocols
    };
    let scenarios: Vec<&String> = filter
        .iter()
        .filter(|f| !Protocol::ALL.iter().any(|p| p.key() == f.as_str()))
        .collect();
    let wants = |name: &str| scenarios.is_empty() || scenarios.iter().any(|f| *f == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut pairs = Vec::new();
        let fanouts = [
            (
                "steady",
                Load {
                    subscribers: 1000,
                    messages: 500,
                    rate: Some(100),
                },
            ),
            (
                "fast",
                Load {
                    subscribers: 100,
                    messages: 2000,
                    rate: Some(1000),
                },
            ),
            (
                "burst",
                Load {
                    subscribers: 1000,
                    messages: 500,
                    rate: None,
                },
            ),
        ];
        // `steady` again with rollcall's write delay off, to show what
        // the default 10 ms saves and costs.
        let undelayed = ("steady-no-write-delay", fanouts[0].1, NO_WRITE_DELAY_ARGS);
        let runs = fanouts
            .into_iter()
            .map(|(scenario, load)| (scenario, load, &[][..]))
            .chain([undelayed]);
        for (scenario, load, rollcall_args) in runs {
            if wants(scenario) {
                for &protocol in &protocols {
                    pairs.push(
                        side_by_side(scenario, protocol, rollcall_args, |name, server| {
                            fanout(name, server, protocol, load)
                        })
                        .await,
                    );
                }
            }
        }
        for (scenario, connections) in [("idle", 5000), ("idle-15k", 15_000)] {
            if wants(scenario) {
                for &protocol in &protocols {
                    pairs.push(
                        side_by_side(scenario, protocol, &[], |name, server| {
                            idle(name, server, protocol, connections)
                        })
                        .await,
                    );
                }
            }
        }
        if wants("storm") && protocols.contains(&Protocol::Hotsock) {
            pairs.push(
                // Every member event carries the full member list, so each
                // client receives about 15 MB in all: the outbound queue
                // must hold the backlog of a client that reads slower than
                // the storm arrives (the Node peer's queues are unbounded).
                side_by_side(
                    "storm",
                    Protocol::Hotsock,
                    &["--outbox-bytes", "67108864"],
                    |name, server| storm(name, server, 1000),
                )
                .await,
            );
            storm_deflate(
                Server::rollcall(&["--outbox-bytes", "67108864", "--websocket-compression"]),
                1000,
            )
            .await;
        }
        if wants("sio-10k") {
            let load = Load {
                subscribers: 10_000,
                messages: 50,
                rate: Some(10),
            };
            fanout(
                "sio-10k Socket.IO rollcall".into(),
                Server::rollcall(&[]),
                Protocol::SocketIo,
                load,
            )
            .await;
        }
        if wants("cluster") {
            cluster::figures(100).await;
        }
        if !pairs.is_empty() {
            print_table(&pairs);
        }
    });
}
