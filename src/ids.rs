//! Identifiers: connection ids, ULID message ids and connection secrets.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

/// A connection's id, unique on this node and, because the upper half is
/// random per process, distinct across the nodes of a cluster and across
/// restarts with overwhelming probability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

static NEXT_CONN: AtomicU64 = AtomicU64::new(0);
static CONN_PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

impl ConnId {
    /// Allocates a fresh connection id.
    pub fn next() -> Self {
        let prefix = *CONN_PREFIX.get_or_init(|| u64::from(rand::rng().random::<u32>()) << 32);
        let n = NEXT_CONN.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff;
        ConnId(prefix | n)
    }

    /// Parses the form printed by `Display` (16 lowercase hex digits).
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 16 {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(ConnId)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Monotonic ULID generator state: the last timestamp and random part, so
/// ids minted in the same millisecond still sort in creation order.
static ULID_STATE: Mutex<(u64, u128)> = Mutex::new((0, 0));

/// Returns a new ULID (26 Crockford base32 characters), monotonic within
/// this process.
pub fn ulid() -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let (ms, random) = {
        let mut state = ULID_STATE.lock().unwrap_or_else(|p| p.into_inner());
        if now_ms > state.0 {
            let random: u128 = rand::rng().random::<u128>() & ((1u128 << 80) - 1);
            *state = (now_ms, random);
        } else {
            // Same (or earlier, after a clock step) millisecond: keep the
            // previous timestamp and bump the random part.
            state.1 = (state.1 + 1) & ((1u128 << 80) - 1);
        }
        *state
    };
    let value: u128 = (u128::from(ms) << 80) | random;
    let mut out = [0u8; 26];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 125 - 5 * i as u32;
        *slot = CROCKFORD[((value >> shift) & 0x1f) as usize];
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True if `s` is a ULID: 26 Crockford base32 characters, the first 0-7
/// (26 digits hold 130 bits; a ULID has 128).
pub fn is_ulid(s: &str) -> bool {
    s.len() == 26 && s.bytes().all(|b| CROCKFORD.contains(&b)) && s.as_bytes()[0] <= b'7'
}

/// A random alphanumeric secret of `len` characters.
pub fn secret(len: usize) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids_are_well_formed_and_monotonic() {
        let mut last = String::new();
        for _ in 0..1000 {
            let id = ulid();
            assert!(is_ulid(&id), "{id}");
            assert!(id > last, "{id} <= {last}");
            last = id;
        }
    }

    #[test]
    fn ulid_check_refuses_overflow_and_non_crockford() {
        assert!(is_ulid("01JA2Z4K8Q3W7E5R9T1Y6V0H2N"));
        assert!(is_ulid("7ZZZZZZZZZZZZZZZZZZZZZZZZZ"));
        // Over 128 bits, a letter Crockford leaves out, too short.
        assert!(!is_ulid("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"));
        assert!(!is_ulid("01JA2Z4K8Q3W7E5R9T1Y6V0H2U"));
        assert!(!is_ulid("01JA2Z4K8Q3W7E5R9T1Y6V0H2"));
    }

    #[test]
    fn conn_ids_round_trip_and_differ() {
        let a = ConnId::next();
        let b = ConnId::next();
        assert_ne!(a, b);
        assert_eq!(ConnId::parse(&a.to_string()), Some(a));
        assert_eq!(ConnId::parse("nope"), None);
    }

    #[test]
    fn secrets_are_alphanumeric() {
        let s = secret(20);
        assert_eq!(s.len(), 20);
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
