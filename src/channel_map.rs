//! A front end session's per-channel state, by channel name.

/// Per-channel values of one session, by channel name. A vector, not a
/// `HashMap`: a hash map's smallest table holds four entries (340 bytes
/// for a Hotsock subscription) where most connections have one or two
/// subscriptions; the number is capped (`--max-channels-per-connection`),
/// so a lookup stays short.
#[derive(Debug)]
pub struct ChannelMap<V>(Vec<(String, V)>);

impl<V> Default for ChannelMap<V> {
    fn default() -> Self {
        ChannelMap(Vec::new())
    }
}

impl<V> ChannelMap<V> {
    /// True if `channel` has a value.
    pub fn contains_key(&self, channel: &str) -> bool {
        self.get(channel).is_some()
    }

    /// The value of `channel`.
    pub fn get(&self, channel: &str) -> Option<&V> {
        self.0.iter().find(|(c, _)| c == channel).map(|(_, v)| v)
    }

    /// The value of `channel`, to change.
    pub fn get_mut(&mut self, channel: &str) -> Option<&mut V> {
        self.0
            .iter_mut()
            .find(|(c, _)| c == channel)
            .map(|(_, v)| v)
    }

    /// Adds or replaces the value of `channel`, growing by one entry at a
    /// time.
    pub fn insert(&mut self, channel: String, value: V) {
        match self.get_mut(&channel) {
            Some(existing) => *existing = value,
            None => {
                self.0.reserve_exact(1);
                self.0.push((channel, value));
            }
        }
    }

    /// Removes the value of `channel`, and returns it.
    pub fn remove(&mut self, channel: &str) -> Option<V> {
        let at = self.0.iter().position(|(c, _)| c == channel)?;
        Some(self.0.swap_remove(at).1)
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
