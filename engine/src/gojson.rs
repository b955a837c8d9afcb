//! Byte-exact re-implementation of what the legacy Go sender does to a payload:
//! `var v interface{}; json.Unmarshal(payload, &v); body, _ := json.Marshal(v)`
//! (Go 1.22+ `encoding/json`). Decoding turns every number into a float64, keeps
//! the last of duplicate keys and replaces invalid UTF-8 and lone surrogate
//! escapes with U+FFFD; encoding sorts object keys by bytes, escapes `<` `>` `&`
//! U+2028 U+2029 and control characters the way Go does, and prints floats in
//! Go's ES6-like form. serde_json cannot be used for this: it rejects lone
//! surrogates and keeps integers exact. The parser and the encoder are iterative
//! (no recursion), so Go's maximum nesting depth of 10000 is safe on any stack.
//! Also holds `canonical_header_key`, Go's header-name canonicalisation.

use std::collections::BTreeMap;

/// Go's `encoding/json` scanner limit on nesting depth of arrays and objects.
const MAX_NESTING_DEPTH: usize = 10_000;

/// Why a payload could not be re-encoded; Go's `json.Unmarshal` fails on the same inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoJsonError {
    /// The input is not valid JSON (Go: `*json.SyntaxError`); `offset` is the byte where it broke.
    #[error("invalid JSON at byte {offset}: {message}")]
    Syntax {
        /// Byte offset in the input where the problem was found.
        offset: usize,
        /// What was wrong.
        message: String,
    },
    /// A number literal does not fit a float64 (Go: `*json.UnmarshalTypeError`).
    #[error("cannot unmarshal number {literal} into Go value of type float64")]
    NumberOutOfRange {
        /// The number literal as it appeared in the input.
        literal: String,
    },
}

/// Re-encodes a JSON payload exactly as Go's `json.Marshal` of a `json.Unmarshal`ed `interface{}` would.
pub fn reencode(input: &[u8]) -> Result<Vec<u8>, GoJsonError> {
    let mut parser = Parser {
        input,
        pos: 0,
        nodes: Vec::new(),
    };
    let root = parser.parse()?;
    let mut out = Vec::with_capacity(input.len());
    encode(&parser.nodes, root, &mut out);
    Ok(out)
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: `x-event-id` → `X-Event-Id`; names with a non-token byte are returned unchanged.
pub fn canonical_header_key(name: &str) -> String {
    if !name.bytes().all(is_token_byte) {
        return name.to_owned();
    }
    let mut upper = true;
    name.bytes()
        .map(|b| {
            let c = if upper {
                b.to_ascii_uppercase()
            } else {
                b.to_ascii_lowercase()
            };
            upper = c == b'-';
            char::from(c)
        })
        .collect()
}

/// RFC 7230 `tchar`, as Go's `validHeaderFieldByte`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A decoded value, stored in a flat arena so that neither building, encoding
/// nor dropping a deeply nested document recurses.
enum Node {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<usize>),
    Object(BTreeMap<String, usize>),
}

/// A container that is still being parsed.
enum Open {
    Array(Vec<usize>),
    /// The object so far and the key whose value is being parsed.
    Object(BTreeMap<String, usize>, String),
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    nodes: Vec<Node>,
}

