//! Client-side rate limiting per CRM account, as a rolling window — the rule HubSpot applies
//! ("N requests per rolling 10 seconds"). A token bucket would let up to twice the limit through in
//! one rolling window; a log of recent request times never exceeds it. Beyond a short burst (a tenth
//! of the limit), requests are also spaced window/limit apart: under steady load a burst would spend the
//! window in a second and then make every write wait for it to roll, while even spacing lets each
//! call carry what accumulated meanwhile (larger batches, bounded latency). Time is the injected clock, so tests never sleep.

use std::collections::{HashMap, VecDeque};

use crate::clock::Millis;

pub struct RollingLimiter {
    window: Millis,
    limit: usize,
    spacing: Millis,
    sent: HashMap<String, VecDeque<Millis>>,
}

impl RollingLimiter {
    pub fn new(limit: u32, window: Millis) -> Self {
        let limit = limit.max(1) as usize;
        Self {
            window,
            limit,
            spacing: window / limit as Millis,
            sent: HashMap::new(),
        }
    }

    /// Take a slot for `key` at `now`, or say when the next one frees up.
    pub fn try_acquire(&mut self, key: &str, now: Millis) -> Result<(), Millis> {
        let log = self.sent.entry(key.to_string()).or_default();
        while log.front().is_some_and(|t| *t <= now - self.window) {
            log.pop_front();
        }
        if log.len() >= self.limit {
            return Err(log.front().copied().unwrap_or(now) + self.window + 1);
        }
        // A short burst passes at once (a handful of writes goes out immediately); beyond it,
        // calls are paced.
        if log.len() >= (self.limit / 10).max(1) {
            if let Some(last) = log.back() {
                if now < last + self.spacing {
                    return Err(last + self.spacing);
                }
            }
        }
        log.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_the_limit_in_any_rolling_window() {
        let mut l = RollingLimiter::new(3, 9_000);
        assert!(l.try_acquire("a", 0).is_ok());
        assert!(l.try_acquire("a", 3_000).is_ok());
        assert!(l.try_acquire("a", 6_000).is_ok());
        assert_eq!(
            l.try_acquire("a", 8_500),
            Err(9_001),
            "the fourth waits for the first to age out"
        );
        assert!(
            l.try_acquire("b", 8_500).is_ok(),
            "accounts are limited separately"
        );
        assert!(l.try_acquire("a", 9_001).is_ok());
        assert!(l.try_acquire("a", 12_100).is_ok());
        assert!(
            l.try_acquire("a", 14_000).is_err(),
            "6000, 9001, 12100 are still in the window"
        );
    }

    #[test]
    fn light_use_passes_at_once_and_heavy_use_is_paced() {
        let mut l = RollingLimiter::new(100, 10_000);
        for _ in 0..10 {
            assert!(l.try_acquire("a", 0).is_ok(), "a short burst is not paced");
        }
        assert_eq!(
            l.try_acquire("a", 50),
            Err(100),
            "then at most one per window/limit"
        );
        assert!(l.try_acquire("a", 100).is_ok());
        assert!(l.try_acquire("a", 150).is_err());
    }
}
