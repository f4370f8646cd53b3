"""Backlog benchmark: a namespace with two webhooks, one dead and one
healthy. The dead one's endpoint refuses connections (a loopback port
nothing listens on) and has a backlog of 1,000, 100,000 or 1,000,000
deliveries waiting, generated in SQL: half not due yet (their next attempt
within the next 10 hours), half due now (as after a long backoff, when
they all come due and meet the endpoint still down). The healthy one's
endpoint (endpoint.py) notes when each delivery arrives while events are
posted to POST /events at a steady 100 a second, open loop, one per
envelope, each delivered to both webhooks: 15 s measured after a second
of warm-up.

Prints, per run and backlog: the healthy webhook's p50 and p99 from the
time a post was scheduled to the endpoint's receipt, and when the slowest
1% were sent; the claim query's time as PostgreSQL measured the daemon's
own calls (pg_stat_statements, preloaded in the benchmark's cluster: mean
and max of `claim_deliveries`, and calls a second), the same for the
attempt writer (`complete_deliveries`) and the queue gauge's count, and
the dead webhook's attempts a second. Then a table of ranges over runs (BENCH_RUNS, default 2; the
sizes alternate within each run). BENCH_BACKLOG_SIZES overrides the sizes
(comma-separated). reghook runs with its default settings.

The machine is shared: to compare two builds, set BENCH_AB to a second
binary; each size's runs then alternate, $REGHOOK_BIN's first, and each
line names its binary."""

import asyncio
import os
import threading
import time

from common import RUNS, AsyncEndpoint, DurablePostgres, fresh_database, harness
from latency import Sender, arrivals, percentile

SIZES = [int(s) for s in os.environ.get('BENCH_BACKLOG_SIZES', '1000,100000,1000000').split(',')]
RATE = 100
SECONDS = 15
WARMUP = 2  # seconds reghook runs with the backlog before posting starts
WARMUP_POSTS = 1  # seconds of posts left out of the figures (first requests, first plans)


class StatsPostgres(DurablePostgres):
    """The durable cluster, timing every statement the daemon sends; room
    for the generated backlog's WAL without a checkpoint in the middle."""

    SETTINGS = DurablePostgres.SETTINGS + """
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top
max_wal_size = 4GB
"""


def generate(db, size, dead_id):
    """size events of the namespace and a pending delivery of each for the
    dead webhook, half not due (attempt 5 failed, the next within 10
    hours), half due (attempt 3 failed, due within the last hour); then
    VACUUM ANALYZE, as autovacuum does after such a load. Returns seconds
    taken."""
    start = time.monotonic()
    db.psql(generate_sql(size, dead_id))
    return time.monotonic() - start


# The tables' indexes that back no constraint: dropped for the load and made
# again after it (a million rows sorted once instead of inserted one by one).
SECONDARY = """
    SELECT i.indexname, i.indexdef FROM pg_indexes i
    WHERE i.schemaname = 'reghook' AND i.tablename IN ('events', 'deliveries')
      AND NOT EXISTS (SELECT FROM pg_constraint c
                      WHERE c.conindid = format('reghook.%I', i.indexname)::regclass)"""


