//! [`ChannelRules`]: the permission rules of the `channels` claim
//! (spec §2.4).
//!
//! Combination rule used throughout: a permission is granted when at least
//! one matching key sets it to `true` and no matching key sets it to `false`
//! (an explicit `false` wins whatever the key order).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use serde_json::{Map, Value};

use super::claim_value::{describe, opt_bool, opt_object, opt_string, present, quote};
use super::jwt::numeric_date;
use super::{AuthError, Pattern};

/// Largest `messages.<event>.store` retention, in seconds (about 100 years).
pub const MAX_STORE_SECS: i64 = 3_155_695_200;

/// Directives of one `messages.<event>` entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageDirectives {
    /// May send this event while subscribed.
    pub publish: Option<bool>,
    /// May send this event without being subscribed (`publish: false` overrides).
    pub broadcast: Option<bool>,
    /// The sender also receives its own message.
    pub echo: Option<bool>,
    /// Retention in seconds: `0` not stored, `-1` forever.
    pub store: Option<i64>,
    /// The message also goes to the backend (`emitPubSubEvent`).
    pub emit_pub_sub_event: Option<bool>,
}

/// Directives of one `channels.<key>` entry. Unknown directives are ignored.
#[derive(Clone, Debug, Default)]
pub struct ChannelDirectives {
    /// May subscribe.
    pub subscribe: Option<bool>,
    /// Friendly name for the channel (exact keys only).
    pub alias: Option<String>,
    /// Subscribe automatically on connect (exact keys of connect tokens only).
    pub auto_subscribe: Option<bool>,
    /// May read channel info over HTTP without subscribing.
    pub get_info: Option<bool>,
    /// Earliest history time (seconds since the epoch) readable over HTTP.
    pub history_start: Option<u64>,
    /// Do not count this subscription in the subscriber count.
    pub omit_from_sub_count: Option<bool>,
    /// May change this subscription's umd (umd-scoped tokens).
    pub umd_update: Option<bool>,
    /// Event-name patterns and their directives, in claim order.
    pub messages: Vec<(Pattern, MessageDirectives)>,
    /// Storage-key patterns and their raw directive objects, in claim order.
    pub storage: Vec<(Pattern, Map<String, Value>)>,
}

/// What a connection may do with one event on one channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessagePermission {
    /// May send while subscribed.
    pub publish: bool,
    /// May send without subscribing. Always false if any matching entry has
    /// `publish: false`.
    pub broadcast: bool,
    /// The sender also receives its own message.
    pub echo: bool,
    /// The message also goes to the backend (`emitPubSubEvent`).
    pub emit: bool,
}

impl MessagePermission {
    /// True if the message may be sent: while subscribed `publish` or
    /// `broadcast` is enough, otherwise `broadcast` is needed.
    pub fn may_send(&self, subscribed: bool) -> bool {
        self.broadcast || (subscribed && self.publish)
    }
}

/// Distinct grants whose parsed rules are shared at most (their keys are
/// the claims as JSON; rules no connection holds any more are swept out
/// when the table is full).
const MAX_SHARED_RULES: usize = 4096;

/// Parsed rules by their claim entries as JSON, held weakly.
static SHARED_RULES: LazyLock<Mutex<HashMap<String, Weak<ChannelRules>>>> =
    LazyLock::new(Mutex::default);

fn lock_shared() -> std::sync::MutexGuard<'static, HashMap<String, Weak<ChannelRules>>> {
    SHARED_RULES.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `channels` claim: an ordered list of (pattern, directives).
#[derive(Clone, Debug, Default)]
pub struct ChannelRules {
    rules: Vec<(Pattern, ChannelDirectives)>,
}

impl ChannelRules {
    /// Parses a `channels` claim value (an object, or `null` for none).
    /// Key order follows the `serde_json::Map`, i.e. sorted by key.
    pub fn from_json(channels: &Value) -> Result<Self, AuthError> {
        match channels {
            Value::Null => Ok(Self::default()),
            Value::Object(obj) => Self::from_entries(obj.iter().map(|(k, v)| (k.as_str(), v))),
            other => Err(AuthError::invalid_claims(format!(
                "channels must be an object mapping channel names to directives, got {}",
                describe(other)
            ))),
        }
    }

