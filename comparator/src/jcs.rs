//! JSON for comparing payloads: a small parser that keeps every token as it
//! was written, and serialisers that normalise one aspect at a time. The full
//! normalisation is RFC 8785 (JSON Canonicalization Scheme): no whitespace,
//! object keys sorted by UTF-16 code units, strings with minimal escaping and
//! numbers in ECMAScript `Number.prototype.toString` form. Normalising one
//! aspect at a time tells *which* rule two byte-different payloads differ by
//! (key order, escaping, number format, whitespace) or that they differ in
//! meaning.
//!
//! A hand-written parser instead of `serde_json::Value`: serde_json keeps
//! integers exact (RFC 8785 reads every number as an IEEE double) and would
//! forget the original key order and escapes, which is what we classify.

use std::fmt::Write as _;

/// The deepest nesting accepted; deeper documents are reported as not comparable.
const MAX_DEPTH: usize = 512;

/// A parsed JSON value whose strings and numbers keep their literal text.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number literal as written.
    Num(String),
    /// A string: the literal between the quotes as written, and its decoded text.
    Str {
        /// The bytes between the quotes, escapes as written.
        raw: String,
        /// The decoded text (lone surrogates become U+FFFD).
        text: String,
    },
    /// An array.
    Arr(Vec<Json>),
    /// An object, members in document order.
    Obj(Vec<(Json, Json)>),
}

/// Why bytes could not be parsed as JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not JSON at byte {offset}: {message}")]
pub struct JsonError {
    /// Byte offset of the problem.
    pub offset: usize,
    /// What was wrong.
    pub message: String,
}

/// Parses a complete JSON document (surrounding whitespace allowed).
pub fn parse(input: &[u8]) -> Result<Json, JsonError> {
    let text = std::str::from_utf8(input).map_err(|e| JsonError {
        offset: e.valid_up_to(),
        message: "invalid UTF-8".into(),
    })?;
    let mut p = Parser {
        s: text.as_bytes(),
        src: text,
        pos: 0,
    };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(p.err("trailing characters"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, message: &str) -> JsonError {
        JsonError {
            offset: self.pos,
            message: message.into(),
        }
    }

    fn ws(&mut self) {
        while matches!(self.s.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        match self.s.get(self.pos) {
            None => Err(self.err("unexpected end")),
            Some(b'n') => self.word("null", Json::Null),
            Some(b't') => self.word("true", Json::Bool(true)),
            Some(b'f') => self.word("false", Json::Bool(false)),
            Some(b'"') => self.string(),
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    self.ws();
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.s.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(self.err("expected , or ]")),
                    }
                }
            }
            Some(b'{') => {
                self.pos += 1;
                let mut members = Vec::new();
                self.ws();
                if self.s.get(self.pos) == Some(&b'}') {
                    self.pos += 1;
                    return Ok(Json::Obj(members));
                }
                loop {
                    self.ws();
                    if self.s.get(self.pos) != Some(&b'"') {
                        return Err(self.err("expected a string key"));
                    }
                    let k = self.string()?;
                    self.ws();
                    if self.s.get(self.pos) != Some(&b':') {
                        return Err(self.err("expected :"));
                    }
                    self.pos += 1;
                    self.ws();
                    let v = self.value(depth + 1)?;
                    members.push((k, v));
                    self.ws();
                    match self.s.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Json::Obj(members));
                        }
                        _ => return Err(self.err("expected , or }")),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn word(&mut self, w: &str, v: Json) -> Result<Json, JsonError> {
        if self.s[self.pos..].starts_with(w.as_bytes()) {
            self.pos += w.len();
            Ok(v)
        } else {
            Err(self.err("bad literal"))
        }
    }

    fn number(&mut self) -> Result<Json, JsonError> {
        let start = self.pos;
        if self.s.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        self.digits();
        if self.pos == int_start {
            return Err(self.err("expected digits"));
        }
        if self.s[int_start] == b'0' && self.pos - int_start > 1 {
            return Err(self.err("leading zero"));
        }
        if self.s.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            let f = self.pos;
            self.digits();
            if self.pos == f {
                return Err(self.err("expected digits after ."));
            }
        }
        if matches!(self.s.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.s.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            let e = self.pos;
            self.digits();
            if self.pos == e {
                return Err(self.err("expected exponent digits"));
            }
        }
        Ok(Json::Num(self.src[start..self.pos].to_owned()))
    }

    fn digits(&mut self) {
        while matches!(self.s.get(self.pos), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn string(&mut self) -> Result<Json, JsonError> {
        self.pos += 1; // opening quote
        let start = self.pos;
        let mut text = String::new();
        let mut units: Vec<u16> = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.pos) else {
                return Err(self.err("unterminated string"));
            };
            if c != b'\\' && !units.is_empty() {
                text.push_str(&String::from_utf16_lossy(&units));
                units.clear();
            }
            match c {
                b'"' => {
                    let raw = self.src[start..self.pos].to_owned();
                    self.pos += 1;
                    return Ok(Json::Str { raw, text });
                }
                b'\\' => {
                    let esc = *self
                        .s
                        .get(self.pos + 1)
                        .ok_or_else(|| self.err("bad escape"))?;
                    self.pos += 2;
                    let simple = match esc {
                        b'"' => Some('"'),
                        b'\\' => Some('\\'),
                        b'/' => Some('/'),
                        b'b' => Some('\u{8}'),
                        b'f' => Some('\u{c}'),
                        b'n' => Some('\n'),
                        b'r' => Some('\r'),
                        b't' => Some('\t'),
                        b'u' => None,
                        _ => return Err(self.err("bad escape")),
                    };
                    if let Some(ch) = simple {
                        if !units.is_empty() {
                            text.push_str(&String::from_utf16_lossy(&units));
                            units.clear();
                        }
                        text.push(ch);
                    } else {
                        let hex = self
                            .src
                            .get(self.pos..self.pos + 4)
                            .ok_or_else(|| self.err("short \\u escape"))?;
                        let unit =
                            u16::from_str_radix(hex, 16).map_err(|_| self.err("bad \\u escape"))?;
                        units.push(unit);
                        self.pos += 4;
                    }
                }
                0..=0x1f => return Err(self.err("control character in string")),
                _ => {
                    let ch = self.src[self.pos..]
                        .chars()
                        .next()
                        .ok_or_else(|| self.err("bad UTF-8"))?;
                    text.push(ch);
                    self.pos += ch.len_utf8();
                }
            }
        }
    }
}

