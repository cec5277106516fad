"""`end`: stop the execution here, as resolved or failed."""

from typing import Any, Mapping

NAME = "end"
FIELDS = ("status",)
STATUSES = ("resolved", "failed")


class EndExecution(Exception):
    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


def prepare(fields: Mapping[str, Any], path: str, report, known) -> str:
    status = fields.get("status", "resolved")
    if status not in STATUSES:
        report(f"{path}.status", f"must be \"resolved\" or \"failed\", not {status!r}")
    return status


async def execute(status: str, run) -> None:
    raise EndExecution(status)


async def execute_cohort(status: str, runs: list) -> list:
    return [EndExecution(status)] * len(runs)
