//! Claims Envoy's own `jwt_authn` filter verified, read from the request's dynamic metadata.
//!
//! Where `jwt_authn` (what Istio's `RequestAuthentication` configures) already checked the
//! signature, paying for it again in the wasm VM is waste: with `payload_in_metadata` it stores
//! the verified payload as a `google.protobuf.Struct` under its namespace. The proxy hands the
//! filter the request's `envoy.config.core.v3.Metadata` serialised as protobuf; this module finds
//! the payload in it and turns it back into JSON claims. Nothing a client sends can put a value
//! there: only filters write dynamic metadata.

use std::collections::HashMap;

use prost::Message;
use prost_types::value::Kind;
use serde_json::{Map, Number, Value};

/// `envoy.config.core.v3.Metadata`, as far as the filter reads it (`typed_filter_metadata`,
/// field 2, is skipped).
#[derive(Clone, PartialEq, Message)]
struct Metadata {
    #[prost(map = "string, message", tag = "1")]
    filter_metadata: HashMap<String, prost_types::Struct>,
}

/// Why the metadata could not be read (the request is then refused: fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("the request's dynamic metadata is not a protobuf Metadata message: {0}")]
    NotMetadata(String),
    #[error("`{namespace}.{key}` is not an object of claims")]
    NotClaims { namespace: String, key: String },
}

/// The verified claims under `namespace` / `key`, or `None` when `jwt_authn` stored none (it
/// verified no token for this request).
pub fn claims(
    metadata: &[u8],
    namespace: &str,
    key: &str,
) -> Result<Option<Map<String, Value>>, MetadataError> {
    let metadata =
        Metadata::decode(metadata).map_err(|err| MetadataError::NotMetadata(err.to_string()))?;
    let Some(payload) = metadata
        .filter_metadata
        .get(namespace)
        .and_then(|fields| fields.fields.get(key))
    else {
        return Ok(None);
    };
    match json(payload) {
        Value::Object(claims) => Ok(Some(claims)),
        _ => Err(MetadataError::NotClaims {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
        }),
    }
}

/// A protobuf `Value` as JSON. Struct numbers are doubles; an integral one (`exp`, `iat`) goes
/// back to an integer, as it was in the token.
fn json(value: &prost_types::Value) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(flag)) => Value::Bool(*flag),
        Some(Kind::StringValue(text)) => Value::String(text.clone()),
        Some(Kind::NumberValue(number)) => number_json(*number),
        Some(Kind::ListValue(list)) => Value::Array(list.values.iter().map(json).collect()),
        Some(Kind::StructValue(object)) => Value::Object(
            object
                .fields
                .iter()
                .map(|(name, value)| (name.clone(), json(value)))
                .collect(),
        ),
    }
}

/// Integers exactly representable as doubles (±2^53) are integers; anything else stays a float.
fn number_json(number: f64) -> Value {
    const SAFE: f64 = 9_007_199_254_740_992.0;
    if number.fract() == 0.0 && number.abs() <= SAFE {
        // In range and integral: the conversion is exact.
        #[allow(clippy::cast_possible_truncation)]
        return Value::from(number as i64);
    }
    Number::from_f64(number).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{ListValue, Struct};
    use std::collections::BTreeMap;

    fn value(kind: Kind) -> prost_types::Value {
        prost_types::Value { kind: Some(kind) }
    }

    fn metadata(namespace: &str, key: &str, payload: prost_types::Value) -> Vec<u8> {
        let fields = BTreeMap::from([(key.to_owned(), payload)]);
        Metadata {
            filter_metadata: HashMap::from([(namespace.to_owned(), Struct { fields })]),
        }
        .encode_to_vec()
    }

    fn payload() -> prost_types::Value {
        let fields = BTreeMap::from([
            (
                "iss".to_owned(),
                value(Kind::StringValue("https://idp".into())),
            ),
            ("exp".to_owned(), value(Kind::NumberValue(1_800_000_000.0))),
            ("ratio".to_owned(), value(Kind::NumberValue(0.5))),
            (
                "groups".to_owned(),
                value(Kind::ListValue(ListValue {
                    values: vec![value(Kind::StringValue("mcp-dev".into()))],
                })),
            ),
            ("email_verified".to_owned(), value(Kind::BoolValue(true))),
        ]);
        value(Kind::StructValue(Struct { fields }))
    }

    #[test]
    fn the_verified_payload_comes_back_as_the_claims_the_token_had() {
        let bytes = metadata("envoy.filters.http.jwt_authn", "jwt_payload", payload());
        let claims = claims(&bytes, "envoy.filters.http.jwt_authn", "jwt_payload")
            .unwrap()
            .unwrap();
        assert_eq!(
            Value::Object(claims),
            serde_json::json!({"iss": "https://idp", "exp": 1_800_000_000_i64, "ratio": 0.5,
                               "groups": ["mcp-dev"], "email_verified": true})
        );
    }

    #[test]
    fn no_payload_is_no_verified_token() {
        let bytes = metadata("envoy.filters.http.jwt_authn", "other", payload());
        assert_eq!(
            claims(&bytes, "envoy.filters.http.jwt_authn", "jwt_payload"),
            Ok(None)
        );
        assert_eq!(
            claims(&[], "envoy.filters.http.jwt_authn", "jwt_payload"),
            Ok(None)
        );
        let bytes = metadata("someone.else", "jwt_payload", payload());
        assert_eq!(
            claims(&bytes, "envoy.filters.http.jwt_authn", "jwt_payload"),
            Ok(None)
        );
    }

    #[test]
    fn a_payload_that_is_not_an_object_or_bytes_that_are_not_metadata_fail() {
        let bytes = metadata("ns", "k", value(Kind::StringValue("x".into())));
        assert!(matches!(
            claims(&bytes, "ns", "k"),
            Err(MetadataError::NotClaims { .. })
        ));
        assert!(matches!(
            claims(b"\xff\xff\xff", "ns", "k"),
            Err(MetadataError::NotMetadata(_))
        ));
    }
}
