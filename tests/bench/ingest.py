"""Ingest benchmark: 32 clients post single-event envelopes to POST /events
for 10 s, as a registry does (one event per request, waiting for the
answer). Prints events/s (events stored in reghook.events per second of
the run; the requests answered per second, non-2xx included, beside it)
and p50/p99 latency at full load and at half of that rate, and, on the
same server in the same run, pgbench's single-row INSERT rate into an
equivalent table at the same concurrency. Then the same peak over HTTPS:
reghook restarted on the same database with a certificate the benchmark
makes (EC P-256, as test_tls.py does), the clients' connections kept
alive as a registry's are (one handshake each), beside the plain figure,
with reghook's own CPU time per event stored in both.

The same event (event.json) is what the clients post and what pgbench
inserts, into a table made like reghook.events (columns, indexes,
constraints and foreign keys). To show where the time goes, it also prints
the machine's CPU time per event of each run, and floors: PostgreSQL
storing the same rows in batches (of 32, and of as many events as reghook
put in a commit at its peak) with no HTTP at all, and the same HTTP
requests answered by nginx with no database. No receiver on this machine
can spend less than the two floors together, which bounds its rate: a
ceiling computed from the two floors, not measured."""

import json
import os
import ssl
import tempfile

from common import (EVENT_TEMPLATE, HERE, DurablePostgres, Nginx, bench_event, harness, pgbench,
                    registry_time, wrk)

CLIENTS = 32
SECONDS = 10
FULL_BATCH = CLIENTS  # the most events a commit can hold with 32 clients waiting
CONNECTIONS = int(os.environ.get('BENCH_DB_CONNECTIONS', '2'))  # 2: reghook's default
COLUMNS = ('source_id, event_uuid, namespace_id, repository, name, action, tag, digest, '
           'media_type, request_id, actor, occurred_at, raw')


