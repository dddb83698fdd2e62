//! Server-Sent Events parsing for the workflow subscribe stream.
//!
//! [`events`] turns a `text/event-stream` response body into [`Event`]s. It
//! follows the parsing and interpretation rules of the WHATWG HTML Living
//! Standard, section 9.2 "Server-sent events"
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html>), except
//! where the exporter needs a different outcome:
//!
//! - A line longer than the limit, or an event whose data grows past it, ends
//!   the stream with an error. The standard sets no limit, so a hostile server
//!   could otherwise make the parser buffer without bound.
//! - A line with invalid UTF-8 drops its event with an error. The standard
//!   replaces such bytes with U+FFFD, which would pass corrupted JSON on.
//! - At the end of the body, an event with data from complete lines is
//!   dispatched, although the standard discards it. Each event of the
//!   subscribe stream is a complete snapshot, and a server that closes without
//!   the final blank line would otherwise lose its last one.
//! - A body that ends inside a line yields [`EventError::Truncated`], so
//!   callers can distinguish a cut connection from a clean close.
//! - `retry` is ignored because callers choose their own reconnection delay.
//!
//! Parsing is linear in the input, because each byte is scanned for a line
//! terminator once when it arrives, and each complete line is decoded once.
//!
//! This module replaces eventsource-stream 0.2.3 entirely. Tests against that
//! version showed that a byte-order mark at the start of the stream makes it
//! panic, that a CR at the end of a chunk holds the event back until the next
//! chunk arrives, and that one invalid UTF-8 byte swallows every later event
//! until the body ends. Its transport errors do not end the stream, it has no
//! line limit, and it rescans the unfinished line for every chunk: a 256 KiB
//! line in 64-byte chunks took 24 s in a debug build on a shared 2-core
//! machine, about four times as long as a 128 KiB line. It does join UTF-8
//! characters split across chunks correctly.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

/// UTF-8 encoding of U+FEFF, the byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Event type from the `event` field, or `"message"` when the event has
    /// none.
    pub event: String,

    /// Values of the event's `data` fields, joined with `\n`.
    pub data: String,

    /// Last event ID of the stream when this event was dispatched. As in the
    /// standard, it is the latest `id` field of this or an earlier event. It is
    /// `None` before any `id` field and after an `id` field with an empty value.
    pub id: Option<String>,
}

/// Failure while reading or parsing an event stream.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError<E> {
    /// The body stream returned an error. The event stream ends after it, and
    /// an event still missing its blank line is not dispatched.
    #[error("reading the event stream failed: {0}")]
    Transport(E),

    /// A line, without its terminator, was longer than `limit` bytes. The
    /// event stream ends after this error.
    #[error("event stream line is longer than the limit of {limit} bytes")]
    LineTooLong { limit: usize },

    /// The joined `data` of one event was longer than `limit` bytes. The event
    /// stream ends after this error.
    #[error("event data is longer than the limit of {limit} bytes")]
    DataTooLong { limit: usize },

    /// A line of an event was not valid UTF-8. That event is dropped, and
    /// parsing goes on with the next one.
    #[error("dropped an event that contains invalid UTF-8")]
    InvalidUtf8,

    /// The body ended inside a line, and that partial line was discarded. This
    /// is the last item of the event stream.
    #[error("event stream ended inside a line")]
    Truncated,
}

/// Parses a `text/event-stream` body into events.
///
/// `body` yields the chunks of a response body, as reqwest's
/// `Response::bytes_stream` does. `max_line_bytes` caps the length of each
/// line without its terminator and the joined data of each event, so the
/// buffers for the unfinished line and for the event data each stay within
/// about `max_line_bytes`.
///
/// The stream ends after a [`Transport`](EventError::Transport),
/// [`LineTooLong`](EventError::LineTooLong),
/// [`DataTooLong`](EventError::DataTooLong) or
/// [`Truncated`](EventError::Truncated) error. When the body ends, an event
/// with data from complete lines is dispatched even without its blank line,
/// before the `Truncated` error for a partial line.
pub fn events<S, E>(
    body: S,
    max_line_bytes: usize,
) -> impl Stream<Item = Result<Event, EventError<E>>> + Unpin
where
    S: Stream<Item = Result<Bytes, E>>,
{
    EventStream {
        body: Box::pin(body),
        parser: Parser::new(max_line_bytes),
    }
}

