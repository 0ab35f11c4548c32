"""The local Kalshi exchange (``kalshictl sim``): REST + WebSocket, seeded activity, faults and ground truth.

Usage::

    async with SimExchange(SimConfig(markets=50, seed=1, rate=200)) as ex:
        ...  # ex.rest_url, ex.ws_url, ex.book(ticker), ex.set_faults(spec), ex.set_options(ack_seq="last"), ex.stats()

    handle = SimExchange.start_in_thread(SimConfig(markets=50))  # from synchronous code
    handle.call(handle.ex.step, 100); handle.ex.rest_url; handle.stop()
"""

from kalshictl.sim.config import SimConfig
from kalshictl.sim.exchange import SimExchange, SimThread

__all__ = ["SimConfig", "SimExchange", "SimThread"]
