//! The hostile-input catalogue: what a hostile sender (or a careless operator) sends, what the
//! service must answer, that nothing of it is stored, and that the service still answers
//! `/healthz` within 100 ms afterwards. One place, so a new attack is one more row.
//!
//! Requests that stall or declare more than they send go over a raw TCP connection; the rest
//! through reqwest.

use std::time::{Duration, Instant};

use base64::Engine;
use referral_sync::ingest::signature::{self, HubSpotVersion};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::both_backends;
use crate::support::senders::*;
use crate::support::{spawn_app_with, Backend, SpawnOptions, TestApp, T0};

/// Body deadline in the catalogue's app: short, so stalled senders are cut off quickly.
const DEADLINE_MS: u64 = 300;

async fn hostile_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, SpawnOptions::default(), |s| {
        configure(s);
        s.server.body_limit_bytes = 256 * 1024;
        s.server.unverified_body_budget_bytes = 1024 * 1024;
        s.server.body_read_timeout_ms = DEADLINE_MS;
    })
    .await
}

/// An answer read off the wire.
pub struct RawAnswer {
    pub status: u16,
    pub head: String,
    pub body: String,
    /// The server closed the connection after answering (read to EOF within 5 s).
    pub closed: bool,
}

/// Send `head` (request line and headers, without the blank line) and `body`, then keep the
/// connection open without sending anything more, as a stalled sender does.
pub async fn send_and_stall(port: u16, head: &str, body: &[u8]) -> RawAnswer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(format!("{head}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stream.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(answer) = complete_answer(&buf) {
                return answer;
            }
            let n = stream.read_buf(&mut buf).await.unwrap_or(0);
            assert!(
                n > 0,
                "connection closed without an answer: {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
    })
    .await
    .expect("an answer within 10 s");
    let mut rest = [0u8; 64];
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut rest)).await,
        Ok(Ok(0)) | Ok(Err(_))
    );
    RawAnswer { closed, ..answer }
}

fn complete_answer(buf: &[u8]) -> Option<RawAnswer> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    if body.len() < length {
        return None;
    }
    Some(RawAnswer {
        status: head.split(' ').nth(1)?.parse().ok()?,
        head: head.to_string(),
        body: body.to_string(),
        closed: false,
    })
}

/// A request head for `path` declaring `length` body bytes, with `headers`.
pub fn head(path: &str, length: usize, headers: &[(&str, String)]) -> String {
    let mut h = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {length}"
    );
    for (name, value) in headers {
        h.push_str(&format!("\r\n{name}: {value}"));
    }
    h
}

/// Well-formed HubSpot v3 headers with a fresh timestamp and a signature that matches nothing:
/// they pass every check that needs no body.
pub fn forged_v3_headers(now_ms: i64) -> Vec<(&'static str, String)> {
    vec![
        (
            "X-HubSpot-Signature-v3",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        ),
        ("X-HubSpot-Request-Timestamp", now_ms.to_string()),
    ]
}

/// A SOAP message whose `sObject` element carries `n` extra attributes.
fn soap_with_attributes(n: usize) -> String {
    let attributes: String = (0..n).map(|i| format!(" a{i}=\"\"")).collect();
    outbound_message(
        SF_ORG,
        &[(
            "04l7F000008aeAyQAI",
            "Opportunity",
            &[("Id", Some("0067F000003pmdWQAQ"))],
        )],
    )
    .replacen("<sObject ", &format!("<sObject{attributes} "), 1)
}

enum Request {
    Http(Box<reqwest::RequestBuilder>),
    Stalled { head: String, body: Vec<u8> },
}

struct Case {
    name: &'static str,
    request: Request,
    status: u16,
}

both_backends!(every_hostile_request_is_refused_stores_nothing_and_leaves_the_service_responsive);

