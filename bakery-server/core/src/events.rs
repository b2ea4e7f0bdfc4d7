//! The event log: one event per state change (a Pi registered, a bake started, a disk
//! attached, ...), stored with an increasing id in the state change's own transaction (see
//! `db`), and broadcast to live followers (the SSE stream and the status page) once committed.

use std::sync::Arc;

use bakery_client::{Event, EventList};
use tokio::sync::{broadcast, watch};

use crate::db::{NewEvent, Store};

/// The event log could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventsError {
    /// The store failed.
    #[error("cannot read the event log: {0}")]
    Store(#[from] crate::db::DbError),
}

/// Events a follower may fall behind by before it must re-read the log.
const LIVE_BUFFER: usize = 1024;
/// Largest page of `GET /events`.
pub const MAX_PAGE: u32 = 1000;

/// What happened, as the `kind` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A new Pi showed up on the boot path.
    Registered,
    /// A bake started.
    BakeStarted,
    /// A bake finished: the Pi is baked.
    BakeFinished,
    /// A bake failed; the Pi is back in the fridge.
    BakeFailed,
    /// A reset (re-clone of the root) started.
    ResetStarted,
    /// An unbake started.
    UnbakeStarted,
    /// An unbake finished: the Pi is in the fridge.
    Unbaked,
    /// A Pi was powered on.
    PowerOn,
    /// A Pi was powered off.
    PowerOff,
    /// A disk was created.
    DiskCreated,
    /// A disk was deleted.
    DiskDeleted,
    /// A disk was attached.
    DiskAttached,
    /// A disk was detached.
    DiskDetached,
    /// A snapshot of a disk was taken.
    SnapshotCreated,
    /// A snapshot was deleted.
    SnapshotDeleted,
    /// A disk's image was replaced by a copy of one of its snapshots.
    DiskRestored,
    /// A bakeform upload started importing.
    BakeformImporting,
    /// A bakeform was imported.
    BakeformImported,
    /// A bakeform import failed.
    BakeformFailed,
    /// A bakeform was deleted.
    BakeformDeleted,
}

impl EventKind {
    /// The name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Registered => "registered",
            EventKind::BakeStarted => "bakeStarted",
            EventKind::BakeFinished => "bakeFinished",
            EventKind::BakeFailed => "bakeFailed",
            EventKind::ResetStarted => "resetStarted",
            EventKind::UnbakeStarted => "unbakeStarted",
            EventKind::Unbaked => "unbaked",
            EventKind::PowerOn => "powerOn",
            EventKind::PowerOff => "powerOff",
            EventKind::DiskCreated => "diskCreated",
            EventKind::DiskDeleted => "diskDeleted",
            EventKind::DiskAttached => "diskAttached",
            EventKind::DiskDetached => "diskDetached",
            EventKind::SnapshotCreated => "snapshotCreated",
            EventKind::SnapshotDeleted => "snapshotDeleted",
            EventKind::DiskRestored => "diskRestored",
            EventKind::BakeformImporting => "bakeformImporting",
            EventKind::BakeformImported => "bakeformImported",
            EventKind::BakeformFailed => "bakeformFailed",
            EventKind::BakeformDeleted => "bakeformDeleted",
        }
    }

    /// An event of this kind about Pi `serial`.
    pub fn pi(self, serial: impl AsRef<str>) -> NewEvent {
        NewEvent {
            kind: self.as_str(),
            pi: Some(serial.as_ref().to_owned()),
            ..NewEvent::default()
        }
    }

    /// An event of this kind about bakeform `name`.
    pub fn bakeform(self, name: impl AsRef<str>) -> NewEvent {
        NewEvent {
            kind: self.as_str(),
            bakeform: Some(name.as_ref().to_owned()),
            ..NewEvent::default()
        }
    }

    /// An event of this kind about disk `id`.
    pub fn disk(self, id: impl AsRef<str>) -> NewEvent {
        NewEvent {
            kind: self.as_str(),
            disk: Some(id.as_ref().to_owned()),
            ..NewEvent::default()
        }
    }
}

impl NewEvent {
    /// The event with `pi` set.
    pub fn with_pi(mut self, serial: impl AsRef<str>) -> NewEvent {
        self.pi = Some(serial.as_ref().to_owned());
        self
    }

    /// The event with `bakeform` set.
    pub fn with_bakeform(mut self, name: impl AsRef<str>) -> NewEvent {
        self.bakeform = Some(name.as_ref().to_owned());
        self
    }

    /// The event with `disk` set.
    pub fn with_disk(mut self, id: impl AsRef<str>) -> NewEvent {
        self.disk = Some(id.as_ref().to_owned());
        self
    }

    /// The event with a message.
    pub fn with_message(mut self, message: impl std::fmt::Display) -> NewEvent {
        self.message = Some(message.to_string());
        self
    }
}

struct Inner {
    store: Arc<Store>,
    live: broadcast::Sender<Event>,
    closing: watch::Sender<bool>,
}

/// The event log. Cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog").finish_non_exhaustive()
    }
}

impl EventLog {
    /// The log stored in `store`.
    pub fn new(store: Arc<Store>) -> EventLog {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        EventLog {
            inner: Arc::new(Inner {
                store,
                live,
                closing: watch::channel(false).0,
            }),
        }
    }

    /// Stores an event that goes with no state change (a PPI call); live followers hear of
    /// it through [`EventLog::publish`] once committed. `None` (logged) if it could not be
    /// stored.
    pub async fn record(&self, event: NewEvent) -> Option<Event> {
        match self.inner.store.call(move |s| s.insert_event(&event)).await {
            Ok(event) => {
                tracing::debug!(id = event.id, kind = event.kind, "event recorded");
                Some(event)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record event");
                None
            }
        }
    }

    /// Tells live followers about a committed event (called in id order, see
    /// [`crate::db::EventSink`]).
    pub fn publish(&self, event: &Event) {
        let _ = self.inner.live.send(event.clone());
    }

    /// Up to `limit` (at most [`MAX_PAGE`]) events after `since`, and the newest id.
    pub async fn since(&self, since: i64, limit: u32) -> Result<EventList, EventsError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let list = self
            .inner
            .store
            .call(move |store| {
                let events = store.events_since(since, limit)?;
                let newest = events.last().map_or(0, |e| e.id);
                let last_id = store.last_event_id()?.max(newest);
                Ok(EventList { events, last_id })
            })
            .await?;
        Ok(list)
    }

    /// Tells live followers to end (the server is shutting down: open streams would hold up
    /// a graceful shutdown).
    pub fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Resolves once [`EventLog::close`] was called.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + use<> {
        let mut rx = self.inner.closing.subscribe();
        async move {
            let _ = rx.wait_for(|closing| *closing).await;
        }
    }

    /// A receiver of events recorded from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.live.subscribe()
    }
}
