//! `scan_heartbeat` (core/src/wire/signalr/json/scan.rs, and scan_usual.rs for records as nodes
//! write them): what it recognizes, what it leaves to the general path, and the property that
//! holds it to the general path: whenever it answers, the general path decodes the same record
//! as a Heartbeat whose argument is the text it found.
mod contract_support;

use contract_support::{damage, heartbeat, record_edits};
use nodelink_core::wire::contract::NodeCall;
use nodelink_core::wire::dto::{Capabilities, HeartbeatDto};
use nodelink_core::wire::signalr::json::{
    decode_record, scan_heartbeat, scan_heartbeat_with, scan_usual_heartbeat, HeartbeatScan,
};
use nodelink_core::wire::signalr::{HubMessage, HubProtocol};
use proptest::prelude::*;

const ARG: &str = r#"{"nodeId":"n1","status":"online","uptime":3600,"platform":"linux","version":"0.1.0","cpuPercent":2.5,"memoryMb":45,"capabilities":{"commands":["system.info"],"slots":4}}"#;

fn record(argument: &str) -> String {
    format!(r#"{{"type":1,"target":"Heartbeat","arguments":[{argument}]}}"#)
}

/// The general path: the record decoded, then the contract's decoding of the invocation.
fn general(record: &[u8]) -> Option<HeartbeatDto> {
    match decode_record(record).ok()? {
        HubMessage::Invocation(invocation) => match NodeCall::from_invocation(&invocation).ok()? {
            NodeCall::Heartbeat(dto) => Some(dto),
            _ => None,
        },
        _ => None,
    }
}

#[test]
fn a_usual_heartbeat_is_recognized_with_its_argument_and_capabilities() {
    let text = record(ARG);
    let scan = scan_heartbeat(text.as_bytes()).expect("recognized");
    assert_eq!(scan.argument, ARG);
    assert_eq!(
        scan.capabilities,
        Some(r#"{"commands":["system.info"],"slots":4}"#)
    );
    // Whitespace, member order, any case of the target, unknown members, null capabilities.
    let spaced = " { \"arguments\" : [ 1 ] , \"x\":{\"y\":[true,false,null,-1.5,\"z\"]} }";
    assert_eq!(
        scan_heartbeat(spaced.as_bytes()),
        None,
        "arguments before target"
    );
    let other = format!(
        "\t{{ \"target\" : \"HEARTBEAT\" ,\"x\":{{\"y\":[true,false,null,-1.5,\"é\"]}}, \"arguments\" : [ {} ] , \"type\" : 1 }}\n",
        ARG.replace(r#""capabilities":{"commands":["system.info"],"slots":4}"#, r#""capabilities":null,"extra":[{}]"#)
    );
    let scan = scan_heartbeat(other.as_bytes()).expect("recognized");
    assert_eq!(scan.capabilities, None);
    assert!(general(other.as_bytes()).is_some());
}

#[test]
fn anything_unusual_goes_to_the_general_path() {
    let cases: Vec<String> = vec![
        // The envelope.
        record(ARG).replace(r#""type":1"#, r#""type":4"#),
        record(ARG).replace(r#""type":1"#, r#""type":1.0"#),
        record(ARG).replace("Heartbeat", "CommandResult"),
        record(ARG).replace(r#""type":1,"#, r#""type":1,"invocationId":"1","#),
        record(ARG).replace(r#""type":1,"#, r#""type":1,"headers":{},"#),
        record(ARG).replace(r#""type":1,"#, r#""type":1,"type":1,"#),
        record(ARG).replace(r#""Heartbeat","#, r#""Heartbeat","type":1,"#),
        record(ARG).replace(r#""Heartbeat","#, r#""Heartbeat","target":"Heartbeat","#),
        record(ARG).replace(r#""Heartbeat","#, r#""Heartbeat",}"#),
        record(ARG).replace(r#""type":1"#, r#""type":12"#),
        record(ARG).replace(r#""type":1,"#, ""),
        record(&format!("{ARG},{ARG}")),
        record("") + " x",
        format!("{}x", record(ARG)),
        // The argument's members.
        record(&ARG.replace(r#""nodeId":"n1","#, "")),
        record(&ARG.replace(r#""nodeId":"n1","#, r#""nodeId":"n1","nodeId":"n2","#)),
        record(&ARG.replace(r#""n1""#, r#""n\u0031""#)),
        record(&ARG.replace(r#""n1""#, "\"n\u{1}\"")),
        record(&ARG.replace(r#""n1""#, "1")),
        record(&ARG.replace("3600", "-3600")),
        record(&ARG.replace("3600", "3600.5")),
        record(&ARG.replace("3600", "36e2")),
        record(&ARG.replace("3600", "03600")),
        record(&ARG.replace("3600", "18446744073709551616")),
        record(&ARG.replace("2.5", "2.")),
        record(&ARG.replace("2.5", "2.5e0")),
        record(&ARG.replace("2.5", "\"2.5\"")),
        record(
            &ARG.replace(r#"{"commands""#, r#"[{"commands""#)
                .replace("4}}", "4}]}"),
        ),
        record(&ARG.replace("4}}", "4}")),
        record(&ARG.replace("4}}", "4,}}")),
        // Deep nesting in an unknown member.
        record(&ARG.replace(
            "{\"nodeId\"",
            &format!("{{\"x\":{}1{},\"nodeId\"", "[".repeat(40), "]".repeat(40)),
        )),
    ];
    for case in &cases {
        assert_eq!(scan_heartbeat(case.as_bytes()), None, "{case}");
    }
    assert_eq!(scan_heartbeat(b"{\"type\":1,\xff}"), None);
    // Invalid UTF-8 in a record of the usual shape (the template's own path) and in another.
    for text in [record(ARG), record(ARG).replace("{\"type", "{ \"type")] {
        let bad = text.replacen("n1", "n\u{e9}", 1).into_bytes();
        assert!(scan_heartbeat(&bad).is_some(), "valid as it is");
        let at = bad.iter().position(|&b| b >= 0x80).expect("the é");
        let mut bad = bad;
        bad[at + 1] = b'1'; // a lead byte without its continuation
        assert_eq!(scan_heartbeat(&bad), None);
    }
}

/// A record of the heartbeat as a node encodes it.
fn encoded(dto: &HeartbeatDto) -> Vec<u8> {
    let message = NodeCall::Heartbeat(dto.clone())
        .to_message(HubProtocol::Json, None)
        .expect("encodable");
    let mut out = Vec::new();
    HubProtocol::Json
        .encode(&message, &mut out)
        .expect("encodable");
    out.pop(); // the record separator
    out
}

/// The property: an answer from the scanner is what the general path decodes.
fn agrees(record: &[u8], scan: HeartbeatScan<'_>) -> Result<(), TestCaseError> {
    let capabilities_ok = scan
        .capabilities
        .is_none_or(|text| serde_json::from_str::<Capabilities>(text).is_ok());
    let general = general(record);
    if capabilities_ok {
        let dto = general.expect("the general path decodes what the scanner recognized");
        let own: HeartbeatDto = serde_json::from_str(scan.argument).expect("the argument decodes");
        prop_assert_eq!(&own, &dto);
        let slots = scan
            .capabilities
            .map(|text| serde_json::from_str::<Capabilities>(text).map(|c| c.slots));
        prop_assert_eq!(
            slots.map(Result::ok),
            dto.capabilities.as_ref().map(|c| Some(c.slots))
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn whatever_it_recognizes_the_general_path_decodes_the_same(
        dto in heartbeat(),
        edits in record_edits(),
    ) {
        let clean = encoded(&dto);
        // A node's own heartbeat is recognized unless a string has an escape or a number has
        // 20 digits.
        let short = |n: u64| n < 10u64.pow(19);
        let ordinary = !clean.contains(&b'\\')
            && short(dto.uptime)
            && short(dto.memory_mb)
            && dto.capabilities.iter().flat_map(|c| &c.gpus).all(|g| short(g.memory_total_mb));
        match scan_heartbeat(&clean) {
            Some(scan) => agrees(&clean, scan)?,
            None => prop_assert!(!ordinary, "not recognized: {}", String::from_utf8_lossy(&clean)),
        }
        // Damaged copies: wherever the scanner still answers, it agrees with the general path.
        let damaged = damage(&clean, &edits);
        if let Some(scan) = scan_heartbeat(&damaged) {
            agrees(&damaged, scan)?;
        }
        // The template (records as nodes write them) and the flexible scan (any other
        // spelling, here a space in the envelope) find the same parts.
        let spaced = [&b"{ "[..], &clean[1..]].concat();
        prop_assert_eq!(scan_heartbeat(&spaced), scan_heartbeat(&clean));
        // Knowing the clean record's capabilities changes nothing but the work done. The scan
        // of usual text records answers for a node's own records, and then as the others do.
        let known = scan_heartbeat(&clean).and_then(|scan| scan.capabilities);
        for known in [None, known.map(str::as_bytes)] {
            for record in [&clean, &damaged, &spaced] {
                let answer = scan_heartbeat(record);
                prop_assert_eq!(scan_heartbeat_with(record, known), answer);
                let Ok(text) = std::str::from_utf8(record) else { continue };
                match scan_usual_heartbeat(text, known) {
                    Some(usual) => prop_assert_eq!(Some(usual), answer),
                    None => prop_assert!(!(ordinary && record == &clean), "usual: {}", text),
                }
            }
        }
    }
}
