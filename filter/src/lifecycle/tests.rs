//! The lifecycle driven through a recording fake host in every callback order Envoy produces:
//! HTTP/1.1 (body chunks, the last one ending the stream), HTTP/2 (an empty last chunk, or
//! trailers), requests held for keys, in both `headers_stop_iteration` modes.

use serde_json::{json, Value};

use super::*;
use crate::config::FilterConfig;
use crate::test_keys;

const NOW_MS: i64 = 1_800_000_000_000;
const NOW: i64 = NOW_MS / 1000;

const POLICIES: &[&str] = &[
    r#"permit(principal, action == Action::"call_tool", resource == Tool::"echo");"#,
    r#"permit(principal, action == Action::"list_tools", resource);"#,
];

/// What the fake host was asked to do.
#[derive(Default)]
struct FakeHost {
    request_body: Vec<u8>,
    response_body: Vec<u8>,
    request_headers: Vec<(String, Option<String>)>,
    response_headers: Vec<(String, Option<String>)>,
    sent: Vec<LocalResponse>,
    resumed: usize,
    trailers_removed: usize,
    observed: Vec<String>,
    /// The authorization decisions, as the access log and the metrics get them.
    audits: Vec<crate::telemetry::Audit>,
    /// The token exchange requests sent (their call id is their index).
    dispatched: Vec<crate::exchange::TokenRequest>,
    /// The next dispatch fails (the cluster is unknown).
    dispatch_fails: bool,
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
    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError> {
        self.request_headers
            .push((name.to_owned(), value.map(str::to_owned)));
        Ok(())
    }
    fn remove_request_trailers(&mut self) -> Result<(), HostError> {
        self.trailers_removed += 1;
        Ok(())
    }
    fn resume_request(&mut self) -> Result<(), HostError> {
        self.resumed += 1;
        Ok(())
    }
    fn response_body(&mut self, max: usize) -> Result<Vec<u8>, HostError> {
        Ok(self.response_body.iter().copied().take(max).collect())
    }
    /// As Envoy does it: drain `size` bytes, then prepend `body`.
    fn replace_response_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError> {
        let size = size.min(self.response_body.len());
        self.response_body.splice(..size, body.iter().copied());
        Ok(())
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError> {
        self.response_headers
            .push((name.to_owned(), value.map(str::to_owned)));
        Ok(())
    }
    fn add_response_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.response_headers
            .push((format!("+{name}"), Some(value.to_owned())));
        Ok(())
    }
    fn dispatch(&mut self, request: &crate::exchange::TokenRequest) -> Result<u32, HostError> {
        if self.dispatch_fails {
            return Err(HostError("send a token exchange request"));
        }
        self.dispatched.push(request.clone());
        Ok(u32::try_from(self.dispatched.len() - 1).unwrap())
    }
    fn send(&mut self, response: &LocalResponse) -> Result<(), HostError> {
        self.sent.push(response.clone());
        Ok(())
    }
    fn observe(&mut self, observation: Observation<'_>) {
        self.observed.push(format!("{observation:?}"));
        if let Observation::Decided(audit) = observation {
            self.audits.push(audit.clone());
        }
    }
}

impl FakeHost {
    fn status(&self) -> Option<u32> {
        self.sent.last().map(|r| r.status)
    }
}

/// The two ways Envoy can run the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `allow_on_headers_stop_iteration`: body callbacks run behind stopped headers.
    HoldHeaders,
    /// Without it: the headers must go on before the body can be seen.
    Plain,
}

const MODES: [Mode; 2] = [Mode::HoldHeaders, Mode::Plain];

fn engine(mode: Mode, extra: Value) -> Engine {
    let mut raw = json!({
        "resource": "https://mcp.example.com/mcp",
        "public_paths": ["/oauth/"],
        "identity_headers": {"x-mcp-subject": "sub"},
        "issuers": [
            {"issuer": "https://inline.example.com",
             "jwks_inline": {"keys": [test_keys::rsa().public_jwk("r")]}},
            {"issuer": "https://remote.example.com",
             "jwks": {"cluster": "idp", "path": "/jwks"}},
        ],
        "cedar": {"policies": POLICIES},
        "headers_stop_iteration": mode == Mode::HoldHeaders,
    });
    for (key, value) in extra.as_object().into_iter().flatten() {
        raw[key] = value.clone();
    }
    match FilterConfig::from_json(raw.to_string().as_bytes()) {
        Ok(config) => Engine::new(config),
        Err(err) => panic!("test configuration refused: {err}"),
    }
}

fn token(iss: &str) -> String {
    token_for(iss, "alice")
}

fn token_for(iss: &str, sub: &str) -> String {
    test_keys::rsa().sign(
        &json!({"alg": "RS256", "kid": "r"}),
        &json!({"iss": iss, "aud": "https://mcp.example.com/mcp", "sub": sub,
                "exp": NOW + 600}),
    )
}

fn head(method: &str, path: &str, iss: &str) -> RequestHead {
    RequestHead {
        method: method.into(),
        path: path.into(),
        authorization: vec![format!("Bearer {}", token(iss))],
        call: CallHeaders {
            content_type: Some("application/json".into()),
            ..CallHeaders::default()
        },
        ..RequestHead::default()
    }
}

fn post() -> RequestHead {
    head("POST", "/mcp", "https://inline.example.com")
}

fn call(tool: &str) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
           "params": {"name": tool, "arguments": {}}})
    .to_string()
    .into_bytes()
}

/// How the request body reaches the filter.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// HTTP/1.1 with Content-Length: the last chunk ends the stream.
    LastChunk,
    /// HTTP/2: DATA frames, then an empty DATA frame with END_STREAM.
    EmptyLastChunk,
    /// HTTP/2 with trailers: the body never says it ended.
    Trailers,
}

const FRAMINGS: [Framing; 3] = [
    Framing::LastChunk,
    Framing::EmptyLastChunk,
    Framing::Trailers,
];

/// Drives a POST through every request callback; returns the step of each.
fn drive(
    engine: &mut Engine,
    host: &mut FakeHost,
    stream: &mut Stream,
    head: RequestHead,
    body: &[u8],
    framing: Framing,
) -> Vec<Step> {
    let mut steps = vec![stream.on_request_headers(engine, host, head, false, NOW_MS)];
    let half = body.len() / 2;
    host.request_body = body[..half].to_vec();
    steps.push(stream.on_request_body(engine, host, half, false));
    host.request_body = body.to_vec();
    match framing {
        Framing::LastChunk => steps.push(stream.on_request_body(engine, host, body.len(), true)),
        Framing::EmptyLastChunk => {
            steps.push(stream.on_request_body(engine, host, body.len(), false));
            steps.push(stream.on_request_body(engine, host, body.len(), true));
        }
        Framing::Trailers => {
            steps.push(stream.on_request_body(engine, host, body.len(), false));
            steps.push(stream.on_request_trailers(engine, host));
        }
    }
    steps
}

