"""A fast pipelining client for burst tests: many keep-alive connections, each sending its
requests in pipelined rounds and reading the answers back by Content-Length."""

from __future__ import annotations

import asyncio
import threading

import orjson

from wait_support import wait_until  # noqa: F401 - where the tests have long imported it from


def request_bytes(path: str, delivery: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"X-Delivery: {delivery}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    return status, await reader.readexactly(length)


async def _connection(host: str, port: int, path: str, deliveries: list[str], depth: int,
                      acked: dict[str, str], statuses: dict[int, int], stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for start in range(0, len(deliveries), depth):
            if stop.is_set():
                return
            round_ = deliveries[start:start + depth]
            writer.write(b"".join(request_bytes(path, d, orjson.dumps({"d": d})) for d in round_))
            for delivery in round_:
                status, body = await _read_answer(reader)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 202:
                    acked[delivery] = orjson.loads(body)["execution_id"]
    except (OSError, asyncio.IncompleteReadError):
        return                      # the server went away, as a sender would see it
    finally:
        writer.close()


def burst(host: str, port: int, count: int, *, path: str = "/api/webhooks/hook", connections: int = 16,
          depth: int = 32, prefix: str = "b", seconds: float | None = None, halt: threading.Event | None = None,
          acked: dict | None = None, statuses: dict | None = None) -> tuple[dict[str, str], dict[int, int]]:
    """Send `count` unique deliveries (ids prefix-n) as fast as the server answers; stop early
    after `seconds` or once `halt` is set, if given.  Returns (delivery -> execution id of each
    202, status counts), filled as answers come when the caller passes its own dicts."""
    acked = {} if acked is None else acked
    statuses = {} if statuses is None else statuses

    async def main() -> None:
        stop = asyncio.Event()
        names = [f"{prefix}-{n}" for n in range(count)]
        tasks = [asyncio.ensure_future(_connection(host, port, path, names[i::connections], depth,
                                                   acked, statuses, stop)) for i in range(connections)]
        if seconds is not None:
            asyncio.get_running_loop().call_later(seconds, stop.set)
        if halt is not None:
            watch = asyncio.ensure_future(asyncio.to_thread(halt.wait))
            watch.add_done_callback(lambda _: stop.set())
        await asyncio.gather(*tasks)
        if halt is not None:
            halt.set()          # the watching thread ends with the burst
            await watch

    asyncio.run(main())
    return acked, statuses


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")
