//! JSON ↔ protobuf straight by the descriptor, for the messages most services
//! send: no `DynamicMessage` in between, so a request's JSON becomes protobuf
//! bytes as it is parsed and a reply's bytes become JSON as they are read.
//!
//! Only *plain* messages take this path ([`is_plain`]): proto3 fields of scalar,
//! string, enum and message types (and lists of them), no maps, oneofs, optional
//! scalars, bytes or well-known types. Anything else, and any input this path is
//! not sure of (a number as a string it cannot read, `NaN`, an unknown or a
//! repeated key), makes it give up ([`Declined`]) and the caller runs the general
//! path on `prost-reflect`, which also writes the error a client sees. So the two
//! paths agree by construction: what this one does, it does as the general path
//! does (tests compare them on the same inputs).

use prost::encoding::{WireType, encode_key, encode_varint};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// This path gave up; the general one decides.
#[derive(Debug)]
pub(crate) struct Declined;

/// Whether `message` (and every message it holds) is plain: see the module.
pub(crate) fn is_plain(message: &MessageDescriptor) -> bool {
    let mut seen = Vec::new();
    plain(message, &mut seen)
}

fn plain(message: &MessageDescriptor, seen: &mut Vec<String>) -> bool {
    if message.full_name().starts_with("google.protobuf.") || message.is_map_entry() {
        return false;
    }
    if seen.iter().any(|s| s == message.full_name()) {
        return true;
    }
    seen.push(message.full_name().to_owned());
    if message.oneofs().next().is_some() {
        return false;
    }
    message.fields().all(|field| {
        if field.is_map() || field.is_group() {
            return false;
        }
        match field.kind() {
            Kind::Message(inner) => plain(&inner, seen),
            Kind::Bytes => false,
            Kind::Enum(e) => {
                e.full_name() != "google.protobuf.NullValue" && !field.supports_presence()
            }
            _ => !field.supports_presence(),
        }
    })
}

// ---------------------------------------------------------------------------
// JSON → protobuf

/// Encodes the JSON object `body` as a `message` (plain, see [`is_plain`]).
pub(crate) fn encode(message: &MessageDescriptor, body: &[u8]) -> Result<Vec<u8>, Declined> {
    let mut out = Vec::with_capacity(body.len());
    let mut de = serde_json::Deserializer::from_slice(body);
    MessageSeed {
        message,
        out: &mut out,
    }
    .deserialize(&mut de)
    .map_err(|_| Declined)?;
    de.end().map_err(|_| Declined)?;
    Ok(out)
}

/// Writes one message's fields into `out`.
struct MessageSeed<'a> {
    message: &'a MessageDescriptor,
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Fields seen, by number: a key given twice is the general path's to judge.
        let mut seen: Vec<u32> = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let key: &str = &key;
            let field = self
                .message
                .get_field_by_json_name(key)
                .or_else(|| self.message.get_field_by_name(key))
                .ok_or_else(|| A::Error::custom("unknown field"))?;
            if seen.contains(&field.number()) {
                return Err(A::Error::custom("repeated key"));
            }
            seen.push(field.number());
            map.next_value_seed(FieldSeed {
                field: &field,
                out: self.out,
            })?;
        }
        Ok(())
    }
}

/// A key, borrowed from the input when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.to_owned()))
    }
}

/// One field's JSON value (`null`, one value, or a list of them).
struct FieldSeed<'a> {
    field: &'a FieldDescriptor,
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

/// A scalar read from JSON, ready to encode.
enum Scalar<'de> {
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    Text(std::borrow::Cow<'de, str>),
}

