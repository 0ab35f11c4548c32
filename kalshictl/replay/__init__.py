"""``kalshictl replay``: a recorded period of production served as Kalshi's own WebSocket and REST (docs/replay.md).

The protocol (commands, acks, errors, sids, seqs, slow-consumer disconnect) is the local exchange's
(``kalshictl.sim.ws``, ``kalshictl.sim.connection``); this room supplies the *world* behind it
(``kalshictl.sim.world.World``): production's events in exchange-time order (:mod:`.source`), books at the replay
clock (:mod:`.session`), and the HTTP server (:mod:`.server`).
"""
