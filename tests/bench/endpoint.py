"""A webhook endpoint for the delivery benchmarks, run as its own process
(so that its work does not disturb the timing of the process measuring):
asyncio HTTP/1.1 with keep-alive, so one process holds thousands of
connections at once.

    endpoint.py PORT_FILE [--delay SECONDS] [--record PATH]

It listens on a free loopback port and writes that port to PORT_FILE when
ready. Every request is answered 200 after --delay seconds. With --record,
each request's receipt time (time.monotonic(), the same clock as every
process's on this machine) is kept with the `push_data.tag` of its Docker Hub
payload, and on SIGTERM the pairs are written to PATH as `tag time` lines.
On SIGTERM the largest number of requests it held at once is written to
PORT_FILE.peak.
"""

import argparse
import asyncio
import os
import re
import signal
import time

TAG = re.compile(rb'"tag":"([^"]*)"')


async def read_message(reader):
    """One HTTP/1.1 message with a Content-Length body: (head, body)."""
    head = await reader.readuntil(b'\r\n\r\n')
    length = 0
    for line in head.split(b'\r\n')[1:]:
        name, _, value = line.partition(b':')
        if name.strip().lower() == b'content-length':
            length = int(value)
    return head, (await reader.readexactly(length) if length else b'')


class Server:
    def __init__(self, delay, record):
        self.delay = delay
        self.record = record
        self.received = []  # (tag, monotonic time)
        self.holding = 0  # requests read and not yet answered
        self.peak = 0

    async def handle(self, reader, writer):
        try:
            while True:
                _, body = await read_message(reader)
                if self.record:
                    # The first "tag" of a Docker Hub payload is push_data's:
                    # found without parsing, to keep this process light.
                    at = time.monotonic()
                    self.received.append((TAG.search(body).group(1).decode(), at))
                self.holding += 1
                self.peak = max(self.peak, self.holding)
                if self.delay:
                    await asyncio.sleep(self.delay)
                self.holding -= 1
                writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n')
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def run(self, port_file):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        server = await asyncio.start_server(self.handle, '127.0.0.1', 0, backlog=4096)
        port = server.sockets[0].getsockname()[1]
        with open(port_file + '.tmp', 'w') as f:
            f.write(str(port))
        os.rename(port_file + '.tmp', port_file)
        await stop.wait()
        server.close()
        with open(port_file + '.peak', 'w') as f:
            f.write(str(self.peak))
        if self.record:
            with open(self.record, 'w') as f:
                f.writelines(f'{tag} {at!r}\n' for tag, at in self.received)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('port_file')
    ap.add_argument('--delay', type=float, default=0)
    ap.add_argument('--record')
    args = ap.parse_args()
    asyncio.run(Server(args.delay, args.record).run(args.port_file))


if __name__ == '__main__':
    main()