#[test]
fn a_forbidden_call_is_refused_in_every_framing_and_mode() {
    for mode in MODES {
        for framing in FRAMINGS {
            let (mut engine, mut host, mut stream) = (
                engine(mode, json!({})),
                FakeHost::default(),
                Stream::default(),
            );
            let steps = drive(
                &mut engine,
                &mut host,
                &mut stream,
                post(),
                &call("rm"),
                framing,
            );
            assert_eq!(host.status(), Some(403), "{mode:?} {framing:?}");
            // No body callback ever let the body go on.
            assert!(
                steps[1..].iter().all(|s| *s == Step::Pause),
                "{mode:?} {framing:?}: {steps:?}"
            );
            assert_eq!(steps[0] == Step::Pause, mode == Mode::HoldHeaders);
            assert!(stream.is_answered());
        }
    }
}

#[test]
fn an_allowed_call_moves_on_only_at_its_end() {
    for mode in MODES {
        for framing in FRAMINGS {
            let (mut engine, mut host, mut stream) = (
                engine(mode, json!({})),
                FakeHost::default(),
                Stream::default(),
            );
            let steps = drive(
                &mut engine,
                &mut host,
                &mut stream,
                post(),
                &call("echo"),
                framing,
            );
            assert!(
                host.sent.is_empty(),
                "{mode:?} {framing:?}: {:?}",
                host.sent
            );
            let (last, middle) = steps[1..].split_last().unwrap();
            assert_eq!(*last, Step::Continue, "{mode:?} {framing:?}");
            assert!(middle.iter().all(|s| *s == Step::Pause), "{steps:?}");
            // Trailers never reach the server: they would dodge the checks made on the head.
            let trailers = usize::from(matches!(framing, Framing::Trailers));
            assert_eq!(host.trailers_removed, trailers);
            // The token is gone and the spoofable identity header replaced.
            assert!(host
                .request_headers
                .contains(&("authorization".to_owned(), None)));
            assert!(host
                .request_headers
                .contains(&("x-mcp-subject".to_owned(), Some("alice".to_owned()))));
        }
    }
}

#[test]
fn a_post_without_a_body_is_decided_at_its_headers() {
    for mode in MODES {
        let (mut engine, mut host, mut stream) = (
            engine(mode, json!({})),
            FakeHost::default(),
            Stream::default(),
        );
        let step = stream.on_request_headers(&mut engine, &mut host, post(), true, NOW_MS);
        assert_eq!(step, Step::Pause);
        assert_eq!(host.status(), Some(400), "an empty body is not JSON-RPC");
    }
}

#[test]
fn an_oversized_body_is_refused_on_the_chunk_that_crosses_the_limit() {
    let mut engine = engine(Mode::Plain, json!({"max_body_bytes": 1024}));
    let (mut host, mut stream) = (FakeHost::default(), Stream::default());
    stream.on_request_headers(&mut engine, &mut host, post(), false, NOW_MS);
    assert_eq!(
        stream.on_request_body(&mut engine, &mut host, 1025, false),
        Step::Pause
    );
    assert_eq!(host.status(), Some(413));
    // What the host still delivers is held back, trailers included.
    assert_eq!(
        stream.on_request_body(&mut engine, &mut host, 2000, true),
        Step::Pause
    );
    assert_eq!(
        stream.on_request_trailers(&mut engine, &mut host),
        Step::Pause
    );
    assert_eq!(host.sent.len(), 1);
}

/// A token of an issuer whose keys are not loaded yet: the request waits for them.
fn held(mode: Mode) -> (Engine, FakeHost, Stream, Step) {
    let (mut engine, mut host, mut stream) = (
        engine(mode, json!({})),
        FakeHost::default(),
        Stream::default(),
    );
    let mut head = head("POST", "/mcp", "https://remote.example.com");
    head.authorization = vec![format!("Bearer {}", token("https://remote.example.com"))];
    let step = stream.on_request_headers(&mut engine, &mut host, head, false, NOW_MS);
    (engine, host, stream, step)
}

#[test]
fn a_held_request_moves_no_part_of_itself_not_even_with_trailers() {
    for mode in MODES {
        let (mut engine, mut host, mut stream, step) = held(mode);
        assert!(matches!(step, Step::Hold { issuer: 1, .. }), "{step:?}");
        host.request_body = call("rm");
        let size = host.request_body.len();
        assert_eq!(
            stream.on_request_body(&mut engine, &mut host, size, false),
            Step::Pause
        );
        assert_eq!(
            stream.on_request_trailers(&mut engine, &mut host),
            Step::Pause
        );
        assert!(host.sent.is_empty());
        assert_eq!(host.resumed, 0);
        // The wait ends without keys: 503, and still nothing went on.
        let step = stream.on_keys(&mut engine, &mut host, NOW_MS + 5_000, Hold::No);
        assert_eq!(step, Step::Pause);
        assert_eq!(host.status(), Some(503), "{mode:?}");
        assert_eq!(host.resumed, 0);
    }
}

fn load_remote_keys(engine: &mut Engine) {
    let jwks = json!({"keys": [test_keys::rsa().public_jwk("r")]}).to_string();
    let set = crate::jwks::KeySet::from_json(jwks.as_bytes()).unwrap();
    engine
        .keys
        .keys_arrived(1, std::sync::Arc::new(set), NOW_MS);
}

#[test]
fn a_held_request_whose_body_arrived_is_decided_on_it_when_the_keys_come() {
    for mode in MODES {
        for (tool, status, resumed) in [("rm", Some(403), 0), ("echo", None, 1)] {
            let (mut engine, mut host, mut stream, _) = held(mode);
            host.request_body = call(tool);
            let size = host.request_body.len();
            stream.on_request_body(&mut engine, &mut host, size, false);
            stream.on_request_trailers(&mut engine, &mut host);
            load_remote_keys(&mut engine);
            stream.on_keys(
                &mut engine,
                &mut host,
                NOW_MS + 10,
                Hold::Until(NOW_MS + 1_000),
            );
            assert_eq!(host.status(), status, "{mode:?} {tool}");
            assert_eq!(host.resumed, resumed, "{mode:?} {tool}");
        }
    }
}

#[test]
fn a_held_request_released_before_its_body_waits_for_the_body_decision() {
    for mode in MODES {
        let (mut engine, mut host, mut stream, _) = held(mode);
        load_remote_keys(&mut engine);
        stream.on_keys(
            &mut engine,
            &mut host,
            NOW_MS + 10,
            Hold::Until(NOW_MS + 1_000),
        );
        // Without held headers the host shows the body only once the headers went on.
        assert_eq!(host.resumed, usize::from(mode == Mode::Plain), "{mode:?}");
        host.request_body = call("rm");
        let size = host.request_body.len();
        assert_eq!(
            stream.on_request_body(&mut engine, &mut host, size, true),
            Step::Pause
        );
        assert_eq!(host.status(), Some(403));
    }
}

