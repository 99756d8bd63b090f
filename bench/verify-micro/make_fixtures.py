"""Writes fixtures.json for the verify microbenchmark: an RSA-2048 and a P-256 JWKS, and tokens
signed with them (valid for the fixed `now` the benchmark passes to `verify`), plus a forged RS256
token (a real signature of another payload). Run once; the output is committed."""

import json
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

NOW = 1_800_000_000
ISS, AUD = "https://auth.bench.local", "http://localhost/mcp"
claims = {"iss": ISS, "aud": AUD, "sub": "alice", "client_id": "bench", "groups": ["mcp-developers"],
          "jti": "micro", "iat": NOW - 10, "exp": NOW + 3600}
rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
jwks = []
for kid, key, alg, algorithm in (("rsa", rsa_key, "RS256", jwt.algorithms.RSAAlgorithm),
                                 ("ec", ec_key, "ES256", jwt.algorithms.ECAlgorithm)):
    jwk = json.loads(algorithm.to_jwk(key.public_key()))
    jwk.update(kid=kid, use="sig", alg=alg)
    jwks.append(jwk)
rs256 = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "rsa", "typ": "at+jwt"})
es256 = jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "ec", "typ": "at+jwt"})
other = jwt.encode({**claims, "jti": "other"}, rsa_key, algorithm="RS256", headers={"kid": "rsa", "typ": "at+jwt"})
forged = ".".join(rs256.split(".")[:2] + other.split(".")[2:])
Path(__file__).with_name("fixtures.json").write_text(json.dumps(
    {"now": NOW, "issuer": ISS, "audience": AUD, "jwks": {"keys": jwks},
     "rs256": rs256, "es256": es256, "rs256_forged": forged}, indent=1) + "\n")
