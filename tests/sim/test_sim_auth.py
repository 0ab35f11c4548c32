"""Request signing and verification, and the exchange's 401s for unsigned or badly signed requests."""

from __future__ import annotations

import time

import aiohttp
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from kalshi_python_sync.auth import KalshiAuth
from websockets.exceptions import InvalidStatus

from kalshictl.kalshi.auth import load_private_key, sign_headers, verify_signature
from kalshictl.sim import SimExchange

from .conftest import config, get_json


@pytest.fixture(scope="module")
def rsa_pem() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def test_sign_verify_roundtrip(rsa_pem: tuple[bytes, bytes]) -> None:
    private, public = rsa_pem
    key = load_private_key(private)
    h = sign_headers("kid", key, "get", "/trade-api/v2/markets?limit=5", ts_ms=1703123456789)
    assert h["KALSHI-ACCESS-KEY"] == "kid" and h["KALSHI-ACCESS-TIMESTAMP"] == "1703123456789"
    pub = serialization.load_pem_public_key(public)
    assert verify_signature(
        pub, h["KALSHI-ACCESS-TIMESTAMP"], "GET", "/trade-api/v2/markets", h["KALSHI-ACCESS-SIGNATURE"]
    )
    sig = h["KALSHI-ACCESS-SIGNATURE"]
    assert not verify_signature(pub, "1703123456780", "GET", "/trade-api/v2/markets", sig)
    assert not verify_signature(pub, h["KALSHI-ACCESS-TIMESTAMP"], "POST", "/trade-api/v2/markets", sig)
    assert not verify_signature(pub, h["KALSHI-ACCESS-TIMESTAMP"], "GET", "/trade-api/v2/events", sig)
    assert not verify_signature(pub, h["KALSHI-ACCESS-TIMESTAMP"], "GET", "/trade-api/v2/markets", "!!notbase64")
    # the full-URL form signs only the path
    h2 = sign_headers("kid", private, "GET", "http://h:1/trade-api/v2/markets?x=1", ts_ms=5)
    assert verify_signature(pub, "5", "GET", "/trade-api/v2/markets", h2["KALSHI-ACCESS-SIGNATURE"])
    # signatures made by Kalshi's own SDK verify
    sdk = KalshiAuth("kid", private.decode()).create_auth_headers("GET", "http://h/trade-api/v2/markets?limit=1")
    assert verify_signature(
        pub, sdk["KALSHI-ACCESS-TIMESTAMP"], "GET", "/trade-api/v2/markets", sdk["KALSHI-ACCESS-SIGNATURE"]
    )


def test_ed25519_roundtrip() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    h = sign_headers("kid", key, "GET", "/trade-api/ws/v2", ts_ms=42)
    assert verify_signature(key.public_key(), "42", "GET", "/trade-api/ws/v2", h["KALSHI-ACCESS-SIGNATURE"])
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    assert not verify_signature(other, "42", "GET", "/trade-api/ws/v2", h["KALSHI-ACCESS-SIGNATURE"])


async def test_exchange_requires_valid_signatures(rsa_pem: tuple[bytes, bytes], http: aiohttp.ClientSession) -> None:
    private, public = rsa_pem
    async with SimExchange(config(public_key=public)) as ex:
        url = f"{ex.rest_url}/markets"
        status, body = await get_json(http, url)
        assert status == 401 and body["error"]["code"] == "authentication_error"
        good = sign_headers("kid", private, "GET", "/trade-api/v2/markets")
        async with http.get(url, headers=good, params={"limit": "2"}) as r:
            assert r.status == 200
        wrong_path = sign_headers("kid", private, "GET", "/trade-api/v2/events")
        async with http.get(url, headers=wrong_path) as r:
            assert r.status == 401
        stale = sign_headers("kid", private, "GET", "/trade-api/v2/markets", ts_ms=int(time.time() * 1000) - 3_600_000)
        async with http.get(url, headers=stale) as r:
            assert r.status == 401
        # control API stays open
        async with http.get(f"{ex.base_url}/_sim/stats") as r:
            assert r.status == 200
        # WebSocket upgrade
        with pytest.raises(InvalidStatus) as exc:
            await websockets.connect(ex.ws_url)
        assert exc.value.response.status_code == 401
        bad = sign_headers("kid", private, "GET", "/trade-api/v2/markets")
        with pytest.raises(InvalidStatus):
            await websockets.connect(ex.ws_url, additional_headers=bad)
        ws_headers = sign_headers("kid", private, "GET", "/trade-api/ws/v2")
        async with websockets.connect(ex.ws_url, additional_headers=ws_headers) as ws:
            await ws.send('{"id":1,"cmd":"subscribe","params":{"channels":["fill"]}}')
            assert '"subscribed"' in await ws.recv()  # authenticated: private channels allowed
        assert ex.stats()["connections"]["auth_rejected"] >= 5


async def test_anonymous_without_key(sim: SimExchange, http: aiohttp.ClientSession) -> None:
    status, _ = await get_json(http, f"{sim.rest_url}/markets")
    assert status == 200
    async with websockets.connect(sim.ws_url):
        pass


async def test_a_wrong_or_missing_key_is_401_on_rest_and_ws(rsa_pem: tuple[bytes, bytes], http) -> None:
    """A key the exchange does not know (signed by another private key) or no key at all: 401, not a silent close."""
    _, public = rsa_pem
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with SimExchange(config(public_key=public)) as ex:
        for path in ("/markets", "/markets/orderbooks", "/markets/trades", "/exchange/status"):
            wrong = sign_headers("kid", other, "GET", "/trade-api/v2" + path)
            async with http.get(ex.rest_url + path, headers=wrong) as r:
                assert r.status == 401 and (await r.json())["error"]["code"] == "authentication_error"
            async with http.get(ex.rest_url + path) as r:
                assert r.status == 401
        for headers in (sign_headers("kid", other, "GET", "/trade-api/ws/v2"), {}):
            with pytest.raises(InvalidStatus) as exc:
                await websockets.connect(ex.ws_url, additional_headers=headers)
            assert exc.value.response.status_code == 401
        assert ex.stats()["rest"]["401"] == 8
