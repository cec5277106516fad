"""The command line: `fastwebhook serve | check | send | executions | ...` (main.py)."""