impl Parser<'_> {
    fn parse(&mut self) -> Result<usize, GoJsonError> {
        // Go validates the syntax of the whole input before decoding, so a
        // syntax error anywhere wins over an out-of-range number; remember the
        // first range error and report it only if the syntax is fine.
        let mut range_error: Option<GoJsonError> = None;
        let mut stack: Vec<Open> = Vec::new();
        'value: loop {
            self.skip_ws();
            // Parse the start of a value; containers open a frame.
            let mut done = match self.peek() {
                Some(b'[') => {
                    self.pos += 1;
                    self.check_depth(stack.len())?;
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        self.add(Node::Array(Vec::new()))
                    } else {
                        stack.push(Open::Array(Vec::new()));
                        continue 'value;
                    }
                }
                Some(b'{') => {
                    self.pos += 1;
                    self.check_depth(stack.len())?;
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        self.add(Node::Object(BTreeMap::new()))
                    } else {
                        let key = self.object_key()?;
                        stack.push(Open::Object(BTreeMap::new(), key));
                        continue 'value;
                    }
                }
                Some(b'"') => {
                    let s = self.string()?;
                    self.add(Node::String(s))
                }
                Some(b't') => {
                    self.literal(b"true")?;
                    self.add(Node::Bool(true))
                }
                Some(b'f') => {
                    self.literal(b"false")?;
                    self.add(Node::Bool(false))
                }
                Some(b'n') => {
                    self.literal(b"null")?;
                    self.add(Node::Null)
                }
                Some(b'-' | b'0'..=b'9') => {
                    let f = self.number(&mut range_error)?;
                    self.add(Node::Number(f))
                }
                Some(c) => return Err(self.unexpected(c, "looking for beginning of value")),
                None => return Err(self.eof()),
            };
            // A value is complete: attach it to the enclosing containers,
            // closing as many as end here.
            loop {
                let Some(top) = stack.last_mut() else {
                    self.skip_ws();
                    if let Some(c) = self.peek() {
                        return Err(self.unexpected(c, "after top-level value"));
                    }
                    return match range_error {
                        Some(e) => Err(e),
                        None => Ok(done),
                    };
                };
                self.skip_ws();
                match top {
                    Open::Array(items) => {
                        items.push(done);
                        match self.peek() {
                            Some(b',') => {
                                self.pos += 1;
                                continue 'value;
                            }
                            Some(b']') => {
                                self.pos += 1;
                                let Some(Open::Array(items)) = stack.pop() else {
                                    unreachable!("top of stack is an array")
                                };
                                done = self.add(Node::Array(items));
                            }
                            Some(c) => {
                                return Err(self.unexpected(c, "after array element"));
                            }
                            None => return Err(self.eof()),
                        }
                    }
                    Open::Object(map, key) => {
                        // Duplicate keys: the last one wins, as in Go's map decoding.
                        map.insert(std::mem::take(key), done);
                        match self.peek() {
                            Some(b',') => {
                                self.pos += 1;
                                self.skip_ws();
                                *key = self.object_key()?;
                                continue 'value;
                            }
                            Some(b'}') => {
                                self.pos += 1;
                                let Some(Open::Object(map, _)) = stack.pop() else {
                                    unreachable!("top of stack is an object")
                                };
                                done = self.add(Node::Object(map));
                            }
                            Some(c) => {
                                return Err(self.unexpected(c, "after object key:value pair"));
                            }
                            None => return Err(self.eof()),
                        }
                    }
                }
            }
        }
    }

    /// Rejects a container opened at `depth` open containers deep, as Go's scanner does past 10000.
    fn check_depth(&self, depth: usize) -> Result<(), GoJsonError> {
        if depth >= MAX_NESTING_DEPTH {
            return Err(self.syntax(self.pos - 1, "exceeded max depth".into()));
        }
        Ok(())
    }

    /// Parses `"key" :` with the whitespace around the colon.
    fn object_key(&mut self) -> Result<String, GoJsonError> {
        match self.peek() {
            Some(b'"') => {}
            Some(c) => return Err(self.unexpected(c, "looking for beginning of object key string")),
            None => return Err(self.eof()),
        }
        let key = self.string()?;
        self.skip_ws();
        match self.peek() {
            Some(b':') => {
                self.pos += 1;
                Ok(key)
            }
            Some(c) => Err(self.unexpected(c, "after object key")),
            None => Err(self.eof()),
        }
    }

    fn add(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), GoJsonError> {
        for &expected in word {
            match self.peek() {
                Some(c) if c == expected => self.pos += 1,
                Some(c) => return Err(self.unexpected(c, "in literal")),
                None => return Err(self.eof()),
            }
        }
        Ok(())
    }

    /// Parses a JSON number literal and converts it as `strconv.ParseFloat(s, 64)`.
    fn number(&mut self, range_error: &mut Option<GoJsonError>) -> Result<f64, GoJsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            Some(c) => return Err(self.unexpected(c, "in numeric literal")),
            None => return Err(self.eof()),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.required_digits("after decimal point in numeric literal")?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.required_digits("in exponent of numeric literal")?;
        }
        let literal =
            std::str::from_utf8(&self.input[start..self.pos]).expect("number literals are ASCII");
        // Rust's parse is correctly rounded like Go's ParseFloat; it yields
        // infinity where Go reports ErrRange, and (like Go) 0 on underflow.
        let f: f64 = literal.parse().expect("JSON number grammar is accepted");
        if f.is_infinite() {
            if range_error.is_none() {
                *range_error = Some(GoJsonError::NumberOutOfRange {
                    literal: literal.to_owned(),
                });
            }
            return Ok(0.0);
        }
        Ok(f)
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn required_digits(&mut self, context: &str) -> Result<(), GoJsonError> {
        match self.peek() {
            Some(b'0'..=b'9') => {
                self.digits();
                Ok(())
            }
            Some(c) => Err(self.unexpected(c, context)),
            None => Err(self.eof()),
        }
    }

    /// Parses a string starting at the opening quote, decoding as Go's `unquote`.
    fn string(&mut self) -> Result<String, GoJsonError> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            // Copy the longest run of plain bytes.
            let run_start = self.pos;
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            push_lossy(&mut out, &self.input[run_start..self.pos]);
            match self.peek() {
                None => return Err(self.eof()),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                Some(c) => return Err(self.unexpected(c, "in string literal")),
            }
        }
    }

    /// Decodes one escape after the backslash.
    fn escape(&mut self, out: &mut String) -> Result<(), GoJsonError> {
        let Some(c) = self.peek() else {
            return Err(self.eof());
        };
        self.pos += 1;
        let decoded = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                if (0xD800..0xE000).contains(&unit) {
                    // Go combines a high surrogate with an immediately
                    // following `\u` low surrogate; anything else is U+FFFD
                    // and the following escape is decoded on its own.
                    match self.peek_low_surrogate() {
                        Some(low) if unit < 0xDC00 => {
                            self.pos += 6;
                            let cp = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                            char::from_u32(cp).expect("valid surrogate pair")
                        }
                        _ => char::REPLACEMENT_CHARACTER,
                    }
                } else {
                    char::from_u32(unit).expect("non-surrogate BMP code point")
                }
            }
            _ => {
                self.pos -= 1;
                return Err(self.unexpected(c, "in string escape code"));
            }
        };
        out.push(decoded);
        Ok(())
    }

    /// Reads the four hex digits after `\u`.
    fn hex4(&mut self) -> Result<u32, GoJsonError> {
        let mut v = 0;
        for _ in 0..4 {
            let Some(c) = self.peek() else {
                return Err(self.eof());
            };
            let d = match (c as char).to_digit(16) {
                Some(d) => d,
                None => return Err(self.unexpected(c, "in \\u hexadecimal character escape")),
            };
            v = v * 16 + d;
            self.pos += 1;
        }
        Ok(v)
    }

    /// If the next six bytes are `\uDC00`..`\uDFFF`, returns that low surrogate without consuming it.
    fn peek_low_surrogate(&self) -> Option<u32> {
        let rest = self.input.get(self.pos..self.pos + 6)?;
        if rest[0] != b'\\' || rest[1] != b'u' {
            return None;
        }
        let unit = u32::from_str_radix(std::str::from_utf8(&rest[2..]).ok()?, 16).ok()?;
        (0xDC00..0xE000).contains(&unit).then_some(unit)
    }

    fn syntax(&self, offset: usize, message: String) -> GoJsonError {
        GoJsonError::Syntax { offset, message }
    }

    fn unexpected(&self, c: u8, context: &str) -> GoJsonError {
        self.syntax(
            self.pos,
            format!("invalid character {} {context}", quote_char(c)),
        )
    }

    fn eof(&self) -> GoJsonError {
        self.syntax(self.pos, "unexpected end of JSON input".into())
    }
}