def busy_seconds():
    """CPU time the whole machine has spent busy (all cores), in seconds:
    user, nice, system, irq, softirq; not idle, iowait, or steal (time the
    hypervisor gave to others)."""
    with open('/proc/stat') as f:
        user, nice, system, _, _, irq, softirq = (int(v) for v in f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf('SC_CLK_TCK')


def process_seconds(pid):
    """CPU time (user and system) a process has used, in seconds."""
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def measured(run):
    """Calls run(); returns its result and the machine's busy CPU seconds meanwhile."""
    before = busy_seconds()
    result = run()
    return result, busy_seconds() - before


def sql_literal(text):
    return "'" + text.replace("'", "''") + "'"


def insert_scripts(pg, source_id, namespace_id, batches):
    """pgbench scripts storing event.json as reghook would: one row per
    transaction, and for each size in batches, that many rows per
    INSERT ... ON CONFLICT DO NOTHING."""
    template = EVENT_TEMPLATE.replace('@TIME@', registry_time())
    event = json.loads(bench_event('id', 'tag'))
    target = event['target']
    raw_type = pg.psql("""SELECT format_type(atttypid, atttypmod) FROM pg_attribute
        WHERE attrelid = 'reghook.events'::regclass AND attname = 'raw'""").strip()

    def values(event_id, tag):
        raw = (f"replace(replace({sql_literal(template)}, '@ID@', {event_id}), "
               f"'@TAG@', {tag})::{raw_type}")
        return (f"{source_id}, {event_id}, {namespace_id}, {sql_literal(target['repository'])}, "
                f"'app', 'push', {tag}, {sql_literal(target['digest'])}, "
                f"{sql_literal(target['mediaType'])}, {event_id}, "
                f"{sql_literal(event['actor']['name'])}, {sql_literal(event['timestamp'])}, {raw}")

    # pgbench fills in :client_id, :ra and :rb, also inside the quotes (in
    # its default simple protocol, which pgbench() uses; not with -M prepared).
    head = '\\set ra random(1, 1000000000)\n\\set rb random(1, 1000000000)\n'
    single = (head + f'INSERT INTO bench_events ({COLUMNS}) VALUES ('
              + values("'bench-:client_id-:ra-:rb'", "'t:ra'") + ');\n')
    batch = {n: head + f'INSERT INTO bench_events ({COLUMNS}) SELECT '
             + values("'bench-:client_id-:ra-:rb-' || g", "'t' || g")
             + f' FROM generate_series(1, {n}) g'
             + ' ON CONFLICT (source_id, event_uuid) DO NOTHING;\n'
             for n in batches}
    return single, batch


def equivalent_table(pg):
    """bench_events: reghook.events' columns, defaults, indexes, checks, and
    its foreign keys (which LIKE does not copy)."""
    fkeys = pg.psql("""SELECT pg_get_constraintdef(oid) FROM pg_constraint
                       WHERE conrelid = 'reghook.events'::regclass AND contype = 'f'""").split('\n')
    pg.psql('CREATE TABLE bench_events (LIKE reghook.events INCLUDING ALL)')
    for fk in filter(None, fkeys):
        pg.psql(f'ALTER TABLE bench_events ADD {fk}')


def per_event_us(cpu, events):
    return cpu / events * 1e6


def tls_peak(pg, token, script, directory):
    """The peak run again against a reghook serving HTTPS on the same
    database: (wrk's result, events stored, the machine's CPU seconds,
    reghook's own CPU seconds)."""
    from test_tls import TestCA
    cert = TestCA(directory, 'bench-ca').issue('bench')
    rh = harness.Reghook(pg.url(), {'log_level': 'warn', 'db_connections': CONNECTIONS,
                                    'tls_cert_file': cert.cert, 'tls_key_file': cert.key},
                         ssl_context=ssl._create_unverified_context())
    try:
        rh.start()
        rh.wait_ready()
        url = rh.url('/')
        wrk(url, 2, CLIENTS, script, token, 'tls-warm-up')
        pg.psql('TRUNCATE reghook.events CASCADE')
        own = process_seconds(rh.proc.pid)
        peak, cpu = measured(lambda: wrk(url, SECONDS, CLIENTS, script, token, 'tls-peak'))
        own = process_seconds(rh.proc.pid) - own
        stored = int(pg.psql('SELECT count(*) FROM reghook.events').strip())
        return peak, stored, cpu, own
    finally:
        rh.stop()
        rh.cleanup()


def main():
    pg = DurablePostgres()
    rh = nginx = None
    try:
        pg.start()
        rh = harness.Reghook(pg.url(), {'log_level': 'warn', 'db_connections': CONNECTIONS})
        rh.start()
        rh.wait_ready()
        rh.run_cli('namespace', 'add', 'team-a')
        out = rh.run_cli('registry', 'add', 'bench').stdout
        token = next(w for w in out.split() if w.startswith('rgh_'))
        script = os.path.join(HERE, 'post_event.lua')
        url = rh.url('/')

        wrk(url, 2, CLIENTS, script, token, 'warm-up')
        pg.psql('TRUNCATE reghook.events CASCADE')
        own = process_seconds(rh.proc.pid)
        peak, peak_cpu = measured(lambda: wrk(url, SECONDS, CLIENTS, script, token, 'peak'))
        own = process_seconds(rh.proc.pid) - own
        peak_rate = peak['requests'] / (peak['duration_us'] / 1e6)
        # Rows written by one transaction share its xmin.
        peak_stored, commits = map(int, pg.psql(
            'SELECT count(*), count(DISTINCT xmin::text) FROM reghook.events').split('|'))
        if commits == 0:
            raise RuntimeError(f'nothing stored at the peak: {peak}\n{rh.log()[-3000:]}')
        # Half the peak: each connection pauses between its requests so that
        # all together make half as many. A short run first tells how long a
        # request takes at about that rate, which the pause leaves out.
        cycle_ms = CLIENTS * 1000 / (peak_rate / 2)
        probe = wrk(url, 3, CLIENTS, script, token, 'probe', str(int(cycle_ms)))
        probe_rate = probe['requests'] / (probe['duration_us'] / 1e6)
        took_ms = CLIENTS * 1000 / probe_rate - int(cycle_ms)
        pause_ms = max(1, round(cycle_ms - max(0, took_ms)))
        before_half = int(pg.psql('SELECT count(*) FROM reghook.events').strip())
        half = wrk(url, SECONDS, CLIENTS, script, token, 'half', str(pause_ms))
        half_rate = half['requests'] / (half['duration_us'] / 1e6)
        stored = int(pg.psql('SELECT count(*) FROM reghook.events').strip())
        # The headline rates: events stored, not requests answered (a 4xx or
        # 5xx answer is quick and stores nothing). The rows counted may
        # include the last requests in flight when wrk stops its clock (at
        # most one per client).
        peak_stored_rate = peak_stored / (peak['duration_us'] / 1e6)
        half_stored_rate = (stored - before_half) / (half['duration_us'] / 1e6)
        sent = peak['requests'] + probe['requests'] + half['requests']
        rh.stop()
        tls, tls_stored, tls_cpu, tls_own = tls_peak(pg, token, script,
                                                     tempfile.mkdtemp(dir=pg.dir))
        tls_stored_rate = tls_stored / (tls['duration_us'] / 1e6)
        tls_rate = tls['requests'] / (tls['duration_us'] / 1e6)

        ids = pg.psql("""SELECT (SELECT id FROM reghook.registry_sources WHERE name = 'bench'),
                                (SELECT id FROM reghook.namespaces WHERE name = 'team-a')""")
        # PostgreSQL alone: full batches, and batches of the size reghook reached.
        sizes = sorted({FULL_BATCH, max(1, round(peak_stored / commits))}, reverse=True)
        single, batch = insert_scripts(pg, *ids.strip().split('|'), sizes)
        equivalent_table(pg)
        tps, single_cpu = measured(lambda: pgbench(pg, single, SECONDS, CLIENTS))
        floors = []
        for n in sizes:
            batch_tps, batch_cpu = measured(lambda: pgbench(pg, batch[n], SECONDS, CONNECTIONS))
            floors.append((n, batch_tps * n, per_event_us(batch_cpu, batch_tps * n * SECONDS)))

        nginx = Nginx()
        nginx.start()
        http, http_cpu = measured(lambda: wrk(nginx.url(), SECONDS, CLIENTS, script, token,
                                              'nginx'))
        http_rate = http['requests'] / (http['duration_us'] / 1e6)

        cores = len(os.sched_getaffinity(0))
        us_ingest = per_event_us(peak_cpu, peak_stored)
        us_http = per_event_us(http_cpu, http['requests'])

        print(f'ingest, {CLIENTS} clients, single-event envelopes, durable commits:')
        print(f'  peak:      {peak_stored_rate:9.0f} events/s stored  '
              f'p50 {peak["p50_us"] / 1000:6.2f} ms  p99 {peak["p99_us"] / 1000:6.2f} ms  '
              f'CPU {us_ingest:5.1f} us/event stored  ({peak_rate:.0f} requests/s answered, '
              f'non-2xx {peak["non2xx"]}, errors {peak["errors"]})')
        print(f'  half rate: {half_stored_rate:9.0f} events/s stored  '
              f'p50 {half["p50_us"] / 1000:6.2f} ms  p99 {half["p99_us"] / 1000:6.2f} ms  '
              f'({half_rate:.0f} requests/s answered, non-2xx {half["non2xx"]}, '
              f'errors {half["errors"]})')
        print(f'  peak over HTTPS (connections kept alive): {tls_stored_rate:9.0f} events/s '
              f'stored  p50 {tls["p50_us"] / 1000:6.2f} ms  p99 {tls["p99_us"] / 1000:6.2f} ms  '
              f'CPU {per_event_us(tls_cpu, tls_stored):5.1f} us/event stored  '
              f'({tls_rate:.0f} requests/s answered, non-2xx {tls["non2xx"]}, '
              f'errors {tls["errors"]})')
        print(f'  ratio HTTPS / plain HTTP at the peak (stored): '
              f'{tls_stored_rate / peak_stored_rate:.2f}x; reghook\'s own CPU per event stored: '
              f'{per_event_us(own, peak_stored):.1f} us plain, '
              f'{per_event_us(tls_own, tls_stored):.1f} us over HTTPS')
        print(f'  pgbench single-row INSERT of the same event, {CLIENTS} clients: '
              f'{tps:9.0f} rows/s  CPU {per_event_us(single_cpu, tps * SECONDS):5.1f} us/row')
        print(f'  ratio peak (stored) / pgbench: {peak_stored_rate / tps:.2f}x')
        print(f'  events stored: {stored} of {sent} answered; at peak {peak_stored} in '
              f'{commits} commits ({peak_stored / commits:.1f} events per commit)')
        print(f'floors on this machine ({cores} cores shared by client, receiver and PostgreSQL):')
        for n, rows, us_db in floors:
            print(f'  PostgreSQL alone, {n:2d} rows per INSERT, {CONNECTIONS} connections: '
                  f'{rows:9.0f} rows/s  CPU {us_db:5.1f} us/row')
        print(f'  HTTP alone, the same requests to nginx: {http_rate:9.0f} requests/s  '
              f'CPU {us_http:5.1f} us/request')
        for n, _, us_db in floors:
            ceiling = cores / ((us_db + us_http) / 1e6)
            print(f'  ceiling for any receiver with {n:2d} events per commit, computed (not '
                  f'measured) from both floors\' CPU per event with all {cores} cores busy: '
                  f'{ceiling:9.0f} events/s = {ceiling / tps:.2f}x pgbench')
    finally:
        if rh:
            rh.stop()
            rh.cleanup()
        if nginx:
            nginx.stop()
        pg.destroy()


if __name__ == '__main__':
    main()