/// Which aspects a serialisation normalises; everything else is written as in the input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Normalize {
    /// Sort object members by their keys' UTF-16 code units.
    pub key_order: bool,
    /// Write strings with RFC 8785's minimal escaping.
    pub escaping: bool,
    /// Write numbers in ECMAScript form (read as IEEE doubles).
    pub numbers: bool,
}

impl Normalize {
    /// Everything: RFC 8785.
    pub const ALL: Normalize = Normalize {
        key_order: true,
        escaping: true,
        numbers: true,
    };
}

/// A number that has no RFC 8785 form (out of double range).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("number {0} is out of IEEE double range")]
pub struct NumberError(pub String);

/// The value written compactly with the given normalisations.
pub fn serialize(v: &Json, how: Normalize) -> Result<String, NumberError> {
    let mut out = String::new();
    write(v, how, &mut out)?;
    Ok(out)
}

/// RFC 8785 canonical form of a JSON document.
pub fn canonicalize(input: &[u8]) -> Result<String, CanonError> {
    let v = parse(input)?;
    Ok(serialize(&v, Normalize::ALL)?)
}

/// Why a document has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonError {
    /// Not JSON.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// A number without a double value.
    #[error(transparent)]
    Number(#[from] NumberError),
}

fn write(v: &Json, how: Normalize, out: &mut String) -> Result<(), NumberError> {
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Num(raw) => {
            if how.numbers {
                out.push_str(&es6_number(raw)?);
            } else {
                out.push_str(raw);
            }
        }
        Json::Str { raw, text } => {
            if how.escaping {
                write_jcs_string(text, out);
            } else {
                out.push('"');
                out.push_str(raw);
                out.push('"');
            }
        }
        Json::Arr(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, how, out)?;
            }
            out.push(']');
        }
        Json::Obj(members) => {
            let mut order: Vec<&(Json, Json)> = members.iter().collect();
            if how.key_order {
                order.sort_by(|a, b| utf16_key(&a.0).cmp(&utf16_key(&b.0)));
            }
            out.push('{');
            for (i, (k, val)) in order.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(k, how, out)?;
                out.push(':');
                write(val, how, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn utf16_key(k: &Json) -> Utf16Key<'_> {
    let text = match k {
        Json::Str { text, .. } => text.as_str(),
        _ => "",
    };
    Utf16Key(text)
}

/// A string ordered by its UTF-16 code units, as RFC 8785 sorts keys.
struct Utf16Key<'a>(&'a str);

