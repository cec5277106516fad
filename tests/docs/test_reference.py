"""The documentation against the code: every config key the loader takes is in the reference,
and every link between the pages leads somewhere."""

from __future__ import annotations

import re

import pytest

from docs_support import REPO
from fastwebhook.config.model import OutboundConfig, QueueConfig, ServerConfig, StorageConfig
from fastwebhook.config.workflows import WORKFLOW_FIELDS, NODE_COMMON_FIELDS
from fastwebhook.workflow.channels import HTTP_KEYS, SMTP_KEYS

REFERENCE = REPO / "docs" / "configuration.md"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def documented_keys() -> set[str]:
    """Every `name` in backticks at the start of a table row or in a row's first cell."""
    keys = set()
    for line in REFERENCE.read_text().splitlines():
        if line.startswith("| `"):
            keys.update(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return keys


@pytest.mark.parametrize("section, names", [
    ("[server]", set(ServerConfig.__dataclass_fields__)),
    ("[storage]", set(StorageConfig.__dataclass_fields__)),
    ("[queue]", set(QueueConfig.__dataclass_fields__)),
    ("[outbound]", set(OutboundConfig.__dataclass_fields__)),
    ("[workflows.K]", WORKFLOW_FIELDS - {"verify", "dedup", "response"}),
    ("[channels.X] smtp", SMTP_KEYS - {"type"}),
    ("[channels.X] http", HTTP_KEYS - {"type"}),
    ("[metrics] [admin] [log] [workflows.K.dedup] [workflows.K.response]",
     {"path", "token", "secrets_dir", "level", "format", "access", "workflows_dir", "key", "ttl", "enabled",
      "status", "headers", "body"}),
])
def test_every_config_key_is_in_the_reference(section, names):
    missing = sorted(names - documented_keys())
    assert not missing, f"{section} keys missing from docs/configuration.md: {missing}"


def test_the_node_settings_every_node_takes_are_in_the_reference():
    text = REFERENCE.read_text()
    for name in NODE_COMMON_FIELDS - {"then", "else"}:
        assert f"`{name}`" in text


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower-cased, punctuation dropped, spaces as '-'."""
    found = set()
    for line in text.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_between_pages_leads_somewhere(page):
    for target in _LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} leads nowhere"
        if anchor:
            assert anchor in _anchors(linked.read_text()), f"{page.name}: no heading for #{anchor} in {linked.name}"
