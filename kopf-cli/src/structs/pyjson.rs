//! JSON as Python sees it: Python's equality of JSON-decoded values, and the exact text of
//! `json.dumps(value, separators=(',', ':'))` (what Kopf writes into annotations).
//!
//! Python's `json.dumps` differs from `serde_json::to_string` in three ways that matter for
//! byte-compatibility: non-ASCII characters are escaped as `\uXXXX` (`ensure_ascii=True`,
//! astral characters as surrogate pairs), `0x7f` is escaped too, and floats use Python's
//! `repr()` (`1e-05`, `1e+16`, `100.0`). Key order is the map's iteration order (body order
//! when `serde_json`'s `preserve_order` feature is on, sorted otherwise).

use std::fmt::Write as _;

use serde_json::{Number, Value};

/// Python's `==` on two JSON-decoded values, except that booleans never equal numbers.
///
/// Integers and floats compare by numeric value (`1 == 1.0`), as in Python; objects compare
/// regardless of key order; lists element-wise. Python's `True == 1` is deliberately not
/// reproduced: a change from `true` to `1` in a spec is a real change.
pub fn py_eq(a: &Value, b: &Value) -> bool {
    eq_impl(a, b, false)
}

/// Python's `==` exactly, including `True == 1` and `False == 0` (used where Kopf's
/// quirk is harmless, e.g. deciding whether a progress record needs rewriting).
pub fn py_eq_exact(a: &Value, b: &Value) -> bool {
    eq_impl(a, b, true)
}

fn eq_impl(a: &Value, b: &Value, bools_are_ints: bool) -> bool {
    let as_int = |v: &Value| match v {
        Value::Bool(b) if bools_are_ints => Some(Value::from(u8::from(*b))),
        _ => None,
    };
    if let (Some(x), Value::Number(_)) = (as_int(a), b) {
        return eq_impl(&x, b, false);
    }
    if let (Value::Number(_), Some(y)) = (a, as_int(b)) {
        return eq_impl(a, &y, false);
    }
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => num_eq(x, y),
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| eq_impl(p, q, bools_are_ints))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| eq_impl(v, w, bools_are_ints)))
        }
        _ => false,
    }
}

/// Numeric equality across integer and float representations.
fn num_eq(x: &Number, y: &Number) -> bool {
    if let (Some(p), Some(q)) = (x.as_i64(), y.as_i64()) {
        return p == q;
    }
    if let (Some(p), Some(q)) = (x.as_u64(), y.as_u64()) {
        return p == q;
    }
    if x.is_f64() || y.is_f64() {
        // An integer equals a float only if the float is integral and exactly representable.
        return match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) => {
                if x.is_f64() && y.is_f64() {
                    p == q
                } else {
                    let (int, float) = if x.is_f64() { (y, p) } else { (x, q) };
                    int_eq_float(int, float)
                }
            }
            _ => false,
        };
    }
    false // one is negative i64, the other a u64 above i64::MAX
}

/// Exact comparison of an integer `Number` with a float.
fn int_eq_float(int: &Number, float: f64) -> bool {
    if !float.is_finite() || float.fract() != 0.0 {
        return false;
    }
    // Every integral f64 within i64/u64 range converts exactly; larger ones saturate far away.
    let as_int = int
        .as_i64()
        .map(i128::from)
        .or_else(|| int.as_u64().map(i128::from));
    as_int == Some(float as i128)
}

/// Python's truthiness of a JSON-decoded value (`bool(value)`).
pub fn py_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The text of Python's `json.dumps(value, separators=(',', ':'))`.
pub fn to_python_json(v: &Value) -> String {
    let mut out = String::with_capacity(64);
    write_value(&mut out, v);
    out
}

/// Append the Python-compatible compact JSON text of `v` to `out`.
pub fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        write_py_float(out, f);
    }
}

