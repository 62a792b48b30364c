//! Health (`/console/health`): the figures `/metrics` has, for people without Grafana. Backlogs
//! come from the database, so they are the deployment's whatever replica answers: processing
//! backlog and lag, the reconcile queue, CRM writes waiting and their age, dead letters, parked
//! events. Counters since start (CRM answers by status, 429s above all; retries; dead letters)
//! and background workers are this replica's, read from its own metrics registry.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use askama::Template;

use super::{Chrome, ConsoleUser, Section};
use crate::clock::{Millis, SECOND};
use crate::startup::AppState;
use crate::supervisor::WorkerState;
use crate::web::{format_count, format_stored_count, render, WebError};

/// One figure on the page.
pub struct Figure {
    pub id: &'static str,
    pub value: String,
    pub label: &'static str,
    /// `""`, `warn` or `bad`.
    pub tone: &'static str,
}

/// A counter of this replica, by label.
pub struct CounterRow {
    pub labels: String,
    pub value: String,
    pub tone: &'static str,
}

pub struct WorkerRow {
    pub name: String,
    pub state: String,
    pub tone: &'static str,
}

#[derive(Template)]
#[template(path = "console/templates/health.html")]
struct HealthPage {
    chrome: Chrome,
    figures: Vec<Figure>,
    crm_requests: Vec<CounterRow>,
    throttled: String,
    retries: Vec<CounterRow>,
    dead_letters: Vec<CounterRow>,
    processed: Vec<CounterRow>,
    workers: Vec<WorkerRow>,
}

