"""`notification`: being built (see workflow/nodes/__init__.py for the contract)."""

NAME = "notification"
FIELDS = ()


def prepare(fields, path, report, known):
    report(path, "the notification node is not built yet")


async def run(prepared, run):
    raise NotImplementedError("notification")