/// Python's `float.__repr__`: the shortest round-tripping digits; scientific notation
/// when the decimal exponent is < -4 or >= 16; `.0` for integral values.
pub fn write_py_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    // Rust's `{:e}` gives the shortest round-tripping digits: "1.2345e-7", "1e16", "-0e0".
    let sci = format!("{f:e}");
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if negative {
        out.push('-');
    }
    // The decimal point position: value = 0.DIGITS * 10^(exp+1).
    let decpt = exp + 1;
    if (-4..16).contains(&exp) {
        if decpt <= 0 {
            out.push_str("0.");
            for _ in 0..(-decpt) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let decpt = decpt as usize;
            if digits.len() <= decpt {
                out.push_str(&digits);
                for _ in digits.len()..decpt {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..decpt]);
                out.push('.');
                out.push_str(&digits[decpt..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}

/// A JSON string literal as Python's `json.dumps(..., ensure_ascii=True)` writes it.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Python's `repr()` of a string, as Kopf's log lines show handler ids (`'create_fn'`):
/// single quotes, or double quotes when the text has a single quote and no double one;
/// backslashes, the quote, `\n`, `\r`, `\t` and other control characters escaped.
pub fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `str()` of a `datetime.timedelta` of `seconds`, as Kopf prints handler runtimes
/// (`0:00:01.500000`, `1 day, 2:03:04`): microseconds only when there are any, and never
/// negative (a runtime cannot be).
pub fn py_timedelta(seconds: f64) -> String {
    // timedelta(seconds=x) rounds to whole microseconds; NaN and negatives read as zero.
    let total_micros = if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1e6).round() as u64
    } else {
        0
    };
    let (whole, micros) = (total_micros / 1_000_000, total_micros % 1_000_000);
    let (days, rest) = (whole / 86_400, whole % 86_400);
    let mut out = String::new();
    if days > 0 {
        let _ = write!(out, "{days} day{}, ", if days == 1 { "" } else { "s" });
    }
    let _ = write!(out, "{}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
    if micros > 0 {
        let _ = write!(out, ".{micros:06}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_like_python() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (2.5e300, "2.5e+300"),
            (-0.0, "-0.0"),
            (123.456, "123.456"),
        ];
        for (f, text) in cases {
            let mut s = String::new();
            write_py_float(&mut s, f);
            assert_eq!(s, text, "for {f:?}");
        }
    }

    #[test]
    fn numbers_compare_across_types() {
        assert!(py_eq(&json!(1), &json!(1.0)));
        assert!(!py_eq(&json!(1), &json!(1.5)));
        assert!(!py_eq(&json!(true), &json!(1)));
        assert!(py_eq(
            &json!({"a": [1, {"b": 2.0}]}),
            &json!({"a": [1.0, {"b": 2}]})
        ));
        assert!(!py_eq(&json!(-1), &json!(u64::MAX)));
        assert!(py_eq_exact(&json!({"a": true}), &json!({"a": 1.0})));
    }

    #[test]
    fn strings_are_quoted_as_python_repr_does() {
        assert_eq!(py_repr_str("create_fn"), "'create_fn'");
        assert_eq!(py_repr_str("it's"), "\"it's\"");
        assert_eq!(py_repr_str("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(py_repr_str("a\\b\nc\u{1}"), "'a\\\\b\\nc\\x01'");
        assert_eq!(py_repr_str("über"), "'über'");
    }

    #[test]
    fn durations_print_as_python_timedelta_does() {
        assert_eq!(py_timedelta(0.0), "0:00:00");
        assert_eq!(py_timedelta(1.5), "0:00:01.500000");
        assert_eq!(py_timedelta(61.000_001), "0:01:01.000001");
        assert_eq!(py_timedelta(3_723.0), "1:02:03");
        assert_eq!(py_timedelta(86_400.0), "1 day, 0:00:00");
        assert_eq!(py_timedelta(2.0 * 86_400.0 + 5.25), "2 days, 0:00:05.250000");
        assert_eq!(py_timedelta(-3.0), "0:00:00");
        assert_eq!(py_timedelta(f64::NAN), "0:00:00");
    }
}
