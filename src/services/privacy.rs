//! Privacy: whether a user's presence may be seen, as in the Telligent
//! seed's membership options.
//!
//! - `--presence-tracking on|off`: off hides every user (connections,
//!   subscriptions and messages still work; nobody appears anywhere).
//! - `--allow-user-toggle`: users may choose (`PUT /api/users/{uid}/privacy`
//!   or, from a client, `POST /api/client/privacy`). Without it every user
//!   is visible while tracking is on, whatever was stored.
//! - `--default-visible`: the choice of users who never chose.
//!
//! A user's choice is kept in a [`PrivacyStore`]: durable before the API
//! answers ([`super::privacy_file::FileStore`] in `--data-dir`), or in memory
//! without a data dir. The answers the core needs on every connect and
//! subscribe come from an in-memory copy, so [`Privacy`] is a cheap
//! [`VisibilityPolicy`].

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use crate::presence::VisibilityPolicy;

/// Where users' privacy choices are kept. Implementations must make a
/// [`PrivacyStore::save`] durable before returning (it is never lost once
/// the API has answered). A cluster-wide store (e.g. Redis) must also tell
/// the other nodes, which apply the change with [`Privacy::apply`].
pub trait PrivacyStore: Send + Sync + 'static {
    /// Every stored choice (user id → visible), read once at start.
    fn load(&self) -> Result<HashMap<String, bool>, String>;
    /// Records `user_id`'s choice (None: forget it, back to the default).
    /// Blocking; called off the async runtime.
    fn save(&self, user_id: &str, visible: Option<bool>) -> Result<(), String>;
    /// Choices that could not be read at start (the store was
    /// unreachable) and arrive later; the services apply them when they
    /// do. None (the default): [`PrivacyStore::load`] read everything.
    fn late_load(&self) -> Option<tokio::sync::oneshot::Receiver<HashMap<String, bool>>> {
        None
    }
    /// Every stored choice as it is now, for a store other nodes write too
    /// (read again after this node was cut off from them); an error if it
    /// cannot be read. None (the default): only this node writes here.
    fn reread(&self) -> Result<Option<HashMap<String, bool>>, String> {
        Ok(None)
    }
}

/// For a shared store that could not be read at start: reads it again
/// with `read` every second on a thread of its own until it answers, and
/// hands the choices to the receiver (the services apply them then).
/// Logs the failure first; `engine` names the store ("Redis").
pub fn load_later(
    engine: &'static str,
    error: &str,
    read: impl Fn() -> Result<HashMap<String, bool>, String> + Send + 'static,
) -> Result<tokio::sync::oneshot::Receiver<HashMap<String, bool>>, String> {
    tracing::error!(%error, "cannot read the privacy choices from {engine}; every user has the default visibility until {engine} answers (retrying every second)");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("privacy-load".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                if tx.is_closed() {
                    return;
                }
                if let Ok(map) = read() {
                    tracing::info!(
                        users = map.len(),
                        "loaded the privacy choices from {engine}"
                    );
                    let _ = tx.send(map);
                    return;
                }
            }
        })
        .map_err(|e| format!("cannot start the privacy loader thread: {e}"))?;
    Ok(rx)
}

/// A store that forgets everything on restart (no `--data-dir`).
#[derive(Debug, Default)]
pub struct MemoryStore;

impl PrivacyStore for MemoryStore {
    fn load(&self) -> Result<HashMap<String, bool>, String> {
        Ok(HashMap::new())
    }

    fn save(&self, _user_id: &str, _visible: Option<bool>) -> Result<(), String> {
        Ok(())
    }
}

/// The server-wide privacy options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrivacySettings {
    /// `--presence-tracking`: false hides everyone.
    pub tracking: bool,
    /// `--allow-user-toggle`: users' own choices count.
    pub allow_user_toggle: bool,
    /// `--default-visible`: visibility of users who did not choose.
    pub default_visible: bool,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        PrivacySettings {
            tracking: true,
            allow_user_toggle: true,
            default_visible: true,
        }
    }
}

/// One user's privacy as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PrivacyStatus {
    /// The user id.
    pub uid: String,
    /// Whether others can see the user now.
    pub visible: bool,
    /// The user's own choice, or None if they never chose.
    pub choice: Option<bool>,
    /// Whether the server tracks presence at all.
    pub tracking: bool,
    /// Whether users' own choices count.
    pub user_toggle: bool,
}

/// Why a privacy change was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrivacyError {
    /// `--allow-user-toggle` is off.
    ToggleDisabled,
    /// The store could not record the choice.
    Store(String),
}

impl std::fmt::Display for PrivacyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrivacyError::ToggleDisabled => write!(
                f,
                "users may not change their visibility on this server; start it with --allow-user-toggle"
            ),
            PrivacyError::Store(e) => write!(
                f,
                "the privacy setting could not be stored ({e}); nothing was changed, try again"
            ),
        }
    }
}

/// The privacy policy: settings, the users' choices and their store.
pub struct Privacy {
    settings: PrivacySettings,
    store: Box<dyn PrivacyStore>,
    choices: RwLock<HashMap<String, bool>>,
    /// Serializes writes so the store and the in-memory copy agree on the
    /// order of changes.
    write: Mutex<()>,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privacy")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Privacy {
    /// Loads the stored choices.
    pub fn new(settings: PrivacySettings, store: Box<dyn PrivacyStore>) -> Result<Self, String> {
        let choices = store.load()?;
        Ok(Privacy {
            settings,
            store,
            choices: RwLock::new(choices),
            write: Mutex::new(()),
        })
    }

