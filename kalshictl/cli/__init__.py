"""The ``kalshictl`` command tree: one module per command group (a module-level ``app``) or single command (a
module-level ``*_cmd`` function); ``kalshictl.cli.app`` composes them into the root."""
