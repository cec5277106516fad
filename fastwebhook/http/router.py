"""Path routing: static paths by one dict lookup, `{param}` paths by segment match."""

from __future__ import annotations

from typing import Any


class Router:
    def __init__(self):
        self.static: dict[str, Any] = {}
        self.dynamic: list[tuple[tuple[str | None, ...], tuple[str, ...], Any]] = []
        self.prefixes: list[tuple[str, Any]] = []

    def add(self, path: str, target: Any) -> None:
        if "{" not in path:
            self.static[path] = target
            return
        segments, names = [], []
        for segment in path.strip("/").split("/"):
            if segment.startswith("{") and segment.endswith("}"):
                segments.append(None)
                names.append(segment[1:-1])
            else:
                segments.append(segment)
        self.dynamic.append((tuple(segments), tuple(names), target))

    def add_prefix(self, prefix: str, target: Any) -> None:
        self.prefixes.append((prefix.rstrip("/") + "/", target))

    def match(self, path: str) -> tuple[Any, dict[str, str]] | None:
        target = self.static.get(path)
        if target is not None:
            return target, {}
        for prefix, target in self.prefixes:   # the reserved prefixes (admin) before any /{param} route
            if path.startswith(prefix) or path == prefix[:-1]:
                return target, {}
        if self.dynamic:
            parts = path.strip("/").split("/")
            for segments, names, target in self.dynamic:
                if len(segments) != len(parts):
                    continue
                values = []
                for want, got in zip(segments, parts):
                    if want is None:
                        if not got:
                            break
                        values.append(got)
                    elif want != got:
                        break
                else:
                    return target, dict(zip(names, values))
        return None
