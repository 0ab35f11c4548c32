"""Async REST client for Kalshi's Trade API v2: rate limiting, 429/5xx backoff, cursor pagination, request signing.

Kalshi answers excess requests with HTTP 429 ``{"error": "too many requests"}`` and no Retry-After header, so the
client keeps itself under a configured request rate (a leaky bucket, aiolimiter) and backs off exponentially with
jitter when it is throttled anyway (tenacity).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from kalshictl.errors import KalshiCtlError


class KalshiApiError(KalshiCtlError):
    """A non-retryable API error (4xx other than 429), or retries exhausted."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class _Retryable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, _Retryable | httpx.TransportError)


def end_of_pages(cursor: object) -> bool:
    """Kalshi's pagination ends at an empty string; treat null and missing the same."""
    return cursor is None or cursor == ""


class KalshiRest:
    """A small async client for the public market-data endpoints (signed when a key is configured)."""

    def __init__(
        self,
        base_url: str,
        *,
        requests_per_second: float = 18.0,
        key_id: str | None = None,
        private_key: str | bytes | None = None,
        timeout: float = 15.0,
        max_retries: int = 8,
        max_backoff_s: float = 20.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._base_path = urlsplit(self.base_url).path
        self._limiter = AsyncLimiter(max(requests_per_second, 0.001), 1.0) if requests_per_second > 0 else None
        self._key_id = key_id
        self._private_key = None
        if key_id and private_key:
            from kalshictl.kalshi.auth import load_private_key

            self._private_key = load_private_key(private_key)
        self._max_retries = max_retries
        self._max_backoff_s = max_backoff_s
        self._client = client or httpx.AsyncClient(timeout=timeout, headers={"Accept": "application/json"})
        self.requests = 0
        self.throttled = 0
        self.retries = 0

    async def __aenter__(self) -> KalshiRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the underlying HTTP client."""
        await self._client.aclose()

    def _headers(self, method: str, path: str) -> dict[str, str]:
        if self._private_key is None or not self._key_id:
            return {}
        from kalshictl.kalshi.auth import sign_headers

        return sign_headers(self._key_id, self._private_key, method, self._base_path + path)

    async def _once(self, path: str, params: Any) -> Any:
        if self._limiter is not None:
            await self._limiter.acquire()
        self.requests += 1
        resp = await self._client.get(self.base_url + path, params=params, headers=self._headers("GET", path))
        if resp.status_code == 429:
            self.throttled += 1
            raise _Retryable("429 too many requests")
        if resp.status_code >= 500:
            raise _Retryable(f"HTTP {resp.status_code}")
        try:
            body = orjson.loads(resp.content) if resp.content else None
        except orjson.JSONDecodeError:
            if resp.is_success:
                raise _Retryable("invalid JSON in a 2xx response") from None
            body = resp.text[:200]
        if not resp.is_success:
            raise KalshiApiError(f"GET {path}: HTTP {resp.status_code}: {_error_text(body)}", resp.status_code, body)
        return body

    async def get(self, path: str, params: Any = None) -> Any:
        """GET ``path`` (relative to the base URL) and return the decoded JSON, retrying throttling and 5xx."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_retryable),
            wait=wait_random_exponential(multiplier=0.25, max=self._max_backoff_s),
            stop=stop_after_attempt(self._max_retries),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        self.retries += 1
                    return await self._once(path, params)
        except _Retryable as exc:
            raise KalshiApiError(f"GET {path}: gave up after {self._max_retries} attempts ({exc.reason})") from None
        except httpx.TransportError as exc:
            raise KalshiApiError(f"GET {path}: {type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def paginate(
        self, path: str, item_key: str, params: dict[str, Any] | None = None, limit: int = 1000
    ) -> AsyncIterator[list[dict]]:
        """Yield each page's ``item_key`` list, following ``cursor`` until it is empty/null/missing."""
        query = dict(params or {})
        query["limit"] = limit
        seen: set[object] = set()  # cursors given so far: one given twice would page forever
        while True:
            body = await self.get(path, query)
            yield list((body or {}).get(item_key) or [])
            cursor = (body or {}).get("cursor")
            if end_of_pages(cursor) or cursor in seen:
                return
            seen.add(cursor)
            query["cursor"] = cursor

    async def exchange_status(self) -> dict:
        """GET /exchange/status."""
        return await self.get("/exchange/status")


def _error_text(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return f"{err.get('code', '')} {err.get('message', '')}".strip()
        if err:
            return str(err)
        if "message" in body:
            return str(body["message"])
    return str(body)[:200]