#[test]
fn a_post_to_another_path_is_refused_whatever_its_spelling() {
    for path in ["/mcp/", "/MCP", "/other", "//mcp", "/mcp/x"] {
        let (mut engine, mut host, mut stream) = (
            engine(Mode::Plain, json!({})),
            FakeHost::default(),
            Stream::default(),
        );
        let head = head("POST", path, "https://inline.example.com");
        stream.on_request_headers(&mut engine, &mut host, head, false, NOW_MS);
        assert_eq!(host.status(), Some(404), "{path}");
        let body: Value = serde_json::from_str(&host.sent[0].body).unwrap();
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("extra_mcp_paths"));
    }
    // The query does not matter, and an operator may list another endpoint.
    let mut engine = engine(Mode::Plain, json!({"extra_mcp_paths": ["/mcp/"]}));
    for path in ["/mcp?x=1", "/mcp/"] {
        let (mut host, mut stream) = (FakeHost::default(), Stream::default());
        let head = head("POST", path, "https://inline.example.com");
        drive(
            &mut engine,
            &mut host,
            &mut stream,
            head,
            &call("rm"),
            Framing::Trailers,
        );
        assert_eq!(host.status(), Some(403), "{path} is decided like /mcp");
    }
}

#[test]
fn a_method_override_header_is_refused() {
    let (mut engine, mut host, mut stream) = (
        engine(Mode::Plain, json!({})),
        FakeHost::default(),
        Stream::default(),
    );
    let mut head = post();
    head.method_override = true;
    stream.on_request_headers(&mut engine, &mut host, head, false, NOW_MS);
    assert_eq!(host.status(), Some(405));
}

#[test]
fn methods_mcp_does_not_use_are_refused() {
    for method in ["PUT", "PATCH", "CONNECT", "post"] {
        let (mut engine, mut host, mut stream) = (
            engine(Mode::Plain, json!({})),
            FakeHost::default(),
            Stream::default(),
        );
        let head = head(method, "/mcp", "https://inline.example.com");
        stream.on_request_headers(&mut engine, &mut host, head, false, NOW_MS);
        assert_eq!(host.status(), Some(405), "{method}");
    }
}

#[test]
fn a_bodiless_request_with_a_body_is_refused() {
    for mode in MODES {
        for method in ["GET", "DELETE"] {
            let (mut engine, mut host, mut stream) = (
                engine(mode, json!({})),
                FakeHost::default(),
                Stream::default(),
            );
            let head = head(method, "/mcp", "https://inline.example.com");
            stream.on_request_headers(&mut engine, &mut host, head, false, NOW_MS);
            host.request_body = call("rm");
            assert_eq!(
                stream.on_request_body(&mut engine, &mut host, 10, true),
                Step::Pause
            );
            assert_eq!(host.status(), Some(400), "{mode:?} {method}");
        }
        // Without a body it goes on.
        let (mut engine, mut host, mut stream) = (
            engine(mode, json!({})),
            FakeHost::default(),
            Stream::default(),
        );
        let head = head("GET", "/mcp", "https://inline.example.com");
        let step = stream.on_request_headers(&mut engine, &mut host, head, true, NOW_MS);
        assert_eq!(step, Step::Continue);
    }
}

#[test]
fn stream_resumption_is_refused() {
    let (mut engine, mut host, mut stream) = (
        engine(Mode::Plain, json!({})),
        FakeHost::default(),
        Stream::default(),
    );
    let mut head = head("GET", "/mcp", "https://inline.example.com");
    head.last_event_id = true;
    stream.on_request_headers(&mut engine, &mut host, head, true, NOW_MS);
    assert_eq!(host.status(), Some(400));
    assert!(host.sent[0].body.contains("Last-Event-ID"));
}

#[test]
fn an_unauthenticated_request_is_refused_before_anything_moves() {
    for mode in MODES {
        let (mut engine, mut host, mut stream) = (
            engine(mode, json!({})),
            FakeHost::default(),
            Stream::default(),
        );
        let mut head = post();
        head.authorization.clear();
        let step = stream.on_request_headers(&mut engine, &mut host, head, false, NOW_MS);
        assert_eq!((step, host.status()), (Step::Pause, Some(401)));
        assert_eq!(
            stream.on_request_trailers(&mut engine, &mut host),
            Step::Pause
        );
    }
}

#[test]
fn a_public_path_passes_untouched() {
    let (mut engine, mut host, mut stream) = (
        engine(Mode::HoldHeaders, json!({})),
        FakeHost::default(),
        Stream::default(),
    );
    let mut head = head("POST", "/oauth/token", "https://inline.example.com");
    head.authorization.clear();
    let step = stream.on_request_headers(&mut engine, &mut host, head, false, NOW_MS);
    assert_eq!(step, Step::Continue);
    assert_eq!(
        stream.on_request_body(&mut engine, &mut host, 10, false),
        Step::Continue
    );
    assert_eq!(
        stream.on_request_trailers(&mut engine, &mut host),
        Step::Continue
    );
}

fn tools_list_answer(id: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id,
           "result": {"tools": [{"name": "echo"}, {"name": "rm"}]}})
    .to_string()
}

/// A `tools/list` let through; returns the stream waiting for its answer.
fn listed(mode: Mode) -> (Engine, FakeHost, Stream) {
    let (mut engine, mut host, mut stream) = (
        engine(mode, json!({})),
        FakeHost::default(),
        Stream::default(),
    );
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}).to_string();
    drive(
        &mut engine,
        &mut host,
        &mut stream,
        post(),
        body.as_bytes(),
        Framing::LastChunk,
    );
    assert!(host.sent.is_empty());
    (engine, host, stream)
}

fn json_head() -> ResponseHead {
    ResponseHead {
        status: "200".into(),
        content_type: "application/json".into(),
        session_id: None,
    }
}

#[test]
fn a_json_list_answer_is_cut_whether_it_ends_with_a_chunk_or_trailers() {
    for mode in MODES {
        for trailers in [false, true] {
            let (mut engine, mut host, mut stream) = listed(mode);
            let step = stream.on_response_headers(&mut engine, &mut host, &json_head(), false);
            assert_eq!(step == Step::Pause, mode == Mode::HoldHeaders);
            host.response_body = tools_list_answer(json!(7)).into_bytes();
            let size = host.response_body.len();
            let step = stream.on_response_body(&mut engine, &mut host, size, !trailers);
            if trailers {
                assert_eq!(step, Step::Pause);
                assert_eq!(
                    stream.on_response_trailers(&mut engine, &mut host),
                    Step::Continue
                );
            } else {
                assert_eq!(step, Step::Continue);
            }
            let body = String::from_utf8(host.response_body.clone()).unwrap();
            assert!(
                body.contains("echo") && !body.contains("rm"),
                "{mode:?}: {body}"
            );
        }
    }
}

#[test]
fn a_list_answer_that_never_comes_fails_closed() {
    for mode in MODES {
        let (mut engine, mut host, mut stream) = listed(mode);
        stream.on_response_headers(&mut engine, &mut host, &json_head(), false);
        host.response_body = tools_list_answer(json!(8)).into_bytes();
        let size = host.response_body.len();
        stream.on_response_body(&mut engine, &mut host, size, true);
        let body = String::from_utf8(host.response_body.clone()).unwrap();
        match mode {
            Mode::HoldHeaders => assert_eq!(host.status(), Some(500)),
            Mode::Plain => assert!(body.contains("-32603") && !body.contains("rm"), "{body}"),
        }
    }
}