/// `1 h 02 min`, `3 min 20 s`, `12 s`.
pub fn format_age(ms: Millis) -> String {
    let s = ms.max(0) / SECOND;
    match s {
        0..=59 => format!("{s} s"),
        60..=3_599 => format!("{} min {:02} s", s / 60, s % 60),
        3_600..=86_399 => format!("{} h {:02} min", s / 3_600, s % 3_600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// The samples of counter `name` in Prometheus text, by their label sets.
pub fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(inner) => {
                    let (labels, value) = inner.split_once('}')?;
                    (labels, value)
                }
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let labels = labels
                .split(',')
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                })
                .collect();
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

fn counter_rows(
    text: &str,
    name: &str,
    hot: impl Fn(&BTreeMap<String, String>) -> bool,
) -> Vec<CounterRow> {
    samples(text, name)
        .into_iter()
        .map(|(labels, value)| CounterRow {
            tone: if hot(&labels) && value > 0.0 {
                "bad"
            } else {
                ""
            },
            labels: labels
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(" · "),
            value: format_count(value.max(0.0).round() as u64),
        })
        .collect()
}

/// `GET /console/health`.
pub async fn get_health(
    user: ConsoleUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebError> {
    let store = &state.store;
    let now = state.clock.now();
    let (inbox_pending, oldest_received) = store.inbox_backlog().await?;
    let (rechecks, rechecks_failing) = store.reconcile_backlog().await?;
    let (outbox_depth, outbox_age) = store.outbox_backlog(now).await?;
    let deliveries = store.delivery_counts().await?;
    let (unmapped, failed) = store.parked_inbox_counts().await?;
    let tone = |bad: bool| if bad { "bad" } else { "" };
    let lag = oldest_received.map_or(0, |t| now - t);
    let figures = vec![
        Figure {
            id: "inbox-pending",
            value: format_stored_count(inbox_pending)?,
            label: "events waiting to be processed",
            tone: "",
        },
        Figure {
            id: "processing-lag",
            value: format_age(lag),
            label: "processing lag (oldest waiting event)",
            tone: if lag > 5 * 60 * SECOND { "warn" } else { "" },
        },
        Figure {
            id: "reconcile-queue",
            value: format_stored_count(rechecks)?,
            label: "rechecks in the reconcile queue",
            tone: "",
        },
        Figure {
            id: "reconcile-failing",
            value: format_stored_count(rechecks_failing)?,
            label: "rechecks failing",
            tone: tone(rechecks_failing > 0),
        },
        Figure {
            id: "outbox-depth",
            value: format_stored_count(outbox_depth)?,
            label: "CRM writes waiting",
            tone: "",
        },
        Figure {
            id: "outbox-age",
            value: format_age(outbox_age),
            label: "age of the oldest waiting CRM write",
            tone: if outbox_age > 15 * 60 * SECOND {
                "warn"
            } else {
                ""
            },
        },
        Figure {
            id: "outbox-retrying",
            value: format_stored_count(deliveries.retrying)?,
            label: "CRM writes retrying",
            tone: if deliveries.retrying > 0 { "warn" } else { "" },
        },
        Figure {
            id: "outbox-dead",
            value: format_stored_count(deliveries.dead)?,
            label: "dead CRM writes",
            tone: tone(deliveries.dead > 0),
        },
        Figure {
            id: "inbox-unmapped",
            value: format_stored_count(unmapped)?,
            label: "events parked as unmapped",
            tone: if unmapped > 0 { "warn" } else { "" },
        },
        Figure {
            id: "inbox-failed",
            value: format_stored_count(failed)?,
            label: "events that failed",
            tone: tone(failed > 0),
        },
    ];
    let metrics = state.metrics.render();
    let is_429 = |l: &BTreeMap<String, String>| l.get("status").is_some_and(|s| s == "429");
    let throttled: f64 = samples(&metrics, "crm_requests_total")
        .iter()
        .filter(|(labels, _)| is_429(labels))
        .map(|(_, v)| v)
        .sum();
    let workers = state
        .workers
        .states()
        .into_iter()
        .map(|(name, s)| {
            let (state, tone) = match s {
                WorkerState::Running => ("running".to_string(), ""),
                WorkerState::Down { restarts } => (
                    format!("down, restarting ({restarts} restarts so far)"),
                    "bad",
                ),
                WorkerState::Stopped => ("stopped".to_string(), "warn"),
            };
            WorkerRow { name, state, tone }
        })
        .collect();
    render(&HealthPage {
        chrome: Chrome::new(Section::Health, &user),
        figures,
        crm_requests: counter_rows(&metrics, "crm_requests_total", is_429),
        throttled: format_count(throttled.max(0.0).round() as u64),
        retries: counter_rows(&metrics, "outbox_retries_total", |_| false),
        dead_letters: counter_rows(&metrics, "outbox_dead_total", |_| true),
        processed: counter_rows(&metrics, "inbox_processed_total", |l| {
            l.get("status").is_some_and(|s| s == "failed")
        }),
        workers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_prometheus_text() {
        let text = "# TYPE crm_requests_total counter\n\
                    crm_requests_total{crm=\"hubspot\",status=\"200\"} 12\n\
                    crm_requests_total{crm=\"hubspot\",status=\"429\"} 3\n\
                    crm_requests_total_other 9\n\
                    reconcile_rechecks_total 4\n";
        let s = samples(text, "crm_requests_total");
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].0["status"], "429");
        assert_eq!(s[1].1, 3.0);
        assert_eq!(samples(text, "reconcile_rechecks_total")[0].1, 4.0);
        let rows = counter_rows(text, "crm_requests_total", |l| l["status"] == "429");
        assert_eq!(rows[1].labels, "crm hubspot · status 429");
        assert_eq!(rows[1].tone, "bad");
    }

    #[test]
    fn ages_read_in_the_largest_sensible_units() {
        assert_eq!(format_age(0), "0 s");
        assert_eq!(format_age(200 * SECOND), "3 min 20 s");
        assert_eq!(format_age(3_720 * SECOND), "1 h 02 min");
        assert_eq!(format_age(2 * 86_400 * SECOND + 3_600 * SECOND), "2 d 1 h");
    }
}