/// Stream returned by [`events`].
struct EventStream<S, E> {
    body: Pin<Box<S>>,
    parser: Parser<E>,
}

// Pinning is not structural for any field, because the body is pinned on the
// heap and the parser is plain data. Being `Unpin` lets callers use
// `StreamExt::next` without pinning the stream first.
impl<S, E> Unpin for EventStream<S, E> {}

impl<S, E> Stream for EventStream<S, E>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    type Item = Result<Event, EventError<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.parser.output.pop_front() {
                return Poll::Ready(Some(item));
            }
            if this.parser.closed {
                return Poll::Ready(None);
            }

            match ready!(this.body.as_mut().poll_next(cx)) {
                Some(Ok(chunk)) => this.parser.feed(&chunk),
                Some(Err(error)) => this.parser.fail(EventError::Transport(error)),
                None => this.parser.finish(),
            }
        }
    }
}

/// Incremental parser state, with the unfinished line, the event being built
/// and the queue of parsed items.
struct Parser<E> {
    max_line_bytes: usize,

    /// Bytes of the current line that arrived before its terminator.
    partial_line: Vec<u8>,

    /// Whether no line is complete yet, so a leading byte-order mark may still
    /// have to be removed.
    at_stream_start: bool,

    /// Whether the last line ended with CR, so that an LF right after it is
    /// the second byte of a CRLF and not an empty line.
    after_cr: bool,

    pending: PendingEvent,
    last_event_id: Option<String>,
    output: VecDeque<Result<Event, EventError<E>>>,

    /// Whether parsing has ended. Items still in `output` are yielded first.
    closed: bool,
}

/// Fields of the event being built, applied when a blank line ends it.
#[derive(Default)]
struct PendingEvent {
    event_type: String,

    /// Values of the `data` fields, each followed by LF.
    data: String,

    /// Value of the latest `id` field in this event. An empty value resets the
    /// last event ID.
    id: Option<String>,

    /// Whether a line of this event was invalid UTF-8. The rest of its lines
    /// are skipped.
    invalid: bool,
}

impl<E> Parser<E> {
    fn new(max_line_bytes: usize) -> Self {
        Self {
            max_line_bytes,
            partial_line: Vec::new(),
            at_stream_start: true,
            after_cr: false,
            pending: PendingEvent::default(),
            last_event_id: None,
            output: VecDeque::new(),
            closed: false,
        }
    }

    /// Parses one chunk of the body and queues every item it completes.
    ///
    /// CR, LF and the colon are ASCII, and every byte of a multi-byte UTF-8
    /// character is 0x80 or above, so lines are split on raw bytes and decoded
    /// only once complete. A character split across chunks thus comes out
    /// whole.
    fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() && !self.closed {
            if std::mem::take(&mut self.after_cr) {
                chunk = chunk.strip_prefix(b"\n").unwrap_or(chunk);
            }

            let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.buffer_partial_line(chunk);
                return;
            };

