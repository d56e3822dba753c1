//! A read as JSON, for the CLI and the C ABI: one object per type a key holds,
//! `{"register": [values]}`, `{"lww": value}`, `{"counter": n}`, `{"set": [elements]}`,
//! `{"map": {field: [values like these]}}`; bytes are strings when they are UTF-8, else
//! `{"hex": "..."}` (field names: `"0x..."`).

use meridian_core::read::{FeedEvent, ReadValue};
use serde_json::{json, Map, Value};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes as JSON: a string when they are UTF-8.
pub fn bytes_json(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "hex": hex(b) }),
    }
}

/// The values of a read as JSON.
pub fn values_json(values: &[ReadValue]) -> Value {
    Value::Array(values.iter().map(value_json).collect())
}

/// One value as JSON.
pub fn value_json(v: &ReadValue) -> Value {
    let list = |items: &[Vec<u8>]| Value::Array(items.iter().map(|b| bytes_json(b)).collect());
    match v {
        ReadValue::Register(s) => json!({ "register": list(&s.values) }),
        ReadValue::Lww(l) => json!({ "lww": bytes_json(&l.value) }),
        ReadValue::Counter(n) => json!({ "counter": n }),
        ReadValue::Set(items) => json!({ "set": list(items) }),
        ReadValue::Map(m) => {
            let fields: Map<String, Value> = m
                .fields
                .iter()
                .map(|(name, values)| {
                    let name = match std::str::from_utf8(name) {
                        Ok(s) => s.to_string(),
                        Err(_) => format!("0x{}", hex(name)),
                    };
                    (name, values_json(values))
                })
                .collect();
            json!({ "map": fields })
        }
    }
}

/// A change feed's event as JSON: `{"key": k, "values": [...], "token": "hex"}` (a deletion's
/// values are empty), or `{"reset": {"origin": "...", "missing": n}, "token": "hex"}`; the
/// token is `CausalToken::to_bytes` in hex, what `--from` and the C ABI take back.
pub fn feed_event_json(event: &FeedEvent) -> Value {
    match event {
        FeedEvent::Change(c) => json!({
            "key": bytes_json(&c.key),
            "values": values_json(&c.values),
            "token": hex(&c.token.to_bytes()),
        }),
        FeedEvent::Reset { token, missing } => json!({
            "reset": { "origin": missing.replica.to_string(), "missing": missing.counter },
            "token": hex(&token.to_bytes()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_text_when_they_can_be_and_hex_otherwise() {
        assert_eq!(bytes_json(b"plum"), json!("plum"));
        assert_eq!(bytes_json(&[0xff, 0x00]), json!({ "hex": "ff00" }));
        assert_eq!(
            values_json(&[ReadValue::Counter(3), ReadValue::Set(vec![b"a".to_vec()])]),
            json!([{ "counter": 3 }, { "set": ["a"] }])
        );
    }
}
