//! The output guard: a result is checked for NaN and ±inf before it is written or printed, so no
//! command exits 0 with a non-finite number in its output (serde_json would write `null` silently).
//!
//! The check walks the value through its own `Serialize` impl (a serializer that only looks at
//! floats), so it sees every float of any result type, and names the first bad one by its path
//! (`logprobs[3][7]`, `overall.accuracy`). Check the typed value: a `serde_json::Value` built by
//! `json!` has already turned NaN into `null`. `Option<f64>` fields that are `None` on purpose
//! (a skipped step's loss in metrics.jsonl) are not numbers and pass.

use crate::error::{write_atomic, Error, Result};
use serde::ser::{self, Serialize};
use std::fmt;
use std::path::Path;

/// The first non-finite float inside `value`: its path and the value.
pub fn first_non_finite<T: Serialize + ?Sized>(value: &T) -> Option<(String, f64)> {
    let mut finder = Finder { path: Vec::new(), found: None };
    let _ = value.serialize(&mut finder); // stops early with `Found` once a bad float is seen
    finder.found
}

/// Errors with [`Error::NonFinite`] (naming `what` and the place) when `value` holds NaN or ±inf.
pub fn ensure_finite<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<()> {
    match first_non_finite(value) {
        None => Ok(()),
        Some((at, value)) => Err(Error::NonFinite { what: what.to_string(), at, value }),
    }
}

/// Checks `value` ([`ensure_finite`]), then writes it as JSON to `path` atomically (pretty or compact,
/// with a final newline).
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T, pretty: bool) -> Result<()> {
    let mut text = json_text(&path.display().to_string(), value, pretty)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Checks `value` ([`ensure_finite`]) and returns its JSON text (one line unless `pretty`).
pub fn json_text<T: Serialize + ?Sized>(what: &str, value: &T, pretty: bool) -> Result<String> {
    ensure_finite(what, value)?;
    let text = if pretty { serde_json::to_string_pretty(value) } else { serde_json::to_string(value) };
    text.map_err(|e| Error::json(what, e))
}

enum Segment {
    Index(usize),
    Key(String),
}

struct Finder {
    path: Vec<Segment>,
    found: Option<(String, f64)>,
}

impl Finder {
    fn float(&mut self, x: f64) -> std::result::Result<(), Found> {
        if x.is_finite() {
            return Ok(());
        }
        let mut at = String::new();
        for s in &self.path {
            match s {
                Segment::Index(i) => at.push_str(&format!("[{i}]")),
                Segment::Key(k) if at.is_empty() => at.push_str(k),
                Segment::Key(k) => at.push_str(&format!(".{k}")),
            }
        }
        self.found = Some((at, x));
        Err(Found)
    }
}

/// Stops the walk at the first non-finite float.
#[derive(Debug)]
struct Found;

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("non-finite float")
    }
}

impl std::error::Error for Found {}

impl ser::Error for Found {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Found
    }
}

type Walk = std::result::Result<(), Found>;

/// One sequence, map or struct being walked: children are numbered (sequences) or named (fields, keys).
struct Compound<'a> {
    finder: &'a mut Finder,
    index: usize,
}

impl Compound<'_> {
    fn child<T: Serialize + ?Sized>(&mut self, segment: Segment, value: &T) -> Walk {
        self.finder.path.push(segment);
        let r = value.serialize(&mut *self.finder);
        self.finder.path.pop();
        r
    }
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Walk {
        let i = self.index;
        self.index += 1;
        self.child(Segment::Index(i), value)
    }
}

impl<'a> ser::Serializer for &'a mut Finder {
    type Ok = ();
    type Error = Found;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn serialize_f64(self, v: f64) -> Walk {
        self.float(v)
    }
    fn serialize_f32(self, v: f32) -> Walk {
        self.float(f64::from(v))
    }
    fn serialize_bool(self, _: bool) -> Walk {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Walk {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Walk {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> Walk {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Walk {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Walk {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Walk {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Walk {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Walk {
        Ok(())
    }
    fn serialize_char(self, _: char) -> Walk {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> Walk {
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Walk {
        Ok(())
    }
    fn serialize_none(self) -> Walk {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Walk {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Walk {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Walk {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Walk {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Walk {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(self, _: &'static str, _: u32, variant: &'static str, value: &T) -> Walk {
        Compound { finder: self, index: 0 }.child(Segment::Key(variant.to_string()), value)
    }
    fn serialize_seq(self, _: Option<usize>) -> std::result::Result<Compound<'a>, Found> {
        Ok(Compound { finder: self, index: 0 })
    }
    fn serialize_tuple(self, _: usize) -> std::result::Result<Compound<'a>, Found> {
        Ok(Compound { finder: self, index: 0 })
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> std::result::Result<Compound<'a>, Found> {
        Ok(Compound { finder: self, index: 0 })
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> std::result::Result<Compound<'a>, Found> {
        Ok(Compound { finder: self, index: 0 })
    }
    fn serialize_map(self, _: Option<usize>) -> std::result::Result<Compound<'a>, Found> {
        Ok(Compound { finder: self, index: 0 })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> std::result::Result<Compound<'a>, Found> {
        Ok(Compound { finder: self, index: 0 })
    }
    fn serialize_struct_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> std::result::Result<Compound<'a>, Found> {
        Ok(Compound { finder: self, index: 0 })
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Walk {
        self.element(value)
    }
    fn end(self) -> Walk {
        Ok(())
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Walk {
        self.element(value)
    }
    fn end(self) -> Walk {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Walk {
        self.element(value)
    }
    fn end(self) -> Walk {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Walk {
        self.element(value)
    }
    fn end(self) -> Walk {
        Ok(())
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Walk {
        // a key is named by its JSON text (quotes dropped); keys that are floats are checked too
        key.serialize(&mut *self.finder)?;
        let name = serde_json::to_string(key).unwrap_or_default();
        self.finder.path.push(Segment::Key(name.trim_matches('"').to_string()));
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Walk {
        let r = value.serialize(&mut *self.finder);
        self.finder.path.pop();
        r
    }
    fn end(self) -> Walk {
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Walk {
        self.child(Segment::Key(key.to_string()), value)
    }
    fn end(self) -> Walk {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Walk {
        self.child(Segment::Key(key.to_string()), value)
    }
    fn end(self) -> Walk {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::first_non_finite;
    use std::collections::BTreeMap;

    #[derive(serde::Serialize)]
    struct Report {
        name: String,
        rows: Vec<Vec<f64>>,
        skipped: Option<f64>,
        per: BTreeMap<String, (f32, f64)>,
    }

    #[test]
    fn names_the_first_non_finite_float() {
        let mut r = Report { name: "x".into(), rows: vec![vec![1.0], vec![2.0, 3.0]], skipped: None, per: BTreeMap::new() };
        r.per.insert("a".into(), (1.0, 2.0));
        assert_eq!(first_non_finite(&r), None, "finite values and a None pass");
        r.rows[1][1] = f64::NAN;
        let (at, v) = first_non_finite(&r).unwrap();
        assert_eq!(at, "rows[1][1]");
        assert!(v.is_nan());
        r.rows[1][1] = 0.0;
        r.per.insert("b".into(), (1.0, f64::NEG_INFINITY));
        assert_eq!(first_non_finite(&r), Some(("per.b[1]".to_string(), f64::NEG_INFINITY)));
        r.per.clear();
        r.skipped = Some(f64::INFINITY);
        assert_eq!(first_non_finite(&r), Some(("skipped".to_string(), f64::INFINITY)));
        assert_eq!(first_non_finite(&f32::NAN).map(|x| x.0), Some(String::new()));
    }
}
