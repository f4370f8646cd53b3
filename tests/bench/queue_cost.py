"""PostgreSQL's work per event delivered, without HTTP: one connection runs
the statements the daemon runs for a stream of events, in the daemon's
batches, as fast as they go, each statement its own durable transaction:
store a batch of events (ingest()), take their deliveries (handed over by
ingest() with what their requests need; for a build that read them back,
leased_deliveries(); for a build without handing over,
claim_deliveries()), and record one successful attempt each
(complete_deliveries(), with the headers and body of a typical answer). One
webhook matches every event.

Prints, per run and per build, the time and the PostgreSQL CPU per event,
for each step and in all. Nothing else runs meanwhile but the machine's
other load, and only one core's worth of work is asked for, so the figure
varies far less than the pipeline's (where the client, reghook, nginx and
PostgreSQL share two cores). To compare two builds, set BENCH_AB to a
second binary: runs alternate, $REGHOOK_BIN first; BENCH_RUNS runs
(default 2) of each. Each run: BATCHES batches of BATCH events."""

import json
import os
import time

from common import (RUNS, DurablePostgres, fresh_database, harness, prepare_webhook, registry_time,
                    server_cpu)

BATCH = int(os.environ.get('BENCH_BATCH', '50'))
BATCHES = 400
INSTANCE = 'bench'


def batch_json(source_id, run, n):
    return json.dumps([
        {'i': i, 's': source_id, 'id': f'{run}-{n}-{i}', 'action': 'push',
         'repository': 'team-a/app', 'p': ['team-a/app', 'team-a'],
         'tag': f't{n}-{i}', 'digest': 'sha256:' + 'ab' * 32,
         'media_type': 'application/vnd.oci.image.manifest.v1+json',
         'request_id': f'req-{n}-{i}', 'actor': 'alice', 'ts': registry_time(),
         'raw': {'id': f'{run}-{n}-{i}', 'action': 'push'}} for i in range(BATCH)])


def record(delivery_id, attempt, webhook_id):
    """An attempt record as the daemon writes it for a 200 answer."""
    return {'id': delivery_id, 'attempt': attempt, 'webhook_id': webhook_id,
            'attempted_at': time.time() * 1000, 'duration_ms': 1, 'method': 'POST',
            'url': 'http://127.0.0.1:9/hook', 'format': 'dockerhub',
            'request_headers': [['Content-Type', 'application/json'],
                                ['User-Agent', 'reghook'], ['X-Reghook-Event', 'push']],
            'request_body': '{"push_data":{"tag":"t"}}', 'response_status': 200,
            'response_headers': [['Content-Type', 'text/plain'], ['Content-Length', '2']],
            'response_body': '6f6b', 'truncated': False, 'outcome': 'succeeded'}


def run_once(pg, binary, run):
    with fresh_database(pg, f'queue_cost_{run}') as db:
        # The schema is the build's own: its CLI migrates and prepares.
        main_bin = os.environ['REGHOOK_BIN']
        os.environ['REGHOOK_BIN'] = binary
        rh = harness.Reghook(db.url(), {'log_level': 'warn'}, bin=binary)
        try:
            _, source_id = prepare_webhook(db, rh, 'http://127.0.0.1:9/hook')
        finally:
            rh.cleanup()
            os.environ['REGHOOK_BIN'] = main_bin
        conn = db.connect()
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("SELECT count(*) FILTER (WHERE proname = 'leased_deliveries'),"
                    "       count(*) FILTER (WHERE proname = 'job_of') FROM pg_proc")
        hand_over, returned = (n > 0 for n in cur.fetchone())
        spent = {'store': 0.0, 'take': 0.0, 'record': 0.0}
        cpu = server_cpu(pg)
        began = time.monotonic()
        for n in range(BATCHES):
            t0 = time.monotonic()
            if returned:
                cur.execute('SELECT (r.job).delivery_id, (r.job).attempt, (r.job).webhook_id '
                            'FROM reghook.ingest(%s, %s, %s, %s, %s, 10000) r '
                            'WHERE (r.job).delivery_id IS NOT NULL',
                            (batch_json(source_id, run, n), INSTANCE, BATCH * 4, BATCH * 4, '{}'))
                t1 = time.monotonic()
            elif hand_over:
                cur.execute('SELECT handed::text[] FROM reghook.ingest(%s, %s, %s, %s, %s, 10000)',
                            (batch_json(source_id, run, n), INSTANCE, BATCH * 4, BATCH * 4, '{}'))
                ids = [d for (row,) in cur.fetchall() for d in (row or [])]
                t1 = time.monotonic()
                cur.execute('SELECT delivery_id, attempt, webhook_id '
                            'FROM reghook.leased_deliveries(%s, %s::uuid[])', (INSTANCE, ids))
            else:
                cur.execute('SELECT count(*) FROM reghook.ingest(%s)',
                            (batch_json(source_id, run, n),))
                t1 = time.monotonic()
                cur.execute('SELECT delivery_id, attempt, webhook_id '
                            'FROM reghook.claim_deliveries(%s, %s, %s, %s, 10000)',
                            (INSTANCE, BATCH * 4, BATCH * 4, '{}'))
            taken = [record(str(d), a, w) for d, a, w in cur.fetchall()]
            t2 = time.monotonic()
            cur.execute('SELECT * FROM reghook.complete_deliveries(%s, %s)',
                        (INSTANCE, json.dumps(taken)))
            if cur.fetchone()[0] != BATCH:
                raise RuntimeError(f'batch {n}: {len(taken)} taken, not all recorded')
            t3 = time.monotonic()
            spent['store'] += t1 - t0
            spent['take'] += t2 - t1
            spent['record'] += t3 - t2
        elapsed = time.monotonic() - began
        now = server_cpu(pg)
        conn.close()
        events = BATCH * BATCHES
        mode = 'returned by ingest' if returned else 'read back' if hand_over else 'claimed'
        return {'mode': mode, 'us': elapsed * 1e6 / events,
                'cpu_us': sum(t - cpu.get(pid, 0) for pid, t in now.items()) * 1e6 / events,
                **{k: v * 1e6 / events for k, v in spent.items()}}


def main():
    binaries = [('main', os.environ['REGHOOK_BIN'])]
    if os.environ.get('BENCH_AB'):
        binaries.append(('new', os.environ['BENCH_AB']))
    pg = DurablePostgres()
    results = {label: [] for label, _ in binaries}
    try:
        pg.start()
        for run in range(RUNS):
            for label, binary in binaries:
                r = run_once(pg, binary, f'{label}_{run}')
                results[label].append(r)
                print(f'  run {run + 1} {label} ({r["mode"]}):'
                      f' {r["us"]:.0f} us per event (store {r["store"]:.0f}, take {r["take"]:.0f},'
                      f' record {r["record"]:.0f}); PostgreSQL CPU {r["cpu_us"]:.0f} us per event',
                      flush=True)
    finally:
        pg.destroy()
    print(f'queue cost, {BATCHES} batches of {BATCH} events, one webhook, one connection:')
    for label, rs in results.items():
        us = [r['us'] for r in rs]
        cpu = [r['cpu_us'] for r in rs]
        print(f'  {label}: {min(us):.0f}-{max(us):.0f} us per event, PostgreSQL CPU '
              f'{min(cpu):.0f}-{max(cpu):.0f} us per event')


if __name__ == '__main__':
    main()
