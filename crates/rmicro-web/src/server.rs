//! The dashboard's HTTP side: pages, their event streams, the call form's API and
//! the two assets, all behind the access check and with headers that keep the
//! pages to their own origin (a `Content-Security-Policy` with no inline script,
//! no framing, no MIME sniffing).

use crate::access;
use crate::call::{self, CallRequest};
use crate::fleet::{self, Fleet};
use crate::fragments::{self, Fragments};
use crate::scrape::now_ms;
use crate::{Options, Task, hystrix, pages, scrape};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::Stream;
use rmicro::registry::SharedRegistry;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the call form posts.
pub(crate) const CALL_PATH: &str = "/api/call";
/// Where the publish form posts.
pub(crate) const PUBLISH_PATH: &str = "/api/publish";
/// The least time between two updates of one page (changes in between are merged).
const THROTTLE: Duration = fragments::FRESH;

const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Why the dashboard could not start.
#[derive(Debug)]
pub struct StartError(String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

struct Inner {
    fleet: Arc<Fleet>,
    env: minijinja::Environment<'static>,
    options: Options,
    registry: String,
    client: rmicro::Client,
    fragments: Fragments,
}

/// A running dashboard: the tasks that watch the fleet (they stop when it is
/// dropped) and the pages that show it ([`Dashboard::serve`]).
pub struct Dashboard {
    inner: Arc<Inner>,
    _tasks: Vec<Task>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("registry", &self.inner.registry)
            .finish()
    }
}

impl Dashboard {
    /// Starts watching the fleet in `registry` (on the current Tokio runtime).
    pub fn start(options: Options, registry: SharedRegistry) -> Result<Dashboard, StartError> {
        let env = pages::environment()
            .map_err(|e| StartError(format!("the dashboard's templates: {e}")))?;
        if options.health_interval.is_zero() || options.scrape_interval.is_zero() {
            return Err(StartError(
                "the health and scrape intervals must be longer than zero".into(),
            ));
        }
        let fleet = Arc::new(Fleet::new(options.history));
        let selector = Arc::new(rmicro::selector::Selector::new(
            registry.clone(),
            rmicro::selector::Strategy::Random,
        ));
        let mut client = rmicro::Client::with_selector(
            rmicro::client::ClientOptions {
                from_service: Some("rmicro.web".into()),
                ..Default::default()
            },
            selector,
        );
        if let Some(broker) = &options.broker {
            client = client.with_broker(broker.clone());
        }
        let tasks = vec![
            Task::spawn(fleet::follow_registry(fleet.clone(), registry.clone())),
            Task::spawn(fleet::poll_health(fleet.clone(), options.health_interval)),
            Task::spawn(scrape::scrape(fleet.clone(), options.scrape_interval)),
            Task::spawn(hystrix::follow_streams(
                fleet.clone(),
                options.hystrix_streams.clone(),
            )),
        ];
        Ok(Dashboard {
            inner: Arc::new(Inner {
                fleet,
                env,
                options,
                registry: registry.describe(),
                client,
                fragments: Fragments::default(),
            }),
            _tasks: tasks,
        })
    }

    /// The routes (kept inside the crate: axum is an engine the public API does not name).
    pub(crate) fn router(&self) -> axum::Router {
        let inner = self.inner.clone();
        axum::Router::new()
            .route("/", get(services_page))
            .route("/services/{name}", get(service_page))
            .route("/topics", get(topics_page))
            .route("/circuits", get(circuits_page))
            .route("/events/services", get(services_events))
            .route("/events/services/{name}", get(service_events))
            .route("/events/topics", get(topics_events))
            .route("/events/circuits", get(circuits_events))
            .route("/api/services", get(services_json))
            .route(CALL_PATH, post(call_endpoint))
            .route(PUBLISH_PATH, post(publish_endpoint))
            .route(
                "/assets/app.js",
                get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
            )
            .route(
                "/assets/app.css",
                get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
            )
            .fallback(|| async {
                (
                    http::StatusCode::NOT_FOUND,
                    "no such page on the rmicro dashboard",
                )
            })
            .with_state(inner.clone())
            .layer(axum::middleware::from_fn_with_state(
                inner.options.access.clone(),
                access::guard,
            ))
            .layer(axum::middleware::map_response(secure_headers))
    }

