//! Properties: round trips, and decoders that never panic.

use super::text::cut_all;
use super::*;

fn arb_message() -> impl Strategy<Value = ChatMessage> {
    (
        prop_oneof![Just("user".to_owned()), Just("assistant".to_owned()), ".*"],
        ".*",
    )
        .prop_map(|(role, content)| ChatMessage { role, content })
}

fn arb_task() -> impl Strategy<Value = Task> {
    (
        0u8..3,
        any::<u32>(),
        proptest::option::of(".*"),
        proptest::collection::vec(arb_message(), 0..4),
        proptest::option::of(any::<u32>()),
        // Hundredths: what an API sends. serde_json's default float parsing is only exact for
        // short decimals, which is all a temperature needs.
        proptest::option::of((0u32..=200).prop_map(|n| f64::from(n) / 100.0)),
        proptest::option::of(0u64..(1 << 53)),
    )
        .prop_map(
            |(state, id, system, messages, max_new_tokens, temperature, created_at)| Task {
                state: TaskState::from_u8(state).unwrap_or_default(),
                id,
                system,
                messages,
                max_new_tokens,
                temperature,
                created_at,
            },
        )
}

/// Strings that look like frames, to get past the JSON parser into the field checks.
fn arb_frame_like() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        "-?[0-9]{1,12}(\\.[0-9]{1,3})?(e[+-]?[0-9]{1,3})?",
        Just("true".to_owned()),
        Just("null".to_owned()),
        Just("\"x\"".to_owned()),
        Just("[]".to_owned()),
        Just("[{\"role\":\"user\",\"content\":1}]".to_owned()),
        Just("[{\"role\":\"user\",\"content\":\"hi\"}]".to_owned()),
    ];
    let key = prop_oneof![
        Just("id"),
        Just("stop"),
        Just("state"),
        Just("messages"),
        Just("max_new_tokens"),
        Just("temperature"),
        Just("created_at"),
        Just("system"),
    ];
    proptest::collection::vec((key, value), 0..6).prop_map(|members| {
        let body: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", body.join(","))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn prop_connect_params_round_trip(
        token in ".+", model in ".+", max_concurrency in 1u32.., name in ".+",
    ) {
        let p = ConnectParams { token, model, max_concurrency, name };
        prop_assert_eq!(ConnectParams::from_query(&p.to_query()), Ok(p.clone()));
        let url = p.connect_url("ws://h/ws");
        prop_assert_eq!(ConnectParams::from_request_target(&url), Ok(p));
    }

    #[test]
    fn prop_connect_parse_never_panics(query in ".*") {
        if let Err(e) = ConnectParams::from_query(&query) {
            prop_assert!(e.close_reason().len() <= MAX_CLOSE_REASON_BYTES);
        }
    }

    #[test]
    fn prop_task_round_trips(task in arb_task()) {
        let text = task.encode();
        prop_assert_eq!(decode_server_text(&text), Ok(ServerFrame::Task(task.clone())));
        // serde_json agrees the output is JSON.
        prop_assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
    }

    #[test]
    fn prop_stop_round_trips(id in any::<u32>()) {
        let stop = ServerFrame::Stop { id };
        prop_assert_eq!(decode_server_text(&stop.encode()), Ok(stop));
    }

    #[test]
    fn prop_server_text_decoder_never_panics(text in ".*") {
        let _ = decode_server_text(&text);
    }

    #[test]
    fn prop_server_text_decoder_never_panics_on_frame_like_text(text in arb_frame_like()) {
        if let Ok(frame) = decode_server_text(&text) {
            // Whatever decodes re-encodes to something that decodes to the same frame.
            prop_assert_eq!(decode_server_text(&frame.encode()), Ok(frame));
        }
    }

    #[test]
    fn prop_js_numbers_parse_back(x in any::<f64>()) {
        let js = format_js_number(x);
        if x.is_finite() {
            prop_assert_eq!(js.parse::<f64>().ok(), Some(if x == 0.0 { 0.0 } else { x }));
        } else {
            prop_assert_eq!(js, "null");
        }
    }

    #[test]
    fn prop_result_frame_round_trips(id in any::<u32>(), text in proptest::option::of(".+")) {
        let frame = ResultFrame { id, text: text.as_deref() };
        let bytes = frame.to_bytes().expect("text is non-empty");
        prop_assert_eq!(ResultFrame::decode(&bytes), Ok(frame));
    }

    #[test]
    fn prop_result_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        match ResultFrame::decode(&bytes) {
            Ok(frame) => prop_assert_eq!(frame.to_bytes().expect("decoded"), bytes),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn prop_cutter_matches_lossy_decoding_of_the_whole(
        bytes in proptest::collection::vec(any::<u8>(), 0..48),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for p in points {
            chunks.push(&bytes[from..p]);
            from = p;
        }
        chunks.push(&bytes[from..]);
        let (text, _) = cut_all(&chunks);
        prop_assert_eq!(text, String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn prop_cutter_never_changes_valid_text(
        text in ".*",
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let bytes = text.as_bytes();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut cutter = Utf8Cutter::new();
        let mut out = String::new();
        let mut from = 0;
        for p in points.into_iter().chain([bytes.len()]) {
            cutter.feed(&bytes[from..p], &mut out);
            // After each feed, out + carried bytes is exactly the input so far.
            prop_assert_eq!(out.len() + cutter.pending(), p);
            from = p;
        }
        prop_assert_eq!(out, text);
    }

    #[test]
    fn prop_split_text_pieces_are_full_and_bounded(text in ".*", max_bytes in 4usize..24) {
        let pieces: Vec<&str> = split_text(&text, max_bytes).expect("valid").collect();
        prop_assert_eq!(pieces.concat(), text.clone());
        for (i, piece) in pieces.iter().enumerate() {
            prop_assert!(!piece.is_empty() && piece.len() <= max_bytes);
            if let Some(next) = pieces.get(i + 1) {
                // Maximal: the next character would not have fit.
                let c = next.chars().next().map_or(0, char::len_utf8);
                prop_assert!(piece.len() + c > max_bytes);
            }
        }
    }
}
