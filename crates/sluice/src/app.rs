//! Wiring: the router with its layers, and starting/stopping a process's API, worker and
//! upkeep. The top of the program: nothing below imports it.

use crate::actions::{ActionConfig, Actions};
use crate::api;
use crate::auth::keyring::KeyRing;
use crate::auth::{access, AuthMode};
use crate::bus::Bus;
use crate::config::Settings;
use crate::serve::HttpService;
use crate::state::{self, AppState};
use crate::traces::{self, KeyValue, SpanKind, TraceSpan};
use crate::worker::WorkerConfig;
use anyhow::Context;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Which parts a process runs: `serve` both, `api` and `worker` one each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    pub worker: bool,
}

impl Roles {
    pub const SERVE: Roles = Roles {
        api: true,
        worker: true,
    };
    pub const API: Roles = Roles {
        api: true,
        worker: false,
    };
    pub const WORKER: Roles = Roles {
        api: false,
        worker: true,
    };
}

/// Every route of the HTTP API, with request ids, tracing, metrics, CORS and the body limit.
pub fn router(state: AppState) -> impl HttpService {
    let cors = cors_layer(state.settings.cors_origin.as_deref());
    let gate = access::Gate {
        mode: state.settings.auth,
        keys: state.keys.clone(),
        store: state.store.clone(),
    };
    let checks = Arc::new(Checks {
        site: api::site::SitePolicy::new(
            state.settings.allowed_hosts.as_deref(),
            state.settings.host,
            state.settings.cors_origin.as_deref(),
        ),
        gate: gate.clone(),
    });
    let api = Router::new()
        .route(
            "/events",
            post(api::events::create_event).get(api::events::list_events),
        )
        .route("/events/batch", post(api::events::create_batch))
        .route("/events/stats", get(api::events::event_stats))
        .route("/events/{id}", get(api::events::get_event))
        .route("/events/{id}/attempts", get(api::events::list_attempts))
        .route(
            "/events/{id}/executions/{execution_id}/explain",
            get(api::events::explain_execution),
        )
        .route("/events/{id}/replay", post(api::replay::replay_event))
        .route("/events/{id}/cancel", post(api::replay::cancel_event))
        .route("/events/replay-batch", post(api::replay::replay_batch))
        .route("/events/requeue-stuck", post(api::replay::requeue_stuck))
        .route(
            "/rules",
            post(api::rules::create_rule).get(api::rules::list_rules),
        )
        .route("/rules/test", post(api::rules::test_rule))
        .route(
            "/rules/{id}",
            get(api::rules::get_rule)
                .put(api::rules::update_rule)
                .delete(api::rules::delete_rule),
        )
        .route("/rules/{id}/versions", get(api::rules::list_versions))
        .route(
            "/api-keys",
            post(api::keys::create_key).get(api::keys::list_keys),
        )
        .route("/api-keys/{id}", delete(api::keys::revoke_key))
        .route("/event-types", get(api::event_types::list_event_types))
        .route(
            "/event-types/{event_type}",
            get(api::event_types::get_event_type).put(api::event_types::update_event_type),
        )
        .route("/sources", get(api::sources::list_sources))
        .route(
            "/sources/{name}",
            get(api::sources::get_source)
                .put(api::sources::put_source)
                .delete(api::sources::delete_source),
        )
        .route("/sources/{name}/events", post(api::sources::receive))
        .route("/targets", get(api::targets::list_targets))
        .route("/targets/pause", post(api::targets::pause_target))
        .route("/targets/resume", post(api::targets::resume_target))
        .route("/targets/{target}", put(api::targets::change_target))
        .route("/ws", get(api::ws::live))
        .route("/health", get(api::ops::health))
        .route("/ready", get(api::ops::ready))
        .route("/metrics", get(api::ops::metrics))
        .route("/api-docs.json", get(api::openapi::serve_spec))
        .route("/", get(crate::console::to_console))
        .merge(crate::console::router(gate.clone()))
        .fallback(api::not_found)
        .layer(middleware::from_fn_with_state(checks, checkpoint))
        .with_state(state);
    // What needs no route goes around the router rather than through `Router::layer`, which
    // wraps every route in each layer and clones the whole stack for each request. The
    // span's `route` is filled in by `checkpoint`, once the router has matched it.
    ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .map_response(|response: axum::http::Response<_>| response.map(axum::body::Body::new))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let request_id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!(
                    "http",
                    method = %request.method(),
                    route = tracing::field::Empty,
                    request_id
                )
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .option_layer(cors)
        .layer(DefaultBodyLimit::max(api::extract::MAX_BODY_BYTES))
        .service(api)
}

fn cors_layer(origin: Option<&str>) -> Option<CorsLayer> {
    let origin = origin?;
    let allow = if origin == "*" {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origin
                .split(',')
                .filter_map(|o| HeaderValue::from_str(o.trim()).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                axum::http::header::CONTENT_TYPE,
                axum::http::header::AUTHORIZATION,
                HeaderName::from_static("x-api-key"),
            ]),
    )
}

/// What every request's checks need.
struct Checks {
    site: api::site::SitePolicy,
    gate: access::Gate,
}