/// Describes a byte the way Go's scanner error messages do.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".into(),
        b'"' => "'\"'".into(),
        0x20..=0x7e => format!("'{}'", char::from(c)),
        _ => format!("0x{c:02x}"),
    }
}

/// Appends bytes, replacing each byte that does not start a valid UTF-8
/// sequence with U+FFFD, one per byte (Go's `utf8.DecodeRune` semantics, which
/// differ from `String::from_utf8_lossy`'s maximal-subpart rule).
fn push_lossy(out: &mut String, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.push_str(std::str::from_utf8(&bytes[..valid]).expect("validated prefix"));
                out.push(char::REPLACEMENT_CHARACTER);
                bytes = &bytes[valid + 1..];
            }
        }
    }
}

/// An array or object being written, with whether its first member is still to come.
enum Frame<'a> {
    Array(std::slice::Iter<'a, usize>, bool),
    Object(std::collections::btree_map::Iter<'a, String, usize>, bool),
}

/// Writes a scalar, or the opening bracket of a container and pushes its frame.
fn open<'a>(nodes: &'a [Node], idx: usize, out: &mut Vec<u8>, stack: &mut Vec<Frame<'a>>) {
    match &nodes[idx] {
        Node::Null => out.extend_from_slice(b"null"),
        Node::Bool(true) => out.extend_from_slice(b"true"),
        Node::Bool(false) => out.extend_from_slice(b"false"),
        Node::Number(f) => write_float(*f, out),
        Node::String(s) => write_string(s, out),
        Node::Array(items) => {
            out.push(b'[');
            stack.push(Frame::Array(items.iter(), true));
        }
        Node::Object(map) => {
            out.push(b'{');
            stack.push(Frame::Object(map.iter(), true));
        }
    }
}

