//! Following the server's event stream (`GET /events/stream`, Server-Sent Events): an async
//! [`EventStream`] and its blocking iterator [`EventIter`].

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::error::{Error, excerpt};
use crate::types::Event;

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Live events from the server, in id order; ends when the server closes the stream.
pub struct EventStream {
    url: String,
    body: Body,
    buffer: Vec<u8>,
    data: String,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    pub(crate) fn new(url: String, response: reqwest::Response) -> EventStream {
        EventStream {
            url,
            body: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
            data: String::new(),
        }
    }

    /// The next event; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Result<Event, Error>> {
        loop {
            while let Some(nl) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if self.data.is_empty() {
                        continue;
                    }
                    let data = std::mem::take(&mut self.data);
                    return Some(serde_json::from_str(&data).map_err(|e| Error::Contract {
                        method: "GET".into(),
                        url: self.url.clone(),
                        status: 200,
                        detail: format!("invalid event json: {e}"),
                        body_excerpt: excerpt(data.as_bytes()),
                    }));
                }
                if let Some(value) = line.strip_prefix("data:") {
                    self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            match self.body.next().await? {
                Ok(chunk) => self.buffer.extend_from_slice(&chunk),
                Err(source) => {
                    return Some(Err(Error::Transport {
                        method: "GET".into(),
                        url: self.url.clone(),
                        source,
                    }));
                }
            }
        }
    }
}

/// The blocking form of [`EventStream`]: an iterator that waits for each event.
#[derive(Debug)]
pub struct EventIter {
    stream: EventStream,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl EventIter {
    pub(crate) fn new(stream: EventStream, runtime: Arc<tokio::runtime::Runtime>) -> EventIter {
        EventIter { stream, runtime }
    }
}

impl Iterator for EventIter {
    type Item = Result<Event, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.runtime.block_on(self.stream.next())
    }
}
