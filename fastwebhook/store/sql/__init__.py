"""SQL kept as named blocks, one file per dialect (`-- name: x` starts block x)."""

from functools import cache
from pathlib import Path


@cache
def queries(dialect: str) -> dict[str, str]:
    text = (Path(__file__).parent / f"{dialect}.sql").read_text()
    blocks: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        if line.startswith("-- name: "):
            name = line[len("-- name: "):].strip()
            blocks[name] = ""
        elif name is not None:
            blocks[name] += line + "\n"
    return {k: v.strip() for k, v in blocks.items()}
