//! The incremental record decoder: several records per WebSocket message, records split across
//! messages at every offset, the handshake phase, and the per-record size limit.

use nodelink_core::wire::signalr::framing::{write_varint, RecordDecoder};
use nodelink_core::wire::signalr::{DecodeError, HubProtocol};
use proptest::prelude::*;

const LIMIT: usize = 1024;

/// Drains every whole record currently buffered.
fn drain(decoder: &mut RecordDecoder) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    while let Some(record) = decoder.next_record().expect("no framing error") {
        records.push(record.to_vec());
    }
    records
}

fn json_stream(records: &[&[u8]]) -> Vec<u8> {
    let mut stream = Vec::new();
    for record in records {
        stream.extend_from_slice(record);
        stream.push(0x1e);
    }
    stream
}

fn msgpack_stream(bodies: &[&[u8]]) -> Vec<u8> {
    let mut stream = Vec::new();
    for body in bodies {
        write_varint(body.len() as u32, &mut stream);
        stream.extend_from_slice(body);
    }
    stream
}

fn msgpack_decoder() -> RecordDecoder {
    let mut decoder = RecordDecoder::new(LIMIT);
    decoder.set_protocol(HubProtocol::MessagePack);
    decoder
}

#[test]
fn several_json_records_in_one_message_come_out_in_order() {
    let mut decoder = RecordDecoder::new(LIMIT);
    decoder.set_protocol(HubProtocol::Json);
    decoder.push(
        b"{\"type\":6}\x1e{\"type\":1,\"target\":\"a\",\"arguments\":[]}\x1e{\"type\":6}\x1e",
    );
    assert_eq!(
        drain(&mut decoder),
        vec![
            b"{\"type\":6}".to_vec(),
            b"{\"type\":1,\"target\":\"a\",\"arguments\":[]}".to_vec(),
            b"{\"type\":6}".to_vec()
        ]
    );
    assert_eq!(decoder.buffered_len(), 0);
}

#[test]
fn a_json_stream_split_at_every_offset_yields_the_same_records() {
    let records: [&[u8]; 3] = [b"{\"type\":6}", b"{\"a\":\"\xc3\xa9\"}", b"{}"];
    let stream = json_stream(&records);
    for cut in 0..=stream.len() {
        let mut decoder = RecordDecoder::new(LIMIT);
        decoder.set_protocol(HubProtocol::Json);
        decoder.push(&stream[..cut]);
        let mut got = drain(&mut decoder);
        decoder.push(&stream[cut..]);
        got.extend(drain(&mut decoder));
        assert_eq!(got, records.map(<[u8]>::to_vec), "cut at {cut}");
        assert_eq!(decoder.buffered_len(), 0);
    }
}

#[test]
fn a_json_stream_fed_byte_by_byte_yields_the_same_records() {
    let records: [&[u8]; 2] = [b"{\"type\":6}", b"{\"type\":7}"];
    let mut decoder = RecordDecoder::new(LIMIT);
    decoder.set_protocol(HubProtocol::Json);
    let mut got = Vec::new();
    for byte in json_stream(&records) {
        decoder.push(&[byte]);
        got.extend(drain(&mut decoder));
    }
    assert_eq!(got, records.map(<[u8]>::to_vec));
}

#[test]
fn a_msgpack_stream_split_at_every_offset_yields_the_same_bodies() {
    let long = vec![0xa5; 200]; // a two-byte length prefix
    let bodies: [&[u8]; 3] = [&[0x91, 0x06], &long, &[0x92, 0x08, 0x01]];
    let stream = msgpack_stream(&bodies);
    assert_eq!(&stream[3..5], &[0xc8, 0x01], "200 takes two prefix bytes");
    for cut in 0..=stream.len() {
        let mut decoder = msgpack_decoder();
        decoder.push(&stream[..cut]);
        let mut got = drain(&mut decoder);
        decoder.push(&stream[cut..]);
        got.extend(drain(&mut decoder));
        assert_eq!(got, bodies.map(<[u8]>::to_vec), "cut at {cut}");
    }
}

#[test]
fn bytes_after_the_handshake_are_decoded_with_the_negotiated_protocol() {
    let mut decoder = RecordDecoder::new(LIMIT);
    assert_eq!(decoder.protocol(), None);
    let mut message = b"{\"protocol\":\"messagepack\",\"version\":1}\x1e".to_vec();
    message.extend_from_slice(&[0x02, 0x91, 0x06]);
    decoder.push(&message);
    let handshake = decoder.next_record().unwrap().map(<[u8]>::to_vec);
    assert_eq!(
        handshake.as_deref(),
        Some(&b"{\"protocol\":\"messagepack\",\"version\":1}"[..])
    );
    decoder.set_protocol(HubProtocol::MessagePack);
    assert_eq!(drain(&mut decoder), vec![vec![0x91, 0x06]]);
}

#[test]
fn an_empty_json_record_is_handed_out_as_empty() {
    let mut decoder = RecordDecoder::new(LIMIT);
    decoder.push(b"\x1e");
    assert_eq!(drain(&mut decoder), vec![Vec::<u8>::new()]);
}

