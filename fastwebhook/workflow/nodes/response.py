"""`response`: the answer a sync-mode webhook gets; recorded (and ignored) in async mode."""

from dataclasses import dataclass
from typing import Any, Mapping

from ..templates import compile_value

NAME = "response"
FIELDS = ("status", "headers", "body")


@dataclass(frozen=True, slots=True)
class ResponseNode:
    answer: dict             # {"status", "headers", "body"}, compiled templates


def prepare(fields: Mapping[str, Any], path: str, report, known) -> ResponseNode:
    status = fields.get("status", 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        report(f"{path}.status", f"must be an HTTP status between 100 and 599, not {status!r}")
    headers = fields.get("headers", {})
    if not isinstance(headers, dict):
        report(f"{path}.headers", "must be a table of header = value")
        headers = {}
    return ResponseNode({"status": status, "headers": compile_value(dict(headers)),
                         "body": compile_value(fields.get("body", ""))})


async def execute(prepared: ResponseNode, run) -> dict:
    return _answer(prepared, run)


async def execute_cohort(prepared: ResponseNode, runs: list) -> list:
    """Each run's answer, told at once (sync mode); one that is not valid HTTP fails its run."""
    answers: list = []
    for each in runs:
        try:
            answers.append(_answer(prepared, each))
        except Exception as exc:  # noqa: BLE001 - fails that run's node alone
            answers.append(exc)
    return answers


def _answer(prepared: ResponseNode, run) -> dict:
    answer = run.render(prepared.answer)
    run.respond(answer)
    return answer