impl<'de> FieldSeed<'_> {
    /// Writes one value of the field (in a list, or alone).
    fn write<E: serde::de::Error>(&mut self, value: Scalar<'de>, in_list: bool) -> Result<(), E> {
        let field = self.field;
        let number = field.number();
        let out = &mut *self.out;
        let kind = field.kind();
        // proto3 leaves a default out; a list keeps every element.
        macro_rules! varint {
            ($v:expr) => {{
                let v: u64 = $v;
                if v != 0 || in_list {
                    encode_key(number, WireType::Varint, out);
                    encode_varint(v, out);
                }
            }};
        }
        match (kind, value) {
            (Kind::Int32, v) => varint!(i64::from(int::<i32, E>(v)?) as u64),
            (Kind::Int64, v) => varint!(int::<i64, E>(v)? as u64),
            (Kind::Uint32, v) => varint!(u64::from(int::<u32, E>(v)?)),
            (Kind::Uint64, v) => varint!(int::<u64, E>(v)?),
            (Kind::Sint32, v) => {
                let v = int::<i32, E>(v)?;
                varint!(u64::from(((v << 1) ^ (v >> 31)) as u32))
            }
            (Kind::Sint64, v) => {
                let v = int::<i64, E>(v)?;
                varint!(((v << 1) ^ (v >> 63)) as u64)
            }
            (Kind::Bool, Scalar::Bool(b)) => varint!(u64::from(b)),
            (Kind::Fixed32, v) => fixed(number, &int::<u32, E>(v)?.to_le_bytes(), in_list, out),
            (Kind::Sfixed32, v) => fixed(number, &int::<i32, E>(v)?.to_le_bytes(), in_list, out),
            (Kind::Fixed64, v) => fixed(number, &int::<u64, E>(v)?.to_le_bytes(), in_list, out),
            (Kind::Sfixed64, v) => fixed(number, &int::<i64, E>(v)?.to_le_bytes(), in_list, out),
            (Kind::Double, v) => {
                let v = float::<E>(v)?;
                // Both zeros are the default.
                if v != 0.0 || in_list {
                    fixed(number, &v.to_le_bytes(), true, out);
                }
            }
            (Kind::Float, v) => {
                let v = float::<E>(v)?;
                // A double out of f32's range is the general path's to refuse.
                if (v as f32).is_infinite() {
                    return Err(E::custom("out of range"));
                }
                if v != 0.0 || in_list {
                    fixed(number, &(v as f32).to_le_bytes(), true, out);
                }
            }
            (Kind::String, Scalar::Text(s)) => {
                if !s.is_empty() || in_list {
                    encode_key(number, WireType::LengthDelimited, out);
                    encode_varint(s.len() as u64, out);
                    out.extend_from_slice(s.as_bytes());
                }
            }
            (Kind::Enum(e), Scalar::Text(name)) => {
                let value = e
                    .get_value_by_name(&name)
                    .ok_or_else(|| E::custom("unknown enum value"))?;
                varint!(i64::from(value.number()) as u64)
            }
            (Kind::Enum(_), v @ (Scalar::Int(_) | Scalar::Uint(_))) => {
                varint!(i64::from(int::<i32, E>(v)?) as u64)
            }
            _ => return Err(E::custom("not for the direct path")),
        }
        Ok(())
    }
}

/// Writes a fixed-width value (leaving out a zero outside lists).
fn fixed(number: u32, bytes: &[u8], in_list: bool, out: &mut Vec<u8>) {
    if !in_list && bytes.iter().all(|b| *b == 0) {
        return;
    }
    let wire = if bytes.len() == 4 {
        WireType::ThirtyTwoBit
    } else {
        WireType::SixtyFourBit
    };
    encode_key(number, wire, out);
    out.extend_from_slice(bytes);
}

