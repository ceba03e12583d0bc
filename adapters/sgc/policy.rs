//! The accept/reject decisions of the sgc server (its `OnBefore…` events),
//! as configurable [`SgcRules`] and an [`SgcHooks`] trait for embedders.
//!
//! Each decision maps to the error code the original server sends when its
//! event handler sets `Accept := False`:
//!
//! | hook | sgc event | code |
//! |---|---|---|
//! | [`SgcHooks::before_new_member`] | OnBeforeNewMember | 2 |
//! | [`SgcHooks::before_new_channel`] | OnBeforeNewChannel | 6 |
//! | [`SgcHooks::before_new_channel_member`] | OnBeforeNewChannelMember | 10 |
//! | [`SgcHooks::before_publish`] | OnBeforePublishMsg | 20 |
//! | [`SgcHooks::before_send_members`] | OnBeforeSendMembers | 30 |
//! | [`SgcHooks::before_invite`] | (ours) | 40 |
//!
//! The rules run first, then the hooks. A denial may carry a reason, which
//! is appended to the error text.

use std::fmt;

use crate::auth::Pattern;

/// An accept/reject answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Accept,
    /// Refuse; the optional reason is appended to the sgc error text.
    Deny(Option<String>),
}

impl Decision {
    /// A refusal with a reason.
    pub fn deny(reason: impl Into<String>) -> Self {
        Decision::Deny(Some(reason.into()))
    }

    /// The first denial of `self` and `then()`.
    pub fn and_then(self, then: impl FnOnce() -> Decision) -> Decision {
        match self {
            Decision::Accept => then(),
            deny => deny,
        }
    }
}

/// The member a hook is asked about.
#[derive(Clone, Copy, Debug)]
pub struct HookMember<'a> {
    /// The member id (session id).
    pub id: &'a str,
    /// Display name.
    pub name: &'a str,
    /// Info text.
    pub info: &'a str,
    /// True if the connection presented a verified token.
    pub authenticated: bool,
}

/// Policy hooks for embedders (the sgc server's `OnBefore…` events). Every
/// method accepts by default.
pub trait SgcHooks: Send + Sync + 'static {
    /// A connection joins (member@new). `name` and `info` may be rewritten.
    fn before_new_member(&self, _id: &str, _name: &mut String, _info: &mut String) -> Decision {
        Decision::Accept
    }

    /// A subscribe would create `channel` (nobody is in it yet).
    fn before_new_channel(&self, _member: &HookMember<'_>, _channel: &str) -> Decision {
        Decision::Accept
    }

    /// `member` subscribes to `channel`.
    fn before_new_channel_member(&self, _member: &HookMember<'_>, _channel: &str) -> Decision {
        Decision::Accept
    }

    /// `member` publishes `text` to `channel` (None: to every member).
    fn before_publish(
        &self,
        _member: &HookMember<'_>,
        _channel: Option<&str>,
        _text: &str,
    ) -> Decision {
        Decision::Accept
    }

    /// `member` asks for the members of `channel` (None: every member).
    fn before_send_members(&self, _member: &HookMember<'_>, _channel: Option<&str>) -> Decision {
        Decision::Accept
    }

    /// `member` invites `invitee` to `channel`.
    fn before_invite(&self, _member: &HookMember<'_>, _channel: &str, _invitee: &str) -> Decision {
        Decision::Accept
    }
}

/// Hooks that accept everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptAll;

impl SgcHooks for AcceptAll {}

/// The rules set in the configuration (`--sgc-*` flags).
#[derive(Clone)]
pub struct SgcRules {
    /// Channels members may subscribe to (create or join). Default `*`.
    pub channels: Vec<Pattern>,
    /// Channels members may publish to. Default `*`.
    pub publish_channels: Vec<Pattern>,
    /// Whether a publish with an empty channel (to every member) is allowed.
    pub global_publish: bool,
    /// Whether get@members for a channel requires being subscribed to it.
    pub members_need_subscription: bool,
    /// Whether inviting to a channel requires being subscribed to it.
    pub invite_needs_subscription: bool,
}

impl fmt::Debug for SgcRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |v: &[Pattern]| v.iter().map(|p| p.as_str().to_string()).collect::<Vec<_>>();
        f.debug_struct("SgcRules")
            .field("channels", &names(&self.channels))
            .field("publish_channels", &names(&self.publish_channels))
            .field("global_publish", &self.global_publish)
            .field("members_need_subscription", &self.members_need_subscription)
            .field("invite_needs_subscription", &self.invite_needs_subscription)
            .finish()
    }
}

impl Default for SgcRules {
    fn default() -> Self {
        let any =
            || vec![Pattern::parse("*").unwrap_or_else(|_| unreachable!("'*' is a valid pattern"))];
        SgcRules {
            channels: any(),
            publish_channels: any(),
            global_publish: true,
            members_need_subscription: false,
            invite_needs_subscription: false,
        }
    }
}

