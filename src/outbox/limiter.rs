//! Client-side rate limiting per CRM account, as a rolling window — the rule HubSpot applies
//! ("N requests per rolling 10 seconds"). A token bucket would let up to twice the limit through in
//! one rolling window; a log of recent request times never exceeds it. Time is the injected clock,
//! so tests drain a backlog without sleeping.

use std::collections::{HashMap, VecDeque};

use crate::clock::Millis;

pub struct RollingLimiter {
    window: Millis,
    limit: usize,
    sent: HashMap<String, VecDeque<Millis>>,
}

impl RollingLimiter {
    pub fn new(limit: u32, window: Millis) -> Self {
        Self {
            window,
            limit: limit.max(1) as usize,
            sent: HashMap::new(),
        }
    }

    /// Take a slot for `key` at `now`, or say when the next one frees up.
    pub fn try_acquire(&mut self, key: &str, now: Millis) -> Result<(), Millis> {
        let log = self.sent.entry(key.to_string()).or_default();
        while log.front().is_some_and(|t| *t <= now - self.window) {
            log.pop_front();
        }
        if log.len() < self.limit {
            log.push_back(now);
            Ok(())
        } else {
            Err(log.front().copied().unwrap_or(now) + self.window + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_the_limit_in_any_rolling_window() {
        let mut l = RollingLimiter::new(3, 10_000);
        assert!(l.try_acquire("a", 0).is_ok());
        assert!(l.try_acquire("a", 1_000).is_ok());
        assert!(l.try_acquire("a", 9_000).is_ok());
        assert_eq!(
            l.try_acquire("a", 9_500),
            Err(10_001),
            "the fourth waits for the first to age out"
        );
        assert!(
            l.try_acquire("b", 9_500).is_ok(),
            "accounts are limited separately"
        );
        assert!(l.try_acquire("a", 10_001).is_ok());
        assert!(
            l.try_acquire("a", 10_500).is_err(),
            "1000, 9000, 10001 are still in the window"
        );
    }
}