const BINDING_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// Alice initializes: the server's session id comes back sealed to her.
fn alice_session(engine: &mut Engine) -> String {
    let (mut host, mut stream) = (FakeHost::default(), Stream::default());
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}).to_string();
    drive(
        engine,
        &mut host,
        &mut stream,
        post(),
        body.as_bytes(),
        Framing::LastChunk,
    );
    let head = ResponseHead {
        session_id: Some("server-session-1".into()),
        ..json_head()
    };
    // Held: even the answer to `initialize` is checked for lists before it goes.
    assert_eq!(
        stream.on_response_headers(engine, &mut host, &head, false),
        Step::Pause
    );
    let sealed = host
        .response_headers
        .iter()
        .find(|(name, _)| name == SESSION_HEADER)
        .and_then(|(_, value)| value.clone())
        .unwrap();
    assert_ne!(
        sealed, "server-session-1",
        "the client never sees the server's own id"
    );
    sealed
}

fn with_session(method: &str, sub: &str, session: &str) -> RequestHead {
    let mut head = head(method, "/mcp", "https://inline.example.com");
    head.authorization = vec![format!(
        "Bearer {}",
        token_for("https://inline.example.com", sub)
    )];
    head.session_ids = vec![session.to_owned()];
    head
}

#[test]
fn a_session_is_usable_by_its_principal_only() {
    let mut engine = engine(Mode::HoldHeaders, json!({"binding_key": BINDING_KEY}));
    let sealed = alice_session(&mut engine);
    // Alice: the server gets its own id back.
    let (mut host, mut stream) = (FakeHost::default(), Stream::default());
    let head = with_session("GET", "alice", &sealed);
    assert_eq!(
        stream.on_request_headers(&mut engine, &mut host, head, true, NOW_MS),
        Step::Continue
    );
    assert!(host.request_headers.contains(&(
        SESSION_HEADER.to_owned(),
        Some("server-session-1".to_owned())
    )));
    // Bob, with Alice's session, for any method; and a forged or raw id.
    for (method, sub, session) in [
        ("POST", "bob", sealed.as_str()),
        ("GET", "bob", sealed.as_str()),
        ("DELETE", "bob", sealed.as_str()),
        ("POST", "alice", "server-session-1"),
    ] {
        let (mut host, mut stream) = (FakeHost::default(), Stream::default());
        let head = with_session(method, sub, session);
        stream.on_request_headers(&mut engine, &mut host, head, false, NOW_MS);
        assert_eq!(host.status(), Some(404), "{method} {sub} {session}");
        assert!(!host
            .request_headers
            .iter()
            .any(|(name, _)| name == SESSION_HEADER));
    }
    // Two session headers are one too many.
    let (mut host, mut stream) = (FakeHost::default(), Stream::default());
    let mut head = with_session("GET", "alice", &sealed);
    head.session_ids.push(sealed.clone());
    stream.on_request_headers(&mut engine, &mut host, head, true, NOW_MS);
    assert_eq!(host.status(), Some(400));
}

fn sse_head() -> ResponseHead {
    ResponseHead {
        content_type: "text/event-stream".into(),
        ..json_head()
    }
}

/// Feeds `body` to the response side in chunks of `chunk` bytes the way Envoy does: while the
/// filter pauses, the host's buffer grows; once it continues, the buffer holds the next chunk
/// only. Returns what reached the client.
fn stream_answer(
    engine: &mut Engine,
    host: &mut FakeHost,
    stream: &mut Stream,
    body: &[u8],
    chunk: usize,
    trailers: bool,
) -> Vec<u8> {
    let mut delivered = Vec::new();
    host.response_body.clear();
    let chunks: Vec<&[u8]> = body.chunks(chunk.max(1)).collect();
    for (index, piece) in chunks.iter().enumerate() {
        host.response_body.extend_from_slice(piece);
        let last = index + 1 == chunks.len() && !trailers;
        let size = host.response_body.len();
        if stream.on_response_body(engine, host, size, last) == Step::Continue {
            delivered.append(&mut host.response_body);
        }
    }
    if trailers && stream.on_response_trailers(engine, host) == Step::Continue {
        delivered.append(&mut host.response_body);
    }
    delivered
}

#[test]
fn an_event_stream_list_answer_is_cut_at_any_chunk_size_in_both_modes() {
    let body = format!(
        "event: message\r\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\r\n\r\n\
         data: {}\r\n\r\n",
        tools_list_answer(json!(7))
    );
    for mode in MODES {
        for chunk in [1, 2, 3, 7, 64, body.len()] {
            for trailers in [false, true] {
                let (mut engine, mut host, mut stream) = listed(mode);
                stream.on_response_headers(&mut engine, &mut host, &sse_head(), false);
                let seen = stream_answer(
                    &mut engine,
                    &mut host,
                    &mut stream,
                    body.as_bytes(),
                    chunk,
                    trailers,
                );
                let seen = String::from_utf8(seen).unwrap();
                assert!(host.sent.is_empty(), "{mode:?} {chunk}: {:?}", host.sent);
                assert!(
                    seen.contains("\"echo\"") && !seen.contains("\"rm\""),
                    "{seen}"
                );
                assert!(seen.contains("notifications/progress"), "{seen}");
                assert!(seen.contains("\"cacheScope\":\"private\""), "{seen}");
            }
        }
    }
}

#[test]
fn an_event_stream_that_ends_without_the_answer_fails_closed() {
    let body = format!("data: {}\n\n", tools_list_answer(json!(8)));
    for mode in MODES {
        let (mut engine, mut host, mut stream) = listed(mode);
        stream.on_response_headers(&mut engine, &mut host, &sse_head(), false);
        let seen = stream_answer(
            &mut engine,
            &mut host,
            &mut stream,
            body.as_bytes(),
            5,
            false,
        );
        let seen = String::from_utf8(seen).unwrap();
        assert!(!seen.contains("\"rm\""), "{seen}");
        match mode {
            Mode::HoldHeaders => assert_eq!(host.status(), Some(500)),
            Mode::Plain => assert!(seen.contains("-32603"), "{seen}"),
        }
    }
}

#[test]
fn a_get_stream_carries_requests_and_notifications_but_no_answers() {
    for mode in MODES {
        let (mut engine, mut host, mut stream) = (
            engine(mode, json!({})),
            FakeHost::default(),
            Stream::default(),
        );
        let head = head("GET", "/mcp", "https://inline.example.com");
        stream.on_request_headers(&mut engine, &mut host, head, true, NOW_MS);
        assert_eq!(
            stream.on_response_headers(&mut engine, &mut host, &sse_head(), false),
            Step::Continue
        );
        let body = format!(
            "data: {{\"jsonrpc\":\"2.0\",\"id\":\"s1\",\"method\":\"sampling/createMessage\"}}\n\n\
             data: {}\n\n",
            tools_list_answer(json!(7))
        );
        let seen = stream_answer(
            &mut engine,
            &mut host,
            &mut stream,
            body.as_bytes(),
            9,
            false,
        );
        let seen = String::from_utf8(seen).unwrap();
        assert!(seen.contains("sampling/createMessage"), "{seen}");
        assert!(
            !seen.contains("tools"),
            "a replayed list must not pass: {seen}"
        );
    }
}

