//! Times token verification: each case runs for a warm-up, then for BENCH_MS milliseconds
//! (default 2000), and prints one JSON line with its microseconds per operation.

use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

const FIXTURES: &str = include_str!("../fixtures.json");

fn main() {
    let fixtures: Value = serde_json::from_str(FIXTURES).unwrap();
    let millis = std::env::var("BENCH_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let budget = Duration::from_millis(millis);
    let only = std::env::args().nth(1);
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let engine = if cfg!(target_arch = "wasm32") {
        "wasm"
    } else {
        "host"
    };

    let token = fixtures["rs256"].as_str().unwrap();
    let rsa_jwk = &fixtures["jwks"]["keys"][0];
    let n = BigUint::from_bytes_be(
        &URL_SAFE_NO_PAD
            .decode(rsa_jwk["n"].as_str().unwrap())
            .unwrap(),
    );
    let e = BigUint::from_bytes_be(
        &URL_SAFE_NO_PAD
            .decode(rsa_jwk["e"].as_str().unwrap())
            .unwrap(),
    );
    let key = RsaPublicKey::new(n, e).unwrap();
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    if wanted("rsa_pkcs1v15_verify") {
        report(engine, "rsa_pkcs1v15_verify", budget, || {
            let hashed = Sha256::digest(input.as_bytes());
            key.verify(Pkcs1v15Sign::new::<Sha256>(), &hashed, &signature)
                .unwrap();
        });
    }
    if wanted("sha256_token") {
        report(engine, "sha256_token", budget, || {
            black_box(Sha256::digest(black_box(token).as_bytes()));
        });
    }
    #[cfg(feature = "filter")]
    filter_cases(&fixtures, engine, budget, &wanted);
}

#[cfg(feature = "filter")]
fn filter_cases(fixtures: &Value, engine: &str, budget: Duration, wanted: &dyn Fn(&str) -> bool) {
    use mcp_mesh_auth_filter::jwks::KeySet;
    use mcp_mesh_auth_filter::rejection::Rejection;
    use mcp_mesh_auth_filter::verify::{verify, IssuerKeys, TokenPolicy};

    let keys = KeySet::from_value(&fixtures["jwks"]).unwrap();
    let policy = TokenPolicy {
        audiences: vec![fixtures["audience"].as_str().unwrap().to_owned()],
        clock_skew_seconds: 60,
        max_token_bytes: 8192,
    };
    let now = fixtures["now"].as_i64().unwrap();
    let check = |token: &str| verify(token, &policy, now, |_| IssuerKeys::Loaded(&keys));
    for (name, field) in [("verify_rs256", "rs256"), ("verify_es256", "es256")] {
        let token = fixtures[field].as_str().unwrap();
        check(token).unwrap();
        if wanted(name) {
            report(engine, name, budget, || {
                black_box(check(black_box(token)).unwrap());
            });
        }
    }
    let forged = fixtures["rs256_forged"].as_str().unwrap();
    assert!(matches!(check(forged), Err(Rejection::BadSignature)));
    if wanted("verify_rs256_forged") {
        report(engine, "verify_rs256_forged", budget, || {
            black_box(check(black_box(forged)).unwrap_err());
        });
    }
}

fn report(engine: &str, name: &str, budget: Duration, mut op: impl FnMut()) {
    // Warm-up: V8 compiles with Liftoff first and tiers hot functions up to TurboFan.
    let warm = Instant::now();
    while warm.elapsed() < budget / 4 {
        op();
    }
    let start = Instant::now();
    let mut iterations = 0u64;
    while start.elapsed() < budget {
        op();
        iterations += 1;
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / iterations as f64;
    println!("{{\"engine\": \"{engine}\", \"case\": \"{name}\", \"us_per_op\": {us:.2}, \"iterations\": {iterations}}}");
}
