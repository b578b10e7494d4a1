//! A tiny decoder for the Kubernetes protobuf envelope, enough for kubectl's typed generators
//! (`kubectl create namespace|configmap|secret|serviceaccount`), which send protobuf bodies.
//! Other kinds get 415 (clients then have to send JSON).

use base64::Engine;
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\x00";

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// Next (field number, value); None at the end; Err on malformed input.
    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, ()> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint().ok_or(())?;
        let (num, wire) = (key >> 3, key & 7);
        match wire {
            0 => Ok(Some((num, Field::Varint(self.varint().ok_or(())?)))),
            2 => {
                let len = usize::try_from(self.varint().ok_or(())?).map_err(|_| ())?;
                let end = self.pos.checked_add(len).ok_or(())?;
                let s = self.buf.get(self.pos..end).ok_or(())?;
                self.pos = end;
                Ok(Some((num, Field::Bytes(s))))
            }
            1 => {
                self.pos = self.pos.checked_add(8).ok_or(())?;
                Ok(Some((num, Field::Varint(0))))
            }
            5 => {
                self.pos = self.pos.checked_add(4).ok_or(())?;
                Ok(Some((num, Field::Varint(0))))
            }
            _ => Err(()),
        }
    }
}

fn text(b: &[u8]) -> Result<String, ()> {
    String::from_utf8(b.to_vec()).map_err(|_| ())
}

fn map_entry(b: &[u8], binary: bool) -> Result<(String, Value), ()> {
    let mut r = Reader::new(b);
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = text(x)?,
            (2, Field::Bytes(x)) if binary => v = json!(base64::engine::general_purpose::STANDARD.encode(x)),
            (2, Field::Bytes(x)) => v = Value::String(text(x)?),
            _ => {}
        }
    }
    Ok((k, v))
}

fn object_meta(b: &[u8]) -> Result<Value, ()> {
    let mut r = Reader::new(b);
    let mut m = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = vec![];
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(x)) => {
                m.insert("name".into(), Value::String(text(x)?));
            }
            (2, Field::Bytes(x)) => {
                m.insert("generateName".into(), Value::String(text(x)?));
            }
            (3, Field::Bytes(x)) => {
                m.insert("namespace".into(), Value::String(text(x)?));
            }
            (6, Field::Bytes(x)) => {
                m.insert("resourceVersion".into(), Value::String(text(x)?));
            }
            (11, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, false)?;
                labels.insert(k, v);
            }
            (12, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, false)?;
                annotations.insert(k, v);
            }
            (14, Field::Bytes(x)) => finalizers.push(Value::String(text(x)?)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(m))
}

/// Decode a protobuf-encoded object of a supported kind into JSON; None if unsupported or invalid.
pub fn decode(body: &[u8]) -> Option<Value> {
    let rest = body.strip_prefix(MAGIC)?;
    let mut r = Reader::new(rest);
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while let Some((n, f)) = r.next().ok()? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                let mut t = Reader::new(tm);
                while let Some((n, f)) = t.next().ok()? {
                    match (n, f) {
                        (1, Field::Bytes(x)) => api_version = text(x).ok()?,
                        (2, Field::Bytes(x)) => kind = text(x).ok()?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    if api_version != "v1" {
        return None;
    }
    let mut obj = json!({"apiVersion": "v1", "kind": kind});
    let mut r = Reader::new(raw);
    let mut data = Map::new();
    let mut binary = Map::new();
    while let Some((n, f)) = r.next().ok()? {
        match (kind.as_str(), n, f) {
            (_, 1, Field::Bytes(x)) => obj["metadata"] = object_meta(x).ok()?,
            ("ConfigMap", 2, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, false).ok()?;
                data.insert(k, v);
            }
            ("ConfigMap", 3, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, true).ok()?;
                binary.insert(k, v);
            }
            ("ConfigMap", 4, Field::Varint(v)) | ("Secret", 5, Field::Varint(v)) => {
                obj["immutable"] = json!(v != 0)
            }
            ("Secret", 2, Field::Bytes(x)) => {
                let (k, v) = map_entry(x, true).ok()?;
                data.insert(k, v);
            }
            ("Secret", 3, Field::Bytes(x)) => obj["type"] = Value::String(text(x).ok()?),
            ("Namespace" | "ServiceAccount", _, _) => {}
            _ => {}
        }
    }
    if !matches!(
        kind.as_str(),
        "ConfigMap" | "Secret" | "Namespace" | "ServiceAccount"
    ) {
        return None;
    }
    if !data.is_empty() {
        obj["data"] = Value::Object(data);
    }
    if !binary.is_empty() {
        obj["binaryData"] = Value::Object(binary);
    }
    Some(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(num: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![(num << 3) | 2, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_configmap_and_rejects_garbage() {
        let meta = [ld(1, b"cm"), ld(11, &[ld(1, b"a"), ld(2, b"b")].concat())].concat();
        let raw = [ld(1, &meta), ld(2, &[ld(1, b"k"), ld(2, b"v")].concat())].concat();
        let tm = [ld(1, b"v1"), ld(2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), ld(1, &tm), ld(2, &raw)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cm", "labels": {"a": "b"}}, "data": {"k": "v"}})
        );
        assert!(decode(b"k8s\x00\xff\xff\xff").is_none());
        assert!(decode(b"garbage").is_none());
    }
}