def generate_sql(size, dead_id):
    """The statements of generate(). The rows are made to satisfy every
    constraint and foreign key; the foreign keys' per-row checks (and the
    NOTIFY trigger: no dispatcher runs yet) are skipped by
    session_replication_role, and keys and callback tokens are made in
    ascending order, so that the unique indexes are filled at their end
    (random ones cost a page read for each row)."""
    return f"""
        SET session_replication_role = replica;
        CREATE TEMP TABLE secondary AS {SECONDARY};
        DO $$ DECLARE i record; BEGIN
            FOR i IN SELECT indexname FROM secondary LOOP
                EXECUTE format('DROP INDEX reghook.%I', i.indexname);
            END LOOP;
        END $$;
        INSERT INTO reghook.events (source_id, event_uuid, namespace_id, repository, name, action,
                                    tag, digest, media_type, request_id, actor, occurred_at,
                                    received_at, raw)
        SELECT s.id, 'backlog-' || lpad(g::text, 8, '0'), n.id, 'team-a/app', 'app', 'push',
               'b' || g, 'sha256:{'ab' * 32}', 'application/vnd.oci.image.manifest.v1+json',
               'req-b' || g, 'alice', now() - interval '2 days', now() - interval '2 days',
               jsonb_build_object('id', 'backlog-' || g)
        FROM generate_series(1, {int(size)}) g,
             reghook.registry_sources s, reghook.namespaces n
        WHERE s.name = 'bench' AND n.name = 'team-a';
        INSERT INTO reghook.deliveries (id, webhook_id, event_id, action, status, attempts,
                                        next_attempt_at, created_at, last_error, callback_token)
        SELECT lpad(to_hex(e.id), 32, '0')::uuid, {int(dead_id)}, e.id, 'push', 'pending',
               CASE WHEN e.id % 2 = 0 THEN 5 ELSE 3 END,
               CASE WHEN e.id % 2 = 0 THEN now() + random() * interval '10 hours'
                    ELSE now() - random() * interval '1 hour' END,
               e.received_at, 'connect: Connection refused',
               'backlog' || lpad(e.id::text, 16, '0')
        FROM reghook.events e;
        DO $$ DECLARE i record; BEGIN
            FOR i IN SELECT indexdef FROM secondary LOOP
                EXECUTE i.indexdef;
            END LOOP;
        END $$;
        RESET session_replication_role;
        UPDATE reghook.webhooks SET failing_since = now() - interval '2 days',
                                    last_failure_at = now(), failures_in_a_row = 1000
        WHERE id = {int(dead_id)};
        VACUUM ANALYZE;"""


def statement_times(db, seconds):
    """{name: (mean ms, max ms, calls a second)} of the daemon's claim,
    attempt writer and queue gauge, since the last reset."""
    out = db.psql("""SELECT CASE WHEN query LIKE '%claim_deliveries%' THEN 'claim'
                                 WHEN query LIKE '%complete_deliveries%' THEN 'complete'
                                 ELSE 'gauge' END,
                            sum(total_exec_time) / sum(calls), max(max_exec_time), sum(calls)
                     FROM pg_stat_statements
                     WHERE query LIKE '%claim_deliveries%' OR query LIKE '%complete_deliveries%'
                        OR query LIKE '%count(*)%FROM reghook.deliveries WHERE status%'
                     GROUP BY 1""")
    times = {}
    for line in out.splitlines():
        name, mean, top, calls = line.split('|')
        times[name] = (float(mean), float(top), int(calls) / seconds)
    return times