    /// Serves the dashboard on `listener` until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        let router = self.router();
        axum::serve(listener, router).await
    }
}

/// A view as a template value.
fn v(view: &impl serde::Serialize) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(view))
}

async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (http::header::CONTENT_TYPE, content_type),
            (http::header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

impl Inner {
    fn window(&self) -> Duration {
        self.fleet.history()
    }

    fn services_fragment(&self) -> String {
        let rows = self
            .fleet
            .read(|state| pages::services(state, self.window(), now_ms()));
        pages::render(
            &self.env,
            "services_live.html",
            minijinja::context! { rows => v(&rows), registry => &self.registry },
        )
    }

    fn service_fragment(&self, name: &str) -> String {
        let live = self
            .fleet
            .read(|state| pages::service_live(state, name, self.window(), now_ms()));
        pages::render(
            &self.env,
            "service_live.html",
            minijinja::context! { live => v(&live) },
        )
    }

    fn topics_fragment(&self) -> String {
        let topics = self.fleet.read(|state| pages::topics(state, None));
        pages::render(
            &self.env,
            "topics_live.html",
            minijinja::context! { topics => v(&topics) },
        )
    }

    fn circuits_fragment(&self) -> String {
        let circuits = self
            .fleet
            .read(|state| pages::circuits(state, None, self.window(), now_ms()));
        pages::render(
            &self.env,
            "circuits_live.html",
            minijinja::context! { circuits => v(&circuits) },
        )
    }

    /// A whole page: the layout around `template`'s content.
    fn page(
        &self,
        template: &str,
        page: &str,
        title: &str,
        context: minijinja::Value,
    ) -> Html<String> {
        let base = minijinja::context! { page, title, registry => &self.registry };
        Html(pages::render(
            &self.env,
            template,
            minijinja::context! { ..context, ..base },
        ))
    }
}

async fn services_page(State(inner): State<Arc<Inner>>) -> Html<String> {
    let rows = inner
        .fleet
        .read(|state| pages::services(state, inner.window(), now_ms()));
    inner.page(
        "services.html",
        "services",
        "Services",
        minijinja::context! { rows => v(&rows) },
    )
}

async fn service_page(State(inner): State<Arc<Inner>>, Path(name): Path<String>) -> Response {
    let (live, endpoints, topics) = inner.fleet.read(|state| {
        let records = state.services.get(&name).cloned().unwrap_or_default();
        (
            pages::service_live(state, &name, inner.window(), now_ms()),
            pages::endpoints(&records),
            pages::topics(state, Some(&name)),
        )
    });
    if endpoints.is_empty() && !inner.fleet.read(|s| s.services.contains_key(&name)) {
        let page = inner.page(
            "missing.html",
            "services",
            &name,
            minijinja::context! { name => &name },
        );
        return (http::StatusCode::NOT_FOUND, page).into_response();
    }
    inner
        .page(
            "service.html",
            "services",
            &name,
            minijinja::context! { name => &name, live => v(&live), endpoints => v(&endpoints), topics => v(&topics) },
        )
        .into_response()
}

async fn topics_page(State(inner): State<Arc<Inner>>) -> Html<String> {
    let topics = inner.fleet.read(|state| pages::topics(state, None));
    let broker = inner.options.broker.as_ref().map(|b| b.describe());
    inner.page(
        "topics.html",
        "topics",
        "Topics",
        minijinja::context! { topics => v(&topics), publish => broker.is_some(), broker },
    )
}

async fn circuits_page(State(inner): State<Arc<Inner>>) -> Html<String> {
    let circuits = inner
        .fleet
        .read(|state| pages::circuits(state, None, inner.window(), now_ms()));
    let mut streams: Vec<String> = inner
        .fleet
        .node_urls("hystrix")
        .into_iter()
        .map(|(_, url)| url)
        .chain(inner.options.hystrix_streams.iter().cloned())
        .collect();
    streams.sort();
    streams.dedup();
    inner.page(
        "circuits.html",
        "circuits",
        "Circuits",
        minijinja::context! { circuits => v(&circuits), streams },
    )
}

/// An event stream sending `render`'s fragment of the page `key` at once, then
/// after every change that alters it; the streams of one page share each render.
fn live(
    inner: Arc<Inner>,
    key: String,
    render: impl Fn(&Inner) -> String + Send + Sync + 'static,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = inner.fleet.changes();
    let shared = Arc::new((key, render));
    let stream =
        futures_util::stream::unfold((changes, None::<Arc<str>>), move |(mut changes, last)| {
            let (inner, shared) = (inner.clone(), shared.clone());
            async move {
                loop {
                    if last.is_some() {
                        changes.changed().await.ok()?;
                        tokio::time::sleep(THROTTLE).await;
                    }
                    let version = *changes.borrow_and_update();
                    let (key, render) = &*shared;
                    let html = inner
                        .fragments
                        .get_or_render(key, version, Instant::now(), || render(&inner));
                    if last.as_deref() != Some(&*html) {
                        let event = Event::default().event("fragment").data(&*html);
                        return Some((Ok(event), (changes, Some(html))));
                    }
                }
            }
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn services_events(State(inner): State<Arc<Inner>>) -> impl IntoResponse {
    live(inner, "services".into(), Inner::services_fragment)
}

async fn service_events(
    State(inner): State<Arc<Inner>>,
    Path(name): Path<String>,
) -> impl IntoResponse {
    live(inner, format!("service/{name}"), move |inner| {
        inner.service_fragment(&name)
    })
}

async fn topics_events(State(inner): State<Arc<Inner>>) -> impl IntoResponse {
    live(inner, "topics".into(), Inner::topics_fragment)
}

async fn circuits_events(State(inner): State<Arc<Inner>>) -> impl IntoResponse {
    live(inner, "circuits".into(), Inner::circuits_fragment)
}

async fn services_json(State(inner): State<Arc<Inner>>) -> impl IntoResponse {
    let rows = inner
        .fleet
        .read(|state| pages::services(state, inner.window(), now_ms()));
    axum::Json(rows)
}

/// A refusal of a malformed call request, shaped as a call's error.
fn bad_call(code: http::StatusCode, detail: String) -> Response {
    let error = rmicro::Error::new("rmicro.web", code.as_u16(), detail);
    (
        code,
        axum::Json(serde_json::json!({ "ok": false, "error": error, "latency_ms": 0.0 })),
    )
        .into_response()
}

/// Reads a form's JSON post as `T`; a post that is not JSON of that shape is
/// refused with a sentence naming `shape`. JSON only: a page elsewhere cannot
/// post JSON here without a CORS preflight, which this server never grants.
fn json_post<T: serde::de::DeserializeOwned>(
    headers: &http::HeaderMap,
    body: &[u8],
    what: &str,
    shape: &str,
) -> Result<T, (http::StatusCode, String)> {
    let is_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err((
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("post the {what} as application/json: {shape}"),
        ));
    }
    serde_json::from_slice(body).map_err(|err| {
        (
            http::StatusCode::BAD_REQUEST,
            format!("the {what} is not {shape}: {err}"),
        )
    })
}

async fn call_endpoint(
    State(inner): State<Arc<Inner>>,
    headers: http::HeaderMap,
    body: Bytes,
) -> Response {
    let request: CallRequest = match json_post(
        &headers,
        &body,
        "call",
        "{\"service\", \"endpoint\", \"request\", \"address\"?, \"stream\"?}",
    ) {
        Ok(request) => request,
        Err((code, detail)) => return bad_call(code, detail),
    };
    let forwarded = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("Bearer "));
    let result = call::call(
        &inner.client,
        request,
        inner.options.call_timeout,
        forwarded,
    )
    .await;
    axum::Json(result).into_response()
}

async fn publish_endpoint(
    State(inner): State<Arc<Inner>>,
    headers: http::HeaderMap,
    body: Bytes,
) -> Response {
    if inner.options.broker.is_none() {
        return bad_call(
            http::StatusCode::NOT_FOUND,
            "this dashboard has no broker to publish through (start it with --broker)".into(),
        );
    }
    let request: call::PublishRequest =
        match json_post(&headers, &body, "message", "{\"topic\", \"message\"}") {
            Ok(request) => request,
            Err((code, detail)) => return bad_call(code, detail),
        };
    axum::Json(call::publish(&inner.client, request).await).into_response()
}
