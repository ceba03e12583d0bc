//! A password-protected Redis: nodes with the password in the `--bus` URL
//! form a cluster; a node with a wrong password says so in `/readyz`
//! without ever showing the password it was given.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common;
use crate::common::cluster::*;

const PASSWORD: &str = "s3cr3t-pw";

#[tokio::test]
async fn the_password_in_the_bus_url_is_used_and_never_shown() {
    let _serial = serial().await;
    let redis = Redis::start();
    let set = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "CONFIG",
            "SET",
            "requirepass",
            PASSWORD,
        ])
        .output()
        .expect("run redis-cli");
    assert!(set.status.success(), "{set:?}");
    let bus = |password: &str| format!("redis://:{password}@127.0.0.1:{}", redis.port);
    let opts = NodeOptions::default();

    let a = Node::start("a", &bus(PASSWORD), &opts);
    let b = Node::start("b", &bus(PASSWORD), &opts);
    wait_for_cluster(&[&a, &b], 2).await;
    let mut jim = a.hotsock(user("jim", Value::Null)).await;
    jim.join("presence.room").await;
    wait_for_members(&[&a, &b], "presence.room", &["jim"], Duration::from_secs(3)).await;

    let wrong = "not-the-pw";
    let c = Node::start("c", &bus(wrong), &opts);
    let refused = common::eventually(Duration::from_secs(5), || async {
        let (status, body) = c.readyz().await;
        status == 503 && body["cluster"]["last_error"].is_string()
    })
    .await;
    let (status, body) = c.readyz().await;
    assert!(
        refused,
        "node c should be unready with a reason: {status} {body}"
    );
    let reason = body["cluster"]["last_error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("WRONGPASS") || reason.to_lowercase().contains("password"),
        "the reason names the password problem: {reason}"
    );
    assert_eq!(
        body["cluster"]["bus_target"],
        format!("redis://:***@127.0.0.1:{}", redis.port)
    );
    for node in [&a, &b, &c] {
        let (_, ready) = node.readyz().await;
        let log = node.log_text();
        for secret in [PASSWORD, wrong] {
            assert!(
                !ready.to_string().contains(secret),
                "{}: /readyz shows a password",
                node.name
            );
            assert!(
                !log.contains(secret),
                "{}: the log shows a password",
                node.name
            );
        }
    }
    drop(jim);
}
