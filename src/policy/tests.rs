use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::auth::ChannelRules;

fn grants(claim: serde_json::Value) -> Access {
    Access::authenticated(Some(Arc::new(
        ChannelRules::from_json(&claim).expect("valid claim"),
    )))
}

/// User `u` with `access`, asking through a test protocol.
fn requester(access: &Access) -> Requester<'_> {
    Requester {
        conn: ConnId::next(),
        protocol: "test",
        user_id: Some("u"),
        access,
        extra: None,
        automatic: false,
        password: None,
    }
}

fn ask(policy: &ChannelPolicy, access: &Access, channel: &str) -> Result<(), Refusal> {
    policy.may_subscribe(&requester(access), channel)
}

fn publish(
    policy: &ChannelPolicy,
    access: &Access,
    channel: &str,
    subscribed: bool,
) -> Result<PublishGrant, Refusal> {
    policy.may_publish(&requester(access), channel, "chat", subscribed)
}

fn denied(r: Result<(), Refusal>) -> String {
    match r {
        Err(Refusal::Denied(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn policy_with(tables: &str, open: &[&str], authenticated: &[&str]) -> ChannelPolicy {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default, rename = "channel-rules")]
        rules: Vec<RuleConfig>,
    }
    let file: File = toml::from_str(tables).expect("valid TOML");
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let rules = PolicyConfig::rules_from(&file.rules, &own(open), &own(authenticated))
        .expect("valid rules");
    ChannelPolicy::new(PolicyConfig {
        rules,
        ..PolicyConfig::default()
    })
}

#[test]
fn by_default_only_a_grant_opens_a_channel() {
    let policy = ChannelPolicy::default();
    let why = denied(ask(&policy, &Access::anonymous(), "room.1"));
    assert!(why.contains("no grant for room.1"), "{why}");
    assert!(why.contains("--open-channels"), "{why}");
    denied(ask(&policy, &Access::authenticated(None), "room.1"));
    let granted = grants(json!({"room.*": {"subscribe": true}}));
    assert_eq!(ask(&policy, &granted, "room.1"), Ok(()));
    denied(ask(&policy, &granted, "user:alice"));
}

#[test]
fn an_explicit_false_in_the_token_beats_an_open_rule() {
    let policy = policy_with("", &["*"], &[]);
    assert_eq!(ask(&policy, &Access::anonymous(), "secret"), Ok(()));
    let restricted = grants(json!({"*": {"subscribe": true}, "secret": {"subscribe": false}}));
    let why = denied(ask(&policy, &restricted, "secret"));
    assert!(why.contains("subscribe: false"), "{why}");
}

#[test]
fn open_and_authenticated_rules_admit_whom_they_say() {
    let policy = policy_with("", &["lobby.*"], &["members.*"]);
    assert_eq!(ask(&policy, &Access::anonymous(), "lobby.a"), Ok(()));
    let why = denied(ask(&policy, &Access::anonymous(), "members.a"));
    assert!(why.contains("authenticated connections only"), "{why}");
    assert_eq!(
        ask(&policy, &Access::authenticated(None), "members.a"),
        Ok(())
    );
    denied(ask(&policy, &Access::authenticated(None), "other"));
}

#[test]
fn the_first_matching_rule_wins() {
    let policy = policy_with(
        r#"
        [[channel-rules]]
        pattern = "lobby.vip"
        subscribe = "grant"
        "#,
        &["lobby.*"],
        &[],
    );
    let why = denied(ask(&policy, &Access::authenticated(None), "lobby.vip"));
    assert!(why.contains("needs a grant"), "{why}");
    assert_eq!(ask(&policy, &Access::anonymous(), "lobby.hall"), Ok(()));
}

#[test]
fn publishing_follows_grants_and_rules() {
    let policy = policy_with(
        r#"
        [[channel-rules]]
        pattern = "news.*"
        subscribe = "anyone"
        publish = "server"
        "#,
        &["room.*"],
        &[],
    );
    let anyone = Access::anonymous();
    assert!(publish(&policy, &anyone, "room.1", true).is_ok());
    let why = match publish(&policy, &anyone, "room.1", false) {
        Err(Refusal::Denied(w)) => w,
        other => panic!("{other:?}"),
    };
    assert!(why.contains("subscribe to room.1"), "{why}");
    let writer = grants(json!({"news.*": {"messages": {"*": {"publish": true}}}}));
    let why = match publish(&policy, &writer, "news.today", true) {
        Err(Refusal::Denied(w)) => w,
        other => panic!("{other:?}"),
    };
    assert!(why.contains("only the server publishes"), "{why}");
    // No rule: the grant's messages directives decide, echo included.
    let chat = grants(json!({"chat": {"messages": {"chat": {"publish": true, "echo": true}}}}));
    assert_eq!(
        publish(&policy, &chat, "chat", true),
        Ok(PublishGrant {
            echo: true,
            forward: crate::policy::Forward::No
        })
    );
    assert!(publish(&policy, &chat, "chat", false).is_err());
    assert!(publish(&policy, &Access::authenticated(None), "chat", true).is_err());
}

#[test]
fn member_data_is_capped_on_presence_channels_only_by_default() {
    let policy = policy_with(
        r#"
        [[channel-rules]]
        pattern = "big.*"
        subscribe = "anyone"
        max-member-bytes = 5000
        max-members = 3
        show-members = false
        "#,
        &[],
        &[],
    );
    let presence = policy.terms("presence.lobby");
    assert_eq!(presence.max_member_bytes, 100_000);
    assert_eq!(presence.max_members, 10_000);
    let plain = policy.terms("topic");
    assert_eq!(plain.max_member_bytes, usize::MAX);
    assert!(plain.show_members);
    let big = policy.terms("big.1");
    assert_eq!((big.max_member_bytes, big.max_members), (5000, 3));
    assert!(!big.show_members);
}

#[test]
fn bad_rules_are_reported_with_the_key() {
    let tables = |t: &str| -> Result<Vec<OperatorRule>, String> {
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(rename = "channel-rules")]
            rules: Vec<RuleConfig>,
        }
        let file: File = toml::from_str(t).map_err(|e| e.to_string())?;
        PolicyConfig::rules_from(&file.rules, &[], &[])
    };
    let err = tables("[[channel-rules]]\npattern = \"a\"\nsubscribe = \"everyone\"").unwrap_err();
    assert!(err.contains("subscribe = \"everyone\""), "{err}");
    let err = tables("[[channel-rules]]\npattern = \"a\"\npublish = \"all\"").unwrap_err();
    assert!(
        err.contains("\"subscribers\", \"grant\" or \"server\""),
        "{err}"
    );
    let err = PolicyConfig::rules_from(&[], &["#bad".into()], &[]).unwrap_err();
    assert!(err.contains("--open-channels"), "{err}");
}

#[test]
fn the_banner_says_how_to_open_a_namespace() {
    let lines = ChannelPolicy::default().describe();
    assert!(
        lines.iter().any(|l| l.contains("--open-channels")),
        "{lines:?}"
    );
    let lines = policy_with("", &["lobby.*"], &[]).describe();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("lobby.*: anyone may subscribe")),
        "{lines:?}"
    );
}