async fn every_hostile_request_is_refused_stores_nothing_and_leaves_the_service_responsive(
    backend: Backend,
) {
    let Some(app) = hostile_app(backend).await else {
        return;
    };
    let megabyte = 1024 * 1024;
    let event =
        json!({"id": "evt_h", "type": "signup.created", "occurred_at": "2026-11-20T09:58:00Z",
                       "data": {"email": "ana@northwind.io", "market": "=HYPERLINK(\"http://x\")"}})
        .to_string();
    let signed = |body: &str, id: &str| {
        signature::sign_standard_webhooks(APP_SECRET, id, T0 / 1000, body.as_bytes()).unwrap()
    };
    let post_signed = |source: &str, body: String, headers: Vec<(String, String)>| {
        let mut req = app
            .client
            .post(app.url(&format!("/webhooks/signup/{source}")))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        Request::Http(Box::new(req))
    };
    let soap = |query: &str, content_type: &str, body: String| {
        Request::Http(Box::new(
            app.client
                .post(app.url(&format!("/webhooks/salesforce{query}")))
                .header("content-type", content_type)
                .body(body),
        ))
    };
    let token = format!("?token={SF_TOKEN}");
    let good_soap = outbound_message(
        SF_ORG,
        &[(
            "04l7F000008aeB0QAI",
            "Lead",
            &[("Id", Some("00Q7F00000AbcdeQAI"))],
        )],
    );
    let stale_headers = signature::sign_hubspot(
        HubSpotVersion::V3,
        HUBSPOT_SECRET,
        "POST",
        &hubspot_url(),
        b"[]",
        T0 - 600_000,
    );

    let cases = vec![
        Case {
            name: "unsigned HubSpot request declaring 1 MB, no body sent (refused on headers)",
            request: Request::Stalled {
                head: head("/webhooks/hubspot", megabyte, &[]),
                body: vec![],
            },
            status: 401,
        },
        Case {
            name: "HubSpot request with a stale timestamp, no body sent",
            request: Request::Stalled {
                head: head(
                    "/webhooks/hubspot",
                    1000,
                    &stale_headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.clone()))
                        .collect::<Vec<_>>(),
                ),
                body: vec![],
            },
            status: 401,
        },
        Case {
            name: "HubSpot request with a garbled signature, no body sent",
            request: Request::Stalled {
                head: head(
                    "/webhooks/hubspot",
                    1000,
                    &[
                        ("X-HubSpot-Signature-v3", "%%%not-base64".into()),
                        ("X-HubSpot-Request-Timestamp", T0.to_string()),
                    ],
                ),
                body: vec![],
            },
            status: 401,
        },
        Case {
            name: "product request without signature headers, no body sent",
            request: Request::Stalled {
                head: head("/webhooks/signup/app", 5000, &[]),
                body: vec![],
            },
            status: 401,
        },
        Case {
            name: "well-formed forged HubSpot headers, half the body, then a stall (deadline)",
            request: Request::Stalled {
                head: head("/webhooks/hubspot", 20_000, &forged_v3_headers(T0)),
                body: vec![b' '; 10_000],
            },
            status: 408,
        },
        Case {
            name: "a body declared larger than the limit",
            request: Request::Stalled {
                head: head("/webhooks/hubspot", 10 * megabyte, &forged_v3_headers(T0)),
                body: vec![],
            },
            status: 413,
        },
        Case {
            name: "SOAP element with 10,000 attributes",
            request: soap(&token, "text/xml", soap_with_attributes(10_000)),
            status: 400,
        },
        Case {
            name: "SOAP with the token twice, the right one last",
            request: soap(
                &format!("?token=wrong&token={SF_TOKEN}"),
                "text/xml",
                good_soap.clone(),
            ),
            status: 401,
        },
        Case {
            name: "SOAP with the token twice, the right one first",
            request: soap(
                &format!("?token={SF_TOKEN}&token=wrong"),
                "text/xml",
                good_soap.clone(),
            ),
            status: 401,
        },
        Case {
            name: "SOAP from an 18-character org id with the allowed prefix but a wrong checksum",
            request: soap(
                &token,
                "text/xml",
                good_soap.replace(SF_ORG, &format!("{}AAA", &SF_ORG[..15])),
            ),
            status: 400,
        },
        Case {
            name: "SOAP sent as Application/JSON is treated as JSON (and is unsigned)",
            request: soap(&token, "Application/JSON", good_soap.clone()),
            status: 401,
        },
        Case {
            name: "product event whose market is a spreadsheet formula",
            request: post_signed("app", event.clone(), signed(&event, "msg_h1")),
            status: 422,
        },
        Case {
            name: "unknown product source whose name forges a log line",
            request: Request::Http(Box::new(
                app.client
                    .post(
                        app.url("/webhooks/signup/x%0A2026-11-20T10:00:00Z%20INFO%20forged%1B[2J"),
                    )
                    .body("{}"),
            )),
            status: 404,
        },
        Case {
            name: "GET on a webhook path",
            request: Request::Http(Box::new(app.client.get(app.url("/webhooks/hubspot")))),
            status: 405,
        },
    ];

    for case in cases {
        let status = match case.request {
            Request::Http(req) => req.send().await.unwrap().status().as_u16(),
            Request::Stalled { head, body } => send_and_stall(app.port, &head, &body).await.status,
        };
        assert_eq!(status, case.status, "{}", case.name);
        let started = Instant::now();
        let health = app.get("/healthz").await;
        let took = started.elapsed();
        assert_eq!(health.status(), 200, "{}", case.name);
        assert!(
            took < Duration::from_millis(100),
            "{}: /healthz took {took:?}",
            case.name
        );
        assert_eq!(
            app.store.count_inbox(None).await.unwrap(),
            0,
            "{}: nothing stored",
            case.name
        );
    }
}