/// Writes `root` as `json.Marshal` does, iteratively.
fn encode(nodes: &[Node], root: usize, out: &mut Vec<u8>) {
    let mut stack: Vec<Frame<'_>> = Vec::new();
    open(nodes, root, out, &mut stack);
    while let Some(frame) = stack.last_mut() {
        let next = match frame {
            Frame::Array(iter, first) => match iter.next() {
                Some(&child) => {
                    if !std::mem::take(first) {
                        out.push(b',');
                    }
                    Some(child)
                }
                None => {
                    out.push(b']');
                    None
                }
            },
            Frame::Object(iter, first) => match iter.next() {
                Some((key, &child)) => {
                    if !std::mem::take(first) {
                        out.push(b',');
                    }
                    write_string(key, out);
                    out.push(b':');
                    Some(child)
                }
                None => {
                    out.push(b'}');
                    None
                }
            },
        };
        match next {
            Some(child) => open(nodes, child, out, &mut stack),
            None => {
                stack.pop();
            }
        }
    }
}

/// Go's `appendString` with HTML escaping on (the `json.Marshal` default), Go 1.22+.
fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            0x00..=0x1f | b'<' | b'>' | b'&' => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize]]);
                out.push(HEX[(b & 0xf) as usize]);
                i += 1;
                start = i;
                continue;
            }
            // U+2028 and U+2029 are E2 80 A8 and E2 80 A9.
            0xe2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) =>
            {
                if bytes[i + 2] == 0xa8 {
                    Some(b"\\u2028")
                } else {
                    Some(b"\\u2029")
                }
            }
            _ => None,
        };
        match escape {
            Some(e) => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(e);
                i += if b == 0xe2 { 3 } else { 1 };
                start = i;
            }
            None => i += 1,
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Go's `floatEncoder` for float64: `strconv.AppendFloat(f, 'f' or 'e', -1, 64)`
/// with `'e'` below 1e-6 and from 1e21, and `e-09` shortened to `e-9`.
fn write_float(f: f64, out: &mut Vec<u8>) {
    let abs = f.abs();
    let (digits, exp) = shortest_digits(abs);
    if f.is_sign_negative() {
        out.push(b'-');
    }
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // d.ddd e±XX; Go pads the exponent to two digits, then its cleanup
        // turns `e-0X` into `e-X`: negative exponents end up unpadded.
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let exp = if exp < 0 {
            format!("e-{}", -exp)
        } else {
            format!("e+{exp:02}")
        };
        out.extend_from_slice(exp.as_bytes());
    } else if exp < 0 {
        // 0.000ddd
        out.extend_from_slice(b"0.");
        out.resize(out.len() + (-exp - 1) as usize, b'0');
        out.extend_from_slice(&digits);
    } else {
        // ddd000 or ddd.ddd
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.extend_from_slice(&digits);
            out.resize(out.len() + int_len - digits.len(), b'0');
        } else {
            out.extend_from_slice(&digits[..int_len]);
            out.push(b'.');
            out.extend_from_slice(&digits[int_len..]);
        }
    }
}

