"""`request`: being built (see workflow/nodes/__init__.py for the contract)."""

NAME = "request"
FIELDS = ()


def prepare(fields, path, report, known):
    report(path, "the request node is not built yet")


async def run(prepared, run):
    raise NotImplementedError("request")
