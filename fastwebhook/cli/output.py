"""What the read commands print with --json: the admin API's answer, as it would send it."""

from __future__ import annotations

from typing import Any

import orjson


def print_json(value: Any) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())
