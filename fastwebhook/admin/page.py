"""The executions page at /admin/: static files (web/) that talk only to /api/admin/.

They hold no data and no secret, so they are served without the token; every figure comes from
the admin API, which wants it.  The page keeps the token in the tab's sessionStorage (never in a
URL or a cookie) and shows every value from a webhook as text (textContent, never markup); the
headers make the browser hold it to that: no inline script, nothing from another origin, no
framing, no sniffing.
"""

from __future__ import annotations

from importlib import resources

from ..config.model import ADMIN_PAGE
from ..http.messages import Request, Response

FILES = {"index.html": b"text/html; charset=utf-8", "app.js": b"text/javascript; charset=utf-8",
         "find-and-replay.js": b"text/javascript; charset=utf-8", "app.css": b"text/css; charset=utf-8"}
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = ((b"content-security-policy", POLICY.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"), (b"cache-control", b"no-cache"))
_BODIES = {name: (resources.files(__package__) / "web" / name).read_bytes() for name in FILES}
_MOVED = Response(301, b"", b"text/plain", ((b"location", f"{ADMIN_PAGE}/".encode()), *HEADERS))
_MISSING = Response.error(404, "not found", HEADERS)


def answer(request: Request) -> Response:
    if request.path == ADMIN_PAGE:
        return _MOVED
    name = request.path[len(ADMIN_PAGE) + 1:] or "index.html"
    body = _BODIES.get(name)
    if body is None:
        return _MISSING
    return Response(200, body, FILES[name], HEADERS)
