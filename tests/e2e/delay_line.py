#!/usr/bin/env python3
"""A TCP delay line on loopback: a long network path without netem (which this kernel lacks).

Every byte it relays leaves `one_way_ms` after it arrived, in both directions, and at most
`cap` bytes are in flight each way (it stops reading beyond that, so TCP's flow control
reaches the sender): a path with that round trip and that much room in flight.

In tests: `with DelayLine(target, one_way_ms=20) as line: ... line.address ...`.
From the shell (bench/run.sh): `delay_line.py TARGET_PORT ONE_WAY_MS [CAP_BYTES]`, which
prints its listening port on the first line and relays until killed.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import threading
import time

DEFAULT_CAP = 8 << 20


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, cap: int) -> None:
    queue: collections.deque = collections.deque()
    queued = 0
    arrived = asyncio.Event()
    room = asyncio.Event()
    room.set()
    ended = False
    broken = False  # the far side failed: stop taking


    async def take() -> None:
        nonlocal queued, ended
        try:
            while not broken:
                await room.wait()
                if broken:
                    break
                data = await reader.read(65536)
                if not data:
                    break
                queue.append((time.monotonic() + delay, data))
                queued += len(data)
                if queued >= cap:
                    room.clear()
                arrived.set()
        except OSError:
            pass
        ended = True
        arrived.set()

    async def give() -> None:
        nonlocal queued, broken
        try:
            while queue or not ended:
                if not queue:
                    arrived.clear()
                    await arrived.wait()
                    continue
                due, data = queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                queue.popleft()
                queued -= len(data)
                if queued < cap:
                    room.set()
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            broken = True
            room.set()

    await asyncio.gather(take(), give())


class DelayLine:
    def __init__(self, target: str, one_way_ms: float, cap: int = DEFAULT_CAP):
        host, _, port = target.rpartition(":")
        self._target = (host.strip("[]"), int(port))
        self._delay = one_way_ms / 1000
        self._cap = cap
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, server_w, self._delay, self._cap),
                             _pipe(server_r, client_w, self._delay, self._cap))
        client_w.close()
        server_w.close()

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._server.serve_forever()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except asyncio.CancelledError:
            pass

    def start(self) -> "DelayLine":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the delay line did not start")
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(self._loop)])
            self._thread.join(10)

    def __enter__(self) -> "DelayLine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print("usage: delay_line.py TARGET_PORT ONE_WAY_MS [CAP_BYTES]", file=sys.stderr)
        return 2
    line = DelayLine(f"127.0.0.1:{int(argv[1])}", float(argv[2]), int(argv[3]) if len(argv) == 4 else DEFAULT_CAP)
    line.start()
    print(line.port, flush=True)
    try:
        line._thread.join()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