    /// The choices that the store reads late (see
    /// [`PrivacyStore::late_load`]), at most once.
    pub fn take_late_load(&self) -> Option<tokio::sync::oneshot::Receiver<HashMap<String, bool>>> {
        self.store.late_load()
    }

    /// The server-wide options.
    pub fn settings(&self) -> PrivacySettings {
        self.settings
    }

    fn choice(&self, user_id: &str) -> Option<bool> {
        self.choices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(user_id)
            .copied()
    }

    /// Whether `user_id` may be seen now.
    pub fn visible(&self, user_id: &str) -> bool {
        let s = self.settings;
        if !s.tracking {
            return false;
        }
        if !s.allow_user_toggle {
            return true;
        }
        self.choice(user_id).unwrap_or(s.default_visible)
    }

    /// The user's privacy as the API reports it.
    pub fn status(&self, user_id: &str) -> PrivacyStatus {
        PrivacyStatus {
            uid: user_id.to_string(),
            visible: self.visible(user_id),
            choice: self.choice(user_id),
            tracking: self.settings.tracking,
            user_toggle: self.settings.allow_user_toggle,
        }
    }

    /// Records `user_id`'s choice durably, then makes it current. Blocking
    /// (the store may fsync). Returns true if the user's visibility changed
    /// (the caller then re-applies it to connections and leases).
    pub fn set(&self, user_id: &str, visible: Option<bool>) -> Result<bool, PrivacyError> {
        if !self.settings.allow_user_toggle {
            return Err(PrivacyError::ToggleDisabled);
        }
        let _order = self.write.lock().unwrap_or_else(|p| p.into_inner());
        self.store
            .save(user_id, visible)
            .map_err(PrivacyError::Store)?;
        Ok(self.apply(user_id, visible))
    }

    /// Makes a choice current without storing it (a change another node
    /// already stored). Returns true if the user's visibility changed.
    pub fn apply(&self, user_id: &str, visible: Option<bool>) -> bool {
        let before = self.visible(user_id);
        {
            let mut choices = self.choices.write().unwrap_or_else(|p| p.into_inner());
            match visible {
                Some(v) => choices.insert(user_id.to_string(), v),
                None => choices.remove(user_id),
            };
        }
        before != self.visible(user_id)
    }
}

impl Privacy {
    /// Re-reads every choice from the store and makes it current: for a
    /// shared store, after this node was cut off from the others and may
    /// have missed their changes. Blocking. Returns the users whose
    /// visibility changed.
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let _order = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let Some(stored) = self.store.reread()? else {
            return Ok(Vec::new());
        };
        let current = self
            .choices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let users: std::collections::HashSet<&String> =
            stored.keys().chain(current.keys()).collect();
        Ok(users
            .into_iter()
            .filter(|uid| stored.get(*uid) != current.get(*uid))
            .filter(|uid| self.apply(uid, stored.get(*uid).copied()))
            .cloned()
            .collect())
    }
}

impl VisibilityPolicy for Privacy {
    fn is_visible(&self, user_id: &str) -> bool {
        self.visible(user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn privacy(settings: PrivacySettings) -> Privacy {
        Privacy::new(settings, Box::new(MemoryStore)).unwrap()
    }

    #[test]
    fn choices_default_and_server_switches() {
        let p = privacy(PrivacySettings::default());
        assert!(p.visible("alice"));
        assert_eq!(p.set("alice", Some(false)), Ok(true));
        assert!(!p.visible("alice"));
        assert_eq!(p.set("alice", Some(false)), Ok(false), "no change");
        assert_eq!(p.status("alice").choice, Some(false));
        assert_eq!(p.set("alice", None), Ok(true));
        assert!(p.visible("alice"));

        let hidden_by_default = privacy(PrivacySettings {
            default_visible: false,
            ..PrivacySettings::default()
        });
        assert!(!hidden_by_default.visible("bob"));
        hidden_by_default.set("bob", Some(true)).unwrap();
        assert!(hidden_by_default.visible("bob"));

        let no_toggle = privacy(PrivacySettings {
            allow_user_toggle: false,
            default_visible: false,
            ..PrivacySettings::default()
        });
        assert!(no_toggle.visible("carol"), "no toggle: everyone visible");
        assert_eq!(
            no_toggle.set("carol", Some(false)),
            Err(PrivacyError::ToggleDisabled)
        );

        let off = privacy(PrivacySettings {
            tracking: false,
            ..PrivacySettings::default()
        });
        off.set("dave", Some(true)).unwrap();
        assert!(!off.visible("dave"), "tracking off hides everyone");
    }

    struct FailingStore;

    impl PrivacyStore for FailingStore {
        fn load(&self) -> Result<HashMap<String, bool>, String> {
            Ok(HashMap::from([("erin".to_string(), false)]))
        }
        fn save(&self, _: &str, _: Option<bool>) -> Result<(), String> {
            Err("disk full".into())
        }
    }

    #[test]
    fn a_failed_save_changes_nothing() {
        let p = Privacy::new(PrivacySettings::default(), Box::new(FailingStore)).unwrap();
        assert!(!p.visible("erin"), "loaded from the store");
        let err = p.set("erin", Some(true)).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert!(!p.visible("erin"));
    }
}