/// Parses a list of channel patterns (`*` wildcards, `#regex:…`).
pub fn parse_patterns(flag: &str, list: &[String]) -> Result<Vec<Pattern>, String> {
    list.iter()
        .map(|s| Pattern::parse(s.trim()).map_err(|e| format!("{flag}: {s:?} {e}")))
        .collect()
}

fn allowed(patterns: &[Pattern], channel: &str) -> bool {
    patterns.iter().any(|p| p.matches(channel))
}

impl SgcRules {
    /// May a member subscribe to `channel`? (codes 6 and 10)
    pub fn may_subscribe(&self, channel: &str) -> Decision {
        if allowed(&self.channels, channel) {
            Decision::Accept
        } else {
            Decision::deny(format!(
                "Channel {channel:?} is not one of the allowed channels ({})",
                list(&self.channels)
            ))
        }
    }

    /// May a member publish to `channel` (None: to every member)? `token_allows`
    /// is the token's `publish` claim (true without a token). (code 20)
    pub fn may_publish(&self, channel: Option<&str>, token_allows: bool) -> Decision {
        if !token_allows {
            return Decision::deny("The token's publish claim is false.");
        }
        match channel {
            None if !self.global_publish => Decision::deny(
                "Publishing to every member (empty channel) is disabled on this server; name a channel.",
            ),
            None => Decision::Accept,
            Some(c) if allowed(&self.publish_channels, c) => Decision::Accept,
            Some(c) => Decision::deny(format!(
                "Publishing to {c:?} is not allowed; allowed channels: {}",
                list(&self.publish_channels)
            )),
        }
    }

    /// May a member get the member list of `channel`? (code 30)
    pub fn may_get_members(&self, channel: Option<&str>, subscribed: bool) -> Decision {
        match channel {
            Some(c) if self.members_need_subscription && !subscribed => {
                Decision::deny(format!("Subscribe to {c:?} first to get its members."))
            }
            _ => Decision::Accept,
        }
    }

    /// May a member invite others to `channel`? (code 40)
    pub fn may_invite(&self, channel: &str, subscribed: bool) -> Decision {
        if self.invite_needs_subscription && !subscribed {
            return Decision::deny(format!(
                "Subscribe to {channel:?} before inviting others to it."
            ));
        }
        self.may_subscribe(channel)
    }
}

fn list(patterns: &[Pattern]) -> String {
    if patterns.is_empty() {
        return "none".into();
    }
    patterns
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(channels: &[&str], publish: &[&str]) -> SgcRules {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        SgcRules {
            channels: parse_patterns("--sgc-channels", &own(channels)).unwrap(),
            publish_channels: parse_patterns("--sgc-publish-channels", &own(publish)).unwrap(),
            ..SgcRules::default()
        }
    }

    #[test]
    fn defaults_allow_everything() {
        let r = SgcRules::default();
        assert_eq!(r.may_subscribe("any"), Decision::Accept);
        assert_eq!(r.may_publish(Some("any"), true), Decision::Accept);
        assert_eq!(r.may_publish(None, true), Decision::Accept);
        assert_eq!(r.may_get_members(Some("x"), false), Decision::Accept);
        assert_eq!(r.may_invite("x", false), Decision::Accept);
    }

    #[test]
    fn channel_patterns_restrict_subscribe_and_publish() {
        let r = rules(&["room-*", "lobby"], &["room-*"]);
        assert_eq!(r.may_subscribe("room-1"), Decision::Accept);
        assert_eq!(r.may_subscribe("lobby"), Decision::Accept);
        let Decision::Deny(Some(why)) = r.may_subscribe("secret") else {
            panic!("secret must be denied")
        };
        assert!(why.contains("room-*, lobby"), "{why}");
        assert_eq!(r.may_publish(Some("room-2"), true), Decision::Accept);
        assert!(matches!(
            r.may_publish(Some("lobby"), true),
            Decision::Deny(_)
        ));
        assert!(matches!(
            r.may_publish(Some("room-2"), false),
            Decision::Deny(_)
        ));
        assert!(
            matches!(rules(&[], &[]).may_subscribe("x"), Decision::Deny(Some(w)) if w.contains("none"))
        );
        assert!(parse_patterns("--sgc-channels", &["#bad".into()]).is_err());
    }

    #[test]
    fn switches() {
        let r = SgcRules {
            global_publish: false,
            members_need_subscription: true,
            invite_needs_subscription: true,
            ..SgcRules::default()
        };
        assert!(matches!(r.may_publish(None, true), Decision::Deny(_)));
        assert!(matches!(
            r.may_get_members(Some("c"), false),
            Decision::Deny(_)
        ));
        assert_eq!(r.may_get_members(Some("c"), true), Decision::Accept);
        assert_eq!(r.may_get_members(None, false), Decision::Accept);
        assert!(matches!(r.may_invite("c", false), Decision::Deny(_)));
        assert_eq!(r.may_invite("c", true), Decision::Accept);
        assert_eq!(
            Decision::Accept.and_then(|| Decision::deny("x")),
            Decision::deny("x")
        );
        assert_eq!(
            Decision::Deny(None).and_then(|| Decision::Accept),
            Decision::Deny(None)
        );
    }
}