            // A CR ends its line at once, even at the end of a chunk, so an
            // event is never held back waiting for a possible LF.
            self.after_cr = chunk[end] == b'\r';
            self.complete_line(&chunk[..end]);
            chunk = &chunk[end + 1..];
        }
    }

    /// Parses a line whose last bytes are `tail` and whose first bytes may be
    /// buffered in `partial_line`.
    fn complete_line(&mut self, tail: &[u8]) {
        if self.partial_line.is_empty() {
            if self.line_fits(tail.len()) {
                self.process_line(tail);
            }
            return;
        }

        if !self.buffer_partial_line(tail) {
            return;
        }
        let line = std::mem::take(&mut self.partial_line);
        self.process_line(&line);

        // Keep the allocation, which the line limit bounds, for the next line.
        self.partial_line = line;
        self.partial_line.clear();
    }

    /// Appends bytes of an unfinished line. Returns false, after queueing
    /// `LineTooLong`, when the line would exceed the limit.
    fn buffer_partial_line(&mut self, bytes: &[u8]) -> bool {
        if !self.line_fits(bytes.len()) {
            return false;
        }

        let line = &mut self.partial_line;
        let additional = capped_growth(
            line.len(),
            line.capacity(),
            bytes.len(),
            self.max_line_bytes,
        );
        line.reserve_exact(additional);
        line.extend_from_slice(bytes);
        true
    }

    /// Checks that the current line stays within the limit after
    /// `extra_bytes` more. Otherwise queues `LineTooLong` and ends parsing.
    fn line_fits(&mut self, extra_bytes: usize) -> bool {
        if self.partial_line.len() + extra_bytes <= self.max_line_bytes {
            return true;
        }

        self.fail(EventError::LineTooLong {
            limit: self.max_line_bytes,
        });
        false
    }

    /// Applies one complete line, without its terminator, to the pending
    /// event.
    fn process_line(&mut self, line: &[u8]) {
        let line = self.strip_leading_bom(line);
        if line.is_empty() {
            self.dispatch();
            return;
        }

        // Comments are skipped without decoding, so invalid bytes in a
        // keep-alive line do not cost an event.
        if line.starts_with(b":") || self.pending.invalid {
            return;
        }

        match std::str::from_utf8(line) {
            Ok(line) => self.apply_field(line),
            Err(_) => {
                self.pending.invalid = true;
                self.output.push_back(Err(EventError::InvalidUtf8));
            }
        }
    }

    /// Removes a byte-order mark from the first line of the stream. A mark
    /// anywhere else stays part of its line, as the standard requires.
    fn strip_leading_bom<'a>(&mut self, line: &'a [u8]) -> &'a [u8] {
        if std::mem::take(&mut self.at_stream_start) {
            line.strip_prefix(BOM).unwrap_or(line)
        } else {
            line
        }
    }

    /// Applies one field line. A line without a colon is a field name with an
    /// empty value, and one space after the colon is not part of the value.
    fn apply_field(&mut self, line: &str) {
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };

        match name {
            "data" => self.append_data(value),
            "event" => self.pending.event_type = value.to_owned(),
            "id" if !value.contains('\0') => self.pending.id = Some(value.to_owned()),
            // `retry` sets a browser's reconnection delay. Callers of this
            // module choose their own, so it is ignored like unknown fields.
            _ => {}
        }
    }

    /// Appends one `data` value, or queues `DataTooLong` and ends parsing
    /// when the joined data would exceed the limit.
    fn append_data(&mut self, value: &str) {
        let limit = self.max_line_bytes;
        if self.pending.data.len() + value.len() > limit {
            self.fail(EventError::DataTooLong { limit });
            return;
        }

        let data = &mut self.pending.data;
        data.reserve_exact(capped_growth(
            data.len(),
            data.capacity(),
            value.len() + 1,
            limit,
        ));
        data.push_str(value);
        data.push('\n');
    }

    /// Ends the pending event at a blank line or at the end of the body, and
    /// queues it if it has data.
    fn dispatch(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if pending.invalid {
            // `InvalidUtf8` was queued when the invalid line arrived.
            return;
        }

        // The standard applies an `id` field even when its event has no data.
        if let Some(id) = pending.id {
            self.last_event_id = (!id.is_empty()).then_some(id);
        }
        if pending.data.is_empty() {
            return;
        }

        let mut data = pending.data;
        data.pop(); // the LF after the last value
        let event = if pending.event_type.is_empty() {
            "message".to_owned()
        } else {
            pending.event_type
        };
        self.output.push_back(Ok(Event {
            event,
            data,
            id: self.last_event_id.clone(),
        }));
    }

    /// Ends parsing at the end of the body.
    fn finish(&mut self) {
        let partial_line = std::mem::take(&mut self.partial_line);
        let truncated = !self.strip_leading_bom(&partial_line).is_empty();

        self.dispatch();
        if truncated {
            self.output.push_back(Err(EventError::Truncated));
        }
        self.closed = true;
    }

    /// Queues an error that ends parsing.
    fn fail(&mut self, error: EventError<E>) {
        self.output.push_back(Err(error));
        self.closed = true;
    }
}

