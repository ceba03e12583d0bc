//! Which client messages also go to the backend (the webhook receivers and
//! the event stream, as `client_message` events), and which go only there:
//! `--forward-channels` and `--forward-only-channels` (every event of the
//! channels), the `[[forward-rules]]` tables of the TOML file (channels and
//! events), and per event the `emitPubSubEvent` directive of a Hotsock
//! token's `messages` claim.

use serde::Deserialize;

use crate::auth::Pattern;

/// Where a client's message goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Forward {
    /// To the channel's subscribers only.
    #[default]
    No,
    /// To the subscribers and to the backend.
    Also,
    /// To the backend only.
    Only,
}

/// One forwarding rule: messages on channels matching `channels` whose
/// event matches `events` (None: any event).
#[derive(Clone, Debug)]
pub struct ForwardRule {
    channels: Pattern,
    events: Option<Pattern>,
    only: bool,
}

impl ForwardRule {
    fn covers(&self, channel: &str, event: &str) -> bool {
        self.channels.matches(channel) && self.events.as_ref().is_none_or(|e| e.matches(event))
    }
}

/// One `[[forward-rules]]` table of the TOML file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ForwardRuleConfig {
    /// Channel pattern (`*` wildcards, `#regex:`).
    pub channels: String,
    /// Event pattern (default: every event). The event of a Hotsock
    /// message is its `event`, of a Socket.IO `SEND_MESSAGE` its
    /// `category`; SocketCluster `#publish` is `publish` and sgc
    /// `publish` is `message`.
    pub events: Option<String>,
    /// Only to the backend, not to the channel's subscribers.
    #[serde(default)]
    pub backend_only: bool,
}

fn pattern(what: &str, source: &str) -> Result<Pattern, String> {
    let source = source.trim();
    Pattern::parse(source).map_err(|e| format!("{what}: {source:?} {e}"))
}

/// The rules of the TOML tables (in file order), then of
/// `--forward-channels` and `--forward-only-channels` (any event).
pub fn rules_from(
    tables: &[ForwardRuleConfig],
    also: &[String],
    only: &[String],
) -> Result<Vec<ForwardRule>, String> {
    let mut rules = tables
        .iter()
        .map(|t| {
            let what = format!("[[forward-rules]] channels = {:?}", t.channels);
            Ok(ForwardRule {
                channels: pattern(&what, &t.channels)?,
                events: t
                    .events
                    .as_deref()
                    .map(|e| pattern(&format!("{what}, events"), e))
                    .transpose()?,
                only: t.backend_only,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let flag = |flag: &str, list: &[String], only: bool| {
        list.iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| {
                Ok(ForwardRule {
                    channels: pattern(flag, s)?,
                    events: None,
                    only,
                })
            })
            .collect::<Result<Vec<_>, String>>()
    };
    rules.extend(flag("--forward-channels", also, false)?);
    rules.extend(flag("--forward-only-channels", only, true)?);
    Ok(rules)
}

/// Where `event` on `channel` goes: a backend-only rule wins, then any
/// forwarding rule or the token's `emitPubSubEvent` (`emit`).
pub fn decide(rules: &[ForwardRule], channel: &str, event: &str, emit: bool) -> Forward {
    let mut matched = false;
    for rule in rules.iter().filter(|r| r.covers(channel, event)) {
        if rule.only {
            return Forward::Only;
        }
        matched = true;
    }
    match matched || emit {
        true => Forward::Also,
        false => Forward::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_only_wins_then_any_rule_or_the_token() {
        let rules =
            rules_from(&[], &["room.*".into()], &["room.cmd".into(), "ops".into()]).unwrap();
        assert_eq!(decide(&rules, "room.1", "chat", false), Forward::Also);
        assert_eq!(decide(&rules, "room.cmd", "chat", false), Forward::Only);
        assert_eq!(decide(&rules, "ops", "chat", true), Forward::Only);
        assert_eq!(decide(&rules, "lobby", "chat", false), Forward::No);
        assert_eq!(decide(&rules, "lobby", "chat", true), Forward::Also);
        let bad = rules_from(&[], &["#regex:(".into()], &[]).unwrap_err();
        assert!(bad.starts_with("--forward-channels"), "{bad}");
    }

    #[test]
    fn a_table_rule_covers_only_its_events() {
        let tables = [
            ForwardRuleConfig {
                channels: "game.*".into(),
                events: Some("move.*".into()),
                backend_only: true,
            },
            ForwardRuleConfig {
                channels: "game.*".into(),
                events: Some("chat".into()),
                backend_only: false,
            },
        ];
        let rules = rules_from(&tables, &[], &[]).unwrap();
        assert_eq!(decide(&rules, "game.1", "move.left", false), Forward::Only);
        assert_eq!(decide(&rules, "game.1", "chat", false), Forward::Also);
        assert_eq!(decide(&rules, "game.1", "emote", false), Forward::No);
        assert_eq!(decide(&rules, "lobby", "move.left", false), Forward::No);
        let bad = rules_from(
            &[ForwardRuleConfig {
                channels: "a".into(),
                events: Some("#regex:(".into()),
                backend_only: false,
            }],
            &[],
            &[],
        )
        .unwrap_err();
        assert!(
            bad.contains("[[forward-rules]]") && bad.contains("events"),
            "{bad}"
        );
    }
}
