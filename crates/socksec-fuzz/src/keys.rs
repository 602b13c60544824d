//! The planted key and the check that it went nowhere.

use base64::Engine as _;

/// Key bytes the targets plant in every key field: ASCII, so that a leak shows as text too.
pub const KEY: &[u8; 32] = b"KEY-MATERIAL-MUST-NOT-BE-KEPT-42";

/// Fails if `text` (a `Debug` or JSON rendering) holds [`KEY`] or a recognisable part of it:
/// as text, as hex (either case), as a `Debug`/JSON list of byte values, or in base64.
pub fn assert_no_key(what: &str, text: &str) {
    // Eight bytes of the key are enough to recognise it and not found by chance.
    let part = &KEY[4..12];
    let hex: String = part.iter().map(|b| format!("{b:02x}")).collect();
    let values: Vec<String> = part.iter().map(u8::to_string).collect();
    let (list_debug, list_json) = (values.join(", "), values.join(","));
    let b64 = base64::engine::general_purpose::STANDARD.encode(KEY);
    let lower = text.to_ascii_lowercase();
    for (form, needle) in [
        ("text", String::from_utf8_lossy(part).to_ascii_lowercase()),
        ("hex", hex),
        ("byte list", list_debug),
        ("JSON byte list", list_json),
        ("base64", b64.to_ascii_lowercase()),
    ] {
        assert!(
            !lower.contains(&needle),
            "{what}: the planted key shows ({form}) in: {text}"
        );
    }
}

/// [`assert_no_key`] over the `Debug` rendering and the JSON of `value`.
pub fn assert_value_has_no_key<T: std::fmt::Debug + serde::Serialize>(what: &str, value: &T) {
    assert_no_key(what, &format!("{value:?}"));
    let json = serde_json::to_string(value).expect("a parsed value serialises");
    assert_no_key(what, &json);
}
