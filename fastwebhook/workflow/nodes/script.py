"""`script`: being built (see workflow/nodes/__init__.py for the contract)."""

NAME = "script"
FIELDS = ()


def prepare(fields, path, report, known):
    report(path, "the script node is not built yet")


async def run(prepared, run):
    raise NotImplementedError("script")
