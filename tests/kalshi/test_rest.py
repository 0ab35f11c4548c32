"""The REST client against the real local exchange: pagination, 429 backoff, request signing."""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kalshictl.kalshi.rest import KalshiApiError, KalshiRest
from kalshictl.sim import SimConfig, SimExchange


async def test_paginates_every_market():
    async with SimExchange(SimConfig(markets=2345, seed=5, rate=0, paused=True)) as ex:
        async with KalshiRest(ex.rest_url, requests_per_second=0) as rest:
            tickers = []
            pages = 0
            async for page in rest.paginate("/markets", "markets", limit=1000):
                pages += 1
                tickers += [m["ticker"] for m in page]
            assert pages == 3
            assert len(tickers) == len(set(tickers)) >= 2345
            status = await rest.exchange_status()
            assert status["exchange_active"] is True


async def test_backs_off_on_429_and_gives_up_cleanly():
    async with SimExchange(SimConfig(markets=10, seed=1, rate=0, paused=True, faults="rest_429=0.5")) as ex:
        async with KalshiRest(ex.rest_url, requests_per_second=0, max_backoff_s=0.05, max_retries=30) as rest:
            for _ in range(10):
                body = await rest.get("/markets", {"limit": 5})
                assert len(body["markets"]) == 5
            assert rest.throttled > 0
            assert rest.retries >= rest.throttled
        ex.set_faults("rest_429=1.0")
        async with KalshiRest(ex.rest_url, requests_per_second=0, max_backoff_s=0.01, max_retries=3) as rest:
            with pytest.raises(KalshiApiError, match="gave up after 3 attempts"):
                await rest.get("/exchange/status")


async def test_404_is_not_retried():
    async with SimExchange(SimConfig(markets=3, seed=1, rate=0, paused=True)) as ex:
        async with KalshiRest(ex.rest_url, requests_per_second=0) as rest:
            with pytest.raises(KalshiApiError) as info:
                await rest.get("/markets/NOPE-NOT-A-MARKET")
            assert info.value.status == 404
            assert rest.requests == 1


async def test_signed_requests_are_accepted_and_unsigned_rejected():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    async with SimExchange(SimConfig(markets=3, seed=1, rate=0, paused=True, public_key=pub)) as ex:
        async with KalshiRest(ex.rest_url, requests_per_second=0, key_id="key-1", private_key=pem) as rest:
            assert (await rest.exchange_status())["exchange_active"] is True
        async with KalshiRest(ex.rest_url, requests_per_second=0) as rest:
            with pytest.raises(KalshiApiError) as info:
                await rest.exchange_status()
            assert info.value.status == 401
