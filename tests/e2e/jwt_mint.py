#!/usr/bin/env python3
"""jwt_mint.py: mints JSON Web Tokens with PyJWT (Debian's python3-jwt), an implementation
independent of pushedge's own (edge/identity/jwt.c on OpenSSL) and of node's crypto, for
tests/e2e/auth_matrix.test.mjs and tests/load/auth_bench.sh.

Reads one JSON array of jobs on stdin and writes one JSON array of results on stdout, in order:
  {"kind": "token", "alg": "HS256", "secret": "...", "claims": {...}, "headers": {"kid": "k1"}}
  {"kind": "token", "alg": "RS256", "key": "/tmp/x/rsa.key", "claims": {...}}
      a normal token (RS256, PS256, ES256: "key" names a PEM private key file);
  {"kind": "token", ..., "raw_payload": "{\"sub\": "}
      the payload bytes as given (malformed JSON, an array...), properly signed;
  {"kind": "token", ..., "signing_input": "h.p"}
      signs the given text as it is (malformed base64 that the signature covers);
  {"kind": "token", "alg": "HS256", "secret_file": "/tmp/x/rsa.pub", "claims": {...}}
      HMAC keyed with a file's bytes: a public key used as an HMAC secret (algorithm confusion).
      PyJWT refuses that key in jwt.encode, so its HMAC algorithm signs directly;
  {"kind": "token", "alg": "none", "claims": {...}, "header_alg": "None"}
      an unsigned token, its header "alg" as given;
  {"kind": "jwks", "keys": [{"pub": "/tmp/x/rsa.pub", "kid": "k1", "alg": "RS256"}]}
      a JWKS document (a JSON string) made by PyJWT's to_jwk from PEM public keys.
Only PyJWT, the standard library and python3-cryptography (which PyJWT uses for RSA and EC).
"""
import base64
import hashlib
import hmac
import json
import sys

import jwt
from jwt.algorithms import ECAlgorithm, RSAAlgorithm, get_default_algorithms
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def private_key(path):
    with open(path, "rb") as f:
        return load_pem_private_key(f.read(), password=None)


def signing_key(job):
    alg = job["alg"]
    if alg.startswith("HS"):
        return job["secret"].encode() if "secret" in job else None
    return private_key(job["key"])


def sign(alg, key, text):
    """A signature by PyJWT's own algorithm objects (JWS form: ES256 is R || S)."""
    algo = get_default_algorithms()[alg]
    return algo.sign(text.encode("ascii"), key)


def token(job):
    alg = job["alg"]
    headers = job.get("headers") or {}
    if alg == "none":
        header = {"alg": job.get("header_alg", "none"), "typ": "JWT", **headers}
        body = job["raw_payload"].encode() if "raw_payload" in job else json.dumps(job["claims"]).encode()
        return f"{b64(json.dumps(header).encode())}.{b64(body)}." + job.get("signature", "")
    if "secret_file" in job:
        with open(job["secret_file"], "rb") as f:
            secret = f.read()
        header = {"alg": alg, "typ": "JWT", **headers}
        text = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(job['claims']).encode())}"
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        return f"{text}.{b64(hmac.new(secret, text.encode(), digest).digest())}"
    key = signing_key(job)
    if "signing_input" in job:
        text = job["signing_input"]
        return f"{text}.{b64(sign(alg, key, text))}"
    if "raw_payload" in job:
        return jwt.api_jws.encode(job["raw_payload"].encode(), key, algorithm=alg, headers=headers or None)
    return jwt.encode(job["claims"], key, algorithm=alg, headers=headers or None)


def jwks(job):
    keys = []
    for k in job["keys"]:
        with open(k["pub"], "rb") as f:
            pub = load_pem_public_key(f.read())
        algo = RSAAlgorithm if isinstance(pub, rsa.RSAPublicKey) else ECAlgorithm
        jwk = json.loads(algo.to_jwk(pub))
        jwk["kid"] = k["kid"]
        jwk["use"] = "sig"
        if "alg" in k:
            jwk["alg"] = k["alg"]
        keys.append(jwk)
    return json.dumps({"keys": keys})


def main():
    jobs = json.load(sys.stdin)
    out = []
    for job in jobs:
        out.append(jwks(job) if job["kind"] == "jwks" else token(job))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