impl PartialEq for Utf16Key<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Utf16Key<'_> {}
impl PartialOrd for Utf16Key<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Utf16Key<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.encode_utf16().cmp(other.0.encode_utf16())
    }
}

fn write_jcs_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number literal in ECMAScript `Number.prototype.toString` form, as RFC 8785 requires.
pub fn es6_number(raw: &str) -> Result<String, NumberError> {
    let f: f64 = raw.parse().map_err(|_| NumberError(raw.to_owned()))?;
    if !f.is_finite() {
        return Err(NumberError(raw.to_owned()));
    }
    Ok(es6_format(f))
}

/// ECMAScript's shortest round-trip form of a double; negative zero is `0`.
pub fn es6_format(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    // Rust's `{:e}` without a precision prints the shortest digits that round-trip.
    let s = format!("{f:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let neg = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let k = digits.len() as i32;
    let n = exp + 1;
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        let _ = write!(out, "{}", (n - 1).abs());
    }
    out
}

/// The value pretty-printed with sorted keys and normalised strings and
/// numbers, two-space indent: the form unified diffs are made of.
pub fn pretty(v: &Json) -> String {
    let mut out = String::new();
    pretty_into(v, 0, &mut out);
    out.push('\n');
    out
}

fn pretty_into(v: &Json, indent: usize, out: &mut String) {
    let pad = |n: usize, out: &mut String| out.extend(std::iter::repeat_n(' ', n * 2));
    match v {
        Json::Arr(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                pad(indent + 1, out);
                pretty_into(item, indent + 1, out);
                if i + 1 < items.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            pad(indent, out);
            out.push(']');
        }
        Json::Obj(members) if !members.is_empty() => {
            let mut order: Vec<&(Json, Json)> = members.iter().collect();
            order.sort_by(|a, b| utf16_key(&a.0).cmp(&utf16_key(&b.0)));
            out.push_str("{\n");
            for (i, (k, val)) in order.iter().enumerate() {
                pad(indent + 1, out);
                let _ = write(k, Normalize::ALL, out);
                out.push_str(": ");
                pretty_into(val, indent + 1, out);
                if i + 1 < order.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            pad(indent, out);
            out.push('}');
        }
        Json::Num(raw) => out.push_str(&es6_number(raw).unwrap_or_else(|_| raw.clone())),
        other => {
            let _ = write(other, Normalize::ALL, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_ecmascript() {
        // RFC 8785 appendix and Go's float table (GO-WIRE-NOTES.md).
        for (raw, want) in [
            ("0", "0"),
            ("-0", "0"),
            ("1.0", "1"),
            ("1E2", "100"),
            ("1e21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("1e-7", "1e-7"),
            ("0.000001", "0.000001"),
            ("123.456", "123.456"),
            ("9007199254740993", "9007199254740992"),
            ("-1.5e-10", "-1.5e-10"),
            ("4.50", "4.5"),
            ("2e-3", "0.002"),
            ("333333333.33333329", "333333333.3333333"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("5e-324", "5e-324"),
        ] {
            assert_eq!(es6_number(raw).unwrap(), want, "{raw}");
        }
        assert!(es6_number("1e400").is_err());
    }

    #[test]
    fn canonical_form() {
        let input = br#" { "b" : [1.0, "\u003cx\u003e", "\u00e9\n"], "a": {"\ufb02": 3, "\u20ac": 1, "\ud83d\ude00": 2, "z": null} } "#;
        assert_eq!(
            canonicalize(input).unwrap(),
            // RFC 8785 sorts by UTF-16 code units: U+1F600 (D83D DE00) before U+FB02.
            "{\"a\":{\"z\":null,\"\u{20AC}\":1,\"\u{1F600}\":2,\"\u{FB02}\":3},\"b\":[1,\"<x>\",\"\u{e9}\\n\"]}"
        );
        assert!(canonicalize(b"{\"a\":1").is_err());
        assert!(canonicalize(b"[1e999]").is_err());
    }

    #[test]
    fn partial_normalisation_keeps_the_rest() {
        let v = parse(br#"{"b":"\u003c","a":1.50}"#).unwrap();
        let keys_only = Normalize {
            key_order: true,
            ..Normalize::default()
        };
        assert_eq!(
            serialize(&v, keys_only).unwrap(),
            r#"{"a":1.50,"b":"\u003c"}"#
        );
        assert_eq!(
            serialize(&v, Normalize::default()).unwrap(),
            r#"{"b":"\u003c","a":1.50}"#
        );
    }
}
