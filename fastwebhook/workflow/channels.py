"""`[channels]`: being built.  load_channels(loader, table, path) -> {name: Channel}."""


def load_channels(loader, table: dict, path: str) -> dict:
    return dict(table)