#[test]
fn a_task_method_without_a_held_head_is_refused_not_forwarded_with_a_foreign_body() {
    let mut engine = engine(Mode::Plain, json!({"binding_key": BINDING_KEY}));
    let key = engine.config.binding_key.clone().unwrap();
    let sealed = key.seal(Purpose::Task, "t-1", "https://inline.example.com", "alice");
    let body = json!({"jsonrpc": "2.0", "id": 3, "method": "tasks/get",
                      "params": {"taskId": sealed}})
    .to_string();
    let (mut host, mut stream) = (FakeHost::default(), Stream::default());
    drive(
        &mut engine,
        &mut host,
        &mut stream,
        post(),
        body.as_bytes(),
        Framing::LastChunk,
    );
    assert_eq!(host.status(), Some(501));
    // With the head held, the server gets its own id and a matching Content-Length.
    let mut engine = self::engine(Mode::HoldHeaders, json!({"binding_key": BINDING_KEY}));
    let (mut host, mut stream) = (FakeHost::default(), Stream::default());
    let steps = drive(
        &mut engine,
        &mut host,
        &mut stream,
        post(),
        body.as_bytes(),
        Framing::Trailers,
    );
    assert_eq!(steps.last(), Some(&Step::Continue), "{:?}", host.sent);
    let forwarded: Value = serde_json::from_slice(&host.request_body).unwrap();
    assert_eq!(forwarded["params"]["taskId"], "t-1");
    let length = host.request_body.len().to_string();
    assert!(host
        .request_headers
        .contains(&("content-length".to_owned(), Some(length))));
}

#[test]
fn an_error_status_that_carries_a_list_is_cut_and_a_plain_error_passes() {
    for mode in MODES {
        for (body, cut) in [
            (tools_list_answer(json!(7)), true),
            ("<html>bad gateway</html>".to_owned(), false),
        ] {
            let (mut engine, mut host, mut stream) = listed(mode);
            let head = ResponseHead {
                status: "500".into(),
                ..json_head()
            };
            stream.on_response_headers(&mut engine, &mut host, &head, false);
            let seen = stream_answer(
                &mut engine,
                &mut host,
                &mut stream,
                body.as_bytes(),
                8,
                false,
            );
            let seen = String::from_utf8(seen).unwrap();
            assert!(host.sent.is_empty());
            if cut {
                assert!(seen.contains("echo") && !seen.contains("rm"), "{seen}");
            } else {
                assert_eq!(seen, body);
            }
        }
    }
}

#[test]
fn a_task_answer_stream_passes_the_question_the_task_waits_on_at_once() {
    // Task methods need the held head (see `a_task_method_without_a_held_head_…`).
    {
        let mode = Mode::HoldHeaders;
        let mut engine = engine(mode, json!({"binding_key": BINDING_KEY}));
        let key = engine.config.binding_key.clone().unwrap();
        let sealed = key.seal(Purpose::Task, "t-1", "https://inline.example.com", "alice");
        let body = json!({"jsonrpc": "2.0", "id": 3, "method": "tasks/result",
                          "params": {"taskId": sealed}})
        .to_string();
        let (mut host, mut stream) = (FakeHost::default(), Stream::default());
        drive(
            &mut engine,
            &mut host,
            &mut stream,
            post(),
            body.as_bytes(),
            Framing::LastChunk,
        );
        assert!(host.sent.is_empty(), "{mode:?}: {:?}", host.sent);
        assert_eq!(
            stream.on_response_headers(&mut engine, &mut host, &sse_head(), false),
            Step::Continue,
            "the head of a task stream is not held: the task may wait on the client"
        );
        let question =
            "data: {\"jsonrpc\":\"2.0\",\"id\":\"q\",\"method\":\"elicitation/create\"}\n\n";
        host.response_body = question.as_bytes().to_vec();
        let step = stream.on_response_body(&mut engine, &mut host, question.len(), false);
        assert_eq!(
            (step, host.response_body.as_slice()),
            (Step::Continue, question.as_bytes())
        );
        let answer = "data: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"taskId\":\"t-1\"}}\n\n";
        host.response_body = answer.as_bytes().to_vec();
        stream.on_response_body(&mut engine, &mut host, answer.len(), true);
        let seen = String::from_utf8(host.response_body.clone()).unwrap();
        assert!(
            seen.contains(&sealed) && !seen.contains("\"t-1\""),
            "{seen}"
        );
    }
}

/// A `tools/call` let through; returns the stream waiting for its answer.
fn called(mode: Mode) -> (Engine, FakeHost, Stream) {
    let (mut engine, mut host, mut stream) = (
        engine(mode, json!({})),
        FakeHost::default(),
        Stream::default(),
    );
    drive(
        &mut engine,
        &mut host,
        &mut stream,
        post(),
        &call("echo"),
        Framing::LastChunk,
    );
    assert!(host.sent.is_empty());
    (engine, host, stream)
}

#[test]
fn a_list_written_to_another_requests_stream_never_reaches_the_caller() {
    // A server that routes answers by id sends a `tools/list` answer (same id as the call) to
    // the call's stream: it is withheld, in JSON and in event streams.
    for mode in MODES {
        let (mut engine, mut host, mut stream) = called(mode);
        stream.on_response_headers(&mut engine, &mut host, &json_head(), false);
        let list = tools_list_answer(json!(1));
        let seen = stream_answer(
            &mut engine,
            &mut host,
            &mut stream,
            list.as_bytes(),
            16,
            false,
        );
        let seen = String::from_utf8(seen).unwrap();
        assert!(!seen.contains("\"rm\""), "{mode:?}: {seen}");
        let (mut engine, mut host, mut stream) = called(mode);
        stream.on_response_headers(&mut engine, &mut host, &sse_head(), false);
        let events = format!(
            "data: {list}\n\ndata: {{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{{\"content\":[]}}}}\n\n"
        );
        let seen = stream_answer(
            &mut engine,
            &mut host,
            &mut stream,
            events.as_bytes(),
            7,
            false,
        );
        let seen = String::from_utf8(seen).unwrap();
        assert!(
            !seen.contains("\"rm\"") && seen.contains("content"),
            "{mode:?}: {seen}"
        );
    }
}

#[test]
fn an_event_that_is_not_one_message_is_dropped_from_a_call_stream() {
    let (mut engine, mut host, mut stream) = called(Mode::Plain);
    stream.on_response_headers(&mut engine, &mut host, &sse_head(), false);
    let events = "data: {\"id\":1,\"id\":2,\"result\":{}}\n\ndata: not json\n\n\
                  data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";
    let seen = stream_answer(
        &mut engine,
        &mut host,
        &mut stream,
        events.as_bytes(),
        5,
        false,
    );
    assert_eq!(
        String::from_utf8(seen).unwrap(),
        "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n"
    );
}

