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

/// The sgc-only switches set in the configuration (`--sgc-*` flags). Who
/// may subscribe to or publish on a channel is not among them: the channel
/// policy ([`crate::policy`]) decides that for every front end.
#[derive(Clone, Debug)]
pub struct SgcRules {
    /// Whether a publish with an empty channel (to every sgc member) is allowed.
    pub global_publish: bool,
    /// Whether get@members for a channel requires being subscribed to it
    /// (without it, reading a channel's members still needs the right to
    /// subscribe to it).
    pub members_need_subscription: bool,
    /// Whether inviting to a channel requires being subscribed to it.
    pub invite_needs_subscription: bool,
}

impl Default for SgcRules {
    fn default() -> Self {
        SgcRules {
            global_publish: true,
            members_need_subscription: false,
            invite_needs_subscription: false,
        }
    }
}

impl SgcRules {
    /// May a member publish to every member (empty channel)? `token_allows`
    /// is the token's `publish` claim (true without a token). (code 20)
    pub fn may_publish_to_all(&self, token_allows: bool) -> Decision {
        if !token_allows {
            return Decision::deny("The token's publish claim is false.");
        }
        if !self.global_publish {
            return Decision::deny(
                "Publishing to every member (empty channel) is disabled on this server; name a channel.",
            );
        }
        Decision::Accept
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
        Decision::Accept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_allow_the_sgc_features() {
        let r = SgcRules::default();
        assert_eq!(r.may_publish_to_all(true), Decision::Accept);
        assert_eq!(r.may_get_members(Some("c"), false), Decision::Accept);
        assert_eq!(r.may_invite("c", false), Decision::Accept);
    }

    #[test]
    fn switches_refuse_with_a_reason() {
        let r = SgcRules {
            global_publish: false,
            members_need_subscription: true,
            invite_needs_subscription: true,
        };
        assert!(
            matches!(r.may_publish_to_all(true), Decision::Deny(Some(w)) if w.contains("name a channel"))
        );
        assert!(
            matches!(r.may_publish_to_all(false), Decision::Deny(Some(w)) if w.contains("publish claim"))
        );
        assert!(matches!(
            r.may_get_members(Some("c"), false),
            Decision::Deny(Some(_))
        ));
        assert_eq!(r.may_get_members(Some("c"), true), Decision::Accept);
        assert!(matches!(r.may_invite("c", false), Decision::Deny(Some(_))));
        assert_eq!(r.may_invite("c", true), Decision::Accept);
    }
}