    pub(super) fn from_entries<'a>(
        entries: impl Iterator<Item = (&'a str, &'a Value)>,
    ) -> Result<Self, AuthError> {
        let mut rules = Vec::new();
        let mut aliases: HashMap<String, String> = HashMap::new();
        for (key, value) in entries {
            let (pattern, directives) = parse_channel(key, value)?;
            if let Some(alias) = &directives.alias
                && let Some(other) = aliases.insert(alias.clone(), key.to_owned())
            {
                return Err(AuthError::invalid_claims(format!(
                    "channels[{}].alias {alias:?} is also the alias of channels[{}]; \
                     give each channel its own alias",
                    quote(key),
                    quote(&other)
                )));
            }
            rules.push((pattern, directives));
        }
        // Kept for the connection's lifetime: a one-rule token would
        // otherwise hold room for four (about 550 bytes per connection).
        rules.shrink_to_fit();
        Ok(ChannelRules { rules })
    }

    /// Parses the entries of a `channels` claim, or finds the rules already
    /// parsed from the same entries (the same keys and directives in the
    /// same order) for a connection that still holds them: tokens minted
    /// for one role share one copy (about 0.3 KB per connection otherwise).
    pub(super) fn shared<'a>(
        entries: impl Iterator<Item = (&'a str, &'a Value)>,
    ) -> Result<Arc<Self>, AuthError> {
        let entries: Vec<(&str, &Value)> = entries.collect();
        // Plain JSON values always serialize.
        let key = serde_json::to_string(&entries).unwrap_or_default();
        if let Some(rules) = lock_shared().get(&key).and_then(Weak::upgrade) {
            return Ok(rules);
        }
        let rules = Arc::new(Self::from_entries(entries.into_iter())?);
        let mut table = lock_shared();
        if let Some(other) = table.get(&key).and_then(Weak::upgrade) {
            // Parsed meanwhile by another connection.
            return Ok(other);
        }
        if table.len() >= MAX_SHARED_RULES {
            table.retain(|_, rules| rules.strong_count() > 0);
        }
        // Past the bound (that many distinct live grants), not shared.
        if table.len() < MAX_SHARED_RULES {
            table.insert(key, Arc::downgrade(&rules));
        }
        Ok(rules)
    }

    /// [`ChannelRules::shared`] for a `channels` claim value (an object, or
    /// `null` for none).
    pub fn shared_json(channels: &Value) -> Result<Arc<Self>, AuthError> {
        match channels {
            Value::Object(obj) => Self::shared(obj.iter().map(|(k, v)| (k.as_str(), v))),
            other => Self::from_json(other).map(Arc::new),
        }
    }

    /// The rules in claim order.
    pub fn iter(&self) -> impl Iterator<Item = (&Pattern, &ChannelDirectives)> {
        self.rules.iter().map(|(p, d)| (p, d))
    }

    /// Number of keys in the claim.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True if the token has no channel permissions at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn matching<'a>(&'a self, channel: &'a str) -> impl Iterator<Item = &'a ChannelDirectives> {
        self.rules
            .iter()
            .filter(move |(p, _)| p.matches(channel))
            .map(|(_, d)| d)
    }

    /// Some matching key has `subscribe: true` and none has `subscribe: false`.
    /// (`autoSubscribe` alone does not grant a manual subscribe.)
    pub fn can_subscribe(&self, channel: &str) -> bool {
        grant(self.matching(channel).map(|d| d.subscribe))
    }

    /// Some matching key says `subscribe: false` (it wins over any rule
    /// that would open the channel).
    pub fn denies_subscribe(&self, channel: &str) -> bool {
        self.matching(channel).any(|d| d.subscribe == Some(false))
    }

    /// Exact (non-wildcard, non-regex) keys with `autoSubscribe: true`, in
    /// rule order. `autoSubscribe` on a wildcard or regex key is ignored.
    pub fn auto_subscribe_channels(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter(|(p, d)| p.is_exact() && d.auto_subscribe == Some(true))
            .map(|(p, _)| p.as_str().to_owned())
            .collect()
    }

    /// Combines the `messages` entries of every matching channel key whose
    /// event key matches `event`; an explicit `false` wins, and an explicit
    /// `publish: false` also denies `broadcast`.
    pub fn message_permission(&self, channel: &str, event: &str) -> MessagePermission {
        let (mut publish, mut broadcast, mut echo, mut emit) = (
            Grant::default(),
            Grant::default(),
            Grant::default(),
            Grant::default(),
        );
        for d in self.matching(channel) {
            for (_, m) in d.messages.iter().filter(|(p, _)| p.matches(event)) {
                publish.add(m.publish);
                broadcast.add(m.broadcast);
                echo.add(m.echo);
                emit.add(m.emit_pub_sub_event);
            }
        }
        MessagePermission {
            publish: publish.granted(),
            broadcast: broadcast.granted() && !publish.denied,
            echo: echo.granted(),
            emit: emit.granted(),
        }
    }

    /// May change this channel's subscription umd (`umdUpdate`).
    pub fn can_update_umd(&self, channel: &str) -> bool {
        grant(self.matching(channel).map(|d| d.umd_update))
    }

    /// May read channel info without subscribing (`getInfo`).
    pub fn can_get_info(&self, channel: &str) -> bool {
        grant(self.matching(channel).map(|d| d.get_info))
    }

    /// The subscription is not counted in the subscriber count (`omitFromSubCount`).
    pub fn omit_from_sub_count(&self, channel: &str) -> bool {
        grant(self.matching(channel).map(|d| d.omit_from_sub_count))
    }

    /// Earliest `historyStart` among matching keys.
    pub fn history_start(&self, channel: &str) -> Option<u64> {
        self.matching(channel).filter_map(|d| d.history_start).min()
    }

    /// Resolves an alias to the real channel name. A name that is itself an
    /// exact key is a real channel and is never treated as an alias.
    pub fn alias_for(&self, name: &str) -> Option<String> {
        if self
            .rules
            .iter()
            .any(|(p, _)| p.is_exact() && p.as_str() == name)
        {
            return None;
        }
        self.rules
            .iter()
            .find(|(_, d)| d.alias.as_deref() == Some(name))
            .map(|(p, _)| p.as_str().to_owned())
    }

    /// The alias of an exact channel key, if it has one (for `meta.channelAlias`).
    pub fn alias_of(&self, channel: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|(p, _)| p.is_exact() && p.as_str() == channel)
            .and_then(|(_, d)| d.alias.as_deref())
    }
}

