//! Identifiers and generated secrets.
//!
//! Ids are a short prefix naming the kind plus a UUIDv7 in hex, so they sort
//! by creation time (cursor pagination relies on that) and say what they are.

use base64::Engine as _;
use rand::RngCore;

/// A new event id, `evt_…`.
pub fn event_id() -> String {
    format!("evt_{}", uuid::Uuid::now_v7().simple())
}

/// A new delivery id, `dlv_…`.
pub fn delivery_id() -> String {
    format!("dlv_{}", uuid::Uuid::now_v7().simple())
}

/// A new attempt id, `att_…`.
pub fn attempt_id() -> String {
    format!("att_{}", uuid::Uuid::now_v7().simple())
}

/// A new signing secret: `whsec_` + base64 of 24 random bytes, the
/// Standard Webhooks form.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Whether a client-chosen id (event or endpoint) is acceptable: 1 to 128
/// characters of letters, digits and `_ - . :`, so it can travel in headers
/// and URLs unescaped.
pub fn is_valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation() {
        let a = delivery_id();
        let b = delivery_id();
        assert!(a < b, "{a} !< {b}");
        assert!(event_id().starts_with("evt_"));
    }

    #[test]
    fn secrets_have_the_standard_form() {
        let s = generate_secret();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(s.strip_prefix("whsec_").unwrap())
            .unwrap();
        assert_eq!(raw.len(), 24);
        assert_ne!(generate_secret(), s);
    }

    #[test]
    fn client_ids() {
        assert!(is_valid_client_id("evt_123:a-b.c"));
        assert!(!is_valid_client_id(""));
        assert!(!is_valid_client_id("a b"));
        assert!(!is_valid_client_id(&"x".repeat(129)));
    }
}
