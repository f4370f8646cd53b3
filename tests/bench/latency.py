"""End-to-end latency benchmark: events are posted to POST /events at a
steady 1,000 a second (open loop: each is sent at its time whether or not
earlier ones were answered, over as many keep-alive connections as that
takes), one event per envelope as a registry sends them, each with its own
tag. An endpoint in another process notes when each tag's delivery arrives.
Prints p50 and p99 of arrival minus the time the event was scheduled to be
sent (so that a sender running late, or opening a connection, counts
against the latency as it would for a real registry's event), both read
from time.monotonic() (one clock for every process of the machine), over
SECONDS seconds after a one-second warm-up; RUNS runs (BENCH_RUNS,
default 2). reghook runs with its default settings.

Each run also measures its floor: the same sender posting the same
envelopes at the same rate straight to the same kind of endpoint, with
nothing in between, so that what the benchmark's own processes take (a
sender running late, an endpoint waking up, on a machine whose speed
changes from day to day) is told apart from what reghook adds."""

import asyncio
import time

from common import (AsyncEndpoint, bench_event, bench_reghook, drained, each_run, fresh_database,
                    harness)
from endpoint import read_message

RATE = 1000
SECONDS = 10
WARMUP = 1


def envelope(tag):
    return ('{"events":[' + bench_event(f'latency-{tag}', tag) + ']}').encode()


class Sender:
    """Posts envelopes on a pool of keep-alive connections, opening another
    whenever all are busy, so that a slow answer never delays a send."""

    def __init__(self, port, token, make_envelope=envelope, path='/events'):
        self.port = port
        self.make_envelope = make_envelope
        self.head = (f'POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n'
                     f'Authorization: Bearer {token}\r\n'
                     'Content-Type: application/vnd.docker.distribution.events.v1+json\r\n')
        self.idle = []
        self.sent = {}  # tag -> monotonic time the request was scheduled to be sent
        self.answered = {}  # tag -> monotonic time its answer was read
        self.failures = 0

    async def post(self, tag, scheduled):
        # The clock starts at the scheduled time, before any connection is
        # opened: an open-loop sender's lateness is part of the latency.
        self.sent[tag] = scheduled
        body = self.make_envelope(tag)
        conn = None
        while self.idle and conn is None:
            conn = self.idle.pop()
            if conn[0].at_eof():
                # Closed by reghook after client_timeout idle: as an HTTP
                # client does, the sender does not write on it.
                conn[1].close()
                conn = None
        if conn is None:
            conn = await asyncio.open_connection('127.0.0.1', self.port)
        reader, writer = conn
        writer.write(f'{self.head}Content-Length: {len(body)}\r\n\r\n'.encode() + body)
        head, _ = await read_message(reader)
        self.answered[tag] = time.monotonic()
        if not head.startswith(b'HTTP/1.1 200'):
            self.failures += 1
        self.idle.append(conn)

    async def run(self, count, rate=RATE):
        """Sends count envelopes, tags e0, e1, ..., at rate a second."""
        start = time.monotonic()
        tasks = []
        for i in range(count):
            scheduled = start + i / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.post(f'e{i}', scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
        for _, writer in self.idle:
            writer.close()
        return count / elapsed


def arrivals(sender, received, tags):
    """How many of tags never arrived, and [(ms from the scheduled send to
    the endpoint's receipt, tag)] of the others, fastest first."""
    lost = sum(1 for tag in tags if tag not in received)
    return lost, sorted(((received[t] - sender.sent[t]) * 1000, t) for t in tags if t in received)


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p / 100))]


def floor_once():
    """The sender posting straight to an endpoint: p50 and p99 (ms) from
    the scheduled send to the receipt, with nothing in between."""
    endpoint = AsyncEndpoint(record=True)
    try:
        endpoint.start()
        sender = Sender(endpoint.port, 'floor', path='/hook')
        count = RATE * (WARMUP + SECONDS)
        asyncio.run(sender.run(count))
    finally:
        received = endpoint.stop()
    lost, late = arrivals(sender, received, [f'e{i}' for i in range(RATE * WARMUP, count)])
    if lost:
        raise RuntimeError(f'floor: {lost} posts never reached the endpoint')
    ms = [x for x, _ in late]
    return percentile(ms, 50), percentile(ms, 99)


def run_once(pg, run):
    floor = floor_once()
    with fresh_database(pg, f'latency_{run}') as dbh:
        endpoint = AsyncEndpoint(record=True)
        rh = bench_reghook(dbh)
        try:
            endpoint.start()
            rh.start()
            rh.wait_ready()
            token = harness.register(rh, 'team-a', name='bench')
            harness.add_webhook(rh, 'team-a', endpoint.url('/hook'))
            sender = Sender(rh.port, token)
            count = RATE * (WARMUP + SECONDS)
            rate = asyncio.run(sender.run(count))
            harness.wait_until(lambda: drained(dbh), timeout=120, msg='every delivery to finish')
            # Where the time goes: from the event's transaction to the
            # request's start, for the events after the warm-up (tags e<i>).
            queued = dbh.psql(f"""SELECT percentile_disc(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY
                                      extract(epoch FROM a.attempted_at - e.received_at) * 1000)
                                  FROM reghook.delivery_attempts a
                                  JOIN reghook.deliveries d ON d.id = a.delivery_id
                                  JOIN reghook.events e ON e.id = d.event_id
                                  WHERE substr(e.tag, 2)::int >= {RATE * WARMUP}""").strip()
        finally:
            rh.stop()
            rh.cleanup()
            received = endpoint.stop()
        lost, late = arrivals(sender, received, [f'e{i}' for i in range(RATE * WARMUP, count)])
        ms = [x for x, _ in late]
        return {'rate': rate, 'p50': percentile(ms, 50), 'p99': percentile(ms, 99),
                'max': ms[-1], 'lost': lost, 'failures': sender.failures, 'count': len(ms),
                'queued': [float(x) for x in queued.strip('{}').split(',')], 'floor': floor}


def main():
    results = each_run(run_once, lambda r: (
        f'sent {r["rate"]:.0f} events/s; {r["count"]} deliveries: '
        f'p50 {r["p50"]:.2f} ms, p99 {r["p99"]:.2f} ms, max {r["max"]:.1f} ms '
        f'(not arrived {r["lost"]}, non-200 answers {r["failures"]}); from the '
        f'event\'s transaction to its request: p50 {r["queued"][0]:.2f} ms, '
        f'p99 {r["queued"][1]:.2f} ms; floor (the sender straight to an endpoint) p50 '
        f'{r["floor"][0]:.2f} ms, p99 {r["floor"][1]:.2f} ms'))
    best = min(results, key=lambda r: r['p99'])
    p50s = ', '.join(f'{r["p50"]:.2f}' for r in results)
    p99s = ', '.join(f'{r["p99"]:.2f}' for r in results)
    print(f'latency, POST /events sent to the endpoint\'s receipt, {RATE} events/s, '
          'default settings, durable commits:')
    added = ', '.join(f'{r["p50"] - r["floor"][0]:.2f}' for r in results)
    print(f'  best run: p50 {best["p50"]:.2f} ms, p99 {best["p99"]:.2f} ms '
          f'(targets 5 ms and 20 ms); over runs p50 {p50s} ms, p99 {p99s} ms; '
          f'p50 over the same run\'s floor {added} ms')


if __name__ == '__main__':
    main()
