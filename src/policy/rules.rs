//! Operator rules: what the server's configuration says about channels by
//! pattern (`--open-channels`, `--authenticated-channels`, and the
//! `[[channel-rules]]` tables of the TOML file).

use serde::Deserialize;

use super::backend::BackendConfig;
use crate::auth::Pattern;

/// Who may subscribe to the channels of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubscribeAccess {
    /// Any connection, anonymous ones included.
    Anyone,
    /// Any connection that presented a valid token.
    Authenticated,
    /// Only connections whose token grants the channel.
    Grant,
}

/// Who may publish on the channels of a rule (besides the HTTP API, which
/// always may).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PublishAccess {
    /// Any subscriber of the channel.
    Subscribers,
    /// Only connections whose token's `messages` directives allow it.
    Grant,
    /// Nobody but the server (HTTP API).
    Server,
}

/// One rule: a channel pattern and what it allows.
#[derive(Clone, Debug)]
pub struct OperatorRule {
    /// Channels the rule covers (`*` wildcards, `#regex:`).
    pub pattern: Pattern,
    /// Who may subscribe.
    pub subscribe: SubscribeAccess,
    /// Who may publish.
    pub publish: PublishAccess,
    /// Member-data bytes per channel (None: the default for the channel).
    pub max_member_bytes: Option<usize>,
    /// Members per channel (None: `--max-members-per-channel`).
    pub max_members: Option<usize>,
    /// Subscribers see the member list and member events.
    pub show_members: bool,
}

impl OperatorRule {
    /// Anyone may subscribe, subscribers may publish.
    pub fn open(pattern: &str) -> Self {
        Self::with_access(pattern, SubscribeAccess::Anyone)
    }

    fn with_access(pattern: &str, subscribe: SubscribeAccess) -> Self {
        OperatorRule {
            pattern: Pattern::parse(pattern).unwrap_or_else(|_| {
                // Only called with patterns already checked by `parse`.
                Pattern::parse("*").unwrap_or_else(|_| unreachable!("'*' is a valid pattern"))
            }),
            subscribe,
            publish: PublishAccess::Subscribers,
            max_member_bytes: None,
            max_members: None,
            show_members: true,
        }
    }

    /// One line for the banner.
    pub fn describe(&self) -> String {
        let who = match self.subscribe {
            SubscribeAccess::Anyone => "anyone may subscribe",
            SubscribeAccess::Authenticated => "authenticated connections may subscribe",
            SubscribeAccess::Grant => "grant holders may subscribe",
        };
        let publish = match self.publish {
            PublishAccess::Subscribers => "subscribers publish",
            PublishAccess::Grant => "grant holders publish",
            PublishAccess::Server => "only the server publishes",
        };
        let mut line = format!("{}: {who}, {publish}", self.pattern.as_str());
        if let Some(b) = self.max_member_bytes {
            line.push_str(&format!(", {b} member-data bytes"));
        }
        if let Some(m) = self.max_members {
            line.push_str(&format!(", {m} members"));
        }
        if !self.show_members {
            line.push_str(", member list hidden");
        }
        line
    }
}

/// One `[[channel-rules]]` table of the TOML file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuleConfig {
    /// Channel pattern (`*` wildcards, `#regex:`).
    pub pattern: String,
    /// `anyone`, `authenticated` or `grant` (default `grant`).
    #[serde(default = "default_subscribe")]
    pub subscribe: String,
    /// `subscribers`, `grant` or `server` (default `subscribers`).
    #[serde(default = "default_publish")]
    pub publish: String,
    /// Member-data bytes per channel.
    pub max_member_bytes: Option<usize>,
    /// Members per channel.
    pub max_members: Option<usize>,
    /// Subscribers see the member list (default true).
    #[serde(default = "default_true")]
    pub show_members: bool,
}

fn default_subscribe() -> String {
    "grant".into()
}

fn default_publish() -> String {
    "subscribers".into()
}

fn default_true() -> bool {
    true
}

fn parse_pattern(what: &str, pattern: &str) -> Result<Pattern, String> {
    let pattern = pattern.trim();
    Pattern::parse(pattern).map_err(|e| format!("{what}: {pattern:?} {e}"))
}

impl RuleConfig {
    /// The rule this table describes.
    pub fn to_rule(&self) -> Result<OperatorRule, String> {
        let what = format!("[[channel-rules]] pattern {:?}", self.pattern);
        let subscribe = match self.subscribe.as_str() {
            "anyone" => SubscribeAccess::Anyone,
            "authenticated" => SubscribeAccess::Authenticated,
            "grant" => SubscribeAccess::Grant,
            other => {
                return Err(format!(
                    "{what}: subscribe = {other:?}; use \"anyone\", \"authenticated\" or \"grant\""
                ));
            }
        };
        let publish = match self.publish.as_str() {
            "subscribers" => PublishAccess::Subscribers,
            "grant" => PublishAccess::Grant,
            "server" => PublishAccess::Server,
            other => {
                return Err(format!(
                    "{what}: publish = {other:?}; use \"subscribers\", \"grant\" or \"server\""
                ));
            }
        };
        Ok(OperatorRule {
            pattern: parse_pattern(&what, &self.pattern)?,
            subscribe,
            publish,
            max_member_bytes: self.max_member_bytes,
            max_members: self.max_members,
            show_members: self.show_members,
        })
    }
}

/// Everything the policy is built from.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// Rules in the order they are tried (the first match wins).
    pub rules: Vec<OperatorRule>,
    /// The backend check for channels no rule settles.
    pub backend: Option<BackendConfig>,
    /// Member-data cap of `presence.` channels without a rule setting one.
    pub presence_member_bytes: usize,
    /// Members per channel without a rule setting it.
    pub max_members: usize,
    /// Which client messages go to the backend.
    pub forward: Vec<super::ForwardRule>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            rules: Vec::new(),
            forward: Vec::new(),
            backend: None,
            presence_member_bytes: 100_000,
            max_members: 10_000,
        }
    }
}

impl PolicyConfig {
    /// Rules from the configuration: the TOML tables first (in file
    /// order), then `--open-channels`, then `--authenticated-channels`.
    pub fn rules_from(
        tables: &[RuleConfig],
        open: &[String],
        authenticated: &[String],
    ) -> Result<Vec<OperatorRule>, String> {
        let mut rules = tables
            .iter()
            .map(RuleConfig::to_rule)
            .collect::<Result<Vec<_>, _>>()?;
        let flag_rules = |flag: &str, list: &[String], access: SubscribeAccess| {
            list.iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(|s| {
                    parse_pattern(flag, s)?;
                    Ok(OperatorRule::with_access(s, access))
                })
                .collect::<Result<Vec<_>, String>>()
        };
        rules.extend(flag_rules(
            "--open-channels",
            open,
            SubscribeAccess::Anyone,
        )?);
        rules.extend(flag_rules(
            "--authenticated-channels",
            authenticated,
            SubscribeAccess::Authenticated,
        )?);
        Ok(rules)
    }
}
