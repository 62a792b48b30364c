//! Wiring: builds the HTTP server and the background workers from settings, runs them until the
//! shutdown token fires, then drains in-flight requests and workers within the grace period.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, Service};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, App, HttpMessage, HttpServer};
use anyhow::Context;
use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing_actix_web::{RequestId, TracingLogger};

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::error::ApiError;
use crate::ingest::InboxWriter;
use crate::outbox::OutboxWorker;
use crate::processing::InboxProcessor;
use crate::routes;
use crate::store::Store;
use crate::supervisor::{Supervisor, WorkerFactory, WorkerRegistry};

/// Shared, read-only state handed to every handler.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub clock: SharedClock,
    pub inbox: InboxWriter,
    /// Woken after each inbox commit so processing starts at once.
    pub inbox_wake: Arc<tokio::sync::Notify>,
    /// Woken when processing queued CRM writes.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The supervised background workers' states (`/readyz`).
    pub workers: WorkerRegistry,
    /// Bytes all not-yet-verified webhook bodies may occupy together.
    pub body_budget: crate::ingest::body::BodyBudget,
    /// This replica's processing progress, when it runs processors (`/readyz`), and when it
    /// started watching it.
    pub processing: Option<(crate::processing::ProcessingHealth, crate::clock::Millis)>,
}

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    inbox_writers: Vec<tokio::task::JoinHandle<()>>,
    processor: InboxProcessor,
    outbox: OutboxWorker,
    run_workers: bool,
    extra_workers: Vec<(String, WorkerFactory)>,
}

impl Application {
    /// Bind the listener (port 0 picks a free one) and build the server; nothing runs until
    /// [`Application::run_until_stopped`].
    pub async fn build(
        settings: Settings,
        store: Store,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        Self::build_with(settings, store, clock, true).await
    }