#[test]
fn a_json_record_of_exactly_the_limit_is_accepted() {
    let record = vec![b'x'; LIMIT];
    let mut decoder = RecordDecoder::new(LIMIT);
    decoder.push(&json_stream(&[&record]));
    assert_eq!(drain(&mut decoder), vec![record]);
}

#[test]
fn a_json_record_one_byte_over_the_limit_is_fatal() {
    let mut decoder = RecordDecoder::new(LIMIT);
    decoder.push(&json_stream(&[&vec![b'x'; LIMIT + 1]]));
    let error = decoder.next_record().unwrap_err();
    assert_eq!(
        error,
        DecodeError::RecordTooLarge {
            size: LIMIT + 1,
            limit: LIMIT
        }
    );
    assert!(error.is_fatal());
}

#[test]
fn an_unterminated_json_record_over_the_limit_fails_before_its_end_arrives() {
    let mut decoder = RecordDecoder::new(LIMIT);
    decoder.push(&vec![b'x'; LIMIT]);
    assert_eq!(decoder.next_record(), Ok(None), "still within the limit");
    decoder.push(b"y");
    assert_eq!(
        decoder.next_record(),
        Err(DecodeError::RecordTooLarge {
            size: LIMIT + 1,
            limit: LIMIT
        })
    );
}

#[test]
fn after_a_fatal_error_the_decoder_drops_its_buffer_and_keeps_failing() {
    let mut decoder = RecordDecoder::new(LIMIT);
    decoder.push(&vec![b'x'; LIMIT + 1]);
    let error = decoder.next_record().unwrap_err();
    assert_eq!(decoder.buffered_len(), 0);
    decoder.push(b"{\"type\":6}\x1e");
    assert_eq!(
        decoder.buffered_len(),
        0,
        "input after a fatal error is dropped"
    );
    assert_eq!(decoder.next_record(), Err(error));
}

#[test]
fn a_msgpack_length_over_the_limit_fails_as_soon_as_the_prefix_is_read() {
    let mut decoder = msgpack_decoder();
    let mut prefix = Vec::new();
    write_varint(LIMIT as u32 + 1, &mut prefix);
    decoder.push(&prefix);
    assert_eq!(
        decoder.next_record(),
        Err(DecodeError::RecordTooLarge {
            size: LIMIT + 1,
            limit: LIMIT
        })
    );
}

#[test]
fn a_msgpack_length_prefix_longer_than_five_bytes_is_fatal() {
    let mut decoder = msgpack_decoder();
    decoder.push(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
    let error = decoder.next_record().unwrap_err();
    assert!(matches!(error, DecodeError::InvalidLengthPrefix { .. }));
    assert!(error.is_fatal());
}

#[test]
fn an_incomplete_msgpack_prefix_waits_for_more_bytes() {
    let mut decoder = msgpack_decoder();
    decoder.push(&[0xc8]);
    assert_eq!(decoder.next_record(), Ok(None));
    decoder.push(&[0x01]);
    assert_eq!(decoder.next_record(), Ok(None), "prefix read, body missing");
    decoder.push(&[0u8; 200]);
    assert_eq!(decoder.next_record().unwrap().map(<[u8]>::len), Some(200));
}

#[test]
fn buffered_len_counts_what_was_not_handed_out() {
    let mut decoder = RecordDecoder::new(LIMIT);
    decoder.push(b"{}\x1e{\"ty");
    assert_eq!(decoder.buffered_len(), 7);
    assert!(decoder.next_record().unwrap().is_some());
    assert_eq!(decoder.buffered_len(), 4);
    assert_eq!(decoder.next_record(), Ok(None));
    assert_eq!(decoder.buffered_len(), 4);
}

fn chunked(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for cut in cuts {
        pieces.push(stream[start..cut].to_vec());
        start = cut;
    }
    pieces.push(stream[start..].to_vec());
    pieces
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn json_records_survive_any_chunking(
        records in prop::collection::vec(
            prop::collection::vec(any::<u8>().prop_filter("no separator", |b| *b != 0x1e), 0..40),
            0..6),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let stream = json_stream(&slices);
        let mut decoder = RecordDecoder::new(LIMIT);
        decoder.set_protocol(HubProtocol::Json);
        let mut got = Vec::new();
        for piece in chunked(&stream, &cuts) {
            decoder.push(&piece);
            got.extend(drain(&mut decoder));
        }
        prop_assert_eq!(got, records);
        prop_assert_eq!(decoder.buffered_len(), 0);
    }

    #[test]
    fn msgpack_bodies_survive_any_chunking(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..5),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let slices: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let stream = msgpack_stream(&slices);
        let mut decoder = msgpack_decoder();
        let mut got = Vec::new();
        for piece in chunked(&stream, &cuts) {
            decoder.push(&piece);
            got.extend(drain(&mut decoder));
        }
        prop_assert_eq!(got, bodies);
    }

    #[test]
    fn the_decoder_never_panics_on_arbitrary_bytes(
        pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
        msgpack in any::<bool>(),
    ) {
        let mut decoder = RecordDecoder::new(64);
        if msgpack {
            decoder.set_protocol(HubProtocol::MessagePack);
        }
        for piece in pieces {
            decoder.push(&piece);
            while let Ok(Some(_)) = decoder.next_message() {}
        }
    }
}
