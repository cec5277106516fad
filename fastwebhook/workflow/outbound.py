"""The shared outbound HTTP client: being built."""


class HttpClient:
    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass
