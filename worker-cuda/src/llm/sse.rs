//! Reading an OpenAI streaming response: server-sent events (`data: {...}` lines, a blank line
//! after each event, `data: [DONE]` at the end) and the chunks they carry.
//!
//! Everything the backend sends is bounded: a line longer than [`MAX_LINE`] is an error rather
//! than a growing buffer.

use std::io::{self, BufRead};

use serde_json::Value;

/// The longest SSE line accepted (a chunk carries a few tokens; 1 MiB is far beyond any).
pub const MAX_LINE: usize = 1 << 20;

/// One server-sent event's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SseEvent {
    /// The `data` of an event (several `data:` lines joined by `\n`).
    Data(String),
    /// `data: [DONE]`: the stream is complete.
    Done,
}

/// Why the stream could not be read.
#[derive(Debug)]
pub enum SseError {
    Io(io::Error),
    /// A line longer than [`MAX_LINE`].
    LineTooLong,
    /// A line that is not UTF-8.
    NotUtf8,
}

/// Splits a byte stream into server-sent events.
pub struct SseReader<R> {
    reader: R,
    line: Vec<u8>,
    data: Option<String>,
}

impl<R: BufRead> SseReader<R> {
    pub fn new(reader: R) -> Self {
        SseReader {
            reader,
            line: Vec::new(),
            data: None,
        }
    }

    /// The next event; `Ok(None)` at the end of the stream. Comments (`:`), `event:`, `id:` and
    /// `retry:` fields are skipped; an event still open at the end of the stream is returned.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            if !self.read_line()? {
                return Ok(self.data.take().map(into_event));
            }
            let line = std::str::from_utf8(&self.line).map_err(|_| SseError::NotUtf8)?;
            let line = line.strip_suffix('\n').unwrap_or(line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    return Ok(Some(into_event(data)));
                }
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            if field == "data" {
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                }
            }
        }
    }

    /// Reads one line (with its `\n`, if any) into `self.line`; false at the end of the stream.
    fn read_line(&mut self) -> Result<bool, SseError> {
        self.line.clear();
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SseError::Io(e)),
            };
            if buf.is_empty() {
                return Ok(!self.line.is_empty());
            }
            let (take, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(at) => (at + 1, true),
                None => (buf.len(), false),
            };
            if self.line.len() + take > MAX_LINE {
                return Err(SseError::LineTooLong);
            }
            self.line.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            if complete {
                return Ok(true);
            }
        }
    }
}

fn into_event(data: String) -> SseEvent {
    if data.trim() == "[DONE]" {
        SseEvent::Done
    } else {
        SseEvent::Data(data)
    }
}

/// What one `chat.completion.chunk` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    /// `choices[0].delta.content`, when a non-empty string.
    pub text: Option<String>,
    /// `choices[0].finish_reason`, when set (`stop`, `length`, ...).
    pub finish_reason: Option<String>,
}

/// Reads an event's data as a chunk. An error event (`{"error":{"message":..}}`, or vLLM's
/// `{"object":"error","message":..}`) and data that is not JSON are `Err` with a message for the
/// command error.
pub fn parse_chunk(data: &str) -> Result<Chunk, String> {
    let value: Value = serde_json::from_str(data).map_err(|e| {
        format!(
            "the backend sent an event that is not JSON ({e}): {}",
            clip(data)
        )
    })?;
    if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| {
                error
                    .as_str()
                    .map_or_else(|| error.to_string(), str::to_owned)
            });
        return Err(format!("the backend failed the stream: {}", clip(&message)));
    }
    if value.get("object").and_then(Value::as_str) == Some("error") {
        let message = value.get("message").and_then(Value::as_str).unwrap_or("");
        return Err(format!("the backend failed the stream: {}", clip(message)));
    }
    let choice = value.get("choices").and_then(|c| c.get(0));
    let text = choice
        .and_then(|c| c.get("delta"))
        .and_then(|d| d.get("content"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let finish_reason = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(Chunk {
        text,
        finish_reason,
    })
}

/// At most 200 characters of peer text for an error message.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(input: &[u8]) -> Vec<SseEvent> {
        let mut reader = SseReader::new(io::BufReader::with_capacity(3, input));
        let mut out = Vec::new();
        while let Some(event) = reader.next_event().unwrap() {
            out.push(event);
        }
        out
    }

    #[test]
    fn splits_events_joins_data_lines_and_skips_other_fields() {
        let input = b": keep-alive\r\n\r\nevent: x\ndata: {\"a\":1}\n\ndata:one\ndata: two\nid: 3\n\n\n\ndata: [DONE]\n\n";
        assert_eq!(
            events(input),
            vec![
                SseEvent::Data("{\"a\":1}".into()),
                SseEvent::Data("one\ntwo".into()),
                SseEvent::Done
            ]
        );
        assert_eq!(events(b"data: tail"), vec![SseEvent::Data("tail".into())]);
        assert_eq!(events(b""), vec![]);
    }

    #[test]
    fn refuses_an_endless_line() {
        let long = vec![b'a'; MAX_LINE + 1];
        let mut reader = SseReader::new(io::BufReader::new(&long[..]));
        assert!(matches!(reader.next_event(), Err(SseError::LineTooLong)));
        let mut reader = SseReader::new(io::BufReader::new(&b"data: \xff\n\n"[..]));
        assert!(matches!(reader.next_event(), Err(SseError::NotUtf8)));
    }

    #[test]
    fn reads_chunks_and_error_events() {
        let chunk = parse_chunk(
            r#"{"choices":[{"index":0,"delta":{"content":"Gr\u00fc\ud83c\udf89"},"finish_reason":null}]}"#,
        )
        .unwrap();
        assert_eq!(chunk.text.as_deref(), Some("Grü🎉"));
        assert_eq!(chunk.finish_reason, None);
        let role_only = parse_chunk(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#);
        assert_eq!(role_only, Ok(Chunk::default()));
        let end = parse_chunk(r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#).unwrap();
        assert_eq!(end.finish_reason.as_deref(), Some("length"));
        let error = parse_chunk(r#"{"error":{"message":"out of memory","code":500}}"#);
        assert_eq!(
            error.unwrap_err(),
            "the backend failed the stream: out of memory"
        );
        let vllm = parse_chunk(r#"{"object":"error","message":"bad","type":"x"}"#);
        assert_eq!(vllm.unwrap_err(), "the backend failed the stream: bad");
        assert!(parse_chunk("nope").unwrap_err().contains("not JSON"));
        assert_eq!(clip(&"é".repeat(300)).chars().count(), 203);
    }
}
