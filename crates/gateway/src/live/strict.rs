//! serde strictness for the JSON the gateway accepts: only objects where
//! the schema says object. Used by [`super::wire`].

/// Deserializes a struct from a JSON object only. serde's derive also takes
/// a struct as an array of its fields in order (`"start": [1, 2]`, a whole
/// event as a 17-element array), which the documented schema does not
/// allow: each type derives with `remote = "Self"` (an inherent
/// `deserialize`) and this impl admits only a map in front of it.
macro_rules! objects_only {
    ($ty:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct ObjectVisitor;
                impl<'de> serde::de::Visitor<'de> for ObjectVisitor {
                    type Value = $ty;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }

                    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<$ty, A::Error> {
                        <$ty>::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    }
                }
                deserializer.deserialize_map(ObjectVisitor)
            }
        }
    };
}

/// `remote = "Self"` makes the serialising side inherent too: the trait
/// impl just calls it.
macro_rules! serialize_as_derived {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                <$ty>::serialize(self, serializer)
            }
        }
    };
}

pub(super) use objects_only;
pub(super) use serialize_as_derived;