/// An integer field's value: a JSON integer in range, or a string of one.
fn int<T, E>(value: Scalar<'_>) -> Result<T, E>
where
    T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr,
    E: serde::de::Error,
{
    let out = match value {
        Scalar::Int(i) => T::try_from(i).ok(),
        Scalar::Uint(u) => T::try_from(u).ok(),
        // Digits only, as proto3 JSON writes them; anything fancier is the
        // general path's to read or refuse.
        Scalar::Text(s) => {
            let digits = s.strip_prefix('-').unwrap_or(&s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                s.parse::<T>().ok()
            }
        }
        _ => None,
    };
    out.ok_or_else(|| E::custom("not an integer of the field's type"))
}

/// A float field's value: a JSON number (the spelled-out `NaN` and infinities
/// are the general path's).
fn float<E: serde::de::Error>(value: Scalar<'_>) -> Result<f64, E> {
    match value {
        Scalar::Float(f) => Ok(f),
        Scalar::Int(i) => Ok(i as f64),
        Scalar::Uint(u) => Ok(u as f64),
        _ => Err(E::custom("not a number")),
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field's value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        // `null`: the field's default, which proto3 leaves out.
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(mut self, v: bool) -> Result<(), E> {
        self.single(Scalar::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(mut self, v: i64) -> Result<(), E> {
        self.single(Scalar::Int(v))
    }

    fn visit_u64<E: serde::de::Error>(mut self, v: u64) -> Result<(), E> {
        self.single(Scalar::Uint(v))
    }

    fn visit_f64<E: serde::de::Error>(mut self, v: f64) -> Result<(), E> {
        self.single(Scalar::Float(v))
    }

    fn visit_borrowed_str<E: serde::de::Error>(mut self, v: &'de str) -> Result<(), E> {
        self.single(Scalar::Text(std::borrow::Cow::Borrowed(v)))
    }

    fn visit_str<E: serde::de::Error>(mut self, v: &str) -> Result<(), E> {
        self.single(Scalar::Text(std::borrow::Cow::Owned(v.to_owned())))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let Kind::Message(inner) = self.field.kind() else {
            return Err(A::Error::custom(
                "an object for a field that is not a message",
            ));
        };
        if self.field.is_list() {
            return Err(A::Error::custom("an object for a list"));
        }
        write_message(self.field.number(), &inner, self.out, map)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        if !self.field.is_list() {
            return Err(A::Error::custom("a list for a single field"));
        }
        if let Kind::Message(inner) = self.field.kind() {
            while seq
                .next_element_seed(ElementMessage {
                    number: self.field.number(),
                    message: &inner,
                    out: self.out,
                })?
                .is_some()
            {}
            return Ok(());
        }
        // Scalars are written one by one (unpacked), as protobuf parsers accept
        // for every list; strings are never packed anyway.
        while let Some(value) = seq.next_element_seed(ScalarSeed)? {
            self.write(value, true)?;
        }
        Ok(())
    }
}

impl<'de> FieldSeed<'_> {
    /// A single value where the field takes one.
    fn single<E: serde::de::Error>(&mut self, value: Scalar<'de>) -> Result<(), E> {
        if self.field.is_list() {
            return Err(E::custom("a single value for a list"));
        }
        self.write(value, false)
    }
}

/// Writes the message `map` holds as field `number` (length-delimited).
fn write_message<'de, A: MapAccess<'de>>(
    number: u32,
    message: &MessageDescriptor,
    out: &mut Vec<u8>,
    map: A,
) -> Result<(), A::Error> {
    let mut inner = Vec::new();
    MessageSeed {
        message,
        out: &mut inner,
    }
    .visit_map(map)?;
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(inner.len() as u64, out);
    out.extend_from_slice(&inner);
    Ok(())
}

/// One message of a list of them.
struct ElementMessage<'a> {
    number: u32,
    message: &'a MessageDescriptor,
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for ElementMessage<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ElementMessage<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        write_message(self.number, self.message, self.out, map)
    }
}

/// One scalar of a list.
struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Scalar<'de>, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Uint(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Text(std::borrow::Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Text(std::borrow::Cow::Owned(v.to_owned())))
    }
}

// ---------------------------------------------------------------------------
// protobuf → JSON

/// Writes the encoded `bytes` of a `message` (plain, see [`is_plain`]) as proto3
/// JSON with every field shown, defaults too, in the general path's order and
/// spelling. A field whose value comes twice, or bytes that do not decode,
/// decline.
pub(crate) fn reply(message: &MessageDescriptor, bytes: &[u8]) -> Result<Vec<u8>, Declined> {
    let mut out = Vec::with_capacity(bytes.len() * 2 + 16);
    write_reply(message, bytes, &mut out)?;
    Ok(out)
}