/// The shortest decimal digits that round-trip to `abs` (≥ 0) and the decimal
/// exponent of the first digit, choosing as Go's Ryu does: among the shortest,
/// the closest to the exact value, and on an exact tie the even last digit.
/// Rust's formatter breaks such ties upwards, hence the correction.
fn shortest_digits(abs: f64) -> (Vec<u8>, i32) {
    let e = format!("{abs:e}");
    let (mantissa, exp) = e.split_once('e').expect("`{:e}` has an exponent");
    let mut digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let mut exp: i32 = exp.parse().expect("decimal exponent");
    let n = digits.len();
    if let Some(exact) = short_exact_digits(abs) {
        // A tie: the exact value has one digit more than the shortest form and
        // it is a 5, so both neighbours at n digits are equally close.
        if exact.len() == n + 1 && exact[n] == b'5' {
            let lo: u64 = std::str::from_utf8(&exact[..n])
                .expect("digits")
                .parse()
                .expect("at most 18 digits");
            // Rust's digits may be `lo` or `lo + 1`; Go takes the even one.
            let even = if lo % 2 == 0 { lo } else { lo + 1 };
            let current: u64 = std::str::from_utf8(&digits)
                .expect("digits")
                .parse()
                .expect("at most 17 digits");
            // Place value of the last digit: the value is `digits * 10^q`.
            let q = exp - (n as i32 - 1);
            if even != current && (current == lo || current == lo + 1) {
                // Keep Rust's digits unless Go's choice provably round-trips.
                if format!("{even}e{q}").parse::<f64>() == Ok(abs) {
                    let mut cand = even.to_string().into_bytes();
                    exp = q + cand.len() as i32 - 1;
                    while cand.len() > 1 && cand.last() == Some(&b'0') {
                        cand.pop();
                    }
                    digits = cand;
                }
            }
        }
    }
    (digits, exp)
}

