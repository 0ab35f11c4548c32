"""Kalshi's WebSocket error codes, named once for the gatherer and the local exchange (docs/sim.md lists them,
with the source in Kalshi's documentation; docs/gatherer.md says what the gatherer does on each)."""

from __future__ import annotations

from enum import IntEnum


class WsError(IntEnum):
    """``{"type": "error", "msg": {"code": N}}`` codes of the WebSocket API."""

    BAD_MESSAGE = 1
    PARAMS_REQUIRED = 2
    CHANNELS_REQUIRED = 3
    SIDS_REQUIRED = 4
    UNKNOWN_COMMAND = 5
    ALREADY_SUBSCRIBED = 6
    UNKNOWN_SID = 7
    UNKNOWN_CHANNEL = 8
    AUTH_REQUIRED = 9
    CHANNEL_ERROR = 10
    INVALID_PARAMETER = 11
    EXACTLY_ONE_SID = 12
    UNSUPPORTED_ACTION = 13
    MARKET_TICKER_REQUIRED = 14
    ACTION_REQUIRED = 15
    MARKET_NOT_FOUND = 16
    INTERNAL = 17
    COMMAND_TIMEOUT = 18
    SUBSCRIPTION_BUFFER_OVERFLOW = 25
    TOO_MANY_MARKETS = 26
    COMMAND_RATE_LIMIT = 27


MESSAGES: dict[int, str] = {
    WsError.BAD_MESSAGE: "Unable to process message",
    WsError.PARAMS_REQUIRED: "Params required",
    WsError.CHANNELS_REQUIRED: "Channels required",
    WsError.SIDS_REQUIRED: "Subscription IDs required",
    WsError.UNKNOWN_COMMAND: "Unknown command",
    WsError.ALREADY_SUBSCRIBED: "Already subscribed",
    WsError.UNKNOWN_SID: "Unknown subscription ID",
    WsError.UNKNOWN_CHANNEL: "Unknown channel name",
    WsError.AUTH_REQUIRED: "Authentication required",
    WsError.CHANNEL_ERROR: "Channel error",
    WsError.INVALID_PARAMETER: "Invalid parameter",
    WsError.EXACTLY_ONE_SID: "Exactly one subscription ID is required",
    WsError.UNSUPPORTED_ACTION: "Unsupported action",
    WsError.MARKET_TICKER_REQUIRED: "Market Ticker required",
    WsError.ACTION_REQUIRED: "Action required",
    WsError.MARKET_NOT_FOUND: "Market not found",
    WsError.INTERNAL: "Internal error",
    WsError.COMMAND_TIMEOUT: "Command timeout",
    WsError.SUBSCRIPTION_BUFFER_OVERFLOW: "Subscription buffer overflow",
    WsError.TOO_MANY_MARKETS: "Too many markets in subscription",
    WsError.COMMAND_RATE_LIMIT: "Command rate limit exceeded",
}

# Errors after which the subscription no longer exists: the client must subscribe again (docs/gatherer.md: 10/17/25
# reconnect).
TERMINAL: frozenset[int] = frozenset({WsError.CHANNEL_ERROR, WsError.INTERNAL, WsError.SUBSCRIPTION_BUFFER_OVERFLOW})
