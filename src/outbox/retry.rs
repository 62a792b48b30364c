//! When to try a failed CRM write again: the configured schedule (reaching past 24 hours), never
//! sooner than the CRM asked (`Retry-After`, HubSpot's rate-limit window), ±20% jitter so a fleet
//! of writes doesn't return in lockstep. `None` means the schedule is exhausted: dead-letter it.

use std::time::Duration;

use crate::clock::Millis;

pub fn next_delay(
    schedule_secs: &[u64],
    attempt: usize,
    asked: Option<Duration>,
    jitter_seed: u64,
) -> Option<Millis> {
    let base = *schedule_secs.get(attempt)? as f64 * 1000.0;
    // Deterministic per seed, uniform enough in [0.8, 1.2).
    let jitter = 0.8 + (jitter_seed % 4001) as f64 / 10_000.0;
    let delay = (base * jitter) as Millis;
    let asked = asked.map_or(0, |d| d.as_millis() as Millis);
    Some(delay.max(asked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_schedule_with_jitter_honours_the_crm_and_ends() {
        let schedule = [10, 60];
        let first = next_delay(&schedule, 0, None, 0).unwrap();
        let jittered = next_delay(&schedule, 0, None, 4000).unwrap();
        assert_eq!(first, 8_000, "-20%");
        assert_eq!(jittered, 12_000, "+20%");
        assert_eq!(
            next_delay(&schedule, 0, Some(Duration::from_secs(3600)), 0),
            Some(3_600_000),
            "the CRM's hint wins when longer"
        );
        assert_eq!(
            next_delay(&schedule, 2, None, 0),
            None,
            "schedule exhausted"
        );
    }
}
