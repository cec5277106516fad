"""HTTP/1.1 bytes <-> `Request` / `Response`: the protocol, the messages, routing and TLS.

Nothing in here knows what a webhook or a workflow is.
"""

from .messages import PENDING, Answer, Request, Response, answered_status

__all__ = ["PENDING", "Answer", "Request", "Response", "answered_status"]
