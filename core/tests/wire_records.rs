//! Whole records of every node-contract call, in both hub protocols, exactly as they travel; and
//! the one-pass JSON fast path (`json::decode_invocation`), held to the general path's results.
mod contract_support;
mod support;

use contract_support as gen;
use contract_support::fixtures::{execute, heartbeat, hello, result_ok, strings};
use nodelink_core::wire::contract::{
    answer_hello, GatewayCall, NodeCall, SUPPORTED_PROTOCOL_VERSIONS,
};
use nodelink_core::wire::dto::{CancelCommandDto, CommandProgressDto};
use nodelink_core::wire::signalr::json::{self, TypedCall, TypedInvocation};
use nodelink_core::wire::signalr::{CompletionOutcome, Headers, HubMessage, HubProtocol};
use proptest::prelude::*;
use support::{hex, text};

fn record(protocol: HubProtocol, message: &HubMessage) -> String {
    let mut out = Vec::new();
    protocol.encode(message, &mut out).expect("encodes");
    match protocol {
        HubProtocol::Json => text(&out),
        HubProtocol::MessagePack => hex(&out),
    }
}

fn node(call: NodeCall, id: Option<&'static str>) -> impl Fn(HubProtocol) -> HubMessage {
    move |protocol| {
        call.to_message(protocol, id.map(str::to_owned))
            .expect("encodes")
    }
}

fn gateway(call: GatewayCall) -> impl Fn(HubProtocol) -> HubMessage {
    move |protocol| call.to_message(protocol, None).expect("encodes")
}

fn progress() -> CommandProgressDto {
    CommandProgressDto {
        command_id: "cmd_xyz789".to_owned(),
        progress: 0.5,
        step: Some(2),
        step_count: Some(4),
        eta_ms: Some(1500),
        message: Some("compiling".to_owned()),
    }
}

fn cancel() -> CancelCommandDto {
    CancelCommandDto {
        command_id: "cmd_xyz789".to_owned(),
        reason: Some("user_cancelled".to_owned()),
    }
}

/// Snapshots one message in both protocols.
fn pin(name: &str, message: impl Fn(HubProtocol) -> HubMessage) {
    insta::assert_snapshot!(
        format!("record_json_{name}"),
        record(HubProtocol::Json, &message(HubProtocol::Json))
    );
    insta::assert_snapshot!(
        format!("record_msgpack_{name}"),
        record(HubProtocol::MessagePack, &message(HubProtocol::MessagePack))
    );
}

#[test]
fn node_to_gateway_records() {
    pin("hello", node(NodeCall::Hello(hello()), Some("1")));
    pin("heartbeat", node(NodeCall::Heartbeat(heartbeat()), None));
    pin(
        "command_result",
        node(NodeCall::CommandResult(result_ok()), Some("2")),
    );
    pin(
        "command_progress",
        node(NodeCall::CommandProgress(progress()), None),
    );
    pin(
        "scope_changed",
        node(NodeCall::ScopeChanged(strings(&["screen.capture"])), None),
    );
}

#[test]
fn gateway_to_node_records() {
    pin(
        "execute_command",
        gateway(GatewayCall::ExecuteCommand(execute())),
    );
    pin(
        "refresh_scopes",
        gateway(GatewayCall::RefreshScopes(strings(&[
            "screen.capture",
            "input.control",
        ]))),
    );
    pin(
        "revoke_access",
        gateway(GatewayCall::RevokeAccess {
            reason: "admin_revoked".to_owned(),
        }),
    );
    pin(
        "cancel_command",
        gateway(GatewayCall::CancelCommand(cancel())),
    );
}

#[test]
fn completion_records() {
    pin("hello_completion", |protocol| HubMessage::Completion {
        headers: Headers::new(),
        invocation_id: "1".to_owned(),
        outcome: answer_hello(protocol, &hello(), &SUPPORTED_PROTOCOL_VERSIONS).expect("encodes"),
    });
    pin("command_result_ack", |_| HubMessage::Completion {
        headers: Headers::new(),
        invocation_id: "2".to_owned(),
        outcome: CompletionOutcome::Void,
    });
}

// ---------------------------------------------------------------------------------------------
// The one-pass fast path

/// What the general path gives: the invocation id and the call, or `None` for anything that is
/// not a valid Invocation of a known method.
fn general<C>(
    record: &[u8],
    from: fn(&nodelink_core::wire::signalr::Invocation) -> Option<C>,
) -> Option<TypedCall<C>> {
    match json::decode_record(record).ok()? {
        HubMessage::Invocation(invocation) => Some(TypedCall {
            call: from(&invocation)?,
            invocation_id: invocation.invocation_id,
        }),
        _ => None,
    }
}

fn general_node(record: &[u8]) -> Option<TypedCall<NodeCall>> {
    general(record, |inv| NodeCall::from_invocation(inv).ok())
}

fn general_gateway(record: &[u8]) -> Option<TypedCall<GatewayCall>> {
    general(record, |inv| GatewayCall::from_invocation(inv).ok())
}

