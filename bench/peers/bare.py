"""The ceiling: asyncio.Protocol + uvloop + httptools answering a fixed 200, doing no work.

It parses each request only far enough to know where it ends, so keep-alive and pipelining are
right (one answer per message, in order), and reads nothing of the headers or body.

    python bench/peers/bare.py --port 18080
"""

from __future__ import annotations

import argparse
import asyncio

import httptools
import uvloop

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Type: text/plain\r\n\r\n"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class BareProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(BAD_REQUEST)
            self.transport.close()

    def on_message_complete(self) -> None:
        if self.transport.is_closing():  # a pipelined request after "Connection: close"
            return
        self.transport.write(OK)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(BareProtocol, "127.0.0.1", port, reuse_address=True, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--secret", help="accepted and ignored: this receiver checks nothing")
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
