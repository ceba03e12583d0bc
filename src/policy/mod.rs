//! The channel policy: one answer, for every front end, to "may this
//! connection subscribe to this channel / publish on it", and each
//! channel's limits.
//!
//! Every front end shares one channel namespace, so the policy is asked by
//! the core itself ([`crate::presence::Presence::subscribe`] and
//! [`crate::presence::Presence::publish_from`]) with the connection's
//! protocol-independent [`Access`]; adapters only translate a refusal into
//! their protocol's error.
//!
//! How a subscribe is decided, first answer wins (a channel a front end
//! reserves for itself, such as sgc's member list, is refused before):
//! 1. the token's `channels` claim says `false` for the channel: refused;
//! 2. the token's `channels` claim grants it: allowed;
//! 3. the first operator rule whose pattern matches: it says who may
//!    subscribe (anyone, authenticated connections, grant holders only);
//! 4. no rule matches: the backend check, if one is configured;
//! 5. otherwise refused: with no grant and no rule a channel is closed.
//!
//! Publishing follows the same order with the `messages` directives of the
//! claim and the rule's `publish` setting.

mod backend;
pub mod forward;
mod rules;

use std::sync::Arc;

pub use backend::{BackendCheck, BackendConfig, BackendRequest, Pending, check_url};
pub use forward::{Forward, ForwardRule, ForwardRuleConfig};
pub use rules::{OperatorRule, PolicyConfig, PublishAccess, RuleConfig, SubscribeAccess};

use crate::auth::ChannelRules;
use crate::ids::ConnId;

/// Hotsock's presence channel prefix: these keep the 100 KB member-data
/// cap by default.
pub const PRESENCE_PREFIX: &str = "presence.";

/// What a connection proved about itself, whatever protocol it speaks.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// It presented a valid credential (a verified JWT or OAuth token).
    pub authenticated: bool,
    /// The `channels` claim of its token (Hotsock format), if any.
    pub grants: Option<Arc<ChannelRules>>,
}

impl Access {
    /// An anonymous connection: no credential, no grants.
    pub fn anonymous() -> Self {
        Access::default()
    }

    /// An authenticated connection with the grants of its token's
    /// `channels` claim (None: the token has no such claim).
    pub fn authenticated(grants: Option<Arc<ChannelRules>>) -> Self {
        Access {
            authenticated: true,
            grants,
        }
    }
}

/// Who asks, as the policy and the backend check see it.
#[derive(Clone, Copy, Debug)]
pub struct Requester<'a> {
    /// The connection.
    pub conn: ConnId,
    /// Its wire protocol (for the backend check and logs only: the answer
    /// does not depend on it).
    pub protocol: &'static str,
    /// Its user id, if any.
    pub user_id: Option<&'a str>,
    /// Its credentials.
    pub access: &'a Access,
    /// Grants that hold for this request only (a Hotsock subscribe token).
    pub extra: Option<&'a ChannelRules>,
    /// A subscribe the token itself asked for (Hotsock `autoSubscribe`):
    /// granted by the exact key that asked for it.
    pub automatic: bool,
    /// A secret the client gave for the channel (a Socket.IO topic
    /// password): only the backend check sees it.
    pub password: Option<&'a str>,
}

/// Why the policy did not allow a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Refused; the text names the missing grant or rule.
    Denied(String),
    /// No grant or rule settles it: the backend check must be asked first
    /// ([`ChannelPolicy::consult`]); then ask again.
    Undecided(Box<BackendRequest>),
    /// The request itself is malformed for every front end (a channel or
    /// event name, or message data, [`crate::names`] refuses).
    Invalid(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Denied(why) | Refusal::Invalid(why) => f.write_str(why),
            Refusal::Undecided(req) => write!(
                f,
                "waiting for the channel check's answer about {}",
                req.channel
            ),
        }
    }
}

/// What a channel allows once a subscribe is admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelTerms {
    /// Member-data bytes (JSON size of uid+umd per member).
    pub max_member_bytes: usize,
    /// Distinct members.
    pub max_members: usize,
    /// Subscribers see the member list and member events.
    pub show_members: bool,
}

/// What a connection may do when it publishes one event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishGrant {
    /// The sender also receives its own message (Hotsock `echo`).
    pub echo: bool,
    /// Whether the message also, or only, goes to the backend.
    pub forward: Forward,
}

/// The policy: operator rules, defaults, and the optional backend check.
#[derive(Debug)]
pub struct ChannelPolicy {
    rules: Vec<OperatorRule>,
    forward: Vec<ForwardRule>,
    backend: Option<BackendCheck>,
    /// Member-data cap of `presence.` channels without a rule setting one.
    presence_member_bytes: usize,
    /// Members per channel without a rule setting it.
    max_members: usize,
}

impl Default for ChannelPolicy {
    /// The secure default: no rules, no backend check; a channel is
    /// reachable only through a grant in the connection's token.
    fn default() -> Self {
        ChannelPolicy {
            rules: Vec::new(),
            forward: Vec::new(),
            backend: None,
            presence_member_bytes: 100_000,
            max_members: 10_000,
        }
    }
}

impl ChannelPolicy {
    /// A policy from resolved settings.
    pub fn new(cfg: PolicyConfig) -> Self {
        ChannelPolicy {
            rules: cfg.rules,
            forward: cfg.forward,
            backend: cfg.backend.map(BackendCheck::new),
            presence_member_bytes: cfg.presence_member_bytes,
            max_members: cfg.max_members,
        }
    }

    /// Every channel open to anyone: for tests of other parts of the core.
    pub fn open() -> Self {
        let mut cfg = PolicyConfig::default();
        cfg.rules.push(OperatorRule::open("*"));
        Self::new(cfg)
    }

    /// The operator rules, in the order they are tried.
    pub fn rules(&self) -> &[OperatorRule] {
        &self.rules
    }

    /// The backend check, if configured.
    pub fn backend(&self) -> Option<&BackendCheck> {
        self.backend.as_ref()
    }

    fn rule_for(&self, channel: &str) -> Option<&OperatorRule> {
        self.rules.iter().find(|r| r.pattern.matches(channel))
    }

    /// The limits and visibility of a channel.
    pub fn terms(&self, channel: &str) -> ChannelTerms {
        let rule = self.rule_for(channel);
        let default_bytes = match channel.starts_with(PRESENCE_PREFIX) {
            true => self.presence_member_bytes,
            false => usize::MAX,
        };
        ChannelTerms {
            max_member_bytes: rule
                .and_then(|r| r.max_member_bytes)
                .unwrap_or(default_bytes),
            max_members: rule.and_then(|r| r.max_members).unwrap_or(self.max_members),
            show_members: rule.is_none_or(|r| r.show_members),
        }
    }

    /// May `who` subscribe to `channel`?
    pub fn may_subscribe(&self, who: &Requester<'_>, channel: &str) -> Result<(), Refusal> {
        let grants = [who.access.grants.as_deref(), who.extra];
        let grants = grants.iter().flatten();
        if grants.clone().any(|g| g.denies_subscribe(channel)) {
            return Err(Refusal::Denied(format!(
                "the token's channels claim denies {channel} (subscribe: false)"
            )));
        }
        let granted = grants.clone().any(|g| {
            g.can_subscribe(channel)
                || (who.automatic && g.auto_subscribe_channels().iter().any(|c| c == channel))
        });
        if granted {
            return Ok(());
        }
        match self.rule_for(channel) {
            Some(rule) => match rule.subscribe {
                SubscribeAccess::Anyone => Ok(()),
                SubscribeAccess::Authenticated if who.access.authenticated => Ok(()),
                SubscribeAccess::Authenticated => Err(Refusal::Denied(format!(
                    "{channel} is open to authenticated connections only (rule {}); connect with a token",
                    rule.pattern.as_str()
                ))),
                SubscribeAccess::Grant => Err(Refusal::Denied(format!(
                    "{channel} needs a grant (rule {} admits grant holders only); add \"{channel}\": {{\"subscribe\": true}} to the token's channels claim",
                    rule.pattern.as_str()
                ))),
            },
            None => self.ask_backend(who, channel, "subscribe", None, no_grant(channel)),
        }
    }

