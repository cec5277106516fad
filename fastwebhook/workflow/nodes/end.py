"""`end`: stop the execution here, as resolved or failed."""

from typing import Any, Mapping

from ...store.rows import Status

NAME = "end"
FIELDS = ("status",)
STATUSES = (Status.RESOLVED, Status.FAILED)


class EndExecution(Exception):
    def __init__(self, status: Status):
        super().__init__(status)
        self.status = status


def prepare(fields: Mapping[str, Any], path: str, report, known) -> Status:
    status = fields.get("status", "resolved")
    if status not in STATUSES:
        report(f"{path}.status", f"must be \"resolved\" or \"failed\", not {status!r}")
        return Status.FAILED
    return Status(status)


async def execute(status: Status, run) -> None:
    raise EndExecution(status)


async def execute_cohort(status: Status, runs: list) -> list:
    return [EndExecution(status)] * len(runs)
