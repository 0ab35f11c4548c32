"""Start-up phases 2 and 3 against the exchange's REST API: wait until the exchange is active, then page
``GET /markets`` into the registry (docs/gatherer.md "Start-up"). Both retry with backoff until they succeed or the
gatherer is asked to stop — except when the exchange rejects the API key, which no retry can fix."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kalshictl.backoff import Backoff, Jitter, retry_until
from kalshictl.errors import ExitCode, KalshiCtlError
from kalshictl.kalshi.rest import KalshiApiError

if TYPE_CHECKING:
    import asyncio

    from kalshictl.config import GathererSettings
    from kalshictl.gatherer.registry import MarketRegistry
    from kalshictl.kalshi.rest import KalshiRest

log = logging.getLogger("kalshictl.gatherer")

EXCHANGE_RETRY = Backoff(1.0, 60.0, Jitter.HALF)  # while the exchange is inactive or unreachable (wall time)


class ApiKeyRejected(KalshiCtlError):
    """The exchange refused the configured API key (HTTP 401/403): restarting will not help."""

    exit_code = ExitCode.USAGE


class ExchangeInactive(Exception):
    """``GET /exchange/status`` says the exchange is not active."""


def raise_if_key_rejected(exc: KalshiApiError, rest_url: str) -> None:
    """A 401/403 becomes :class:`ApiKeyRejected` (exit 2, naming the keys to check)."""
    if exc.status in (401, 403):
        raise ApiKeyRejected(
            f"the exchange rejected the API key (HTTP {exc.status}) at {rest_url}",
            hint="check exchange.api_key_id and exchange.private_key (a key belongs to one environment:"
            " production or demo)",
        ) from None


async def wait_until_active(rest: KalshiRest, settings: GathererSettings, stop: asyncio.Event) -> bool:
    """``GET /exchange/status`` until ``exchange_active`` (True) or ``stop`` (False)."""
    name = settings.name

    async def active() -> None:
        try:
            st = await rest.get("/exchange/status")
        except KalshiApiError as exc:
            raise_if_key_rejected(exc, settings.exchange.rest_url)
            raise
        if not (st or {}).get("exchange_active"):
            raise ExchangeInactive

    def failed(exc: Exception, _delay: float) -> None:
        if isinstance(exc, ExchangeInactive):
            log.warning("%s: exchange inactive; waiting", name)
        else:
            log.warning("%s: GET /exchange/status failed: %s", name, exc)

    return await retry_until(active, stop, EXCHANGE_RETRY, fatal=(ApiKeyRejected,), on_failure=failed)


async def load_markets(
    registry: MarketRegistry, rest: KalshiRest, settings: GathererSettings, stop: asyncio.Event, *, progress: bool
) -> bool:
    """Load the registry (retried with backoff, /health 503 meanwhile; a rejected key raises
    :class:`ApiKeyRejected`); a progress bar on a TTY. False if stopped first."""
    statuses = settings.market_status
    mve = settings.websocket.record_mve

    async def load() -> None:
        try:
            if not progress:
                await registry.load(rest, statuses, mve=mve)
                return
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
            with Progress(*columns, transient=True) as bar:
                task = bar.add_task("loading markets", total=None)

                def show(pages: int, markets: int) -> None:
                    bar.update(task, description=f"loading markets: {markets:,} ({pages} pages)")

                await registry.load(rest, statuses, progress=show, mve=mve)
        except KalshiApiError as exc:
            raise_if_key_rejected(exc, settings.exchange.rest_url)
            raise

    return await registry.load_with_retry(load, stop, fatal=(ApiKeyRejected,))