    /// Like [`Application::build`]; with `run_workers = false` the background workers do not run
    /// and tests drive them step by step through [`Application::processor`].
    pub async fn build_with(
        settings: Settings,
        store: Store,
        clock: SharedClock,
        run_workers: bool,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(&settings.server.bind)
            .with_context(|| format!("could not listen on {}", settings.server.bind))?;
        let port = listener.local_addr()?.port();
        let settings = Arc::new(settings);
        if settings.ingest.discard_after_verify {
            tracing::warn!("ingest.discard_after_verify is on: webhooks are verified and DISCARDED (benchmark ceiling mode)");
        }
        let inbox_wake = Arc::new(tokio::sync::Notify::new());
        let (inbox, inbox_writers) =
            InboxWriter::start(store.clone(), &settings.ingest, inbox_wake.clone());
        let outbox_wake = Arc::new(tokio::sync::Notify::new());
        let processor = InboxProcessor::new(
            store.clone(),
            settings.clone(),
            clock.clone(),
            inbox_wake.clone(),
        )
        .notify_outbox(outbox_wake.clone());
        let outbox = OutboxWorker::new(
            store.clone(),
            settings.clone(),
            clock.clone(),
            inbox_wake.clone(),
        );
        let processing =
            (run_workers && settings.workers.enabled).then(|| (processor.health(), clock.now()));
        let state = web::Data::new(AppState {
            settings: settings.clone(),
            store,
            clock,
            inbox,
            inbox_wake,
            outbox_wake,
            metrics: crate::metrics::handle(),
            workers: WorkerRegistry::default(),
            body_budget: crate::ingest::body::BodyBudget::new(
                settings.server.unverified_body_budget_bytes,
            ),
            processing,
        });
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(64 * 1024)
                        .error_handler(|err, _| {
                            use actix_web::error::JsonPayloadError;
                            match err {
                        JsonPayloadError::Deserialize(e) if e.is_data() => {
                            ApiError::Unprocessable(format!("invalid request body: {e}")).into()
                        }
                        JsonPayloadError::OverflowKnownLength { limit, .. }
                        | JsonPayloadError::Overflow { limit } => {
                            ApiError::PayloadTooLarge(limit).into()
                        }
                        JsonPayloadError::ContentType => ApiError::BadRequest(
                            "send the request body as JSON (Content-Type: application/json)".into(),
                        )
                        .into(),
                        e => ApiError::BadRequest(format!("invalid JSON body: {e}")).into(),
                    }
                        }),
                )
                .app_data(web::QueryConfig::default().error_handler(|err, _| {
                    ApiError::Unprocessable(format!("invalid query parameters: {err}")).into()
                }))
                .configure(routes::configure)
                .default_service(web::to(|| async {
                    Err::<actix_web::HttpResponse, _>(ApiError::NotFound("no such route".into()))
                }))
                .wrap_fn(|req, srv| {
                    let request_id = req.extensions().get::<RequestId>().copied();
                    let response = srv.call(req);
                    async move {
                        let mut response = response.await?;
                        if let Some(id) = request_id {
                            if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
                                response
                                    .headers_mut()
                                    .insert(HeaderName::from_static("x-request-id"), value);
                            }
                        }
                        Ok(response)
                    }
                })
                .wrap(TracingLogger::<crate::telemetry::RedactedSpans>::new())
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_grace_secs)
        .listen(listener)?
        .run();
        Ok(Self {
            port,
            server,
            state,
            inbox_writers,
            run_workers: run_workers && settings.workers.enabled,
            processor,
            outbox,
            extra_workers: Vec::new(),
        })
    }

    /// Run one more background worker, supervised like the built-in ones (restarted with
    /// backoff, shown in `/readyz` and `worker_restarts_total`). It runs whenever the application
    /// runs, whatever `workers.enabled` says; tests use it to inject a worker that fails.
    pub fn add_worker<F, Fut>(&mut self, name: &str, mut make_worker: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let factory: WorkerFactory = Box::new(move |stop| Box::pin(make_worker(stop)));
        self.extra_workers.push((name.to_string(), factory));
    }

    /// The inbox processor, for driving it by hand (tests, `replay`).
    pub fn processor(&self) -> InboxProcessor {
        self.processor.clone()
    }

    /// The outbox worker, for driving it by hand (tests, `demo`).
    pub fn outbox(&self) -> OutboxWorker {
        self.outbox.clone()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serve until `shutdown` is cancelled (or the server fails), then stop gracefully.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let grace = Duration::from_secs(self.state.settings.server.shutdown_grace_secs);
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        let workers_stop = CancellationToken::new();
        let supervisor = Supervisor::new(
            self.state.workers.clone(),
            workers_stop.clone(),
            self.state.settings.workers.backoff(),
        );
        let mut workers = Vec::new();
        if self.run_workers {
            // Several processors share the partitions (PostgreSQL); one more task keeps the
            // backlog gauges current.
            let count = self.processor.processors();
            for i in 1..=count {
                let processor = self.processor.clone();
                let name = if count == 1 {
                    "inbox_processor".to_string()
                } else {
                    format!("inbox_processor_{i}")
                };
                workers.push(
                    supervisor.supervise(&name, move |stop| processor.clone().run(stop).map(Ok)),
                );
            }
            let reporter = self.processor.clone();
            workers.push(supervisor.supervise("backlog_gauges", move |stop| {
                reporter.clone().report_backlog(stop).map(Ok)
            }));
            let (outbox, wake) = (self.outbox.clone(), self.state.outbox_wake.clone());
            workers.push(supervisor.supervise("outbox_worker", move |stop| {
                outbox.clone().run(stop, wake.clone()).map(Ok)
            }));
            // Not the whole AppState: holding it would keep the inbox channel open at shutdown.
            let (store, settings, clock) = (
                self.state.store.clone(),
                self.state.settings.clone(),
                self.state.clock.clone(),
            );
            workers.push(supervisor.supervise("hold_timer", move |stop| {
                crate::rewards::engine::run_hold_timer(
                    store.clone(),
                    settings.clone(),
                    clock.clone(),
                    stop,
                )
                .map(Ok)
            }));
        }
        for (name, factory) in self.extra_workers {
            workers.push(supervisor.supervise(&name, factory));
        }
        let stopper = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                tracing::info!("shutting down: draining in-flight requests");
                handle.stop(true).await;
            })
        };
        let result = server.await.context("HTTP server task panicked")?;
        shutdown.cancel();
        let _ = tokio::time::timeout(grace, stopper).await;
        // The server's workers have dropped their state; dropping ours closes the inbox channel, so
        // the writers store what is queued and exit.
        let store = self.state.store.clone();
        drop(self.state);
        let writers = futures_util::future::join_all(self.inbox_writers);
        if tokio::time::timeout(grace, writers).await.is_err() {
            tracing::warn!("inbox writers did not finish within the grace period");
        }
        workers_stop.cancel();
        let all_stopped = futures_util::future::join_all(workers);
        if tokio::time::timeout(grace, all_stopped).await.is_err() {
            tracing::warn!("background workers did not stop within the grace period");
        }
        store.close().await;
        tracing::info!("stopped");
        result.context("HTTP server failed")
    }
}

/// Cancel `token` on SIGTERM or SIGINT.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("install SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("signal received");
        token.cancel();
    });
}
