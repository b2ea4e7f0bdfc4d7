//! Handlers of operator visibility: the event log and its live stream, boot timelines,
//! `/metrics`, and the middleware that counts HTTP requests and records `/files` boot
//! requests.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bakery_client::{BootList, BootOutcome, Event, EventList};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast;

use super::auth::RefusedByAuth;
use super::extract::{PathArgs, QueryArgs, checked};
use super::handlers::AppState;
use bakery_core::events::{EventLog, MAX_PAGE};
use bakery_core::metrics::{CONTENT_TYPE, HttpLabels, RouteLabels};
use bakery_core::observe::Observer;

use super::error::ApiError;

type Reply<T> = Result<T, ApiError>;

/// The query of `GET /events` and `GET /events/stream`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Only events with a larger id.
    since: Option<i64>,
    /// At most this many (default and maximum 1000).
    limit: Option<u32>,
}

/// `GET /events?since=<id>&limit=<n>`: events after `since` (default 0), oldest first.
pub async fn events(
    State(bakery): AppState,
    QueryArgs(query): QueryArgs<EventsQuery>,
) -> Reply<Json<EventList>> {
    let list = bakery
        .observer()
        .events()
        .since(query.since.unwrap_or(0), query.limit.unwrap_or(MAX_PAGE))
        .await?;
    Ok(Json(list))
}

/// Where a follower resumes: `Last-Event-ID` (a reconnecting `EventSource`), else `since`,
/// else only what happens from now on.
fn resume_point(headers: &HeaderMap, query: &EventsQuery) -> Option<i64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(query.since)
}

/// `GET /events/stream`: Server-Sent Events, one `message` per event (`id:` the event id,
/// `data:` its JSON); resumes after `Last-Event-ID` or `?since=`.
pub async fn event_stream(
    State(bakery): AppState,
    headers: HeaderMap,
    QueryArgs(query): QueryArgs<EventsQuery>,
) -> Reply<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let log = bakery.observer().events().clone();
    // Subscribe first, then read the log: nothing recorded in between is missed.
    let live = log.subscribe();
    let after = match resume_point(&headers, &query) {
        Some(id) => id,
        None => log.since(i64::MAX, 1).await?.last_id,
    };
    let follower = Follower {
        log: log.clone(),
        live,
        backlog: std::collections::VecDeque::new(),
        after,
        catching_up: true,
    };
    let closed = Box::pin(log.closed());
    let stream = futures_util::stream::unfold(
        (follower, closed),
        |(mut follower, mut closed)| async move {
            let next = tokio::select! {
                event = follower.next() => event,
                () = &mut closed => None,
            };
            let event = next?;
            let data = serde_json::to_string(&event).unwrap_or_else(|_| "{}".to_owned());
            let sse = SseEvent::default().id(event.id.to_string()).data(data);
            Some((Ok(sse), (follower, closed)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One follower of the event log: the stored backlog first, then live events, re-reading
/// the log when it falls behind the live buffer.
struct Follower {
    log: EventLog,
    live: broadcast::Receiver<Event>,
    backlog: std::collections::VecDeque<Event>,
    after: i64,
    catching_up: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                if event.id > self.after {
                    self.after = event.id;
                    return Some(event);
                }
                continue;
            }
            if self.catching_up {
                match self.log.since(self.after, MAX_PAGE).await {
                    Ok(page) => {
                        self.catching_up = page.events.len() == MAX_PAGE as usize;
                        self.backlog.extend(page.events);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "event stream cannot read the log");
                        return None;
                    }
                }
                continue;
            }
            match self.live.recv().await {
                Ok(event) if event.id > self.after => {
                    self.after = event.id;
                    return Some(event);
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// `GET /oven/{piId}/boots`: the boot timeline of a Pi in the oven, newest boot first.
pub async fn oven_boots(
    State(bakery): AppState,
    PathArgs(serial): PathArgs<String>,
) -> Reply<Json<BootList>> {
    let serial = checked(&serial)?;
    bakery.oven_pi(&serial).await?;
    Ok(Json(bakery.observer().timelines().boots(serial.as_str())))
}

/// `GET /pis/{piId}/boots`: the boot timeline of any known Pi (fridge Pis too).
pub async fn pi_boots(
    State(bakery): AppState,
    PathArgs(serial): PathArgs<String>,
) -> Reply<Json<BootList>> {
    let serial = checked(&serial)?;
    bakery.pi(&serial).await?;
    Ok(Json(bakery.observer().timelines().boots(serial.as_str())))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(bakery): AppState) -> Reply<Response> {
    let pis = bakery.pis_where(|_| true).await?;
    let mut counts: Vec<(&str, i64)> = Vec::new();
    for pi in &pis {
        let state = pi.state.map_or("unknown", |s| s.as_str());
        match counts.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state, 1)),
        }
    }
    let m = bakery.observer().metrics();
    m.set_pis(&counts);
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        m.encode(),
    )
        .into_response())
}