/// Accumulates explicit true/false values; granted = some true and no false.
#[derive(Default)]
struct Grant {
    allowed: bool,
    denied: bool,
}

impl Grant {
    fn add(&mut self, v: Option<bool>) {
        match v {
            Some(true) => self.allowed = true,
            Some(false) => self.denied = true,
            None => {}
        }
    }

    fn granted(&self) -> bool {
        self.allowed && !self.denied
    }
}

fn grant(values: impl Iterator<Item = Option<bool>>) -> bool {
    let mut g = Grant::default();
    values.for_each(|v| g.add(v));
    g.granted()
}

fn parse_channel(key: &str, value: &Value) -> Result<(Pattern, ChannelDirectives), AuthError> {
    let path = format!("channels[{}]", quote(key));
    let pattern =
        Pattern::parse(key).map_err(|e| AuthError::invalid_claims(format!("{path} {e}")))?;
    let obj = value.as_object().ok_or_else(|| {
        AuthError::invalid_claims(format!(
            "{path} must be an object of directives such as {{\"subscribe\": true}}, got {}",
            describe(value)
        ))
    })?;
    let alias = opt_string(obj, "alias", &path)?;
    if let Some(alias) = &alias {
        if !pattern.is_exact() {
            return Err(AuthError::invalid_claims(format!(
                "{path}.alias is not allowed on a wildcard or #regex: key; put the alias on \
                 an exact channel name"
            )));
        }
        if alias.is_empty() {
            return Err(AuthError::invalid_claims(format!(
                "{path}.alias must not be empty"
            )));
        }
    }
    let history_start = match present(obj, "historyStart") {
        None => None,
        Some(v) => Some(numeric_date(v).ok_or_else(|| {
            AuthError::invalid_claims(format!(
                "{path}.historyStart must be a NumericDate (seconds since the epoch, 0 for \
                 all history), got {}",
                describe(v)
            ))
        })?),
    };
    let mut messages = Vec::new();
    for (event, v) in opt_object(obj, "messages", &path)? {
        let mpath = format!("{path}.messages[{}]", quote(event));
        let pattern =
            Pattern::parse(event).map_err(|e| AuthError::invalid_claims(format!("{mpath} {e}")))?;
        let m = v.as_object().ok_or_else(|| {
            AuthError::invalid_claims(format!(
                "{mpath} must be an object of directives such as {{\"publish\": true}}, got {}",
                describe(v)
            ))
        })?;
        let store = match present(m, "store") {
            None => None,
            Some(s) => match s.as_i64() {
                Some(n) if (-1..=MAX_STORE_SECS).contains(&n) => Some(n),
                _ => {
                    return Err(AuthError::invalid_claims(format!(
                        "{mpath}.store must be -1 (forever), 0 (not stored) or seconds up to \
                         {MAX_STORE_SECS}, got {}",
                        describe(s)
                    )));
                }
            },
        };
        messages.push((
            pattern,
            MessageDirectives {
                publish: opt_bool(m, "publish", &mpath)?,
                broadcast: opt_bool(m, "broadcast", &mpath)?,
                echo: opt_bool(m, "echo", &mpath)?,
                store,
                emit_pub_sub_event: opt_bool(m, "emitPubSubEvent", &mpath)?,
            },
        ));
    }
    let mut storage = Vec::new();
    for (skey, v) in opt_object(obj, "storage", &path)? {
        let spath = format!("{path}.storage[{}]", quote(skey));
        let pattern =
            Pattern::parse(skey).map_err(|e| AuthError::invalid_claims(format!("{spath} {e}")))?;
        let s = v.as_object().ok_or_else(|| {
            AuthError::invalid_claims(format!(
                "{spath} must be an object of directives such as {{\"observe\": true}}, got {}",
                describe(v)
            ))
        })?;
        storage.push((pattern, s.clone()));
    }
    Ok((
        pattern,
        ChannelDirectives {
            subscribe: opt_bool(obj, "subscribe", &path)?,
            alias,
            auto_subscribe: opt_bool(obj, "autoSubscribe", &path)?,
            get_info: opt_bool(obj, "getInfo", &path)?,
            history_start,
            omit_from_sub_count: opt_bool(obj, "omitFromSubCount", &path)?,
            umd_update: opt_bool(obj, "umdUpdate", &path)?,
            messages,
            storage,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::HotsockClaims;
    use serde_json::json;

    /// Rules from a JSON object literal, keeping its key order.
    fn rules(channels: &str) -> ChannelRules {
        let json = format!(r##"{{"exp": 1, "scope": "connect", "channels": {channels}}}"##);
        match HotsockClaims::from_json_str(&json) {
            Ok(c) => (*c.channels).clone(),
            Err(e) => panic!("{e}"),
        }
    }

    fn rules_err(channels: &str) -> String {
        let json = format!(r##"{{"exp": 1, "scope": "connect", "channels": {channels}}}"##);
        match HotsockClaims::from_json_str(&json) {
            Ok(c) => panic!("unexpectedly accepted: {:?}", c.channels),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn identical_grants_share_one_parse_while_held() {
        let role = json!({"presence.lobby": {"subscribe": true}, "room.*": {"subscribe": true}});
        let a = ChannelRules::shared_json(&role).unwrap();
        let b = ChannelRules::shared_json(&role).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the same grant is parsed once");
        let other = json!({"presence.lobby": {"subscribe": false}});
        let c = ChannelRules::shared_json(&other).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(!c.can_subscribe("presence.lobby"));
        // Order is part of the grant: the same keys in another order are
        // other rules (a Hotsock token's `channels` keep the token's order).
        let forward = [("x.1", &json!({"alias": "x"})), ("y", &json!({}))];
        let backward = [("y", &json!({})), ("x.1", &json!({"alias": "x"}))];
        let f = ChannelRules::shared(forward.iter().map(|(k, v)| (*k, *v))).unwrap();
        let r = ChannelRules::shared(backward.iter().map(|(k, v)| (*k, *v))).unwrap();
        assert!(!Arc::ptr_eq(&f, &r));
        // Rules nobody holds are parsed anew.
        let weak = Arc::downgrade(&c);
        drop(c);
        assert!(
            weak.upgrade().is_none(),
            "the table does not keep rules alive"
        );
        // A refused grant is refused every time.
        let bad = json!({"a": {"subscribe": "yes"}});
        assert!(ChannelRules::shared_json(&bad).is_err());
        assert!(ChannelRules::shared_json(&bad).is_err());
    }

    #[test]
    fn directive_type_errors_name_the_path() {
        let e = rules_err(r##"{"presence.*": {"subscribe": "yes"}}"##);
        assert!(
            e.contains(r##"channels["presence.*"].subscribe must be a boolean"##),
            "{e}"
        );
        assert!(e.ends_with("fix the claim and mint a new token"), "{e}");
        let e = rules_err(r##"{"chat": true}"##);
        assert!(
            e.contains(r##"channels["chat"] must be an object of directives"##),
            "{e}"
        );
        let e = rules_err(r##"{"chat": {"messages": {"hi": {"echo": 1}}}}"##);
        assert!(
            e.contains(r##"channels["chat"].messages["hi"].echo must be a boolean"##),
            "{e}"
        );
        let e = rules_err(r##"{"chat": {"messages": []}}"##);
        assert!(
            e.contains(r##"channels["chat"].messages must be an object"##),
            "{e}"
        );
        let e = rules_err(r##"{"chat": {"messages": {"hi": {"store": -2}}}}"##);
        assert!(e.contains(".store must be -1"), "{e}");
        let e = rules_err(r##"{"chat": {"historyStart": "yesterday"}}"##);
        assert!(e.contains(".historyStart must be a NumericDate"), "{e}");
    }

    #[test]
    fn wildcard_matching() {
        let r = rules(r##"{"presence.*": {"subscribe": true}, "*.admin": {"subscribe": true}}"##);
        assert!(r.can_subscribe("presence.a"));
        assert!(r.can_subscribe("presence.a.b"));
        assert!(r.can_subscribe("x.y.admin"));
        assert!(!r.can_subscribe("presence"));
        assert!(!r.can_subscribe("chat.a"));
        assert!(!ChannelRules::default().can_subscribe("anything"));
        assert!(ChannelRules::default().is_empty());
    }

    #[test]
    fn explicit_false_wins_regardless_of_order() {
        for channels in [
            r##"{"chat.admin": {"subscribe": false}, "chat.*": {"subscribe": true}}"##,
            r##"{"chat.*": {"subscribe": true}, "chat.admin": {"subscribe": false}}"##,
        ] {
            let r = rules(channels);
            assert!(!r.can_subscribe("chat.admin"), "{channels}");
            assert!(r.can_subscribe("chat.everyone"), "{channels}");
        }
        // A key without a subscribe directive neither grants nor denies.
        let r = rules(r##"{"chat.*": {"subscribe": true}, "chat.x": {"getInfo": true}}"##);
        assert!(r.can_subscribe("chat.x"));
        assert!(r.can_get_info("chat.x") && !r.can_get_info("chat.y"));
    }

    #[test]
    fn regex_keys() {
        let r = rules(
            r##"{"#regex:^org\\.[0-9]+$": {"subscribe": true}, "#regex:secret": {"subscribe": false}}"##,
        );
        assert!(r.can_subscribe("org.42"));
        assert!(!r.can_subscribe("org.abc"));
        assert!(!r.can_subscribe("org.42.x"));
        let r2 =
            rules(r##"{"org.*": {"subscribe": true}, "#regex:secret": {"subscribe": false}}"##);
        assert!(r2.can_subscribe("org.public"));
        assert!(!r2.can_subscribe("org.secret.room"));
    }

    #[test]
    fn invalid_regex_makes_token_invalid() {
        let e = rules_err(r##"{"#regex:(": {"subscribe": true}}"##);
        assert!(
            e.contains(r##"channels["#regex:("] is not a valid regular expression"##),
            "{e}"
        );
        let e = rules_err(r##"{"chat": {"messages": {"#regex:[": {"publish": true}}}}"##);
        assert!(
            e.contains(r##"channels["chat"].messages["#regex:["]"##),
            "{e}"
        );
        let e = rules_err(r##"{"#nope": {"subscribe": true}}"##);
        assert!(e.contains("is not #regex:<pattern>"), "{e}");
    }

    #[test]
    fn auto_subscribe_exact_keys_in_claim_order() {
        let r = rules(
            r##"{"zeta": {"autoSubscribe": true}, "user.*": {"autoSubscribe": true},
                "alpha": {"autoSubscribe": true}, "#regex:^x$": {"autoSubscribe": true},
                "mid": {"autoSubscribe": false}, "beta": {"subscribe": true}}"##,
        );
        assert_eq!(r.auto_subscribe_channels(), vec!["zeta", "alpha"]);
        // Through a plain serde_json::Map the order is sorted.
        let map: Map<String, Value> = serde_json::from_value(json!({"exp": 1, "scope": "connect",
            "channels": {"zeta": {"autoSubscribe": true}, "alpha": {"autoSubscribe": true}}}))
        .expect("map");
        let c = HotsockClaims::from_claims(&map).expect("claims");
        assert_eq!(c.channels.auto_subscribe_channels(), vec!["alpha", "zeta"]);
    }

    #[test]
    fn message_permissions() {
        let r = rules(
            r##"{"room.*": {"messages": {"*": {"publish": true}, "typing": {"echo": false}}},
                "room.vip": {"messages": {"chat": {"echo": true, "broadcast": true}}},
                "room.quiet": {"messages": {"chat": {"publish": false, "broadcast": true}}},
                "news": {"messages": {"#regex:^headline\\.": {"broadcast": true}}}}"##,
        );
        assert_eq!(
            r.message_permission("room.1", "chat"),
            MessagePermission {
                publish: true,
                broadcast: false,
                echo: false,
                emit: false
            }
        );
        assert_eq!(
            r.message_permission("room.vip", "chat"),
            MessagePermission {
                publish: true,
                broadcast: true,
                echo: true,
                emit: false
            }
        );
        // publish:false overrides both the room.* grant and broadcast.
        let quiet = r.message_permission("room.quiet", "chat");
        assert_eq!(quiet, MessagePermission::default());
        assert!(!quiet.may_send(true) && !quiet.may_send(false));
        // Other events in room.quiet still come from room.*.
        assert!(r.message_permission("room.quiet", "typing").publish);
        let headline = r.message_permission("news", "headline.sports");
        assert!(headline.broadcast && !headline.publish && headline.may_send(false));
        assert_eq!(
            r.message_permission("news", "other"),
            MessagePermission::default()
        );
        assert_eq!(
            r.message_permission("elsewhere", "chat"),
            MessagePermission::default()
        );
    }

    #[test]
    fn umd_update_and_misc_directives() {
        let r = rules(
            r##"{"presence.*": {"umdUpdate": true, "historyStart": 100, "omitFromSubCount": true},
                "presence.locked": {"umdUpdate": false, "historyStart": 50},
                "store": {"storage": {"prefs.*": {"observe": true}}}}"##,
        );
        assert!(r.can_update_umd("presence.chat"));
        assert!(!r.can_update_umd("presence.locked"));
        assert!(!r.can_update_umd("other"));
        assert_eq!(r.history_start("presence.locked"), Some(50));
        assert_eq!(r.history_start("presence.x"), Some(100));
        assert!(r.omit_from_sub_count("presence.x"));
        let (_, d) = r.iter().nth(2).expect("third rule");
        assert!(d.storage[0].0.matches("prefs.theme"));
    }

    #[test]
    fn aliases() {
        let r = rules(
            r##"{"user.123": {"alias": "user", "subscribe": true},
                "team.9": {"alias": "lobby"}, "lobby": {"subscribe": true}}"##,
        );
        assert_eq!(r.alias_for("user").as_deref(), Some("user.123"));
        assert_eq!(r.alias_for("user.123"), None);
        assert_eq!(r.alias_for("nobody"), None);
        // A real (exact-key) channel name beats an alias of the same name.
        assert_eq!(r.alias_for("lobby"), None);
        assert_eq!(r.alias_of("user.123"), Some("user"));
        assert_eq!(r.alias_of("lobby"), None);

        let e = rules_err(r##"{"user.*": {"alias": "me"}}"##);
        assert!(
            e.contains(r##"channels["user.*"].alias is not allowed on a wildcard or #regex: key"##),
            "{e}"
        );
        let e = rules_err(r##"{"#regex:^u$": {"alias": "me"}}"##);
        assert!(e.contains("alias is not allowed"), "{e}");
        let e = rules_err(r##"{"a": {"alias": "x"}, "b": {"alias": "x"}}"##);
        assert!(e.contains("give each channel its own alias"), "{e}");
        let e = rules_err(r##"{"a": {"alias": ""}}"##);
        assert!(e.contains("alias must not be empty"), "{e}");
    }

    #[test]
    fn duplicate_channel_keys_keep_last_value() {
        let r = rules(r##"{"a": {"subscribe": true}, "b": {}, "a": {"subscribe": false}}"##);
        assert_eq!(r.len(), 2);
        assert!(!r.can_subscribe("a"));
    }
}