/// The fast path either declines or agrees with the general path.
fn assert_agrees<C: TypedInvocation + PartialEq + std::fmt::Debug>(
    record: &[u8],
    general: fn(&[u8]) -> Option<TypedCall<C>>,
) -> bool {
    match json::decode_invocation::<C>(record) {
        None => false,
        Some(fast) => {
            assert_eq!(Some(fast), general(record), "{}", text(record));
            true
        }
    }
}

const HEARTBEAT: &[u8] = br#"{"type":1,"target":"Heartbeat","arguments":[{"nodeId":"abc123","status":"online","uptime":3600,"platform":"windows","version":"1.0.0","cpuPercent":2.5,"memoryMb":45}]}"#;

#[test]
fn the_hot_calls_take_the_fast_path() {
    assert!(assert_agrees(HEARTBEAT, general_node));
    let with_id = br#"{"type":1,"invocationId":"7","target":"CommandResult","arguments":[{"commandId":"c","ok":true}]}"#;
    assert!(assert_agrees(with_id, general_node));
    let any_case = br#"{"type":1,"target":"executecommand","arguments":[{"commandId":"c","command":"system.info"}]}"#;
    assert!(assert_agrees(any_case, general_gateway));
    let ignored_member = br#"{"type":1,"target":"CancelCommand","x":[1,{"y":null}],"arguments":[{"commandId":"c"}],"item":5}"#;
    assert!(assert_agrees(ignored_member, general_gateway));
}

#[test]
fn the_fast_path_declines_what_it_does_not_cover() {
    let declined: [&[u8]; 11] = [
        // The JS client's member order: arguments before target.
        br#"{"arguments":[{"nodeId":"a","status":"online","uptime":1,"platform":"p","version":"v","cpuPercent":1,"memoryMb":1}],"target":"Heartbeat","type":1}"#,
        br#"{"type":1,"headers":{},"target":"Heartbeat","arguments":[]}"#,
        br#"{"type":1,"target":"Heart\u0062eat","arguments":[{}]}"#,
        br#"{"type":1,"target":"Heartbeat","target":"Hello","arguments":[{}]}"#,
        br#"{"type":4,"invocationId":"1","target":"Heartbeat","arguments":[{}]}"#,
        br#"{"type":1,"target":"ScopeChanged","arguments":[["a"]]}"#,
        br#"{"type":1,"target":"Heartbeat","arguments":[]}"#,
        br#"{"type":1,"target":"Heartbeat","arguments":[{},{}]}"#,
        br#"{"type":1,"target":"Heartbeat","arguments":[{"nodeId":5}]}"#,
        br#"{"type":1,"target":"Heartbeat","arguments":[{}]} x"#,
        b"{\"type\":1,\"x\":\"\xff\",\"target\":\"Heartbeat\",\"arguments\":[{}]}",
    ];
    for record in declined {
        assert_eq!(
            json::decode_invocation::<NodeCall>(record),
            None,
            "{}",
            text(record)
        );
    }
    // The JS client's order still decodes, through the general path.
    assert!(general_node(declined[0]).is_some());
}

fn json_record(message: &HubMessage) -> Vec<u8> {
    let mut out = Vec::new();
    json::encode_record(message, &mut out).expect("encodes");
    out.pop();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_fast_path_agrees_on_every_node_call(
        call in prop_oneof![
            gen::heartbeat().prop_map(NodeCall::Heartbeat),
            gen::command_result().prop_map(NodeCall::CommandResult),
            gen::command_progress().prop_map(NodeCall::CommandProgress),
            gen::hello().prop_map(NodeCall::Hello),
            gen::scopes().prop_map(NodeCall::ScopeChanged),
        ],
        id in proptest::option::of("[0-9]{1,3}"),
    ) {
        let hot = NodeCall::has_fast_path(call.target());
        let record = json_record(&call.to_message(HubProtocol::Json, id).expect("encodes"));
        prop_assert_eq!(assert_agrees(&record, general_node), hot);
    }

    #[test]
    fn the_fast_path_agrees_on_every_gateway_call(
        call in prop_oneof![
            gen::execute_command().prop_map(GatewayCall::ExecuteCommand),
            gen::cancel_command().prop_map(GatewayCall::CancelCommand),
            gen::scopes().prop_map(GatewayCall::RefreshScopes),
        ],
    ) {
        let hot = GatewayCall::has_fast_path(call.target());
        let record = json_record(&call.to_message(HubProtocol::Json, None).expect("encodes"));
        prop_assert_eq!(assert_agrees(&record, general_gateway), hot);
    }

    #[test]
    fn the_fast_path_never_disagrees_on_damaged_records(cut in 0usize..200, byte in any::<u8>()) {
        let mut record = HEARTBEAT.to_vec();
        let at = cut % record.len();
        record[at] = byte;
        assert_agrees(&record, general_node);
        assert_agrees(&record[..at], general_node);
    }
}
