"""A loopback TCP forwarder whose connections the test can cut, as a network drop would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class TcpCutter:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._live: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._live |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._live -= {writer, up_writer}

    def cut(self) -> int:
        """Abort every live connection (no close handshake); new ones still go through."""
        cut = len(self._live)
        for writer in list(self._live):
            writer.transport.abort()
        return cut

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TcpCutter]:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self.cut()
            self._server.close()
            await self._server.wait_closed()
