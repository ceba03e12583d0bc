//! Which client messages also go to the backend (the webhook receivers and
//! the event stream, as `client_message` events), and which go only there:
//! `--forward-channels` and `--forward-only-channels`, and per event the
//! `emitPubSubEvent` directive of a Hotsock token's `messages` claim.

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

/// One forwarding rule: channels matching `pattern`.
#[derive(Clone, Debug)]
pub struct ForwardRule {
    pattern: Pattern,
    only: bool,
}

/// The rules of `--forward-channels` (`also`) and
/// `--forward-only-channels` (`only`).
pub fn rules_from(also: &[String], only: &[String]) -> Result<Vec<ForwardRule>, String> {
    let parse = |flag: &str, list: &[String], only: bool| {
        list.iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| {
                Pattern::parse(s)
                    .map(|pattern| ForwardRule { pattern, only })
                    .map_err(|e| format!("{flag}: {s:?} {e}"))
            })
            .collect::<Result<Vec<_>, String>>()
    };
    let mut rules = parse("--forward-channels", also, false)?;
    rules.extend(parse("--forward-only-channels", only, true)?);
    Ok(rules)
}

/// Where a message on `channel` goes: a backend-only rule wins, then any
/// forwarding rule or the token's `emitPubSubEvent` (`emit`).
pub fn decide(rules: &[ForwardRule], channel: &str, emit: bool) -> Forward {
    let mut matched = false;
    for rule in rules.iter().filter(|r| r.pattern.matches(channel)) {
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
        let rules = rules_from(&["room.*".into()], &["room.cmd".into(), "ops".into()]).unwrap();
        assert_eq!(decide(&rules, "room.1", false), Forward::Also);
        assert_eq!(decide(&rules, "room.cmd", false), Forward::Only);
        assert_eq!(decide(&rules, "ops", true), Forward::Only);
        assert_eq!(decide(&rules, "lobby", false), Forward::No);
        assert_eq!(decide(&rules, "lobby", true), Forward::Also);
        let bad = rules_from(&["#regex:(".into()], &[]).unwrap_err();
        assert!(bad.starts_with("--forward-channels"), "{bad}");
    }
}