#[test]
fn a_refused_answer_is_replaced_whole_not_only_the_part_that_was_read() {
    let mut engine = engine(Mode::Plain, json!({"max_response_bytes": 4096}));
    let (mut host, mut stream) = (FakeHost::default(), Stream::default());
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}).to_string();
    drive(
        &mut engine,
        &mut host,
        &mut stream,
        post(),
        body.as_bytes(),
        Framing::LastChunk,
    );
    stream.on_response_headers(&mut engine, &mut host, &json_head(), false);
    let filler: Vec<Value> = (0..400).map(|i| json!({"name": format!("t{i}")})).collect();
    let mut tools = filler;
    tools.push(json!({"name": "rm", "description": "SECRET-TOOL"}));
    let answer = json!({"jsonrpc": "2.0", "id": 7, "result": {"tools": tools}}).to_string();
    assert!(answer.len() > 4096);
    // Every chunk before the last stays under the limit; the last one crosses it.
    let seen = stream_answer(
        &mut engine,
        &mut host,
        &mut stream,
        answer.as_bytes(),
        4000,
        false,
    );
    let seen = String::from_utf8(seen).unwrap();
    assert!(
        seen.contains("-32603") && !seen.contains("SECRET-TOOL"),
        "{seen}"
    );
}

#[test]
fn a_caller_without_a_principal_holds_no_session() {
    let mut engine = engine(Mode::HoldHeaders, json!({"binding_key": BINDING_KEY}));
    let token = test_keys::rsa().sign(
        &json!({"alg": "RS256", "kid": "r"}),
        &json!({"iss": "https://inline.example.com", "aud": "https://mcp.example.com/mcp",
                "exp": NOW + 600}),
    );
    let mut head = post();
    head.authorization = vec![format!("Bearer {token}")];
    head.session_ids = vec!["b1.x.y".into()];
    let (mut host, mut stream) = (FakeHost::default(), Stream::default());
    stream.on_request_headers(&mut engine, &mut host, head, false, NOW_MS);
    assert_eq!(host.status(), Some(404));
}

#[test]
fn a_repeated_header_the_decision_reads_is_refused_and_other_paths_get_nothing() {
    let (mut engine, mut host, mut stream) = (
        engine(Mode::Plain, json!({})),
        FakeHost::default(),
        Stream::default(),
    );
    let mut head = post();
    head.repeated = Some("content-type".into());
    stream.on_request_headers(&mut engine, &mut host, head, false, NOW_MS);
    assert_eq!(host.status(), Some(400));
    for method in ["GET", "DELETE", "HEAD"] {
        let (mut host, mut stream) = (FakeHost::default(), Stream::default());
        let head = head_of(method, "/admin");
        stream.on_request_headers(&mut engine, &mut host, head, true, NOW_MS);
        assert_eq!(host.status(), Some(404), "{method}");
    }
}

fn head_of(method: &str, path: &str) -> RequestHead {
    head(method, path, "https://inline.example.com")
}

fn shadow_engine(mode: Mode) -> Engine {
    engine(
        mode,
        json!({"cedar": {"policies": POLICIES, "mode": "shadow"}}),
    )
}

#[test]
fn in_shadow_mode_a_forbidden_call_passes_in_every_framing_and_mode_and_is_recorded_as_a_deny() {
    for mode in MODES {
        for framing in FRAMINGS {
            let (mut engine, mut host, mut stream) =
                (shadow_engine(mode), FakeHost::default(), Stream::default());
            let steps = drive(
                &mut engine,
                &mut host,
                &mut stream,
                post(),
                &call("rm"),
                framing,
            );
            assert!(
                host.sent.is_empty(),
                "{mode:?} {framing:?}: {:?}",
                host.sent
            );
            assert_eq!(steps.last(), Some(&Step::Continue), "{mode:?} {framing:?}");
            assert!(!stream.is_answered());
            let [audit] = host.audits.as_slice() else {
                panic!("one decision expected: {:?}", host.audits);
            };
            assert_eq!(
                (audit.decision(), audit.reason.label(), audit.shadow),
                ("deny", "default_deny", true)
            );
            assert_eq!(
                (audit.caller.principal.as_str(), audit.target.as_str()),
                ("alice", "rm")
            );
        }
    }
}

#[test]
fn shadow_mode_does_not_shadow_authentication() {
    for mode in MODES {
        let (mut engine, mut host, mut stream) =
            (shadow_engine(mode), FakeHost::default(), Stream::default());
        let mut head = post();
        head.authorization.clear();
        stream.on_request_headers(&mut engine, &mut host, head, false, NOW_MS);
        assert_eq!(host.status(), Some(401));
        assert!(
            host.observed[0].starts_with("Rejected"),
            "{:?}",
            host.observed
        );
    }
}

/// A `tools/list` answer in JSON (`chunk: None`) or as an event stream in chunks: what reached the
/// client, and the decisions recorded.
fn list_answer(mut engine: Engine, chunk: Option<usize>) -> (String, Vec<crate::telemetry::Audit>) {
    let mut host = FakeHost::default();
    let mut stream = Stream::default();
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}).to_string();
    drive(
        &mut engine,
        &mut host,
        &mut stream,
        post(),
        body.as_bytes(),
        Framing::LastChunk,
    );
    let answer = tools_list_answer(json!(7));
    let seen = match chunk {
        None => {
            stream.on_response_headers(&mut engine, &mut host, &json_head(), false);
            host.response_body = answer.into_bytes();
            let size = host.response_body.len();
            stream.on_response_body(&mut engine, &mut host, size, true);
            std::mem::take(&mut host.response_body)
        }
        Some(chunk) => {
            stream.on_response_headers(&mut engine, &mut host, &sse_head(), false);
            let sse = format!("data: {answer}\n\n");
            stream_answer(
                &mut engine,
                &mut host,
                &mut stream,
                sse.as_bytes(),
                chunk,
                false,
            )
        }
    };
    assert!(host.sent.is_empty(), "{:?}", host.sent);
    (String::from_utf8(seen).unwrap(), host.audits)
}

#[test]
fn a_cut_list_is_recorded_once_with_what_was_removed_and_for_whom() {
    for mode in MODES {
        for chunk in [None, Some(5), Some(4096)] {
            let (seen, audits) = list_answer(engine(mode, json!({})), chunk);
            assert!(seen.contains("echo") && !seen.contains("\"rm\""), "{seen}");
            let [audit] = audits.as_slice() else {
                panic!("{mode:?} {chunk:?}: one list decision expected: {audits:?}");
            };
            let removed = audit.removed.as_ref().unwrap();
            assert_eq!(
                (removed.count, removed.names.as_slice()),
                (1, ["rm".to_owned()].as_slice())
            );
            assert_eq!(
                (
                    audit.reason.label(),
                    audit.shadow,
                    audit.caller.principal.as_str()
                ),
                ("list_cut", false, "alice")
            );
            assert_eq!(audit.method, "tools/list");
        }
    }
}

