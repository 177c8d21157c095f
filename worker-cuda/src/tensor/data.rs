//! Tensor inputs (inline JSON numbers, base64 little-endian f32, or generated from a seed) and
//! outputs (a checksum, or the values as base64).

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

/// The most elements one input or output tensor may have (1 GiB of f32).
pub const MAX_ELEMENTS: usize = 1 << 28;
/// The most elements returned with `output: "values"` (64 MiB of f32, about 90 MB of base64,
/// sent in parts by the node's chunking).
pub const MAX_RETURNED_ELEMENTS: usize = 1 << 24;

/// An inline tensor: a JSON array of numbers, or a base64 string of little-endian f32.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Data {
    Values(Vec<f32>),
    Base64(String),
}

/// What a command returns of its result tensor.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputMode {
    /// `checksum`: sum, sum of absolute values, min, max and the first 8 values.
    #[default]
    Checksum,
    /// `values`: every value, as base64 of little-endian f32.
    Values,
}

/// Where a tensor command runs.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The GPU when there is one and the job is big enough to be worth it; else the CPU.
    #[default]
    Auto,
    Cpu,
    Gpu,
}

/// The tensor named `name` with `len` elements: `inline` if given, else generated from `seed`
/// (stream `stream`, so two tensors of one seed differ).
pub fn tensor(
    name: &str,
    inline: Option<&Data>,
    seed: Option<u64>,
    stream: u64,
    len: usize,
) -> Result<Vec<f32>, String> {
    if len > MAX_ELEMENTS {
        return Err(format!(
            "`{name}` would have {len} elements, over the maximum {MAX_ELEMENTS}"
        ));
    }
    let values = match (inline, seed) {
        (Some(Data::Values(v)), _) => v.clone(),
        (Some(Data::Base64(text)), _) => decode_f32(text).map_err(|e| format!("`{name}`: {e}"))?,
        (None, Some(seed)) => return Ok(generate(seed, stream, len)),
        (None, None) => return Err(format!("`{name}` is missing and there is no `seed`")),
    };
    if values.len() != len {
        return Err(format!(
            "`{name}` has {} elements, {len} expected",
            values.len()
        ));
    }
    Ok(values)
}

/// Decodes base64 of little-endian f32.
pub fn decode_f32(text: &str) -> Result<Vec<f32>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("not base64: {e}"))?;
    if bytes.len() % 4 != 0 {
        return Err(format!(
            "{} bytes is not a whole number of f32 values",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Encodes f32 values as base64 of little-endian bytes.
pub fn encode_f32(values: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `len` values uniform in [-1, 1) from SplitMix64: the same on every node and platform, so a
/// gateway can check a node's checksum against another node's.
pub fn generate(seed: u64, stream: u64, len: usize) -> Vec<f32> {
    let mut state = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            // 24 random bits: exact in f32.
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The JSON of a result tensor in `mode`.
pub fn output(values: &[f32], mode: OutputMode) -> Result<Value, String> {
    match mode {
        OutputMode::Checksum => Ok(checksum(values)),
        OutputMode::Values if values.len() > MAX_RETURNED_ELEMENTS => Err(format!(
            "the result has {} elements, over the {MAX_RETURNED_ELEMENTS} that `output: \"values\"` returns; ask for a checksum",
            values.len()
        )),
        OutputMode::Values => Ok(json!({"values": encode_f32(values), "encoding": "base64-f32le"})),
    }
}

/// Sum, sum of absolute values (in f64), min, max (NaN-aware: `null` when all are NaN) and the
/// first 8 values.
pub fn checksum(values: &[f32]) -> Value {
    let finite = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
    let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
    let sum_abs: f64 = values.iter().map(|&v| f64::from(v).abs()).sum();
    let min = values
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .reduce(f32::min);
    let max = values
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .reduce(f32::max);
    json!({
        "checksum": {
            "count": values.len(),
            "sum": finite(sum),
            "sumAbs": finite(sum_abs),
            "min": min.map(f64::from).map(finite),
            "max": max.map(f64::from).map(finite),
            "nanCount": values.iter().filter(|v| v.is_nan()).count(),
            "head": values.iter().take(8).map(|&v| finite(f64::from(v))).collect::<Vec<_>>(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_rejects_ragged_input() {
        let values = [1.5f32, -2.0, 0.0, f32::MAX];
        assert_eq!(decode_f32(&encode_f32(&values)).unwrap(), values);
        assert!(decode_f32("AAA=").unwrap_err().contains("whole number"));
        assert!(decode_f32("!!").unwrap_err().contains("base64"));
    }

    #[test]
    fn generated_tensors_are_deterministic_per_stream_and_in_range() {
        let a = generate(7, 0, 1000);
        assert_eq!(a, generate(7, 0, 1000));
        assert_ne!(a, generate(7, 1, 1000));
        assert_ne!(a, generate(8, 0, 1000));
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
        let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / 1000.0;
        assert!(mean.abs() < 0.1, "{mean}");
    }

    #[test]
    fn tensor_checks_length_and_source() {
        let inline = Data::Values(vec![1.0, 2.0]);
        assert_eq!(tensor("x", Some(&inline), None, 0, 2).unwrap(), [1.0, 2.0]);
        assert!(tensor("x", Some(&inline), None, 0, 3)
            .unwrap_err()
            .contains("2 elements, 3 expected"));
        assert!(tensor("x", None, None, 0, 3)
            .unwrap_err()
            .contains("`seed`"));
        assert!(tensor("x", None, Some(1), 0, MAX_ELEMENTS + 1)
            .unwrap_err()
            .contains("maximum"));
    }
}