def run_once(pg, binary, size, label):
    with fresh_database(pg, f'backlog_{label}') as db:
        endpoint = AsyncEndpoint(record=True)
        rh = harness.Reghook(db.url(), {'log_level': 'warn', 'allow_private_targets': True},
                             bin=binary)
        try:
            endpoint.start()
            rh.run_cli('migrate')
            token = harness.register(rh, 'team-a', name='bench')
            healthy = int(harness.add_webhook(rh, 'team-a', endpoint.url('/hook')))
            dead = int(harness.add_webhook(rh, 'team-a',
                                           f'http://127.0.0.1:{harness.free_port()}/hook'))
            db.psql('CREATE EXTENSION IF NOT EXISTS pg_stat_statements')
            generated = generate(db, size, dead)
            db.psql('CHECKPOINT')  # the load's, before measuring rather than during
            rh.start()
            rh.wait_ready()
            time.sleep(WARMUP)
            sender = Sender(rh.port, token)
            count = RATE * (WARMUP_POSTS + SECONDS)
            # The statements are counted from the end of the posts' warm-up.
            marks = {}
            reset = threading.Timer(WARMUP_POSTS, lambda: marks.update(
                started=time.monotonic(),
                dead=int(db.psql('SELECT pg_stat_statements_reset(); '
                                 'SELECT count(*) FROM reghook.delivery_attempts '
                                 f'WHERE webhook_id = {dead}').split()[-1])))
            reset.start()
            asyncio.run(sender.run(count, RATE))
            reset.join()
            started, dead_before = marks['started'], marks['dead']
            harness.wait_until(
                lambda: int(db.psql(f"""SELECT count(*) FROM reghook.deliveries
                                        WHERE webhook_id = {healthy}
                                          AND status = 'succeeded'""")) >= count,
                timeout=120, msg="the healthy webhook's deliveries")
            elapsed = time.monotonic() - started
            times = statement_times(db, elapsed)
            dead_attempts = int(db.psql(f'SELECT count(*) FROM reghook.delivery_attempts '
                                        f'WHERE webhook_id = {dead}')) - dead_before
            if not rh.running():
                raise RuntimeError(f'reghook exited:\n{rh.log()[-3000:]}')
        finally:
            rh.stop()
            rh.cleanup()
            received = endpoint.stop()
        lost, late = arrivals(sender, received,
                              [f'e{i}' for i in range(RATE * WARMUP_POSTS, count)])
        ms = [x for x, _ in late]
        # When the slowest 1% were sent: one stall, or spread over the run?
        slow = sorted(sender.sent[t] - started for _, t in late[-max(1, len(late) // 100):])
        return {'generated': generated, 'p50': percentile(ms, 50), 'p99': percentile(ms, 99),
                'max': ms[-1], 'lost': lost, 'failures': sender.failures, 'times': times,
                'dead_rate': dead_attempts / elapsed, 'slow': (slow[0], slow[-1])}


def run_once_again(pg, binary, size, label):
    """run_once, made once more if reghook's port was taken before it
    listened (the machine is shared; ports are picked a moment before)."""
    try:
        return run_once(pg, binary, size, label)
    except AssertionError as e:
        if 'Address already in use' not in str(e):
            raise
        print(f'  ({label}: its port was taken; once more)', flush=True)
        return run_once(pg, binary, size, label + '_again')


def describe(r):
    claim, complete = r['times'].get('claim'), r['times'].get('complete')
    gauge = r['times'].get('gauge')
    return (f'generated in {r["generated"]:.1f} s; healthy webhook p50 {r["p50"]:.2f} ms, '
            f'p99 {r["p99"]:.2f} ms, max {r["max"]:.1f} ms (not arrived {r["lost"]}, '
            f'non-200 answers {r["failures"]}; the slowest 1% sent {r["slow"][0]:.1f}-'
            f'{r["slow"][1]:.1f} s into the run); claim mean {claim[0]:.2f} ms, max '
            f'{claim[1]:.1f} ms, {claim[2]:.0f}/s; complete mean {complete[0]:.2f} ms, '
            f'{complete[2]:.0f}/s; queue gauge mean {gauge[0] if gauge else 0:.1f} ms; '
            f'dead webhook attempts {r["dead_rate"]:.0f}/s')


def span(values, fmt):
    return f'{fmt.format(min(values))}-{fmt.format(max(values))}'


def main():
    binaries = [('main', os.environ['REGHOOK_BIN'])]
    if os.environ.get('BENCH_AB'):
        binaries.append(('new', os.environ['BENCH_AB']))
    pg = StatsPostgres()
    try:
        pg.start()
        results = {(label, size): [] for label, _ in binaries for size in SIZES}
        for run in range(RUNS):
            for size in SIZES:
                for label, binary in binaries:
                    r = run_once_again(pg, binary, size, f'{label}_{size}_{run}')
                    results[(label, size)].append(r)
                    print(f'  run {run + 1} {label} {size:>7} waiting: {describe(r)}', flush=True)
        print(f'backlog: a dead webhook with N deliveries waiting (half due, refused), a healthy '
              f'one of the same namespace receiving {RATE} events/s; default settings, durable '
              f'commits; ranges over {RUNS} runs:')
        print(f'  {"binary":6} {"waiting":>9} {"p50 ms":>12} {"p99 ms":>13} '
              f'{"claim ms":>11} {"claims/s":>9} {"dead att/s":>11}')
        for (label, size), rs in results.items():
            claims = [r['times']['claim'] for r in rs]
            print(f'  {label:6} {size:>9} {span([r["p50"] for r in rs], "{:.2f}"):>12} '
                  f'{span([r["p99"] for r in rs], "{:.1f}"):>13} '
                  f'{span([c[0] for c in claims], "{:.2f}"):>11} '
                  f'{span([c[2] for c in claims], "{:.0f}"):>9} '
                  f'{span([r["dead_rate"] for r in rs], "{:.0f}"):>11}')
        print('  targets at 1,000,000 waiting: p50 <= 10 ms, p99 <= 50 ms, claim time within '
              '2x of the 1,000 figure')
    finally:
        pg.destroy()


if __name__ == '__main__':
    main()
