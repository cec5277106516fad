"""Workflows created, changed, enabled, disabled and deleted through the admin API.

Each is kept in the store as the JSON of a `[workflows.<key>]` table and loaded by the same code
as the file's (config.with_stored), so it is checked the same way and its errors name the same
key paths.  The file's workflows are the file's: the API reads them and changes none of them.

A change is saved, then put in force (`put_in_force`: every process of this server reads the
stored workflows again) before the call answers, so a webhook sent after the answer finds it.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, Awaitable, Callable

from ..config.model import Config, Workflow
from ..config.loader import with_stored
from ..config.workflows import dangling_on_failure
from ..door.context import REDACTED_HEADERS
from ..store import Store

REDACTED = "***"
# A setting is secret by its name, wherever it sits (verify, a node's headers, query or body,
# `sign`): a rule, so a place added later is covered too.  A name ending in _file names a file
# (secret_file, password_file): that is shown.
_SECRET_NAME = re.compile(r"secret|passw|token|api[-_]?key|auth(oriz|[-_]|$)|cookie|credential|signature"
                          r"|private[-_]?key|encrypt[-_]?key|aes[-_]?key")
_NAMES_A_FILE = re.compile(r"[-_]files?$")
_URL_PASSWORD = re.compile(r"(://[^/?#@:\s]*):[^/?#@\s]*@")


class Refused(Exception):
    """A change not made: the HTTP status it answers with, what to say, the config errors."""

    def __init__(self, status: int, message: str, errors: list[dict] | None = None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors or []


def summary(workflow: Workflow) -> dict:
    """What lists of workflows show (the API's and `fastwebhook workflows`)."""
    return {"key": workflow.key, "title": workflow.title, "path": workflow.path, "methods": list(workflow.methods),
            "mode": workflow.mode, "enabled": workflow.enabled, "verify": workflow.verify.scheme,
            "version": workflow.version, "origin": workflow.origin, "on_failure": workflow.on_failure or None}


def detail(workflow: Workflow) -> dict:
    """One workflow as its page shows it: the summary, and its nodes as the tree they run in."""
    return {**summary(workflow), "nodes": node_tree(workflow.nodes)}


def node_tree(nodes) -> list[dict]:
    """Each node's key, type and title, in order; a condition's branches under "then" and "else"
    (no settings: those may hold secrets, and `definition` shows a stored workflow's, redacted)."""
    return [{"key": node.key, "type": node.type, "title": node.title,
             **({"then": node_tree(node.then)} if node.then else {}),
             **({"else": node_tree(node.otherwise)} if node.otherwise else {})} for node in nodes]


def redacted(value: Any, headers: frozenset[str]) -> Any:
    """A stored table as the API shows it: every secret-bearing setting as `***`, a URL's
    password too.  `headers`: the header names redacted from stored requests, hidden here
    whatever table they name."""
    if isinstance(value, dict):
        return {name: _hidden(item) if _secret(name, headers) else redacted(item, headers)
                for name, item in value.items()}
    if isinstance(value, list):
        return [redacted(item, headers) for item in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\1:{REDACTED}@", value)
    return value


def _secret(name: str, headers: frozenset[str]) -> bool:
    name = name.lower()
    return name in headers or (_SECRET_NAME.search(name) is not None and not _NAMES_A_FILE.search(name))


def _hidden(value: Any) -> Any:
    return [REDACTED] * len(value) if isinstance(value, list) else REDACTED


class StoredWorkflows:
    def __init__(self, store: Store, config_now: Callable[[], Config],
                 put_in_force: Callable[[], Awaitable[None]], clock=time.time):
        self.store = store
        self.config_now = config_now        # the config in force
        self.put_in_force = put_in_force    # every process reads the stored workflows again
        self.clock = clock
        self.lock = asyncio.Lock()          # one change at a time: each checks against the last

    async def get(self, key: str) -> dict | None:
        workflow = self.config_now().workflows.get(key)
        stored = await self.store.stored_workflows()
        if workflow is None and key not in stored:
            return None
        found = detail(workflow) if workflow is not None else {"key": key, "origin": "api", "enabled": False}
        if key in stored:
            found["definition"] = self._shown(stored[key])
            if workflow is None or workflow.origin != "api":   # stored, but not in force: say why
                found["in_force"] = False
        return found

    async def create(self, body: Any) -> dict:
        if not isinstance(body, dict) or not isinstance(body.get("key"), str):
            raise Refused(400, 'the body must be a JSON object with a "key" and the workflow\'s settings')
        table = {name: value for name, value in body.items() if name != "key"}
        saved, _ = await self._save(body["key"], table, create=True)
        return saved

    async def put(self, key: str, body: Any) -> tuple[dict, bool]:
        """Create or replace; says which (True: created)."""
        if not isinstance(body, dict):
            raise Refused(400, "the body must be a JSON object of the workflow's settings")
        if body.get("key", key) != key:
            raise Refused(400, f"the body's key {body['key']!r} is not the path's {key!r}")
        return await self._save(key, {name: value for name, value in body.items() if name != "key"}, create=None)

    async def set_enabled(self, key: str, enabled: bool) -> dict:
        async with self.lock:
            table = await self._stored(key)
            saved, _ = await self._save_locked(key, {**table, "enabled": enabled}, create=False)
            return saved

    async def delete(self, key: str) -> None:
        async with self.lock:
            stored = await self.store.stored_workflows()
            if key not in stored:   # (one the file's hides can go)
                self._not_the_files(key)
                raise Refused(404, f"no workflow {key!r}")
            self._not_a_failure_workflow(key, stored)
            if not await self.store.delete_workflow(key):
                raise Refused(404, f"no workflow {key!r}")
            await self.put_in_force()

    async def _stored(self, key: str) -> dict:
        """The stored table of `key`, or the refusal a file's or an unknown key gets."""
        self._not_the_files(key)
        table = (await self.store.stored_workflows()).get(key)
        if table is None:
            raise Refused(404, f"no workflow {key!r}")
        return table

    def _not_a_failure_workflow(self, key: str, stored: dict[str, dict]) -> None:
        """Refuses to delete the stored workflow `key` while another names it in `on_failure`
        (a workflow in force, or a stored table not in force now that may be again): their
        failures would have nothing to run.  When the file's workflow of that key hides the
        stored one, the file's is what they name, and it stays."""
        workflows = self.config_now().workflows
        if key in workflows and workflows[key].origin == "file":
            return
        naming = {w.key for w in workflows.values() if w.on_failure == key}
        naming |= {name for name, table in stored.items() if isinstance(table, dict) and table.get("on_failure") == key}
        naming.discard(key)
        if naming:
            names = ", ".join(repr(name) for name in sorted(naming))
            raise Refused(409, f"workflow {key!r} is the failure workflow of {names}: change their "
                               "on_failure first", [{"path": f"workflows.{name}.on_failure",
                                                     "message": f"names {key!r}"} for name in sorted(naming)])

    def _not_the_files(self, key: str) -> None:
        config = self.config_now()
        workflow = config.workflows.get(key)
        if workflow is not None and workflow.origin == "file":
            raise Refused(409, f"workflow {key!r} is defined in {config.source}: change it there, "
                               "then reload (systemctl reload fastwebhook, or SIGHUP)")

    async def _save(self, key: str, table: dict, *, create: bool | None) -> tuple[dict, bool]:
        async with self.lock:
            return await self._save_locked(key, table, create=create)

    async def _save_locked(self, key: str, table: dict, *, create: bool | None) -> tuple[dict, bool]:
        """Checked as the server would load it, saved, put in force.  `create`: True (the key
        must be new), False (it must exist), None (either)."""
        self._not_the_files(key)
        stored = await self.store.stored_workflows()
        if create and key in stored:
            raise Refused(409, f"workflow {key!r} exists: PUT /api/admin/workflows/{key} replaces it")
        if create is False and key not in stored:
            raise Refused(404, f"no workflow {key!r}")
        trial, refused = with_stored(self.config_now(), {**stored, key: table})
        # (its failure workflow must exist now; one deleted later is logged at the failure)
        found = refused.get(key) or dangling_on_failure([trial.workflows[key]], trial.workflows)
        if found:
            errors = [{"path": error.path, "message": error.message} for error in found]
            raise Refused(422, f"workflow {key!r} was not saved: {len(errors)} error(s)", errors)
        new = key not in stored
        if not await self.store.put_workflow(key, table, self.clock(), create=new):
            raise Refused(409, f"workflow {key!r} was changed meanwhile (by another process): try again")
        await self.put_in_force()
        return {**summary(trial.workflows[key]), "definition": self._shown(table)}, new

    def _shown(self, table: dict) -> dict:
        return redacted(table, REDACTED_HEADERS | self.config_now().storage.redact_headers)
