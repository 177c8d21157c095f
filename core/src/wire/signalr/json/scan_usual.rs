//! The heartbeat record exactly as nodes write it, matched as one template: the first try of
//! [`super::scan_heartbeat_with`].
//!
//! serde writes a `HeartbeatDto` with its members in declaration order and no whitespace, so
//! nearly every heartbeat a gateway receives is the same sequence of literals with the values
//! between them. Matching those literals at fixed places (the compiler compares each in a few
//! word loads) costs a fraction of the member loop of the flexible scan, which stays for any
//! other spelling. Same rule as there: an answer only for a record that the general path
//! certainly decodes as that Heartbeat; `None` is "not this template", never "invalid".

use std::ops::Range;

use super::scan::{special_bytes, HeartbeatScan, Scanner};

/// The envelope and the argument up to its `nodeId`'s text, in two pieces that the compiler
/// compares inline (a record of another type differs within the first).
const HEAD: [&[u8]; 2] = [
    b"{\"type\":1,\"target\":\"Heartbeat\",",
    b"\"arguments\":[{\"nodeId\":\"",
];
/// Where the argument (its `{`) starts: `HEAD` ends with its first member.
const ARGUMENT_AT: usize = HEAD[0].len() + HEAD[1].len() - b"{\"nodeId\":\"".len();
/// The end of the argument, the arguments and the record.
const TAIL: &[u8] = b"}]}";

/// Where the argument and its `capabilities` lie in a record of the usual shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Usual {
    pub(super) argument: Range<usize>,
    /// `None` when the member is absent or `null`.
    pub(super) capabilities: Option<Range<usize>>,
    /// Whether the capabilities are the `known` ones.
    pub(super) known: bool,
}

impl Usual {
    /// The parts as text, and whether the capabilities are the known ones; `text` is the record
    /// matched.
    #[inline]
    pub(super) fn scan(self, text: &str) -> Option<(HeartbeatScan<'_>, bool)> {
        // The template's boundaries are ASCII bytes: always character boundaries.
        let scan = HeartbeatScan {
            argument: text.get(self.argument)?,
            capabilities: match self.capabilities {
                Some(range) => Some(text.get(range)?),
                None => None,
            },
        };
        Some((scan, self.known))
    }
}

/// Matches `record` as
/// `{"type":1,"target":"Heartbeat","arguments":[{"nodeId":"…","status":"…","uptime":N,
/// "platform":"…","version":"…","cpuPercent":X,"memoryMb":N[,"capabilities":null|{…}]}]}`
/// with nothing else and no whitespace outside `capabilities`. `known`: as in
/// [`super::scan_heartbeat_with`]. UTF-8 is NOT checked: every byte outside strings that this
/// accepts is ASCII, and the caller checks the record (or knows it is text).
#[inline]
pub(super) fn usual(record: &[u8], known: Option<&[u8]>) -> Option<Usual> {
    // Other records (a CommandResult) leave here, without a call.
    if record.starts_with(HEAD[0]) {
        usual_after_type(record, known)
    } else {
        None
    }
}

/// [`usual`] after the start of `HEAD`.
#[inline(never)]
fn usual_after_type(record: &[u8], known: Option<&[u8]>) -> Option<Usual> {
    let mut s = Scanner {
        bytes: record,
        at: HEAD[0].len(),
        last: 0,
    };
    s.literal(HEAD[1])?;
    short_string(&mut s)?;
    s.literal(b",\"status\":\"")?;
    short_string(&mut s)?;
    s.literal(b",\"uptime\":")?;
    unsigned(&mut s)?;
    s.literal(b",\"platform\":\"")?;
    short_string(&mut s)?;
    s.literal(b",\"version\":\"")?;
    short_string(&mut s)?;
    s.literal(b",\"cpuPercent\":")?;
    s.number()?;
    s.literal(b",\"memoryMb\":")?;
    unsigned(&mut s)?;
    let (mut capabilities, mut is_known) = (None, false);
    if s.literal(b",\"capabilities\":").is_some() {
        match s.peek()? {
            b'n' => s.literal(b"null")?,
            b'{' => {
                let from = s.at;
                match known {
                    Some(known)
                        if known.first() == Some(&b'{') && s.bytes[from..].starts_with(known) =>
                    {
                        s.at += known.len();
                        is_known = true;
                    }
                    _ => s.skip_value(1)?,
                }
                capabilities = Some(from..s.at);
            }
            _ => return None,
        }
    }
    s.literal(TAIL)?;
    (s.at == record.len()).then(|| Usual {
        argument: ARGUMENT_AT..record.len() - (TAIL.len() - 1),
        capabilities,
        known: is_known,
    })
}