/// Computes the `additional` argument for `reserve_exact` so that a buffer of
/// `len` bytes can take `extra` more.
///
/// The capacity doubles as `Vec` would, which keeps appends amortized O(1),
/// but never goes past `limit` unless `len + extra` itself does.
fn capped_growth(len: usize, capacity: usize, extra: usize, limit: usize) -> usize {
    let needed = len + extra;
    if needed <= capacity {
        return 0;
    }

    let target = capacity.saturating_mul(2).clamp(needed, limit.max(needed));
    target - len
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use futures_util::{stream, FutureExt, StreamExt};
    use tokio::sync::mpsc;

    use super::*;

    type Item = Result<Event, EventError<String>>;

    const LIMIT: usize = 1 << 20;
    const MIB: usize = 1 << 20;

    fn message(data: &str) -> Event {
        Event {
            event: "message".to_owned(),
            data: data.to_owned(),
            id: None,
        }
    }

    /// Parses a body that arrives as the given chunks.
    async fn parse_chunks(chunks: &[&[u8]], max_line_bytes: usize) -> Vec<Item> {
        let chunks: Vec<Result<Bytes, String>> = chunks
            .iter()
            .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
            .collect();
        events(stream::iter(chunks), max_line_bytes).collect().await
    }

    /// Parses a body that arrives as one chunk.
    async fn parse(body: &[u8]) -> Vec<Item> {
        parse_chunks(&[body], LIMIT).await
    }

    /// Splits `body` into chunks of `size` bytes.
    fn split(body: &[u8], size: usize) -> Vec<Result<Bytes, String>> {
        let body = Bytes::copy_from_slice(body);
        (0..body.len())
            .step_by(size)
            .map(|start| Ok(body.slice(start..body.len().min(start + size))))
            .collect()
    }

    /// Parses a body that arrives in chunks of `size` bytes.
    async fn parse_split(body: &[u8], size: usize, max_line_bytes: usize) -> Vec<Item> {
        let chunks = split(body, size);
        events(stream::iter(chunks), max_line_bytes).collect().await
    }

    /// Builds one event whose `data` line carries `data_bytes` bytes.
    fn long_event(data_bytes: usize) -> Vec<u8> {
        let mut body = b"data: ".to_vec();
        body.resize(body.len() + data_bytes, b'x');
        body.extend_from_slice(b"\n\n");
        body
    }

    #[tokio::test]
    async fn lf_crlf_and_cr_end_lines() {
        for (ending, name) in [("\n", "LF"), ("\r\n", "CRLF"), ("\r", "CR")] {
            let body = format!("data: a{ending}data: b{ending}{ending}data: c{ending}{ending}");

            let items = parse(body.as_bytes()).await;

            let expected = vec![Ok(message("a\nb")), Ok(message("c"))];
            assert_eq!(items, expected, "line ending {name}");
        }
    }

    #[tokio::test]
    async fn mixed_line_endings() {
        let items = parse(b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r").await;

        assert_eq!(items, vec![Ok(message("a\nb\nc")), Ok(message("d"))]);
    }

    #[tokio::test]
    async fn crlf_split_across_chunks_ends_one_line() {
        let chunks: [&[u8]; 4] = [b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"];

        let items = parse_chunks(&chunks, LIMIT).await;

        assert_eq!(items, vec![Ok(message("a\nb"))]);
    }

    #[tokio::test]
    async fn cr_at_chunk_end_dispatches_at_once() {
        let (sender, receiver) = mpsc::unbounded_channel::<Result<Bytes, String>>();
        let body = stream::unfold(receiver, |mut receiver| async move {
            let chunk = receiver.recv().await?;
            Some((chunk, receiver))
        });
        let mut parsed = events(body, LIMIT);

        let first = Bytes::from_static(b"data: a\r\r");
        sender.send(Ok(first)).expect("receiver is open");
        let item = parsed.next().now_or_never();
        assert_eq!(item, Some(Some(Ok(message("a")))));

        let second = Bytes::from_static(b"\ndata: b\n\n");
        sender.send(Ok(second)).expect("receiver is open");
        let item = parsed.next().now_or_never();
        assert_eq!(item, Some(Some(Ok(message("b")))));

        let item = parsed.next().now_or_never();
        assert_eq!(item, None, "stream waits for more bytes");
    }

    #[tokio::test]
    async fn leading_bom_is_removed() {
        let items = parse(b"\xEF\xBB\xBFdata: a\n\n").await;
        assert_eq!(items, vec![Ok(message("a"))]);

        let chunks: [&[u8]; 3] = [b"\xEF", b"\xBB", b"\xBFdata: b\n\n"];
        let items = parse_chunks(&chunks, LIMIT).await;
        assert_eq!(items, vec![Ok(message("b"))], "BOM split across chunks");
    }

    #[tokio::test]
    async fn later_bom_is_kept() {
        let items = parse(b"data: a\n\n\xEF\xBB\xBFdata: b\n\ndata: \xEF\xBB\xBFc\n\n").await;
        let expected = vec![Ok(message("a")), Ok(message("\u{FEFF}c"))];
        assert_eq!(items, expected, "BOM makes an unknown field name");

        let items = parse(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: d\n\n").await;
        assert_eq!(items, vec![], "only the first BOM is removed");
    }

    #[tokio::test]
    async fn comment_lines_are_ignored() {
        let body = b": keep-alive\n\ndata: a\n: inside an event\ndata: b\n\n:\n\n";

        let items = parse(body).await;

        assert_eq!(items, vec![Ok(message("a\nb"))]);
    }

    #[tokio::test]
    async fn data_lines_join_with_lf() {
        let items = parse(b"data: {\"status\":\ndata: \"running\"}\n\n").await;

        assert_eq!(items, vec![Ok(message("{\"status\":\n\"running\"}"))]);
    }

    #[tokio::test]
    async fn one_space_after_colon_is_removed() {
        let items = parse(b"data:a\n\ndata: b\n\ndata:  c\n\n").await;

        let expected = vec![Ok(message("a")), Ok(message("b")), Ok(message(" c"))];
        assert_eq!(items, expected);
    }

    #[tokio::test]
    async fn field_without_colon_has_empty_value() {
        let items = parse(b"data\n\ndata\ndata\n\n").await;

        assert_eq!(items, vec![Ok(message("")), Ok(message("\n"))]);
    }

    #[tokio::test]
    async fn event_without_data_is_not_dispatched() {
        let items = parse(b"event: update\nid: 1\n\ndata: a\n\n").await;

        let expected = Event {
            id: Some("1".to_owned()),
            ..message("a")
        };
        assert_eq!(items, vec![Ok(expected)], "event type resets, id stays");
    }

    #[tokio::test]
    async fn event_id_retry_and_unknown_fields() {
        let body = concat!(
            "event: update\nid: 7\nretry: 1000\nretry: soon\nfoo: bar\nfoo\ndata: x\n\n",
            "data: y\n\n",
            "id: a\0b\ndata: z\n\n",
            "id\ndata: w\n\n",
        );

        let items = parse(body.as_bytes()).await;

        let with_id = |event: &str, data: &str, id: Option<&str>| {
            Ok(Event {
                event: event.to_owned(),
                data: data.to_owned(),
                id: id.map(str::to_owned),
            })
        };
        assert_eq!(items.len(), 4);
        assert_eq!(items[0], with_id("update", "x", Some("7")));
        assert_eq!(items[1], with_id("message", "y", Some("7")), "id persists");
        assert_eq!(items[2], with_id("message", "z", Some("7")), "id with NUL");
        assert_eq!(items[3], with_id("message", "w", None), "empty id resets");
    }

    #[tokio::test]
    async fn utf8_character_split_across_chunks() {
        let body = "data: é and 😀\n\n".as_bytes();

        let items = parse_split(body, 1, LIMIT).await;

        assert_eq!(items, vec![Ok(message("é and 😀"))]);
    }

    #[tokio::test]
    async fn invalid_utf8_drops_only_its_event() {
        let items = parse(b"data: a\xFFb\ndata: more\n\ndata: ok\n\n").await;
        let expected = vec![Err(EventError::InvalidUtf8), Ok(message("ok"))];
        assert_eq!(items, expected);

        let items = parse(b"data: \xFF\ndata: \xFE\n\ndata: x\n\n").await;
        let expected = vec![Err(EventError::InvalidUtf8), Ok(message("x"))];
        assert_eq!(items, expected, "one error per event");

        let items = parse(b"id: \xFF\ndata: x\n\ndata: y\n\n").await;
        let expected = vec![Err(EventError::InvalidUtf8), Ok(message("y"))];
        assert_eq!(items, expected, "invalid id line sets no id");

        let items = parse(b": \xFF\ndata: z\n\n").await;
        assert_eq!(items, vec![Ok(message("z"))], "comment is not decoded");
    }

    #[tokio::test]
    async fn one_mib_line_fits_larger_limit() {
        let items = parse_chunks(&[&long_event(MIB)], 2 * MIB).await;

        assert_eq!(items.len(), 1);
        let event = items[0].as_ref().expect("event under the limit");
        assert_eq!(event.data.len(), MIB);
    }

    #[tokio::test]
    async fn one_mib_line_over_limit_ends_stream() {
        let mut body = long_event(MIB);
        body.extend_from_slice(b"data: after\n\n");

        let items = parse_chunks(&[&body], MIB / 2).await;

        let expected = vec![Err(EventError::LineTooLong { limit: MIB / 2 })];
        assert_eq!(items, expected);
    }

    #[tokio::test]
    async fn one_mib_line_in_64_byte_chunks() {
        let items = parse_split(&long_event(MIB), 64, 2 * MIB).await;

        assert_eq!(items.len(), 1);
        let event = items[0].as_ref().expect("event under the limit");
        assert_eq!(event.data.len(), MIB);
    }

    #[tokio::test]
    async fn line_limit_excludes_terminator() {
        let items = parse_chunks(&[b"data: a\r\n\r\n"], 7).await;
        assert_eq!(items, vec![Ok(message("a"))]);

        let items = parse_chunks(&[b"data: ab\n\n"], 7).await;
        assert_eq!(items, vec![Err(EventError::LineTooLong { limit: 7 })]);
    }

    #[test]
    fn partial_line_buffer_stays_within_limit() {
        let limit = 100_000;
        let mut parser = Parser::<String>::new(limit);

        let line = vec![b'x'; limit];
        for chunk in line.chunks(64) {
            parser.feed(chunk);
        }
        assert!(parser.output.is_empty(), "line at the limit is accepted");
        assert_eq!(parser.partial_line.len(), limit);
        assert!(parser.partial_line.capacity() <= limit);

        parser.feed(b"x");
        let error = parser.output.pop_front();
        assert_eq!(error, Some(Err(EventError::LineTooLong { limit })));
        assert!(parser.closed);
    }

    #[tokio::test]
    async fn data_over_limit_ends_stream() {
        let body = b"data: 0123456789\ndata: 0123456789\n\ndata: next\n\n";

        let items = parse_chunks(&[body], 16).await;

        assert_eq!(items, vec![Err(EventError::DataTooLong { limit: 16 })]);
    }

    #[tokio::test]
    async fn body_end_dispatches_pending_event() {
        let items = parse(b"data: a\n").await;
        assert_eq!(items, vec![Ok(message("a"))], "LF");

        let items = parse(b"data: b\r").await;
        assert_eq!(items, vec![Ok(message("b"))], "CR");
    }

    #[tokio::test]
    async fn body_end_inside_line_is_truncated() {
        let items = parse(b"data: a\n\ndata: {\"sta").await;
        let expected = vec![Ok(message("a")), Err(EventError::Truncated)];
        assert_eq!(items, expected);

        let items = parse(b"data: b\nid: 1").await;
        let expected = vec![Ok(message("b")), Err(EventError::Truncated)];
        assert_eq!(items, expected, "complete lines still dispatch");

        let items = parse(b"\xEF\xBB\xBF").await;
        assert_eq!(items, vec![], "BOM alone is not a partial line");
    }

    #[tokio::test]
    async fn transport_error_ends_stream() {
        let chunks = vec![
            Ok(Bytes::from_static(b"data: a\n\n")),
            Ok(Bytes::from_static(b"data: unfinished\n")),
            Err("connection reset".to_owned()),
            Ok(Bytes::from_static(b"\ndata: b\n\n")),
        ];

        let items: Vec<Item> = events(stream::iter(chunks), LIMIT).collect().await;

        let error = EventError::Transport("connection reset".to_owned());
        assert_eq!(items, vec![Ok(message("a")), Err(error)]);
    }

    #[test]
    fn stream_is_send_and_unpin() {
        fn assert_send_unpin<T: Send + Unpin>(_: &T) {}
        let body = stream::iter(Vec::<Result<Bytes, String>>::new());

        assert_send_unpin(&events(body, LIMIT));
    }

    /// Prints parse times for a 1 MiB line in chunks of several sizes. Run
    /// with `cargo test --lib -- --ignored --nocapture timing`.
    #[tokio::test]
    #[ignore = "prints timings, asserts nothing about them"]
    async fn timing_of_one_mib_line_by_chunk_size() {
        let body = long_event(MIB);
        for size in [body.len(), 64, 1] {
            let chunks = split(&body, size);

            let start = Instant::now();
            let items: Vec<Item> = events(stream::iter(chunks), 2 * MIB).collect().await;
            let elapsed = start.elapsed();

            assert_eq!(items.len(), 1);
            println!("1 MiB line in {size}-byte chunks: {elapsed:?}");
        }
    }
}