both_backends!(
    a_sender_that_stalls_mid_body_is_answered_408_and_disconnected,
    bodies_beyond_the_unverified_budget_are_refused_with_503_and_retry_after,
);

async fn a_sender_that_stalls_mid_body_is_answered_408_and_disconnected(backend: Backend) {
    let Some(app) = hostile_app(backend).await else {
        return;
    };

    let answer = send_and_stall(
        app.port,
        &head("/webhooks/hubspot", 50_000, &forged_v3_headers(T0)),
        &[b' '; 20_000],
    )
    .await;

    assert_eq!(answer.status, 408, "{}", answer.head);
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout");
    assert!(answer.closed, "the stalled connection is closed");
    assert_eq!(app.body_budget.in_use(), 0, "its bytes are given back");
    assert_eq!(app.store.count_inbox(None).await.unwrap(), 0);
}

async fn bodies_beyond_the_unverified_budget_are_refused_with_503_and_retry_after(
    backend: Backend,
) {
    let Some(app) = spawn_app_with(backend, SpawnOptions::default(), |s| {
        configure(s);
        s.server.body_limit_bytes = 64 * 1024;
        s.server.unverified_body_budget_bytes = 64 * 1024;
        s.server.body_read_timeout_ms = 3_000;
    })
    .await
    else {
        return;
    };
    // A stalled sender holds 60 KB of the 64 KB budget until its deadline.
    let port = app.port;
    let hog = tokio::spawn(async move {
        send_and_stall(
            port,
            &head("/webhooks/hubspot", 60_000, &forged_v3_headers(T0)),
            b"[",
        )
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.body_budget.in_use() < 60_000 {
        assert!(
            Instant::now() < deadline,
            "the first body was never reserved"
        );
        tokio::task::yield_now().await;
    }

    let refused = send_and_stall(
        app.port,
        &head("/webhooks/hubspot", 10_000, &forged_v3_headers(T0)),
        &[],
    )
    .await;

    assert_eq!(refused.status, 503, "{}", refused.head);
    assert!(
        refused.head.to_ascii_lowercase().contains("retry-after: 5"),
        "{}",
        refused.head
    );
    let body: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    // Once the stalled sender is cut off, its share is back and real senders get through.
    assert_eq!(hog.await.unwrap().status, 408);
    assert_eq!(app.body_budget.in_use(), 0);
    app.hubspot(json!([hubspot_event(
        1,
        "contact.creation",
        1,
        T0,
        json!({})
    )]))
    .await;
    assert_eq!(app.store.count_inbox(None).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_soap_parse_does_not_hold_up_health_checks() {
    // Limits raised far past their defaults so one message takes seconds to parse; the single
    // HTTP worker of the test app must still answer /healthz meanwhile.
    let app = spawn_app_with(Backend::Sqlite, SpawnOptions::default(), |s| {
        configure(s);
        s.server.body_limit_bytes = 4 * 1024 * 1024;
        s.server.unverified_body_budget_bytes = 4 * 1024 * 1024;
        s.ingest.xml_max_attributes = 1_000_000;
    })
    .await
    .unwrap();
    let request = app
        .client
        .post(app.url(&format!("/webhooks/salesforce?token={SF_TOKEN}")))
        .header("content-type", "text/xml")
        .body(soap_with_attributes(40_000));
    let started = Instant::now();
    let post = tokio::spawn(async move { request.send().await.unwrap().status().as_u16() });

    let mut slowest = Duration::ZERO;
    let mut checks = 0;
    while !post.is_finished() {
        let asked = Instant::now();
        assert_eq!(app.get("/healthz").await.status(), 200);
        slowest = slowest.max(asked.elapsed());
        checks += 1;
    }
    let parse_took = started.elapsed();

    assert_eq!(post.await.unwrap(), 200);
    assert!(
        parse_took > Duration::from_millis(500),
        "the message was slow enough to matter ({parse_took:?})"
    );
    assert!(checks > 1);
    assert!(
        slowest < Duration::from_millis(250),
        "/healthz took {slowest:?} while a {parse_took:?} parse ran"
    );
}
