"""The ``kalshictl`` command tree: one module per command group, each exposing ``register(root)``."""