/// The significant digits (trailing zeros stripped) of `abs`'s exact decimal
/// value when there are at most 18 of them, else `None`. Only such values can
/// sit exactly halfway between two shortest candidates.
fn short_exact_digits(abs: f64) -> Option<Vec<u8>> {
    if abs == 0.0 || !abs.is_finite() {
        return None;
    }
    let bits = abs.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1 << 52) - 1);
    let (mut m, mut k) = if biased == 0 {
        (frac, -1074)
    } else {
        (frac | (1 << 52), biased - 1075)
    };
    let tz = m.trailing_zeros();
    m >>= tz;
    k += tz as i32;
    // abs = m * 2^k with m odd.
    let value: u128 = if k >= 0 {
        // Trailing decimal zeros need factors of 5 from m; the rest is
        // (m / 5^j) * 2^k, which has over 18 digits once 2^k >= 2^60.
        let mut m5 = m;
        while m5 % 5 == 0 {
            m5 /= 5;
        }
        if k >= 60 {
            return None;
        }
        u128::from(m5) << k
    } else {
        // m * 5^s is odd, so it has no trailing zeros; 5^28 already has 20 digits.
        let s = -k;
        if s > 27 {
            return None;
        }
        u128::from(m) * 5u128.pow(s as u32)
    };
    let mut digits = value.to_string().into_bytes();
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    (digits.len() <= 18).then_some(digits)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Inputs and Go's output, checked against Go 1.26 (`json.Unmarshal` into `interface{}` then `json.Marshal`).
    pub(crate) const CASES: &[(&[u8], &[u8])] = &[
        // HTML characters, U+2028/U+2029.
        (
            br#""<a href='x'>&amp;</a>""#,
            br#""\u003ca href='x'\u003e\u0026amp;\u003c/a\u003e""#,
        ),
        (
            "\"a\u{2028}b\u{2029}c\"".as_bytes(),
            br#""a\u2028b\u2029c""#,
        ),
        (br#""\u2028\u2029""#, br#""\u2028\u2029""#),
        (br#""\u003c\u003E\u0026""#, br#""\u003c\u003e\u0026""#),
        // Control characters.
        (
            br#""\u0000\u001f\u0001\u007f""#,
            b"\"\\u0000\\u001f\\u0001\x7f\"",
        ),
        (br#""\b\f\n\r\t""#, br#""\b\f\n\r\t""#),
        (br#""\u0008\u000C\u000a\u000D\u0009""#, br#""\b\f\n\r\t""#),
        (br#""\"\\\/""#, br#""\"\\/""#),
        // Non-ASCII stays raw.
        ("\"😀 é ü ☃\"".as_bytes(), "\"😀 é ü ☃\"".as_bytes()),
        (br#""\ud83d\ude00""#, "\"😀\"".as_bytes()),
        (br#""\uD83D\uDE00""#, "\"😀\"".as_bytes()),
        (br#""\u00e9""#, "\"é\"".as_bytes()),
        // Lone and mismatched surrogates become U+FFFD.
        (br#""\ud800""#, b"\"\xef\xbf\xbd\""),
        (br#""\udc00""#, b"\"\xef\xbf\xbd\""),
        (br#""\ud800x""#, b"\"\xef\xbf\xbdx\""),
        (br#""\ud800\u0041""#, b"\"\xef\xbf\xbdA\""),
        (
            br#""\ud800\ud800\udc00""#,
            "\"\u{fffd}\u{10000}\"".as_bytes(),
        ),
        (br#""\ude00\ud83d""#, b"\"\xef\xbf\xbd\xef\xbf\xbd\""),
        (br#""\ud83d\n""#, b"\"\xef\xbf\xbd\\n\""),
        // Invalid UTF-8 becomes one U+FFFD per bad byte.
        (b"\"a\xffb\"", b"\"a\xef\xbf\xbdb\""),
        (b"\"\xe2\x82x\"", b"\"\xef\xbf\xbd\xef\xbf\xbdx\""),
        (
            b"\"\xed\xa0\x80\"",
            b"\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"",
        ),
        (b"\"\xc0\x80\"", b"\"\xef\xbf\xbd\xef\xbf\xbd\""),
        (
            b"\"\xf0\x9f\x98\"",
            b"\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"",
        ),
        (b"{\"k\xff\":1}", b"{\"k\xef\xbf\xbd\":1}"),
        (b"\"\xef\xbf\xbd\"", b"\"\xef\xbf\xbd\""),
        // Numbers go through float64.
        (b"9007199254740993", b"9007199254740992"),
        (b"1.0", b"1"),
        (b"1E2", b"100"),
        (b"1e+2", b"100"),
        (b"1e21", b"1e+21"),
        (b"1e20", b"100000000000000000000"),
        (b"999999999999999999999", b"1e+21"),
        (b"1e-7", b"1e-7"),
        (b"0.0000001", b"1e-7"),
        (b"0.000001", b"0.000001"),
        (b"0.0000009999", b"9.999e-7"),
        (b"1.5e-10", b"1.5e-10"),
        (b"-1.5e-7", b"-1.5e-7"),
        (b"-0", b"-0"),
        (b"-0.0", b"-0"),
        (b"0", b"0"),
        (b"0e10", b"0"),
        (b"123456789.123", b"123456789.123"),
        (b"5e-324", b"5e-324"),
        (b"1e-400", b"0"),
        (b"-1e-400", b"-0"),
        (b"1.7976931348623157e308", b"1.7976931348623157e+308"),
        (b"-1.2345e100", b"-1.2345e+100"),
        (b"0.1", b"0.1"),
        (b"0.30000000000000004", b"0.30000000000000004"),
        (b"100", b"100"),
        (b"-12.5", b"-12.5"),
        (b"123e-20", b"1.23e-18"),
        // Exact ties between two shortest forms: Go takes the even last digit.
        (b"-807706284521453.25", b"-807706284521453.2"),
        (b"778788875523876.299544011", b"778788875523876.2"),
        (b"196802432579465.625", b"196802432579465.62"),
        (b"1413492867658439.25", b"1413492867658439.2"),
        (b"1413492867658439.75", b"1413492867658439.8"),
        // Objects: duplicate keys (last wins), keys sorted by bytes.
        (br#"{"a":1,"a":2}"#, br#"{"a":2}"#),
        (br#"{"a":1,"\u0061":2}"#, br#"{"a":2}"#),
        (br#"{"a":{"x":1},"a":[1]}"#, br#"{"a":[1]}"#),
        (
            r#"{"b":{"z":1,"y":[{"d":1,"c":2}]},"a":null,"B":true,"é":1,"z":2}"#.as_bytes(),
            "{\"B\":true,\"a\":null,\"b\":{\"y\":[{\"c\":2,\"d\":1}],\"z\":1},\"z\":2,\"é\":1}"
                .as_bytes(),
        ),
        (br#"{"<":"&"}"#, br#"{"\u003c":"\u0026"}"#),
        // Empty containers, whitespace, top-level scalars.
        (b"{}", b"{}"),
        (b"[]", b"[]"),
        (
            b" { \"a\" : [ 1 , 2 ] , \"b\" : { } } \r\n\t",
            br#"{"a":[1,2],"b":{}}"#,
        ),
        (b"[[[[[]]]]]", b"[[[[[]]]]]"),
        (b"true", b"true"),
        (b"false", b"false"),
        (b"null", b"null"),
        (br#""""#, br#""""#),
        (b" 42 ", b"42"),
    ];

    /// Inputs Go's `json.Unmarshal` rejects.
    pub(crate) const ERRORS: &[&[u8]] = &[
        b"1e400",
        b"-1e400",
        b"[1,2e999]",
        b"{} x",
        b"1 2",
        b"[1,]",
        b"{\"a\":1,}",
        b"{\"a\" 1}",
        b"{a:1}",
        b"01",
        b"-",
        b"1.",
        b".5",
        b"1e",
        b"+1",
        b"NaN",
        b"Infinity",
        b"tru",
        b"nul",
        b"TRUE",
        b"",
        b"   ",
        b"\"abc",
        b"\"a\x01b\"",
        b"\"a\nb\"",
        b"\"\\x\"",
        b"\"\\u12\"",
        b"\"\\u12g4\"",
        b"'a'",
        b"[",
        b"{",
        b"{\"a\"",
        b"\xef\xbb\xbf{}",
        b"\x0c1",
        b"[1e400, x]",
    ];

    #[test]
    fn go_cases() {
        for (input, expected) in CASES {
            let got = reencode(input)
                .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(input)));
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(expected),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(&got, expected, "bytes differ for {input:?}");
        }
    }

    #[test]
    fn go_errors() {
        for input in ERRORS {
            assert!(
                reencode(input).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn out_of_range_number_names_the_literal() {
        assert_eq!(
            reencode(b"[1e400]"),
            Err(GoJsonError::NumberOutOfRange {
                literal: "1e400".into()
            })
        );
        // A syntax error anywhere wins, as Go checks syntax first.
        assert!(matches!(
            reencode(b"[1e400,]"),
            Err(GoJsonError::Syntax { .. })
        ));
    }

    #[test]
    fn deep_nesting_up_to_go_limit() {
        let depth = MAX_NESTING_DEPTH;
        let input = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(reencode(input.as_bytes()).unwrap(), input.as_bytes());
        let input = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        assert_eq!(reencode(input.as_bytes()).unwrap(), input.as_bytes());
        let too_deep = format!("{}{}", "[".repeat(depth + 1), "]".repeat(depth + 1));
        assert!(reencode(too_deep.as_bytes()).is_err());
    }

    /// Header names and Go's `textproto.CanonicalMIMEHeaderKey` of them.
    pub(crate) const HEADER_CASES: &[(&str, &str)] = &[
        ("x-event-id", "X-Event-Id"),
        ("webhook-id", "Webhook-Id"),
        ("WEBHOOK-SIGNATURE", "Webhook-Signature"),
        ("x-hub-signature-256", "X-Hub-Signature-256"),
        ("content-type", "Content-Type"),
        ("Stripe-Signature", "Stripe-Signature"),
        ("a--b", "A--B"),
        ("-x", "-X"),
        ("x_y", "X_y"),
        ("1a", "1a"),
        ("", ""),
        ("foo bar", "foo bar"),
        ("x-é", "x-é"),
        ("bad:name", "bad:name"),
    ];

    #[test]
    fn header_keys() {
        for (name, want) in HEADER_CASES {
            assert_eq!(canonical_header_key(name), *want, "{name:?}");
        }
    }
}
