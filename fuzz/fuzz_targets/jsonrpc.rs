//! `jsonrpc::parse` on arbitrary bodies: never panics; a call's id is a string or a safe
//! integer; whatever it accepts, a plain JSON parser reads the same way. An accepted call is
//! then classified (`operation::classify`): a resource it names is in canonical spelling, which
//! canonicalising again leaves as it is (`uri::canonical` is idempotent, and neither adds nor
//! removes an authority).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_mesh_auth_filter::jsonrpc::{self, Message, RequestId, MAX_SAFE_INTEGER};
use mcp_mesh_auth_filter::operation::{self, ExtraMethods, Feature, Kind, Operation};
use mcp_mesh_auth_filter::uri;
use serde_json::Value;

/// `canonical` invents no authority, and is idempotent.
fn check_canonical(text: &str) {
    let Ok(once) = uri::canonical(text) else {
        return;
    };
    let has_authority = |uri: &str| uri.split_once(':').is_some_and(|(_, rest)| rest.starts_with("//"));
    // `t:/.//x` once became `t://x`: a path read as an authority (regressions/jsonrpc).
    if has_authority(&once) != has_authority(text) {
        panic!("canonical({text:?}) = {once:?}: the authority changed");
    }
    assert_eq!(uri::canonical(&once).as_ref(), Ok(&once), "canonical twice differs");
}

fuzz_target!(|data: &[u8]| {
    check_canonical(&String::from_utf8_lossy(data));
    let parsed = jsonrpc::parse(Some("application/json"), data);
    match &parsed {
        Ok(Message::Call { id, method, params }) => {
            if let Some(id) = id {
                match id {
                    RequestId::Int(int) => assert!(
                        (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(int),
                        "id {int} is not a safe integer"
                    ),
                    RequestId::Str(_) => {}
                }
                // The id an answer carries back is matched by the request's own id.
                assert!(id.matches(&id.to_value()), "id {id} does not match itself");
                let _ = id.to_string();
            }
            // A plain parser agrees on every part the filter read.
            let plain: Value = serde_json::from_slice(data).expect("an accepted body is JSON");
            assert_eq!(plain["jsonrpc"], "2.0");
            assert_eq!(plain["method"].as_str(), Some(method.as_str()));
            match plain.get("id") {
                None => assert!(id.is_none()),
                Some(raw) => {
                    assert_eq!(RequestId::from_request(raw).as_ref(), id.as_ref());
                    // Integers only: no fraction or exponent slipped through as a float.
                    if let Some(RequestId::Int(_)) = id {
                        assert!(raw.is_i64() || raw.is_u64(), "id {raw} read as an integer");
                    }
                }
            }
            match plain.get("params") {
                None | Some(Value::Null) => assert!(params.is_empty()),
                Some(Value::Object(plain_params)) => assert_eq!(plain_params, params),
                Some(other) => panic!("params {other} accepted"),
            }
            if let Operation::Authorize(uses) =
                operation::classify(method, params, &ExtraMethods::default())
            {
                for used in uses {
                    if used.kind == Kind::Item(Feature::Resource) {
                        if let Some(Value::String(sent)) = params.get("uri") {
                            check_canonical(sent);
                        }
                        let again = uri::canonical(&used.target);
                        assert_eq!(
                            again.as_deref(),
                            Ok(&*used.target),
                            "canonical URI {:?} is not canonical",
                            used.target
                        );
                    }
                }
            }
        }
        Ok(Message::Reply) => {
            let plain: Value = serde_json::from_slice(data).expect("an accepted reply is JSON");
            assert!(plain.get("method").is_none());
            assert!(plain.get("result").is_some() || plain.get("error").is_some());
        }
        Err(err) => {
            // The error answer is always well-formed JSON-RPC.
            let body = jsonrpc::error_body(None, err.code(), &err.to_string());
            let answer: Value = serde_json::from_str(&body).expect("error body is JSON");
            assert_eq!(answer["error"]["code"], err.code());
        }
    }
});