/// A field's values as they came on the wire.
#[derive(Clone)]
enum Found<'a> {
    None,
    Varint(u64),
    Fixed4(u32),
    Fixed8(u64),
    Delimited(&'a [u8]),
    List(Vec<Found<'a>>),
}

fn write_reply(
    message: &MessageDescriptor,
    mut bytes: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Declined> {
    // Each field's values by its number, in the order first seen.
    let mut found: Vec<(u32, Found<'_>)> = Vec::new();
    while !bytes.is_empty() {
        let key = prost::encoding::decode_varint(&mut bytes).map_err(|_| Declined)?;
        let number = u32::try_from(key >> 3).map_err(|_| Declined)?;
        let value = match key & 7 {
            0 => Found::Varint(prost::encoding::decode_varint(&mut bytes).map_err(|_| Declined)?),
            1 => {
                let (word, rest) = bytes.split_first_chunk::<8>().ok_or(Declined)?;
                bytes = rest;
                Found::Fixed8(u64::from_le_bytes(*word))
            }
            2 => {
                let len = prost::encoding::decode_varint(&mut bytes).map_err(|_| Declined)?;
                let len = usize::try_from(len).map_err(|_| Declined)?;
                if len > bytes.len() {
                    return Err(Declined);
                }
                let (value, rest) = bytes.split_at(len);
                bytes = rest;
                Found::Delimited(value)
            }
            5 => {
                let (word, rest) = bytes.split_first_chunk::<4>().ok_or(Declined)?;
                bytes = rest;
                Found::Fixed4(u32::from_le_bytes(*word))
            }
            // Groups, or not protobuf at all.
            _ => return Err(Declined),
        };
        let Some(field) = message.get_field(number) else {
            // Unknown fields are not shown.
            continue;
        };
        let slot = match found.iter().position(|(n, _)| *n == number) {
            Some(i) => &mut found[i].1,
            None => {
                found.push((number, Found::None));
                &mut found.last_mut().ok_or(Declined)?.1
            }
        };
        if field.is_list() {
            // A packed run of scalars is one delimited value holding many.
            let packed = !matches!(field.kind(), Kind::Message(_) | Kind::String | Kind::Bytes);
            let items = match (packed, value) {
                (true, Found::Delimited(run)) => unpack(&field.kind(), run)?,
                (_, value) => vec![value],
            };
            match slot {
                Found::List(list) => list.extend(items),
                _ => *slot = Found::List(items),
            }
        } else {
            // A value given twice: the last wins, but a message merges; leave
            // both to the general path.
            if !matches!(slot, Found::None) {
                return Err(Declined);
            }
            *slot = value;
        }
    }
    out.push(b'{');
    let mut first = true;
    for field in message.fields() {
        let number = field.number();
        let value = found
            .iter()
            .find(|(n, _)| *n == number)
            .map_or(&Found::None, |(_, v)| v);
        if let (Kind::Message(_), Found::None) = (field.kind(), value)
            && !field.is_list()
        {
            // An unset message field is left out.
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(field.json_name(), out);
        out.push(b':');
        if field.is_list() {
            out.push(b'[');
            if let Found::List(items) = value {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_value(&field.kind(), item, out)?;
                }
            }
            out.push(b']');
        } else {
            write_value(&field.kind(), value, out)?;
        }
    }
    out.push(b'}');
    Ok(())
}

/// The scalars of a packed run.
fn unpack<'a>(kind: &Kind, mut run: &'a [u8]) -> Result<Vec<Found<'a>>, Declined> {
    let mut items = Vec::new();
    let width = match kind {
        Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => 4,
        Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => 8,
        _ => 0,
    };
    while !run.is_empty() {
        items.push(match width {
            4 => {
                let (word, rest) = run.split_first_chunk::<4>().ok_or(Declined)?;
                run = rest;
                Found::Fixed4(u32::from_le_bytes(*word))
            }
            8 => {
                let (word, rest) = run.split_first_chunk::<8>().ok_or(Declined)?;
                run = rest;
                Found::Fixed8(u64::from_le_bytes(*word))
            }
            _ => Found::Varint(prost::encoding::decode_varint(&mut run).map_err(|_| Declined)?),
        });
    }
    Ok(items)
}

/// Writes one value of a field of `kind` (`Found::None`: its default).
fn write_value(kind: &Kind, value: &Found<'_>, out: &mut Vec<u8>) -> Result<(), Declined> {
    use std::io::Write as _;
    let varint = |v: &Found<'_>| match v {
        Found::None => Ok(0),
        Found::Varint(v) => Ok(*v),
        _ => Err(Declined),
    };
    let fixed32 = |v: &Found<'_>| match v {
        Found::None => Ok(0),
        Found::Fixed4(v) => Ok(*v),
        _ => Err(Declined),
    };
    let fixed64 = |v: &Found<'_>| match v {
        Found::None => Ok(0),
        Found::Fixed8(v) => Ok(*v),
        _ => Err(Declined),
    };
    // Integers are written as `serde_json` writes them; 64-bit ones quoted.
    let mut number = |text: &dyn fmt::Display, quoted: bool| {
        if quoted {
            let _ = write!(out, "\"{text}\"");
        } else {
            let _ = write!(out, "{text}");
        }
    };
    match kind {
        Kind::Int32 => number(&(varint(value)? as i32), false),
        Kind::Sint32 => {
            let v = varint(value)? as u32;
            number(&(((v >> 1) as i32) ^ -((v & 1) as i32)), false)
        }
        Kind::Uint32 => number(&(varint(value)? as u32), false),
        Kind::Int64 => number(&(varint(value)? as i64), true),
        Kind::Sint64 => {
            let v = varint(value)?;
            number(&(((v >> 1) as i64) ^ -((v & 1) as i64)), true)
        }
        Kind::Uint64 => number(&varint(value)?, true),
        Kind::Fixed32 => number(&fixed32(value)?, false),
        Kind::Sfixed32 => number(&(fixed32(value)? as i32), false),
        Kind::Fixed64 => number(&fixed64(value)?, true),
        Kind::Sfixed64 => number(&(fixed64(value)? as i64), true),
        Kind::Bool => out.extend_from_slice(if varint(value)? != 0 {
            b"true"
        } else {
            b"false"
        }),
        Kind::Double => write_f64(f64::from_bits(fixed64(value)?), out),
        Kind::Float => write_f32(f32::from_bits(fixed32(value)?), out),
        Kind::String => match value {
            Found::None => out.extend_from_slice(b"\"\""),
            Found::Delimited(text) => {
                write_str(std::str::from_utf8(text).map_err(|_| Declined)?, out)
            }
            _ => return Err(Declined),
        },
        Kind::Enum(e) => {
            let n = varint(value)? as i32;
            match e.get_value(n) {
                Some(v) => write_str(v.name(), out),
                None => number(&n, false),
            }
        }
        Kind::Message(inner) => match value {
            Found::Delimited(bytes) => write_reply(inner, bytes, out)?,
            Found::None => write_reply(inner, &[], out)?,
            _ => return Err(Declined),
        },
        _ => return Err(Declined),
    }
    Ok(())
}

