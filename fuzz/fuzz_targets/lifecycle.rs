//! `lifecycle::Stream` driven through a fake host with a request body and a callback order taken
//! from the input, in both `headers_stop_iteration` modes.
//!
//! Input: `[control] [n] [n script bytes] body`. `control`: bit 0 the mode, bits 1-2 the token
//! (valid, from an issuer whose keys never load, forged, none), bit 3 whether `Mcp-Method` /
//! `Mcp-Name` headers agree with the body, bits 4-5 how the request ends (last chunk, empty last
//! chunk, trailers, trailers after an empty chunk). Each script byte is a body chunk (that many
//! more bytes) or a keys event (`on_keys`, the wait over or not).
//!
//! Checked: a `tools/call` of a tool the policy does not permit (only `echo` is) never gets
//! `Step::Continue` from a body, trailers or keys callback, is never resumed, and is answered
//! once its end has arrived; no body callback of an MCP `POST` continues before the end.
#![no_main]

use std::cell::RefCell;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_compact::alg::Rsa;
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmSignature};
use libfuzzer_sys::fuzz_target;
use mcp_mesh_auth_filter::call_gate::CallHeaders;
use mcp_mesh_auth_filter::config::FilterConfig;
use mcp_mesh_auth_filter::engine::Engine;
use mcp_mesh_auth_filter::gate::RequestHead;
use mcp_mesh_auth_filter::lifecycle::{Hold, Host, HostError, Observation, Step, Stream};
use mcp_mesh_auth_filter::response::LocalResponse;
use rsa::pkcs8::DecodePrivateKey;
use serde_json::{json, Value};

const NOW_MS: i64 = 1_800_000_000_000;
const NOW: i64 = NOW_MS / 1000;
const INLINE: &str = "https://inline.example.com";
const REMOTE: &str = "https://remote.example.com";

#[derive(Default)]
struct FakeHost {
    request_body: Vec<u8>,
    sent: Vec<LocalResponse>,
    resumed: usize,
}

impl Host for FakeHost {
    fn request_body(&mut self, max: usize) -> Result<Vec<u8>, HostError> {
        Ok(self.request_body.iter().copied().take(max).collect())
    }
    fn replace_request_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError> {
        let size = size.min(self.request_body.len());
        self.request_body.splice(..size, body.iter().copied());
        Ok(())
    }
    fn set_request_header(&mut self, _: &str, _: Option<&str>) -> Result<(), HostError> {
        Ok(())
    }
    fn remove_request_trailers(&mut self) -> Result<(), HostError> {
        Ok(())
    }
    fn resume_request(&mut self) -> Result<(), HostError> {
        self.resumed += 1;
        Ok(())
    }
    fn response_body(&mut self, _: usize) -> Result<Vec<u8>, HostError> {
        Ok(Vec::new())
    }
    fn replace_response_body(&mut self, _: usize, _: &[u8]) -> Result<(), HostError> {
        Ok(())
    }
    fn set_response_header(&mut self, _: &str, _: Option<&str>) -> Result<(), HostError> {
        Ok(())
    }
    fn add_response_header(&mut self, _: &str, _: &str) -> Result<(), HostError> {
        Ok(())
    }
    fn dispatch(
        &mut self,
        _: &mcp_mesh_auth_filter::exchange::TokenRequest,
    ) -> Result<u32, HostError> {
        Err(HostError("send a token exchange request"))
    }
    fn send(&mut self, response: &LocalResponse) -> Result<(), HostError> {
        self.sent.push(response.clone());
        Ok(())
    }
    fn observe(&mut self, _: Observation<'_>) {}
}

struct Fixture {
    /// One configuration per mode: `[plain, hold headers]`.
    configs: [FilterConfig; 2],
    /// `[valid, keys never load, forged]`.
    tokens: [String; 3],
}

fn build_fixture() -> Fixture {
    let key =
        rsa::RsaPrivateKey::from_pkcs8_pem(include_str!("../../filter/testdata/rsa2048.pem"))
            .unwrap();
    let mut jwk = serde_json::to_value(JsonWebKey::from(&key.to_public_key())).unwrap();
    jwk["kid"] = json!("r");
    let config = |hold_headers: bool| {
        let raw = json!({
            "resource": "https://mcp.example.com/mcp",
            "public_paths": ["/oauth/"],
            "identity_headers": {"x-mcp-subject": "sub"},
            "issuers": [
                {"issuer": INLINE, "jwks_inline": {"keys": [jwk]}},
                {"issuer": REMOTE, "jwks": {"cluster": "idp", "path": "/jwks"}},
            ],
            "cedar": {"policies": [
                r#"permit(principal, action == Action::"call_tool", resource == Tool::"echo");"#,
                r#"permit(principal, action == Action::"list_tools", resource);"#,
            ]},
            "headers_stop_iteration": hold_headers,
        });
        FilterConfig::from_json(raw.to_string().as_bytes()).unwrap()
    };
    let sign = |iss: &str| {
        let header = json!({"alg": "RS256", "kid": "r"});
        let claims = json!({"iss": iss, "aud": "https://mcp.example.com/mcp", "sub": "alice",
                            "exp": NOW + 600});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = Rsa::with_name("RS256").sign(&key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_bytes()))
    };
    let valid = sign(INLINE);
    let mut forged = valid.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    Fixture {
        configs: [config(false), config(true)],
        tokens: [valid, sign(REMOTE), String::from_utf8(forged).unwrap()],
    }
}