/// The rest of a string after its opening quote, passed over: no escape and no control
/// character (below 0x20). Inlined (the template's strings are short: a call would cost as much
/// as the search), and only where 8 bytes can be read from its start: a template string is
/// always followed by more than that, so `None` there only means "not the template".
#[inline(always)]
fn short_string(s: &mut Scanner<'_>) -> Option<()> {
    let rest = &s.bytes[s.at..];
    let mut at = 0;
    while let Some(chunk) = rest.get(at..at + 8) {
        let flagged = special_bytes(chunk);
        if flagged != 0 {
            let end = at + (flagged.trailing_zeros() / 8) as usize;
            return (rest[end] == b'"').then(|| s.at += end + 1);
        }
        at += 8;
    }
    None
}

/// An integer that fits a `u64`: 1 to 19 digits, no leading zero. What follows is left to the
/// next literal, which a sign, a fraction or an exponent cannot match.
#[inline(always)]
fn unsigned(s: &mut Scanner<'_>) -> Option<()> {
    let rest = &s.bytes[s.at..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let ok = matches!(digits, 1..=19) && (digits == 1 || rest[0] != b'0');
    s.at += digits;
    ok.then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARG: &str = r#"{"nodeId":"n1","status":"online","uptime":3600,"platform":"linux","version":"0.1.0","cpuPercent":2.5,"memoryMb":45,"capabilities":{"commands":["system.info"],"slots":4}}"#;

    fn record(argument: &str) -> String {
        format!(r#"{{"type":1,"target":"Heartbeat","arguments":[{argument}]}}"#)
    }

    #[test]
    fn the_usual_record_is_matched_with_its_parts() {
        let text = record(ARG);
        let found = usual(text.as_bytes(), None).expect("matched");
        assert_eq!(&text[found.argument.clone()], ARG);
        let caps = found.capabilities.clone().expect("capabilities");
        assert_eq!(&text[caps], r#"{"commands":["system.info"],"slots":4}"#);
        let known = br#"{"commands":["system.info"],"slots":4}"#;
        let with_known = usual(text.as_bytes(), Some(known)).expect("matched");
        assert_eq!((with_known.known, found.known), (true, false));
        assert_eq!(
            with_known,
            Usual {
                known: true,
                ..found.clone()
            }
        );
        let other = br#"{"commands":["system.info"],"slots":5}"#;
        assert_eq!(usual(text.as_bytes(), Some(other)), Some(found));
        // Absent and null capabilities.
        let bare = ARG.replace(
            r#","capabilities":{"commands":["system.info"],"slots":4}"#,
            "",
        );
        let text = record(&bare);
        let found = usual(text.as_bytes(), None).expect("matched");
        assert_eq!((&text[found.argument], found.capabilities), (&*bare, None));
        let null = bare.replace("45}", "45,\"capabilities\":null}");
        assert_eq!(
            usual(record(&null).as_bytes(), None).unwrap().capabilities,
            None
        );
    }

    #[test]
    fn any_other_spelling_is_left_to_the_flexible_scan() {
        for case in [
            record(ARG).replace(",\"status\"", ", \"status\""),
            record(ARG).replace("\"type\":1,", ""),
            record(&ARG.replace("\"n1\"", "\"n\\u0031\"")),
            record(&ARG.replace("\"n1\"", "\"n\u{1}\"")),
            record(&ARG.replace("\"online\"", "\"a long status \u{1f} with a control byte\"")),
            record(&ARG.replace("3600", "-3600")),
            record(&ARG.replace("3600", "03600")),
            record(&ARG.replace("3600", "")),
            record(&ARG.replace("3600", "36000000000000000000")),
            record(&ARG.replace("45,", "4e5,")),
            record(&ARG.replace("45,", "45.0,")),
            record(&ARG.replace("2.5", "2.5e0")),
            record(
                &ARG.replace("{\"commands\"", "[{\"commands\"")
                    .replace("4}}", "4}]}"),
            ),
            record(&format!("{ARG},{ARG}")),
            record(ARG) + " ",
            record(&ARG.replace("}}", "},\"x\":1}")),
        ] {
            assert_eq!(usual(case.as_bytes(), None), None, "{case}");
        }
    }
}