#[test]
fn in_shadow_mode_a_list_passes_whole_and_records_what_would_have_been_cut() {
    for mode in MODES {
        for chunk in [None, Some(5), Some(4096)] {
            let (seen, audits) = list_answer(shadow_engine(mode), chunk);
            assert!(seen.contains("echo") && seen.contains("\"rm\""), "{seen}");
            let [audit] = audits.as_slice() else {
                panic!("{mode:?} {chunk:?}: one list decision expected: {audits:?}");
            };
            assert_eq!(
                audit.removed.as_ref().map(|r| r.names.clone()),
                Some(vec!["rm".to_owned()])
            );
            assert_eq!((audit.reason.label(), audit.shadow), ("list_cut", true));
        }
    }
}

const INSPECTOR: &str = "https://inspector.example.com";

fn cors_engine(mode: Mode) -> Engine {
    engine(mode, json!({"cors": {"allowed_origins": [INSPECTOR]}}))
}

fn from_origin(mut head: RequestHead, origin: &str) -> RequestHead {
    head.origins = vec![origin.into()];
    head
}

fn sent_header<'a>(response: &'a LocalResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_refusal_is_readable_by_an_allowed_origin_so_its_login_can_start() {
    for mode in MODES {
        let mut engine = cors_engine(mode);
        let (mut host, mut stream) = (FakeHost::default(), Stream::default());
        let mut unauthenticated = from_origin(post(), INSPECTOR);
        unauthenticated.authorization.clear();
        stream.on_request_headers(&mut engine, &mut host, unauthenticated, false, NOW_MS);
        let refusal = host.sent.last().unwrap();
        assert_eq!(refusal.status, 401);
        assert_eq!(
            sent_header(refusal, "access-control-allow-origin"),
            Some(INSPECTOR)
        );
        assert!(sent_header(refusal, "access-control-expose-headers")
            .unwrap()
            .contains("www-authenticate"));

        let (mut host, mut stream) = (FakeHost::default(), Stream::default());
        let mut other = from_origin(post(), "https://evil.example");
        other.authorization.clear();
        stream.on_request_headers(&mut engine, &mut host, other, false, NOW_MS);
        let refusal = host.sent.last().unwrap();
        assert_eq!(refusal.status, 401);
        assert_eq!(sent_header(refusal, "access-control-allow-origin"), None);
    }
}

