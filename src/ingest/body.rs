//! Reading a webhook body before its signature can be checked. The sender is not authenticated
//! yet, so everything it can make the service hold is bounded:
//!
//! - size: at most `server.body_limit_bytes` (413), refused up front when `Content-Length` says so;
//! - time: the whole body within `server.body_read_timeout_ms` (408), so a sender that stalls
//!   mid-body is cut off instead of pinning its buffer;
//! - memory over all requests: bytes buffered for not-yet-verified bodies come out of one
//!   [`BodyBudget`] (`server.unverified_body_budget_bytes`); a request that would overdraw it is
//!   refused with 503 + `Retry-After`, which every sender retries. The caller holds the
//!   [`Reservation`] until the signature is verified, then drops it.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a body was not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("request body is larger than the {0}-byte limit")]
    TooLarge(usize),
    #[error("the request body did not arrive within {0} ms")]
    TimedOut(u64),
    #[error("too many request bodies are being received right now; retry later")]
    Overloaded,
    #[error("could not read the body: {0}")]
    Unreadable(String),
}

/// The bytes all unverified bodies may occupy together. Cloning shares the budget.
#[derive(Clone)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    capacity: usize,
}

impl BodyBudget {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.min(Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    /// Bytes currently reserved.
    pub fn in_use(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    fn reserve(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            permit: None,
        }
    }
}

/// Bytes reserved for one body; given back when dropped.
pub struct Reservation {
    budget: BodyBudget,
    permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    fn held(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Hold at least `bytes` in total, without waiting: the budget is full or it is not.
    fn cover(&mut self, bytes: usize) -> Result<(), BodyError> {
        let more = bytes.saturating_sub(self.held());
        if more == 0 {
            return Ok(());
        }
        let more = u32::try_from(more).map_err(|_| BodyError::Overloaded)?;
        let permit = self
            .budget
            .permits
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| BodyError::Overloaded)?;
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        metrics::gauge!("webhook_unverified_body_bytes").set(self.budget.in_use() as f64);
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            drop(permit);
            metrics::gauge!("webhook_unverified_body_bytes").set(self.budget.in_use() as f64);
        }
    }
}

/// How much of a body to accept, and for how long to wait for it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub deadline: Duration,
}

/// Reads `chunks` into one buffer within `limits`, reserving from `budget` as bytes arrive (all of
/// `declared` up front when the sender announced a length). Returns the body and its reservation.
pub async fn read_body<S, E>(
    mut chunks: S,
    declared: Option<usize>,
    limits: BodyLimits,
    budget: &BodyBudget,
) -> Result<(Bytes, Reservation), BodyError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    if declared.is_some_and(|n| n > limits.max_bytes) {
        return Err(BodyError::TooLarge(limits.max_bytes));
    }
    let mut reservation = budget.reserve();
    reservation.cover(declared.unwrap_or(0))?;
    let read = async {
        let mut body = BytesMut::with_capacity(declared.unwrap_or(4096).min(limits.max_bytes));
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| BodyError::Unreadable(e.to_string()))?;
            if body.len() + chunk.len() > limits.max_bytes {
                return Err(BodyError::TooLarge(limits.max_bytes));
            }
            reservation.cover(body.len() + chunk.len())?;
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    let body = tokio::time::timeout(limits.deadline, read)
        .await
        .map_err(|_| BodyError::TimedOut(limits.deadline.as_millis() as u64))??;
    Ok((body, reservation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    const LIMITS: BodyLimits = BodyLimits {
        max_bytes: 100,
        deadline: Duration::from_secs(5),
    };

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn a_body_is_read_and_its_bytes_are_held_until_the_reservation_is_dropped() {
        let budget = BodyBudget::new(1000);
        let (body, reservation) = read_body(chunks(&[b"ab", b"cd"]), None, LIMITS, &budget)
            .await
            .unwrap();
        assert_eq!(&body[..], b"abcd");
        assert_eq!(budget.in_use(), 4);
        drop(reservation);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn the_declared_length_is_reserved_and_checked_before_reading() {
        let budget = BodyBudget::new(50);
        let over_limit = read_body(chunks(&[]), Some(101), LIMITS, &budget).await;
        assert!(matches!(over_limit, Err(BodyError::TooLarge(100))));
        let over_budget = read_body(chunks(&[]), Some(60), LIMITS, &budget).await;
        assert!(matches!(over_budget, Err(BodyError::Overloaded)));
        assert_eq!(budget.in_use(), 0, "nothing stays reserved after a refusal");
    }

    #[tokio::test]
    async fn a_body_that_outgrows_the_budget_is_refused() {
        let budget = BodyBudget::new(5);
        let (_held, _reservation) = read_body(chunks(&[b"abc"]), None, LIMITS, &budget)
            .await
            .unwrap();
        let refused = read_body(chunks(&[b"ab", b"c"]), None, LIMITS, &budget).await;
        assert!(matches!(refused, Err(BodyError::Overloaded)));
        assert_eq!(budget.in_use(), 3);
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let budget = BodyBudget::new(1000);
        let stalled =
            stream::iter([Ok::<_, String>(Bytes::from_static(b"ab"))]).chain(stream::pending());
        let limits = BodyLimits {
            deadline: Duration::from_millis(20),
            ..LIMITS
        };
        let got = read_body(Box::pin(stalled), Some(10), limits, &budget).await;
        assert!(matches!(got, Err(BodyError::TimedOut(20))));
        assert_eq!(budget.in_use(), 0);
    }
}
