//! A simulated node: a raw async-tungstenite WebSocket client speaking the JSON hub protocol with
//! the core's codecs (handshake, Hello, Heartbeat, CommandResult). No node runtime, so that
//! thousands of them fit in the bench process.

use std::net::SocketAddr;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_lite::StreamExt;
use nodelink_core::wire::dto::{
    Capabilities, CommandResultDto, ExecuteCommandDto, HeartbeatDto, HelloDto, PROTOCOL_VERSION,
};
use nodelink_core::wire::signalr::framing::RecordDecoder;
use nodelink_core::wire::signalr::handshake::{HandshakeRequest, HandshakeResponse};
use nodelink_core::wire::signalr::{json, HubMessage, HubProtocol, Invocation, Payload};
use serde::Serialize;

use super::child::SECRET;

/// The command every simulated node runs (answers at once).
pub const ECHO: &str = "bench.echo";
/// The largest record a simulated node accepts.
const MAX_RECORD: usize = 8 * 1024 * 1024;

/// One connected, authenticated node past its handshake and Hello.
pub struct HubNode {
    ws: WebSocketStream<smol::net::TcpStream>,
    decoder: RecordDecoder,
    pub node_id: String,
    next_invocation: u64,
}

/// What a node hears from the gateway, reduced to what the bench acts on.
pub enum Heard {
    Execute(ExecuteCommandDto),
    /// A Completion (of Hello or of a CommandResult), with its error if any.
    Completion(String, Option<String>),
    Other,
}

fn config() -> WebSocketConfig {
    // A small read buffer, as the real node uses: 10,000 of these share the bench process.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_RECORD))
        .max_frame_size(Some(MAX_RECORD))
}

impl HubNode {
    /// Upgrades (skip-negotiation, token in the query), does the JSON handshake, invokes Hello
    /// and waits for its Completion, then sends a first Heartbeat, as a node does on connect.
    pub async fn connect(addr: SocketAddr, node_id: &str) -> Result<HubNode, String> {
        let tcp = smol::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let url = format!("ws://{addr}/hubs/node?access_token={node_id}.{SECRET}");
        let request = url.into_client_request().map_err(|e| e.to_string())?;
        let (ws, _) = async_tungstenite::client_async_with_config(request, tcp, Some(config()))
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        let mut node = HubNode {
            ws,
            decoder: RecordDecoder::new(MAX_RECORD),
            node_id: node_id.to_string(),
            next_invocation: 1,
        };
        let mut out = Vec::new();
        HandshakeRequest::new(HubProtocol::Json, 1).encode(&mut out);
        node.send_record(out).await?;
        let answer = loop {
            if let Some(record) = node.decoder.next_record().map_err(|e| e.to_string())? {
                break HandshakeResponse::decode(record).map_err(|e| e.to_string())?;
            }
            node.read_frame().await?;
        };
        if let HandshakeResponse::Rejected(why) = answer {
            return Err(format!("handshake rejected: {why}"));
        }
        node.decoder.set_protocol(HubProtocol::Json);
        let hello = HelloDto {
            node_id: node_id.to_string(),
            protocol_versions: vec![PROTOCOL_VERSION.to_string()],
            capabilities: Some(capabilities()),
        };
        let id = node.invoke("Hello", true, &hello).await?;
        loop {
            match node.next().await? {
                Heard::Completion(of, None) if Some(&of) == id.as_ref() => break,
                Heard::Completion(of, Some(error)) if Some(&of) == id.as_ref() => {
                    return Err(format!("Hello refused: {error}"))
                }
                _ => {}
            }
        }
        node.heartbeat(0).await?;
        Ok(node)
    }

    /// A fire-and-forget Heartbeat.
    pub async fn heartbeat(&mut self, uptime: u64) -> Result<(), String> {
        let dto = HeartbeatDto {
            node_id: self.node_id.clone(),
            status: "online".into(),
            uptime,
            platform: "linux".into(),
            version: "0.1.0".into(),
            cpu_percent: 1.5,
            memory_mb: 12,
            capabilities: Some(capabilities()),
        };
        self.invoke("Heartbeat", false, &dto).await.map(drop)
    }