#[test]
fn the_servers_answer_carries_the_filters_cors_headers_not_its_own() {
    for mode in MODES {
        for (origin, expected) in [
            (Some(INSPECTOR), Some(INSPECTOR)),
            (Some("https://evil.example"), None),
        ] {
            let mut engine = cors_engine(mode);
            let (mut host, mut stream) = (FakeHost::default(), Stream::default());
            let head = from_origin(post(), origin.unwrap_or_default());
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
            drive(
                &mut engine,
                &mut host,
                &mut stream,
                head,
                body.as_bytes(),
                Framing::LastChunk,
            );
            assert!(host.sent.is_empty(), "{mode:?}: {:?}", host.sent);
            stream.on_response_headers(&mut engine, &mut host, &json_head(), false);
            let set = |name: &str| {
                host.response_headers
                    .iter()
                    .rfind(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            };
            assert_eq!(
                set("access-control-allow-origin"),
                Some(expected.map(str::to_owned)),
                "{mode:?} {origin:?}: the server's own value is always replaced"
            );
            assert_eq!(set("access-control-allow-credentials"), Some(None));
            assert_eq!(
                set("+vary"),
                Some(Some("origin".into())),
                "granted or refused, the answer varies with the origin"
            );
        }
    }
}

#[test]
fn answers_to_requests_without_an_origin_are_left_alone() {
    let mut engine = cors_engine(Mode::HoldHeaders);
    let (mut host, mut stream) = (FakeHost::default(), Stream::default());
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    drive(
        &mut engine,
        &mut host,
        &mut stream,
        post(),
        body.as_bytes(),
        Framing::LastChunk,
    );
    stream.on_response_headers(&mut engine, &mut host, &json_head(), false);
    assert!(host
        .response_headers
        .iter()
        .all(|(name, _)| !name.contains("access-control") && !name.contains("vary")));
}

#[test]
fn a_preflight_is_answered_and_nothing_of_it_goes_upstream() {
    for mode in MODES {
        let mut engine = cors_engine(mode);
        let (mut host, mut stream) = (FakeHost::default(), Stream::default());
        let preflight = RequestHead {
            method: "OPTIONS".into(),
            path: "/mcp".into(),
            is_preflight: true,
            origins: vec![INSPECTOR.into()],
            ..RequestHead::default()
        };
        let step = stream.on_request_headers(&mut engine, &mut host, preflight, true, NOW_MS);
        assert_eq!(step, Step::Pause);
        assert_eq!(host.status(), Some(204));
        assert!(stream.is_answered());
        assert_eq!(
            stream.on_request_body(&mut engine, &mut host, 10, true),
            Step::Pause
        );
    }
}

/// A filter that exchanges the caller's token for a token of backend `github` on route `github`.
fn exchanging(mode: Mode) -> Engine {
    engine(
        mode,
        json!({"token_exchange": {
            "cluster": "authserver", "authority": "auth.example.com", "client_id": "mesh-gateway",
            "client_secret": "dev-secret-0123456789", "timeout_ms": 1000,
            "backends": [{"route": "github", "audience": "https://github-mcp.internal/mcp"}]}}),
    )
}

fn to_route(route: &str) -> RequestHead {
    RequestHead {
        route_name: Some(route.into()),
        ..post()
    }
}

/// A `GET` (a server event stream) to `route`: no body, so it goes on as soon as it may.
fn get_to(route: &str) -> RequestHead {
    RequestHead {
        route_name: Some(route.into()),
        ..head("GET", "/mcp", "https://inline.example.com")
    }
}

fn issued(token: &str) -> crate::exchange::Answer {
    crate::exchange::Answer::Response {
        status: 200,
        body: json!({"access_token": token, "token_type": "Bearer", "expires_in": 300})
            .to_string()
            .into_bytes(),
    }
}

/// The value the request's `Authorization` header was last given (`None`: removed).
fn authorization(host: &FakeHost) -> Option<Option<String>> {
    host.request_headers
        .iter()
        .rev()
        .find(|(name, _)| name == "authorization")
        .map(|(_, value)| value.clone())
}

#[test]
fn a_backend_request_waits_for_its_token_which_replaces_the_callers() {
    for mode in MODES {
        let (mut engine, mut host, mut stream) =
            (exchanging(mode), FakeHost::default(), Stream::default());
        let step =
            stream.on_request_headers(&mut engine, &mut host, to_route("github"), false, NOW_MS);
        assert!(
            matches!(step, Step::Await { deadline_ms, .. } if deadline_ms == NOW_MS + 1_000),
            "{step:?}"
        );
        assert_eq!(host.dispatched.len(), 1);
        assert_eq!(
            authorization(&host),
            Some(None),
            "the caller's token is removed at once"
        );
        // The body arrives meanwhile: held, whatever the mode.
        host.request_body = call("echo");
        let size = host.request_body.len();
        assert_eq!(
            stream.on_request_body(&mut engine, &mut host, size, true),
            Step::Pause
        );
        assert_eq!(host.resumed, 0);
        engine
            .exchanges
            .on_answer(0, &issued("backend.jwt"), NOW_MS + 20);
        let step = stream.on_credential(&mut engine, &mut host, NOW_MS + 20);
        assert_eq!(step, Step::Continue, "{mode:?}");
        assert_eq!(host.resumed, 1);
        assert_eq!(
            authorization(&host),
            Some(Some("Bearer backend.jwt".into()))
        );
        assert!(host.sent.is_empty());
    }
}

#[test]
fn without_held_headers_the_token_is_in_place_before_the_headers_go() {
    let (mut engine, mut host, mut stream) = (
        exchanging(Mode::Plain),
        FakeHost::default(),
        Stream::default(),
    );
    stream.on_request_headers(&mut engine, &mut host, to_route("github"), false, NOW_MS);
    engine
        .exchanges
        .on_answer(0, &issued("backend.jwt"), NOW_MS + 20);
    // The headers go on with the backend's token; the body is decided when it comes.
    assert_eq!(
        stream.on_credential(&mut engine, &mut host, NOW_MS + 20),
        Step::Continue
    );
    assert_eq!(
        authorization(&host),
        Some(Some("Bearer backend.jwt".into()))
    );
    host.request_body = call("rm");
    let size = host.request_body.len();
    assert_eq!(
        stream.on_request_body(&mut engine, &mut host, size, true),
        Step::Pause
    );
    assert_eq!(host.status(), Some(403), "Cedar still decides the call");
}

#[test]
fn concurrent_requests_of_one_caller_share_one_exchange_and_then_the_cache() {
    for mode in MODES {
        let mut engine = exchanging(mode);
        let mut host = FakeHost::default();
        let mut streams: Vec<Stream> = (0..3).map(|_| Stream::default()).collect();
        for stream in &mut streams {
            let step =
                stream.on_request_headers(&mut engine, &mut host, get_to("github"), true, NOW_MS);
            assert!(matches!(step, Step::Await { .. }), "{step:?}");
        }
        assert_eq!(
            host.dispatched.len(),
            1,
            "one exchange in flight per caller and backend"
        );
        engine
            .exchanges
            .on_answer(0, &issued("backend.jwt"), NOW_MS + 20);
        for stream in &mut streams {
            stream.on_credential(&mut engine, &mut host, NOW_MS + 20);
        }
        assert_eq!(host.resumed, 3, "{mode:?}");
        // A later request of the same caller finds the token at once.
        let mut later = Stream::default();
        let step = later.on_request_headers(
            &mut engine,
            &mut host,
            get_to("github"),
            true,
            NOW_MS + 60_000,
        );
        assert_eq!(step, Step::Continue);
        assert_eq!(host.dispatched.len(), 1);
        assert_eq!(
            authorization(&host),
            Some(Some("Bearer backend.jwt".into()))
        );
    }
}

#[test]
fn a_refused_exchange_refuses_every_waiting_request_and_nothing_goes_upstream() {
    for mode in MODES {
        let mut engine = exchanging(mode);
        let mut host = FakeHost::default();
        let (mut first, mut second) = (Stream::default(), Stream::default());
        first.on_request_headers(&mut engine, &mut host, get_to("github"), true, NOW_MS);
        second.on_request_headers(&mut engine, &mut host, get_to("github"), true, NOW_MS);
        let refusal = crate::exchange::Answer::Response {
            status: 400,
            body: json!({"error": "invalid_target", "error_description": "no"})
                .to_string()
                .into_bytes(),
        };
        engine.exchanges.on_answer(0, &refusal, NOW_MS + 20);
        for stream in [&mut first, &mut second] {
            assert_eq!(
                stream.on_credential(&mut engine, &mut host, NOW_MS + 20),
                Step::Pause
            );
        }
        assert_eq!(host.resumed, 0, "{mode:?}");
        assert_eq!(host.sent.len(), 2);
        for sent in &host.sent {
            assert_eq!(sent.status, 502);
            let body: Value = serde_json::from_str(&sent.body).unwrap();
            assert_eq!(body["error"]["code"], -32603);
            assert_eq!(
                body["error"]["message"],
                "the gateway could not obtain a credential for this backend: \
                 the authorization server refused the exchange (invalid_target)"
            );
        }
        assert_eq!(
            authorization(&host),
            Some(None),
            "the caller's token never went on"
        );
    }
}

#[test]
fn no_answer_by_the_deadline_or_no_way_to_ask_is_a_503() {
    for mode in MODES {
        let (mut engine, mut host, mut stream) =
            (exchanging(mode), FakeHost::default(), Stream::default());
        stream.on_request_headers(&mut engine, &mut host, get_to("github"), true, NOW_MS);
        assert_eq!(
            stream.on_credential(&mut engine, &mut host, NOW_MS + 1_000),
            Step::Pause
        );
        assert_eq!(host.status(), Some(503));
        assert!(host.sent[0]
            .headers
            .contains(&("retry-after".into(), "1".into())));
        let (mut engine, mut host, mut stream) = (
            exchanging(mode),
            FakeHost {
                dispatch_fails: true,
                ..FakeHost::default()
            },
            Stream::default(),
        );
        let step =
            stream.on_request_headers(&mut engine, &mut host, get_to("github"), true, NOW_MS);
        assert_eq!(
            (step, host.status(), host.resumed),
            (Step::Pause, Some(503), 0)
        );
    }
}

#[test]
fn a_waiter_whose_exchange_was_abandoned_asks_again() {
    let (mut engine, mut host) = (exchanging(Mode::HoldHeaders), FakeHost::default());
    let (mut first, mut second) = (Stream::default(), Stream::default());
    first.on_request_headers(&mut engine, &mut host, get_to("github"), true, NOW_MS);
    second.on_request_headers(&mut engine, &mut host, get_to("github"), true, NOW_MS);
    // The first request went away; the proxy cancelled its call.
    assert!(engine.exchanges.abandon(0).is_some());
    let step = second.on_credential(&mut engine, &mut host, NOW_MS + 10);
    assert!(matches!(step, Step::Await { .. }), "{step:?}");
    assert_eq!(host.dispatched.len(), 2);
    assert_eq!(
        host.dispatched[0], host.dispatched[1],
        "the same request, from the waiter's own token"
    );
    engine
        .exchanges
        .on_answer(1, &issued("backend.jwt"), NOW_MS + 20);
    assert_eq!(
        second.on_credential(&mut engine, &mut host, NOW_MS + 20),
        Step::Continue
    );
}

#[test]
fn a_route_without_a_backend_entry_keeps_the_token_away_from_the_server() {
    for route in [Some("other"), None] {
        let (mut engine, mut host, mut stream) = (
            exchanging(Mode::Plain),
            FakeHost::default(),
            Stream::default(),
        );
        let head = RequestHead {
            route_name: route.map(str::to_owned),
            ..post()
        };
        assert_eq!(
            stream.on_request_headers(&mut engine, &mut host, head, false, NOW_MS),
            Step::Continue
        );
        assert!(host.dispatched.is_empty());
        assert_eq!(authorization(&host), Some(None));
    }
}