/// The Pi's address on the HTTP boot path, as the `/files` handlers take it.
fn boot_peer(request: &Request) -> Option<IpAddr> {
    let conn = request.extensions().get::<ConnectInfo<SocketAddr>>()?.0;
    super::forwarded::boot_peer(conn, request.headers())
}

/// The prefix of the HTTP boot path.
const FILES_PREFIX: &str = "/api/v1/files/";

/// Middleware: counts every request by method, matched route and status (refusals by
/// authentication included), and records `/files` boot requests in the Pi's timeline once
/// their body is sent (or dropped); a boot request refused for its token is not recorded.
pub async fn track(State(bakery): AppState, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let boot_file = request
        .uri()
        .path()
        .strip_prefix(FILES_PREFIX)
        .filter(|_| route.starts_with(FILES_PREFIX))
        .map(percent_decode);
    let peer = boot_peer(&request);
    let response = next.run(request).await;
    let status = response.status();
    let observer = bakery.observer();
    let m = observer.metrics();
    m.http_requests
        .get_or_create(&HttpLabels {
            method: method.clone(),
            route: route.clone(),
            status: status.as_u16().to_string(),
        })
        .inc();
    m.http_duration
        .get_or_create(&RouteLabels { method, route })
        .observe(started.elapsed().as_secs_f64());
    let Some(file) = boot_file.filter(|_| response.extensions().get::<RefusedByAuth>().is_none())
    else {
        return response;
    };
    let outcome = match status {
        StatusCode::OK => BootOutcome::Sent,
        StatusCode::NOT_FOUND => BootOutcome::NotFound,
        s if s.is_client_error() => BootOutcome::Refused,
        _ => BootOutcome::Failed,
    };
    if outcome != BootOutcome::Sent {
        observer.http_boot_file(&file, peer, outcome, 0, started.elapsed());
        return response;
    }
    let (parts, body) = response.into_parts();
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let counted = CountedBody {
        inner: body,
        sent: 0,
        length,
        done: false,
        report: Some(BootReport {
            observer: observer.clone(),
            file,
            peer,
            started,
        }),
    };
    Response::from_parts(parts, Body::new(counted))
}

/// `%XX` sequences decoded (boot paths are plain ASCII file names; anything undecodable is
/// kept as sent).
fn percent_decode(path: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi * 16 + lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct BootReport {
    observer: std::sync::Arc<Observer>,
    file: String,
    peer: Option<IpAddr>,
    started: Instant,
}

/// A `/files` response body that reports the boot request when it ends: sent when the whole
/// body went out, aborted when the client went away first.
struct CountedBody {
    inner: Body,
    sent: u64,
    /// The Content-Length announced: once sent, the body is complete even if the server
    /// never polls for its end.
    length: Option<u64>,
    done: bool,
    report: Option<BootReport>,
}

impl HttpBody for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.done = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        if let Some(r) = self.report.take() {
            let done = self.done
                || self.inner.is_end_stream()
                || self.length.is_some_and(|len| self.sent >= len);
            let outcome = if done {
                BootOutcome::Sent
            } else {
                BootOutcome::Aborted
            };
            r.observer
                .http_boot_file(&r.file, r.peer, outcome, self.sent, r.started.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_paths_are_percent_decoded() {
        assert_eq!(percent_decode("1a2b3c4d/start4.elf"), "1a2b3c4d/start4.elf");
        assert_eq!(percent_decode("1a2b3c4d/%2e%2e/x"), "1a2b3c4d/../x");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a%zz"), "a%zz");
    }
}
