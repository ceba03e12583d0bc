//! The cluster figures: three release nodes on a private `redis-server`
//! (the test suite's harness, tests/it/common), Hotsock and SocketCluster
//! clients on different nodes.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::cluster::scenarios::sigkill_removal;
use crate::common::cluster::{NodeOptions, Watcher, start_three, user, wait_for_cluster};
use crate::common::redis::Redis;

/// More than four default write delays (10 ms): the watcher is quiet
/// again when the next join comes.
const QUIET_BETWEEN: Duration = Duration::from_millis(60);

/// Cross-node join latency (a member joins on node a, its `memberAdded`
/// reaches a watcher on node b), then the removal of a SIGKILLed node's
/// members on the other two; prints both. The joins are QUIET_BETWEEN
/// apart, each one an event on its own: back to back, the watcher would
/// be a busy connection whose broadcasts wait out `--write-delay`.
pub async fn figures(joins: usize) {
    let redis = Redis::start();
    let (a, b, mut c) = start_three(&redis.url(), &NodeOptions::default());
    wait_for_cluster(&[&a, &b, &c], 3).await;
    let channel = "presence.bench-cluster";
    let mut watcher = Watcher::join(&b, "watcher", channel).await;
    let mut samples = Vec::with_capacity(joins);
    for i in 0..joins {
        let uid = format!("joiner{i}");
        let mut joiner = a.hotsock(user(&uid, Value::Null)).await;
        let start = Instant::now();
        joiner.join(channel).await;
        watcher
            .until("a join on node a", Duration::from_secs(3), |w| {
                w.count("added", &uid) == 1
            })
            .await;
        samples.push(start.elapsed());
        joiner.close().await;
        tokio::time::sleep(QUIET_BETWEEN).await;
    }
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "cluster: 3 nodes on Redis; cross-node join (Hotsock on node a -> memberAdded on node b) p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {joins} joins {} ms apart",
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
        at(1.0).as_secs_f64() * 1000.0,
        QUIET_BETWEEN.as_millis(),
    );
    sigkill_removal(&a, &b, &mut c, "presence.bench-kill", "cluster").await;
}