/// A JSON string, escaped as `serde_json` escapes it.
fn write_str(text: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, text);
}

fn write_f64(v: f64, out: &mut Vec<u8>) {
    if v.is_finite() {
        let _ = serde_json::to_writer(&mut *out, &v);
    } else {
        write_str(non_finite(v.is_nan(), v > 0.0), out);
    }
}

fn write_f32(v: f32, out: &mut Vec<u8>) {
    if v.is_finite() {
        let _ = serde_json::to_writer(&mut *out, &v);
    } else {
        write_str(non_finite(v.is_nan(), v > 0.0), out);
    }
}

/// proto3 JSON's spelling of a float that is not a finite number.
fn non_finite(nan: bool, positive: bool) -> &'static str {
    match (nan, positive) {
        (true, _) => "NaN",
        (false, true) => "Infinity",
        (false, false) => "-Infinity",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use prost_reflect::{DescriptorPool, DynamicMessage, Value};
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{
        DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
        FileDescriptorProto, OneofDescriptorProto,
    };

    /// Every kind the direct path takes, and messages it must leave alone.
    fn pool() -> DescriptorPool {
        let f = crate::transcode::tests::field_proto;
        use Label::{Optional as One, Repeated as Many};
        let all = vec![
            f("i32", 1, Type::Int32, One, None),
            f("i64", 2, Type::Int64, One, None),
            f("u32", 3, Type::Uint32, One, None),
            f("u64", 4, Type::Uint64, One, None),
            f("s32", 5, Type::Sint32, One, None),
            f("s64", 6, Type::Sint64, One, None),
            f("f32", 7, Type::Fixed32, One, None),
            f("f64", 8, Type::Fixed64, One, None),
            f("sf32", 9, Type::Sfixed32, One, None),
            f("sf64", 10, Type::Sfixed64, One, None),
            f("flag", 11, Type::Bool, One, None),
            f("ratio", 12, Type::Float, One, None),
            f("amount", 13, Type::Double, One, None),
            f("user_name", 14, Type::String, One, None),
            f("color", 15, Type::Enum, One, Some(".t.Color")),
            f("inner", 16, Type::Message, One, Some(".t.Inner")),
            f("tags", 17, Type::String, Many, None),
            f("counts", 18, Type::Int32, Many, None),
            f("weights", 19, Type::Double, Many, None),
            f("colors", 20, Type::Enum, Many, Some(".t.Color")),
            f("inners", 21, Type::Message, Many, Some(".t.Inner")),
            f("big_list", 22, Type::Sint64, Many, None),
            f("next", 23, Type::Message, One, Some(".t.All")),
        ];
        let file = FileDescriptorProto {
            name: Some("t.proto".into()),
            package: Some("t".into()),
            syntax: Some("proto3".into()),
            message_type: vec![
                DescriptorProto {
                    name: Some("All".into()),
                    field: all,
                    ..Default::default()
                },
                DescriptorProto {
                    name: Some("Inner".into()),
                    field: vec![
                        f("age", 1, Type::Uint32, One, None),
                        f("note", 2, Type::String, One, None),
                    ],
                    ..Default::default()
                },
                DescriptorProto {
                    name: Some("WithBytes".into()),
                    field: vec![f("data", 1, Type::Bytes, One, None)],
                    ..Default::default()
                },
                DescriptorProto {
                    name: Some("WithOneof".into()),
                    field: vec![FieldDescriptorProto {
                        oneof_index: Some(0),
                        ..f("a", 1, Type::String, One, None)
                    }],
                    oneof_decl: vec![OneofDescriptorProto {
                        name: Some("choice".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                DescriptorProto {
                    name: Some("HoldsBytes".into()),
                    field: vec![f("inner", 1, Type::Message, One, Some(".t.WithBytes"))],
                    ..Default::default()
                },
            ],
            enum_type: vec![EnumDescriptorProto {
                name: Some("Color".into()),
                value: ["RED", "GREEN", "BLUE"]
                    .iter()
                    .enumerate()
                    .map(|(i, n)| EnumValueDescriptorProto {
                        name: Some((*n).to_owned()),
                        number: Some(i as i32),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut pool = DescriptorPool::new();
        pool.add_file_descriptor_proto(file).expect("a valid file");
        pool
    }

    /// A small deterministic generator (xorshift).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// Often zero (a default), else anything: the edges matter most.
        fn pick(&mut self) -> u64 {
            match self.next() % 4 {
                0 => 0,
                1 => self.next() % 300,
                _ => self.next(),
            }
        }
    }

    fn scalar(rng: &mut Rng, field: &FieldDescriptor) -> Value {
        let v = rng.pick();
        match field.kind() {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(v as i32),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(v as i64),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(v as u32),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(v),
            Kind::Bool => Value::Bool(v % 2 == 1),
            Kind::Float => Value::F32(if v.is_multiple_of(3) {
                0.0
            } else {
                (v as f32) / 7.0 - 1e5
            }),
            Kind::Double => Value::F64(if v.is_multiple_of(3) {
                0.0
            } else {
                (v as f64) / 3.0 - 1e12
            }),
            Kind::String => Value::String(
                ["", "ann", "Zoë \"quoted\" \\ tab\t", "日本", "\u{1}"][v as usize % 5].to_owned(),
            ),
            Kind::Enum(_) => Value::EnumNumber((v % 4) as i32), // 3 is not a named value
            _ => unreachable!("scalars only"),
        }
    }

    fn random(rng: &mut Rng, message: &MessageDescriptor, depth: u32) -> DynamicMessage {
        let mut out = DynamicMessage::new(message.clone());
        for field in message.fields() {
            if rng.next().is_multiple_of(3) {
                continue;
            }
            let value = |rng: &mut Rng| match field.kind() {
                Kind::Message(inner) => Value::Message(random(rng, &inner, depth + 1)),
                _ => scalar(rng, &field),
            };
            if let Kind::Message(_) = field.kind()
                && depth > 2
            {
                continue;
            }
            if field.is_list() {
                let n = rng.next() % 4;
                out.set_field(&field, Value::List((0..n).map(|_| value(rng)).collect()));
            } else {
                out.set_field(&field, value(rng));
            }
        }
        out
    }

    fn general_reply(message: &MessageDescriptor, bytes: &[u8]) -> Vec<u8> {
        crate::transcode::reply_json(message, bytes, "", false).expect("the general path")
    }

    #[test]
    fn replies_are_written_as_the_general_path_writes_them() {
        let pool = pool();
        let all = pool.get_message_by_name("t.All").unwrap();
        assert!(is_plain(&all));
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..500 {
            let message = random(&mut rng, &all, 0);
            let bytes = message.encode_to_vec();
            let direct = reply(&all, &bytes).unwrap_or_else(|_| panic!("case {i} declined"));
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&general_reply(&all, &bytes)),
                "case {i}"
            );
        }
        // Nothing at all: every default shown.
        assert_eq!(reply(&all, &[]).unwrap(), general_reply(&all, &[]));
    }

    #[test]
    fn requests_encode_to_the_general_paths_message() {
        let pool = pool();
        let all = pool.get_message_by_name("t.All").unwrap();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for i in 0..500 {
            let message = random(&mut rng, &all, 0);
            let options = prost_reflect::SerializeOptions::new()
                .skip_default_fields(i % 2 == 0)
                .use_proto_field_name(i % 3 == 0)
                .use_enum_numbers(i % 5 == 0)
                .stringify_64_bit_integers(i % 7 != 0);
            let json = message
                .serialize_with_options(serde_json::value::Serializer, &options)
                .unwrap()
                .to_string();
            let direct = encode(&all, json.as_bytes())
                .unwrap_or_else(|_| panic!("case {i} declined: {json}"));
            let general = crate::transcode::encode_body(&all, json.as_bytes(), false).unwrap();
            // Compared as re-encoded by prost-reflect (fields in number order):
            // the same message whatever order the bytes came in. (A recursive
            // message's `Debug` never ends, so the JSON is what a failure shows.)
            let canonical = |bytes: &[u8]| {
                DynamicMessage::decode(all.clone(), bytes)
                    .expect("decodes")
                    .encode_to_vec()
            };
            let shown = |bytes: &[u8]| {
                String::from_utf8_lossy(&general_reply(&all, &canonical(bytes))).into_owned()
            };
            let (direct, general) = (canonical(&direct), canonical(&general));
            assert!(
                direct == general,
                "case {i}: {json}\n direct: {}\ngeneral: {}",
                shown(&direct),
                shown(&general)
            );
            // (Not compared with `message` itself: serde_json reads a double's
            // shortest text back to within one unit in the last place, not
            // always to the same bits, on both paths alike.)
        }
    }

    #[test]
    fn what_it_is_unsure_of_is_left_to_the_general_path() {
        let pool = pool();
        let all = pool.get_message_by_name("t.All").unwrap();
        for body in [
            &br#"{"nope": 1}"#[..],
            br#"{"amount": "NaN"}"#,
            br#"{"i32": 1.5}"#,
            br#"{"i32": "+1"}"#,
            br#"{"i32": 3000000000}"#,
            br#"{"i32": "1e3"}"#,
            br#"{"userName": "a", "user_name": "b"}"#,
            br#"{"color": "PURPLE"}"#,
            br#"{"tags": "one"}"#,
            br#"{"inner": 1}"#,
            br#"{"ratio": 1e300}"#,
            br#"{"userName": 7}"#,
            br#"{"counts": [1, null]}"#,
            br#"[1]"#,
            br#"{"a": 1} junk"#,
        ] {
            assert!(
                encode(&all, body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Bytes a message cannot hold, or a field given twice.
        let twice = [0x08, 0x01, 0x08, 0x02];
        assert!(reply(&all, &twice).is_err());
        assert!(reply(&all, &[0x0a]).is_err());
        for name in ["t.WithBytes", "t.WithOneof", "t.HoldsBytes"] {
            assert!(
                !is_plain(&pool.get_message_by_name(name).unwrap()),
                "{name}"
            );
        }
    }

    #[test]
    fn wrong_input_gets_the_general_paths_sentence() {
        let pool = pool();
        let all = pool.get_message_by_name("t.All").unwrap();
        for body in [
            &br#"{"inner": {"age": "x"}}"#[..],
            br#"{"nmae": 1}"#,
            br#"{"i32": "many"}"#,
        ] {
            let direct = crate::transcode::encode_body(&all, body, true).unwrap_err();
            let general = crate::transcode::encode_body(&all, body, false).unwrap_err();
            assert_eq!(direct.detail, general.detail);
            assert_eq!(direct.code, 400);
        }
    }
}