    /// May `who` publish `event` on `channel` (`subscribed`: it is
    /// subscribed to the channel)?
    pub fn may_publish(
        &self,
        who: &Requester<'_>,
        channel: &str,
        event: &str,
        subscribed: bool,
    ) -> Result<PublishGrant, Refusal> {
        let rule = self.rule_for(channel);
        if let Some(rule) = rule
            && rule.publish == PublishAccess::Server
        {
            return Err(Refusal::Denied(format!(
                "only the server publishes on {channel} (rule {} has publish = \"server\")",
                rule.pattern.as_str()
            )));
        }
        let mut publish = false;
        let mut broadcast = false;
        let mut echo = false;
        let mut emit = false;
        for g in [who.access.grants.as_deref(), who.extra]
            .into_iter()
            .flatten()
        {
            let p = g.message_permission(channel, event);
            publish |= p.publish;
            broadcast |= p.broadcast;
            echo |= p.echo;
            emit |= p.emit;
        }
        let grant = PublishGrant {
            echo,
            forward: forward::decide(&self.forward, channel, event, emit),
        };
        if broadcast || (subscribed && publish) {
            return Ok(grant);
        }
        if publish && !subscribed {
            return Err(Refusal::Denied(format!(
                "subscribe to {channel} before sending {event:?}, or get a broadcast grant (messages.{event}.broadcast)"
            )));
        }
        match rule {
            Some(rule) => match rule.publish {
                PublishAccess::Subscribers if subscribed => Ok(grant),
                PublishAccess::Subscribers => Err(Refusal::Denied(format!(
                    "subscribe to {channel} before publishing on it (rule {} lets subscribers publish)",
                    rule.pattern.as_str()
                ))),
                _ => Err(Refusal::Denied(format!(
                    "publishing {event:?} on {channel} needs a grant (rule {} admits grant holders only); add messages.{event}.publish to the token's channels claim",
                    rule.pattern.as_str()
                ))),
            },
            None => self
                .ask_backend(
                    who,
                    channel,
                    "publish",
                    Some(event),
                    format!(
                        "the token's channels claim does not allow sending {event:?} to {channel} (messages.{event}.publish) and no rule opens it"
                    ),
                )
                .map(|()| grant),
        }
    }

    fn ask_backend(
        &self,
        who: &Requester<'_>,
        channel: &str,
        action: &'static str,
        event: Option<&str>,
        otherwise: String,
    ) -> Result<(), Refusal> {
        let Some(backend) = &self.backend else {
            return Err(Refusal::Denied(otherwise));
        };
        let req = BackendRequest::new(who, channel, action, event);
        match backend.cached(&req) {
            Some(Ok(())) => Ok(()),
            Some(Err(why)) => Err(Refusal::Denied(why)),
            None => Err(Refusal::Undecided(Box::new(req))),
        }
    }

    /// Asks the backend check about `req` and remembers the answer, so that
    /// asking the policy again right after settles it. A policy without a
    /// backend check returns a future that does nothing.
    pub fn consult(&self, req: BackendRequest) -> Pending {
        match &self.backend {
            Some(b) => b.consult(req),
            None => Pending::ready(),
        }
    }

    /// Lines for the startup banner: the rules in force and how to open a
    /// namespace.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.rules.is_empty() {
            lines.push(
                "no channel rules: a channel is reachable only with a grant in the token's channels claim"
                    .into(),
            );
        }
        for rule in &self.rules {
            lines.push(rule.describe());
        }
        if let Some(b) = &self.backend {
            lines.push(format!(
                "channels no rule settles: asked of the channel check {}",
                b.display_url()
            ));
        }
        if self.rules.is_empty() && self.backend.is_none() {
            lines.push(
                "open a namespace with --open-channels 'room.*' or --authenticated-channels 'room.*'"
                    .into(),
            );
        }
        lines
    }
}

fn no_grant(channel: &str) -> String {
    format!(
        "no grant for {channel}: the token's channels claim does not allow subscribing to it and no rule opens it; add \"{channel}\": {{\"subscribe\": true}} to the claim, or start the server with --open-channels / --authenticated-channels"
    )
}

#[cfg(test)]
mod tests;
