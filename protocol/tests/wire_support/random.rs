//! A serde `Deserializer` that invents values instead of reading them: every integer, string,
//! byte string, option, sequence and enum variant is drawn from a seeded RNG. Fed to
//! [`Message::deserialize_kind`], it yields a random message of any kind without this file
//! naming a single field, so the round-trip tests cover fields and variants added later (a new
//! kind is covered through `MessageKind::ALL`).
//!
//! Integers favour edge values (0, 1, 250..=252 around the varint boundaries, MAX) so that
//! every varint width appears; sequences are short (within every named limit).

use protocol::message::{Message, MessageKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, SeqAccess, VariantAccess, Visitor,
};
use std::fmt;

/// Most elements in a generated sequence, string (chars) or byte string.
const SEQUENCE_LEN_MAX: usize = 5;
const TEXT_CHARS_MAX: usize = 24;
const BYTES_LEN_MAX: usize = 96;

#[derive(Debug)]
pub struct Unsupported(String);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

impl de::Error for Unsupported {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Unsupported(msg.to_string())
    }
}

/// A random message of `kind` drawn from `seed`.
pub fn random_message(kind: MessageKind, seed: u64) -> Message {
    let mut rng = StdRng::seed_from_u64(seed);
    Message::deserialize_kind(kind, &mut RandomDeserializer { rng: &mut rng })
        .unwrap_or_else(|e| panic!("cannot invent a {kind:?}: {e}"))
}

pub struct RandomDeserializer<'r> {
    rng: &'r mut StdRng,
}

impl RandomDeserializer<'_> {
    fn unsigned(&mut self, max: u64) -> u64 {
        let edges = [0, 1, 2, 250, 251, 252, 255, 256, 65_535, 65_536, max - 1, max];
        if self.rng.gen_bool(0.3) {
            edges[self.rng.gen_range(0..edges.len())].min(max)
        } else if self.rng.gen_bool(0.5) {
            self.rng.gen_range(0..=max.min(1000))
        } else {
            self.rng.gen_range(0..=max)
        }
    }

    fn text(&mut self) -> String {
        let len = self.rng.gen_range(0..=TEXT_CHARS_MAX);
        (0..len)
            .map(|_| {
                if self.rng.gen_bool(0.7) {
                    self.rng.gen_range(' '..='~')
                } else {
                    self.rng.gen::<char>()
                }
            })
            .collect()
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = self.rng.gen_range(0..=BYTES_LEN_MAX);
        (0..len).map(|_| self.rng.gen()).collect()
    }
}

macro_rules! unsigned {
    ($($method:ident => $visit:ident, $ty:ty;)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
            let v = self.unsigned(<$ty>::MAX as u64) as $ty;
            visitor.$visit(v)
        })*
    };
}

macro_rules! signed {
    ($($method:ident => $visit:ident, $ty:ty;)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
            let magnitude = self.unsigned(<$ty>::MAX as u64) as $ty;
            let v = if self.rng.gen_bool(0.5) { magnitude } else { -magnitude };
            visitor.$visit(v)
        })*
    };
}

impl<'de> de::Deserializer<'de> for &mut RandomDeserializer<'_> {
    type Error = Unsupported;

    unsigned! {
        deserialize_u8 => visit_u8, u8;
        deserialize_u16 => visit_u16, u16;
        deserialize_u32 => visit_u32, u32;
        deserialize_u64 => visit_u64, u64;
    }

    signed! {
        deserialize_i8 => visit_i8, i8;
        deserialize_i16 => visit_i16, i16;
        deserialize_i32 => visit_i32, i32;
        deserialize_i64 => visit_i64, i64;
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        visitor.visit_bool(self.rng.gen())
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        visitor.visit_string(self.text())
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        visitor.visit_string(self.text())
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        visitor.visit_byte_buf(self.bytes())
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        visitor.visit_byte_buf(self.bytes())
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        if self.rng.gen_bool(0.5) {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Unsupported> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Unsupported> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        let len = self.rng.gen_range(0..=SEQUENCE_LEN_MAX);
        visitor.visit_seq(Elements { de: self, left: len })
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Unsupported> {
        visitor.visit_seq(Elements { de: self, left: len })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Unsupported> {
        visitor.visit_seq(Elements { de: self, left: len })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Unsupported> {
        visitor.visit_seq(Elements { de: self, left: fields.len() })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Unsupported> {
        let index = self.rng.gen_range(0..variants.len()) as u32;
        visitor.visit_enum(Variant { de: self, index })
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Unsupported> {
        Err(Unsupported("self-describing input is not part of the wire format".into()))
    }

    serde::forward_to_deserialize_any! {
        f32 f64 char map identifier ignored_any
    }
}

struct Elements<'a, 'r> {
    de: &'a mut RandomDeserializer<'r>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Elements<'_, '_> {
    type Error = Unsupported;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Unsupported> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

struct Variant<'a, 'r> {
    de: &'a mut RandomDeserializer<'r>,
    index: u32,
}

impl<'de, 'a, 'r> EnumAccess<'de> for Variant<'a, 'r> {
    type Error = Unsupported;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self), Unsupported> {
        let deserializer: de::value::U32Deserializer<Unsupported> = self.index.into_deserializer();
        let value = seed.deserialize(deserializer)?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for Variant<'_, '_> {
    type Error = Unsupported;

    fn unit_variant(self) -> Result<(), Unsupported> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Unsupported> {
        seed.deserialize(self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Unsupported> {
        visitor.visit_seq(Elements { de: self.de, left: len })
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Unsupported> {
        visitor.visit_seq(Elements { de: self.de, left: fields.len() })
    }
}