    /// A keep-alive Ping (sent when nothing else was sent for half the heartbeat interval).
    pub async fn ping(&mut self) -> Result<(), String> {
        let mut out = Vec::new();
        json::encode_record(&HubMessage::Ping, &mut out).map_err(|e| e.to_string())?;
        self.send_record(out).await
    }

    /// Answers `command` at once with a small successful result.
    pub async fn answer(&mut self, command: &ExecuteCommandDto) -> Result<(), String> {
        let result = CommandResultDto {
            command_id: command.command_id.clone(),
            ok: true,
            result: Some(serde_json::json!({ "echo": command.params })),
            error: None,
            duration_ms: Some(0),
            part_index: None,
            is_last: None,
            protocol_version: command.protocol_version.clone(),
        };
        self.invoke("CommandResult", true, &result).await.map(drop)
    }

    /// Invokes `target` with one argument; with an invocation id (returned) when `blocking`.
    pub async fn invoke<T: Serialize>(
        &mut self,
        target: &str,
        blocking: bool,
        argument: &T,
    ) -> Result<Option<String>, String> {
        let (record, id) = self.encode(target, blocking, argument)?;
        self.send_record(record).await?;
        Ok(id)
    }

    /// One invocation record, ready to send (the stream case prepares its parts ahead).
    pub fn encode<T: Serialize>(
        &mut self,
        target: &str,
        blocking: bool,
        argument: &T,
    ) -> Result<(Vec<u8>, Option<String>), String> {
        let invocation_id = blocking.then(|| {
            self.next_invocation += 1;
            self.next_invocation.to_string()
        });
        let message = HubMessage::Invocation(Invocation {
            invocation_id: invocation_id.clone(),
            target: target.to_string(),
            arguments: vec![Payload::encode(HubProtocol::Json, argument).map_err(|e| e.0)?],
            ..Invocation::default()
        });
        let mut out = Vec::new();
        json::encode_record(&message, &mut out).map_err(|e| e.0)?;
        Ok((out, invocation_id))
    }

    /// Sends one JSON record (or several, concatenated) as one Text message.
    pub async fn send_record(&mut self, record: Vec<u8>) -> Result<(), String> {
        let text = String::from_utf8(record).map_err(|e| e.to_string())?;
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| format!("send: {e}"))
    }

    /// The next hub message, reading the socket as needed. Cancel-safe: a record is taken from
    /// the decoder only in the poll that returns it.
    pub async fn next(&mut self) -> Result<Heard, String> {
        loop {
            if let Some(message) = self.decoder.next_message().map_err(|e| e.to_string())? {
                return Ok(match message {
                    HubMessage::Invocation(call) if call.target == "ExecuteCommand" => {
                        let dto = call
                            .arguments
                            .first()
                            .ok_or("ExecuteCommand without an argument")?
                            .decode()
                            .map_err(|e| e.0)?;
                        Heard::Execute(dto)
                    }
                    HubMessage::Completion {
                        invocation_id,
                        outcome,
                        ..
                    } => {
                        let error = match outcome {
                            nodelink_core::wire::signalr::CompletionOutcome::Error(e) => Some(e),
                            _ => None,
                        };
                        Heard::Completion(invocation_id, error)
                    }
                    HubMessage::Close { error, .. } => {
                        return Err(format!("the gateway closed the hub: {error:?}"))
                    }
                    _ => Heard::Other,
                });
            }
            self.read_frame().await?;
        }
    }

    async fn read_frame(&mut self) -> Result<(), String> {
        match self.ws.next().await {
            Some(Ok(Message::Text(text))) => self.decoder.push(text.as_bytes()),
            Some(Ok(Message::Binary(bytes))) => self.decoder.push(&bytes),
            Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("the socket ended".into()),
        }
        Ok(())
    }
}

fn capabilities() -> Capabilities {
    Capabilities {
        commands: vec![ECHO.to_string()],
        slots: 4,
        gpus: vec![],
    }
}