thread_local! {
    static FIXTURE: RefCell<Option<Fixture>> = const { RefCell::new(None) };
}

/// The tool a body calls, read by a plain JSON parser: `Some(name)` for a `tools/call`.
fn called_tool(body: &[u8]) -> Option<String> {
    let message: Value = serde_json::from_slice(body).ok()?;
    if message.get("method")? != "tools/call" {
        return None;
    }
    message.get("params")?.get("name")?.as_str().map(str::to_owned)
}

fn run(fixture: &Fixture, data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let (n, rest) = rest.split_first().map_or((0, rest), |(n, rest)| (*n as usize % 24, rest));
    let (script, body) = rest.split_at(n.min(rest.len()));
    let hold_headers = control & 1 == 1;
    let mut engine = Engine::new(fixture.configs[usize::from(hold_headers)].clone());
    let token_choice = (control >> 1) & 3;
    let valid_token = token_choice == 0;
    let authorization = match fixture.tokens.get(token_choice as usize) {
        Some(token) => vec![format!("Bearer {token}")],
        None => vec![],
    };
    let tool = called_tool(body);
    let mut call = CallHeaders {
        content_type: Some("application/json".into()),
        ..CallHeaders::default()
    };
    if control & 8 != 0 {
        if let Some(tool) = &tool {
            call.mcp_method = Some("tools/call".into());
            call.mcp_name = Some(tool.clone());
        }
    }
    let head = RequestHead {
        method: "POST".into(),
        path: "/mcp".into(),
        authorization,
        call,
        ..RequestHead::default()
    };
    let refused = tool.as_deref().is_some_and(|tool| tool != "echo");

    let mut host = FakeHost::default();
    let mut stream = Stream::default();
    // Steps of every callback after the headers: (what, step, whether the end had arrived).
    let mut steps: Vec<(&str, Step, bool)> = Vec::new();
    stream.on_request_headers(&mut engine, &mut host, head, false, NOW_MS);
    let mut size = 0;
    let mut now_ms = NOW_MS;
    for &op in script {
        now_ms += 100;
        if op & 1 == 0 {
            size = (size + (op >> 1) as usize).min(body.len());
            host.request_body = body[..size].to_vec();
            let step = stream.on_request_body(&mut engine, &mut host, size, false);
            steps.push(("body", step, false));
        } else {
            let hold = if op & 2 == 0 { Hold::No } else { Hold::Until(now_ms + 1000) };
            let step = stream.on_keys(&mut engine, &mut host, now_ms, hold);
            steps.push(("keys", step, false));
        }
    }
    host.request_body = body.to_vec();
    let (what, step) = match (control >> 4) & 3 {
        0 => ("last body", stream.on_request_body(&mut engine, &mut host, body.len(), true)),
        1 => {
            let step = stream.on_request_body(&mut engine, &mut host, body.len(), false);
            steps.push(("body", step, false));
            ("empty last body", stream.on_request_body(&mut engine, &mut host, body.len(), true))
        }
        2 => ("trailers", stream.on_request_trailers(&mut engine, &mut host)),
        _ => {
            let step = stream.on_request_body(&mut engine, &mut host, body.len(), false);
            steps.push(("body", step, false));
            ("trailers", stream.on_request_trailers(&mut engine, &mut host))
        }
    };
    steps.push((what, step, true));
    // The keys arrive (or the wait ends) after the end, as they may.
    let step = stream.on_keys(&mut engine, &mut host, now_ms + 100, Hold::No);
    steps.push(("keys after the end", step, true));

    for (what, step, ended) in &steps {
        if !ended {
            assert_ne!(*step, Step::Continue, "{what} continued before the body ended: {steps:?}");
        }
    }
    if refused {
        for (what, step, _) in &steps {
            assert_ne!(*step, Step::Continue, "refused call of {tool:?}: {what} continued");
        }
        assert_eq!(host.resumed, 0, "refused call of {tool:?} resumed");
        if valid_token || token_choice == 1 {
            assert!(
                stream.is_answered() && !host.sent.is_empty(),
                "refused call of {tool:?} never answered: {steps:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    FIXTURE.with(|fixture| {
        let mut fixture = fixture.borrow_mut();
        let fixture = fixture.get_or_insert_with(|| {
            let fixture = build_fixture();
            // The harness sees what it should: echo passes, anything else is answered.
            let echo = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
            for mode in 0..2u8 {
                let mut engine = Engine::new(fixture.configs[usize::from(mode)].clone());
                let mut host = FakeHost::default();
                let mut stream = Stream::default();
                let head = RequestHead {
                    method: "POST".into(),
                    path: "/mcp".into(),
                    authorization: vec![format!("Bearer {}", fixture.tokens[0])],
                    call: CallHeaders {
                        content_type: Some("application/json".into()),
                        ..CallHeaders::default()
                    },
                    ..RequestHead::default()
                };
                stream.on_request_headers(&mut engine, &mut host, head, false, NOW_MS);
                host.request_body = echo.to_vec();
                let step = stream.on_request_body(&mut engine, &mut host, echo.len(), true);
                assert_eq!(step, Step::Continue, "echo refused: {:?}", host.sent);
            }
            fixture
        });
        run(fixture, data);
    });
});
