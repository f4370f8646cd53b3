"""Ingest benchmark: 32 clients post single-event envelopes to POST /events
for 10 s, as a registry does (one event per request, waiting for the
answer). Prints events/s and p50/p99 latency at full load and at half of
that rate, and, on the same server in the same run, pgbench's single-row
INSERT rate into an equivalent table at the same concurrency."""

import os

from common import HERE, DurablePostgres, harness, pgbench, wrk

CLIENTS = 32
SECONDS = 10

INSERT_SQL = """INSERT INTO bench_events (source_id, event_uuid, namespace_id, repository, name,
    action, tag, digest, media_type, request_id, actor, occurred_at, raw)
VALUES (1, gen_random_uuid()::text, 1, 'team-a/app', 'app', 'push', 'latest',
    'sha256:33d33c66ce742601e7b4219cce65aa7ecbd527d207a1e962c0f5bcb738284f43',
    'application/vnd.oci.image.manifest.v1+json', gen_random_uuid()::text, 'alice', now(),
    '{"id":"x","action":"push","target":{"repository":"team-a/app","tag":"latest"}}');
"""


def main():
    pg = DurablePostgres()
    rh = None
    try:
        pg.start()
        rh = harness.Reghook(pg.url(), {'log_level': 'warn',
                                         'db_connections': os.environ.get('BENCH_DB_CONNECTIONS', '2')})
        rh.start()
        rh.wait_ready()
        rh.run_cli('namespace', 'add', 'team-a')
        out = rh.run_cli('registry', 'add', 'bench').stdout
        token = next(w for w in out.split() if w.startswith('rgh_'))
        script = os.path.join(HERE, 'post_event.lua')
        url = rh.url('/')

        wrk(url, 2, CLIENTS, script, token)  # warm-up
        peak = wrk(url, SECONDS, CLIENTS, script, token)
        peak_rate = peak['requests'] / (peak['duration_us'] / 1e6)
        # Half the peak: each connection pauses so that all together make half as many.
        pause_ms = max(1, int(CLIENTS * 1000 / (peak_rate / 2)))
        half = wrk(url, SECONDS, CLIENTS, script, token, str(pause_ms))
        half_rate = half['requests'] / (half['duration_us'] / 1e6)
        stored = int(pg.psql('SELECT count(*) FROM reghook.events').strip())

        pg.psql('CREATE TABLE bench_events (LIKE reghook.events INCLUDING ALL)')
        tps = pgbench(pg, INSERT_SQL, SECONDS, CLIENTS)

        print(f'ingest, {CLIENTS} clients, single-event envelopes, durable commits:')
        print(f'  peak:      {peak_rate:9.0f} events/s  p50 {peak["p50_us"] / 1000:6.2f} ms  '
              f'p99 {peak["p99_us"] / 1000:6.2f} ms  (non-2xx {peak["non2xx"]}, '
              f'errors {peak["errors"]})')
        print(f'  half rate: {half_rate:9.0f} events/s  p50 {half["p50_us"] / 1000:6.2f} ms  '
              f'p99 {half["p99_us"] / 1000:6.2f} ms  (non-2xx {half["non2xx"]})')
        print(f'  pgbench single-row INSERT, {CLIENTS} clients: {tps:9.0f} rows/s')
        print(f'  ratio peak / pgbench: {peak_rate / tps:.2f}x')
        print(f'  events stored: {stored}')
    finally:
        if rh:
            rh.stop()
            rh.cleanup()
        pg.destroy()


if __name__ == '__main__':
    main()