/// Every request passes here before its handler: timed and counted for `/metrics` around it
/// all, then the site policy (`api::site`: allowed hosts, no writes from other sites' pages),
/// then access control (`auth::access`). One middleware rather than one per concern: axum
/// wraps each route in each layer, and a middleware function clones every service below it
/// for each request — three of them made 45 allocations a request.
async fn checkpoint(State(checks): State<Arc<Checks>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    tracing::Span::current().record("route", route.as_str());
    let method = request.method().to_string();
    let started = Instant::now();
    let mut span = request_span(&request, &route);
    let response = match api::site::refusal(&checks.site, &request) {
        Some(refused) => refused,
        None => {
            let mut response = traces::in_span!(span, access::guard(&checks.gate, request, next));
            api::site::harden(&mut response);
            response
        }
    };
    span.set(|| {
        KeyValue::new(
            "http.response.status_code",
            i64::from(response.status().as_u16()),
        )
    });
    if response.status().is_server_error() {
        span.fail(response.status().as_str());
    }
    let status = response.status().as_u16().to_string();
    metrics::counter!("sluice_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("sluice_http_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The span of one request, continuing the caller's trace (its `traceparent` header); what
/// it ingests is stored with it. None, and nothing read, while traces are off.
fn request_span(request: &Request, route: &str) -> TraceSpan {
    if !traces::on() {
        return TraceSpan::none();
    }
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok());
    let method = request.method().as_str();
    TraceSpan::continuing(
        traceparent,
        || format!("{method} {route}"),
        SpanKind::Server,
        || {
            [
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("http.route", route.to_owned()),
                KeyValue::new("url.path", request.uri().path().to_owned()),
            ]
        },
    )
}

/// A running sluice: its address, and how to stop it.
pub struct RunningApp {
    /// Where the API listens (`None` for a worker-only process).
    pub addr: Option<SocketAddr>,
    pub state: AppState,
    shutdown: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
    worker: Option<JoinHandle<()>>,
    consumers: Option<JoinHandle<()>>,
    key_refresh: Option<JoinHandle<()>>,
    upkeep: JoinHandle<()>,
}

impl RunningApp {
    /// Opens the store, migrates it, and starts the API (listening) and/or the worker (with the
    /// consumers of broker sources).
    pub async fn start(settings: Settings, roles: Roles) -> anyhow::Result<RunningApp> {
        let store =
            sluice_store::connect(&settings.database_url, settings.database_max_connections)
                .await
                .with_context(|| {
                    format!(
                        "cannot open the database at {}",
                        sluice_store::redact_url(&settings.database_url)
                    )
                })?;
        store.migrate().await.context("cannot apply migrations")?;
        let bus = Bus::start(store.clone())
            .await
            .context("cannot listen for notifications")?;
        let actions = Actions::new(ActionConfig::from_settings(&settings))
            .context("invalid action configuration")?;
        let worker_config = WorkerConfig::from_settings(&settings);
        let shutdown = CancellationToken::new();
        let keys = if roles.api && settings.auth == AuthMode::ApiKey {
            Some(
                KeyRing::load(store.clone())
                    .await
                    .context("cannot read the API keys")?,
            )
        } else {
            None
        };
        if keys.as_ref().is_some_and(|k| k.usable() == 0) {
            tracing::warn!(
                "AUTH=api_key and no API key exists yet: every request will be refused; \
                 create one with `sluice keys create --name ops --scopes admin`"
            );
        }
        let key_refresh = keys.as_ref().map(|k| k.spawn_refresh(shutdown.clone()));
        if roles.api && settings.auth == AuthMode::None && !settings.host.is_loopback() {
            tracing::warn!(
                host = %settings.host,
                "AUTH=none on a non-loopback address: anyone who can reach this port can change \
                 rules, replay events and send webhooks; set AUTH=api_key (see `sluice keys`)"
            );
        }
        let (addr, server, state) = if roles.api {
            if let Err(error) = store.prepare_ingest().await {
                tracing::warn!(error = %error, "cannot prepare the ingest connections yet");
            }
            let listener = tokio::net::TcpListener::bind((settings.host, settings.port))
                .await
                .with_context(|| format!("cannot listen on {}:{}", settings.host, settings.port))?;
            let addr = listener.local_addr()?;
            let state = state::build(store.clone(), bus.clone(), settings, keys).await;
            let header_timeout = Duration::from_secs(state.settings.header_timeout_secs);
            let server = tokio::spawn(crate::serve::serve(
                listener,
                router(state.clone()),
                header_timeout,
                shutdown.clone(),
            ));
            (Some(addr), Some(server), state)
        } else {
            (
                None,
                None,
                state::build(store.clone(), bus.clone(), settings, None).await,
            )
        };
        let upkeep =
            crate::upkeep::spawn(store.clone(), state.settings.retention, shutdown.clone());
        let consumers = roles
            .worker
            .then(|| crate::consumers::spawn(state.clone(), shutdown.clone()));
        let worker = roles
            .worker
            .then(|| crate::worker::spawn(store, bus, actions, worker_config, shutdown.clone()));
        Ok(RunningApp {
            addr,
            state,
            shutdown,
            server,
            worker,
            consumers,
            key_refresh,
            upkeep,
        })
    }

    /// Stops accepting requests and claiming events, lets in-flight work finish, and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(server) = self.server {
            server.await??;
        }
        if let Some(consumers) = self.consumers {
            consumers.await?;
        }
        if let Some(worker) = self.worker {
            worker.await?;
        }
        if let Some(refresh) = self.key_refresh {
            refresh.await?;
        }
        self.upkeep.await?;
        Ok(())
    }

    /// Serves until SIGTERM or ctrl-c, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.stop().await
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
