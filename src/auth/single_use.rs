//! [`SingleUseGuard`]: enforces `singleUse: true` (spec §2.1) by remembering
//! each used `jti` until its token expires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{AuthError, HotsockClaims, now_secs};

/// Entries are swept for expiry once the map grows past this size (and then
/// whenever it doubles), so memory stays proportional to live tokens.
const SWEEP_THRESHOLD: usize = 1024;

/// Remembers the `jti` of used single-use tokens until they expire.
///
/// Cheap to clone; clones share state. Only in-process: a restart forgets
/// used tokens that have not expired yet.
#[derive(Clone, Debug, Default)]
pub struct SingleUseGuard {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    used: HashMap<String, u64>,
    next_sweep: usize,
}

impl SingleUseGuard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one use of `claims`. Tokens without `singleUse: true` always
    /// pass; a single-use token passes only the first time.
    pub fn check(&self, claims: &HotsockClaims) -> Result<(), AuthError> {
        if !claims.single_use {
            return Ok(());
        }
        let jti = claims.jti.as_deref().unwrap_or_default();
        if self.try_use(jti, claims.exp) {
            Ok(())
        } else {
            Err(AuthError::not_permitted(format!(
                "single-use token {jti:?} (jti) has already been used; mint a new token"
            )))
        }
    }

    /// Records a use of `jti` (valid until `exp`). Returns false if it was
    /// already used and has not expired yet.
    pub fn try_use(&self, jti: &str, exp: u64) -> bool {
        let now = now_secs();
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if state.used.len() >= state.next_sweep.max(SWEEP_THRESHOLD) {
            state.used.retain(|_, e| *e >= now);
            state.next_sweep = state.used.len() * 2;
        }
        match state.used.get(jti) {
            Some(&e) if e >= now => false,
            _ => {
                state.used.insert(jti.to_owned(), exp);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: serde_json::Value) -> HotsockClaims {
        HotsockClaims::from_json_str(&v.to_string()).expect("claims")
    }

    #[test]
    fn single_use_token_only_once() {
        let guard = SingleUseGuard::new();
        let exp = now_secs() + 60;
        let once =
            claims(json!({"exp": exp, "scope": "subscribe", "jti": "t-1", "singleUse": true}));
        assert!(guard.check(&once).is_ok());
        let e = guard.clone().check(&once).unwrap_err();
        assert!(e.to_string().contains("already been used"), "{e}");

        let reusable = claims(json!({"exp": exp, "scope": "subscribe", "jti": "t-1"}));
        assert!(guard.check(&reusable).is_ok());
        assert!(guard.check(&reusable).is_ok());
    }

    #[test]
    fn expired_entries_are_forgotten() {
        let guard = SingleUseGuard::new();
        let past = now_secs() - 10;
        assert!(guard.try_use("old", past));
        assert!(guard.try_use("old", now_secs() + 60));
        for i in 0..(SWEEP_THRESHOLD + 5) {
            assert!(guard.try_use(&format!("j{i}"), past));
        }
        let len = guard.inner.lock().map(|s| s.used.len()).unwrap_or(0);
        assert!(len < SWEEP_THRESHOLD, "sweep did not run: {len}");
    }
}
