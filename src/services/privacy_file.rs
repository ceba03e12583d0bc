//! The embedded privacy store: an append-only log in `--data-dir`.
//!
//! # Format
//!
//! `<data-dir>/privacy.log`, one JSON object per line, the latest line for
//! a user wins (`null`: the user's choice was forgotten):
//!
//! ```text
//! {"uid":"alice","visible":false}
//! {"uid":"bob","visible":true}
//! {"uid":"alice","visible":null}
//! ```
//!
//! # Durability
//!
//! Every change is appended and `fsync`ed before [`FileStore::save`]
//! returns, and the API answers only after that, so an acknowledged change
//! survives a crash or power loss. A crash in the middle of an append can
//! leave a torn last line: it was never acknowledged, and it is dropped at
//! the next start. At start, and when the log has grown to several times
//! the live entries, it is compacted: the current choices are written to
//! `privacy.log.tmp`, which is `fsync`ed and renamed over the log, and the
//! directory is `fsync`ed, so a crash during compaction leaves either the
//! old log or the new one, never a mix.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::privacy::PrivacyStore;

/// One line of the log.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    uid: String,
    visible: Option<bool>,
}

struct LogState {
    file: File,
    /// Lines in the log.
    lines: usize,
    /// The choices the log describes (to compact it).
    live: HashMap<String, bool>,
}

/// Privacy choices in `<dir>/privacy.log` (see the module doc).
pub struct FileStore {
    dir: PathBuf,
    state: Mutex<LogState>,
    /// Compact when the log has more lines than this and 4x the live ones.
    compact_after: usize,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

const LOG: &str = "privacy.log";
const TMP: &str = "privacy.log.tmp";

/// Reads the log; a line that does not parse ends it (a torn append).
fn read_log(path: &Path) -> Result<HashMap<String, bool>, String> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut live = HashMap::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        match serde_json::from_str::<Record>(&line) {
            Ok(Record { uid, visible }) => match visible {
                Some(v) => {
                    live.insert(uid, v);
                }
                None => {
                    live.remove(&uid);
                }
            },
            Err(e) => {
                tracing::warn!(file = %path.display(), line = n + 1, error = %e, "ignoring a torn or corrupt privacy record and everything after it");
                break;
            }
        }
    }
    Ok(live)
}

fn record_line(uid: &str, visible: Option<bool>) -> Result<Vec<u8>, String> {
    let mut line = serde_json::to_vec(&Record {
        uid: uid.to_string(),
        visible,
    })
    .map_err(|e| e.to_string())?;
    line.push(b'\n');
    Ok(line)
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot fsync {}: {e}", dir.display()))
}

/// Writes `live` as a fresh log (tmp, fsync, rename, fsync dir) and opens
/// it for appending.
fn compact(dir: &Path, live: &HashMap<String, bool>) -> Result<File, String> {
    let tmp = dir.join(TMP);
    let log = dir.join(LOG);
    let mut out = Vec::new();
    let mut uids: Vec<&String> = live.keys().collect();
    uids.sort();
    for uid in uids {
        out.extend(record_line(uid, live.get(uid).copied())?);
    }
    {
        let mut f =
            File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        f.write_all(&out)
            .and_then(|_| f.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &log).map_err(|e| format!("cannot replace {}: {e}", log.display()))?;
    sync_dir(dir)?;
    OpenOptions::new()
        .append(true)
        .open(&log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir` and compacts its log.
    pub fn open(dir: &Path) -> Result<FileStore, String> {
        Self::open_with(dir, 1024)
    }

    fn open_with(dir: &Path, compact_after: usize) -> Result<FileStore, String> {
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "cannot create the data directory {}: {e}; choose a writable --data-dir",
                dir.display()
            )
        })?;
        let live = read_log(&dir.join(LOG))?;
        let file = compact(dir, &live)?;
        Ok(FileStore {
            dir: dir.to_path_buf(),
            state: Mutex::new(LogState {
                file,
                lines: live.len(),
                live,
            }),
            compact_after,
        })
    }
}

impl PrivacyStore for FileStore {
    fn load(&self) -> Result<HashMap<String, bool>, String> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .live
            .clone())
    }

    fn save(&self, user_id: &str, visible: Option<bool>) -> Result<(), String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let line = record_line(user_id, visible)?;
        let path = self.dir.join(LOG);
        state
            .file
            .write_all(&line)
            .and_then(|_| state.file.sync_data())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        match visible {
            Some(v) => state.live.insert(user_id.to_string(), v),
            None => state.live.remove(user_id),
        };
        state.lines += 1;
        if state.lines > self.compact_after && state.lines > 4 * state.live.len() {
            // The change is already durable; a failed compaction only
            // leaves a longer log.
            match compact(&self.dir, &state.live) {
                Ok(file) => {
                    state.file = file;
                    state.lines = state.live.len();
                }
                Err(e) => tracing::warn!(error = %e, "privacy log compaction failed"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rollcall-privacy-{name}-{}-{}",
            std::process::id(),
            crate::ids::secret(8)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn choices_survive_reopening_and_the_log_is_compacted() {
        let dir = temp_dir("reopen");
        let store = FileStore::open(&dir).unwrap();
        store.save("alice", Some(false)).unwrap();
        store.save("bob", Some(true)).unwrap();
        store.save("alice", Some(true)).unwrap();
        store.save("bob", None).unwrap();
        drop(store);
        let text = std::fs::read_to_string(dir.join(LOG)).unwrap();
        assert_eq!(text.lines().count(), 4);
        let store = FileStore::open(&dir).unwrap();
        assert_eq!(
            store.load().unwrap(),
            HashMap::from([("alice".to_string(), true)])
        );
        let text = std::fs::read_to_string(dir.join(LOG)).unwrap();
        assert_eq!(text, "{\"uid\":\"alice\",\"visible\":true}\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_last_line_is_dropped() {
        let dir = temp_dir("torn");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(LOG),
            "{\"uid\":\"alice\",\"visible\":false}\n{\"uid\":\"bob\",\"vis",
        )
        .unwrap();
        let store = FileStore::open(&dir).unwrap();
        assert_eq!(
            store.load().unwrap(),
            HashMap::from([("alice".to_string(), false)])
        );
        store.save("carol", Some(false)).unwrap();
        drop(store);
        let store = FileStore::open(&dir).unwrap();
        assert_eq!(
            store.load().unwrap().len(),
            2,
            "the append after a torn line is kept"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn many_changes_compact_the_log() {
        let dir = temp_dir("grow");
        let store = FileStore::open_with(&dir, 16).unwrap();
        for i in 0..40 {
            store.save("alice", Some(i % 2 == 0)).unwrap();
        }
        let lines = std::fs::read_to_string(dir.join(LOG))
            .unwrap()
            .lines()
            .count();
        assert!(lines < 40, "{lines} lines");
        drop(store);
        let store = FileStore::open(&dir).unwrap();
        assert_eq!(
            store.load().unwrap().get("alice"),
            Some(&false),
            "i = 39 was the last"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_dir_is_a_clear_error() {
        let file = temp_dir("notadir");
        std::fs::write(&file, "x").unwrap();
        let err = FileStore::open(&file.join("sub")).unwrap_err();
        assert!(err.contains("--data-dir"), "{err}");
        let _ = std::fs::remove_file(&file);
    }
}
