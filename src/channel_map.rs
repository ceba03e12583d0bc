//! Per-channel state of one connection, by channel name: the core's
//! subscriptions of a connection and the front ends' session state.

use std::borrow::Borrow;

/// Entries up to which the vector grows by one at a time.
const EXACT_UP_TO: usize = 8;

/// Per-channel values of one session, by channel name. A vector, not a
/// `HashMap`: a hash map's smallest table holds four entries (340 bytes
/// for a Hotsock subscription) where most connections have one or two
/// subscriptions; the number is capped (`--max-channels-per-connection`),
/// so a lookup stays short.
#[derive(Debug)]
pub struct ChannelMap<V, K = String>(Vec<(K, V)>);

impl<V, K> Default for ChannelMap<V, K> {
    fn default() -> Self {
        ChannelMap(Vec::new())
    }
}

impl<V, K: Borrow<str>> ChannelMap<V, K> {
    /// True if `channel` has a value.
    pub fn contains_key(&self, channel: &str) -> bool {
        self.get(channel).is_some()
    }

    /// The value of `channel`.
    pub fn get(&self, channel: &str) -> Option<&V> {
        self.0
            .iter()
            .find(|(c, _)| c.borrow() == channel)
            .map(|(_, v)| v)
    }

    /// The value of `channel`, to change.
    pub fn get_mut(&mut self, channel: &str) -> Option<&mut V> {
        self.0
            .iter_mut()
            .find(|(c, _)| c.borrow() == channel)
            .map(|(_, v)| v)
    }

    /// Adds or replaces the value of `channel`: one entry at a time while
    /// there are few (most connections), doubling beyond, so that a server
    /// allowing thousands of channels per connection stays linear.
    pub fn insert(&mut self, channel: K, value: V) {
        match self.get_mut(channel.borrow()) {
            Some(existing) => *existing = value,
            None => {
                if self.0.len() < EXACT_UP_TO {
                    self.0.reserve_exact(1);
                }
                self.0.push((channel, value));
            }
        }
    }

    /// Removes the value of `channel`, and returns it.
    pub fn remove(&mut self, channel: &str) -> Option<V> {
        let at = self.0.iter().position(|(c, _)| c.borrow() == channel)?;
        Some(self.0.swap_remove(at).1)
    }

    /// The channels.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.0.iter().map(|(c, _)| c)
    }

    /// Every channel and its value.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(c, v)| (c, v))
    }

    /// How many channels have a value.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if no channel has a value.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every value, to change.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.0.iter_mut().map(|(_, v)| v)
    }

    /// Forgets every channel, and the memory they took.
    pub fn clear(&mut self) {
        self.0 = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_one_value_per_channel() {
        let mut map = ChannelMap::default();
        map.insert("a".to_string(), 1);
        map.insert("b".to_string(), 2);
        map.insert("a".to_string(), 3);
        assert_eq!(map.get("a"), Some(&3));
        assert!(map.contains_key("b"));
        *map.get_mut("b").unwrap() += 10;
        assert_eq!(map.values_mut().map(|v| *v).sum::<i32>(), 15);
        assert_eq!(map.remove("a"), Some(3));
        assert_eq!(map.remove("a"), None);
        map.clear();
        assert!(!map.contains_key("b"));
    }
}
