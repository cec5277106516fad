"""The commands the documentation shows, read from its markdown, so that a test runs what a
reader would type (a doc whose commands were never run goes stale)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Block:
    lang: str
    heading: str          # the nearest heading above it, without its #s
    text: str


def code_blocks(path: Path, lang: str | None = None) -> list[Block]:
    """The fenced code blocks of a markdown file, in order (only those of `lang` if given)."""
    blocks, heading, inside, lines, block_lang = [], "", False, [], ""
    for line in path.read_text().splitlines():
        fence = _FENCE.match(line.strip())
        if fence and not inside:
            inside, lines, block_lang = True, [], fence[1]
        elif line.strip() == "```" and inside:
            inside = False
            if lang is None or block_lang == lang:
                blocks.append(Block(block_lang, heading, "\n".join(lines)))
        elif inside:
            lines.append(line)
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
    return blocks


def block_under(path: Path, heading: str, lang: str = "sh") -> Block:
    """The first `lang` block below the heading `heading`."""
    found = [block for block in code_blocks(path, lang) if block.heading == heading]
    assert found, f"{path.name}: no {lang} block under the heading {heading!r}"
    return found[0]


def commands(text: str) -> list[str]:
    """A shell block's commands: lines joined at a trailing backslash, comments and blank lines
    left out."""
    joined, pending = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            joined.append(line.strip())
    return joined
