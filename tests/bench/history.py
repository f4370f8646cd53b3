"""History benchmark: a database with 30 days of history for a busy
registry (HISTORY_ATTEMPTS attempt rows, default 10,000,000, with their
deliveries and events: history_data.sql makes them in SQL, over 1,000
webhooks in 50 namespaces), then

- every query of README's Cookbook, run as the role it names (a login role
  with that access to the namespace of webhook 7, so row-level security is
  in effect), each QUERY_RUNS times: min and median time as the client sees
  it (a statement that changes something runs in a transaction rolled
  back), and its plan (EXPLAIN ANALYZE as the same role), which must reach
  deliveries, attempts and events through indexes;
- retention: reghook (default settings but history_retention) while a
  paced client posts RATE events a second: first with a retention that
  prunes nothing, then with one a day shorter, so that the janitor prunes a
  day's expiry (1/30 of the history) while events arrive, then CYCLES more
  such days; the ingest latency (a request's scheduled send to its answer)
  p50 and p99 without and with pruning, and the tables' sizes
  (pg_total_relation_size) and dead rows after each day.

The history is made once (the time it took is printed); the Cookbook is
timed BENCH_RUNS times over it (default 2), and the days pruned give the
range of the figures with pruning. HISTORY_ATTEMPTS, HISTORY_CYCLES (days
pruned after the first, default 3) and HISTORY_PRUNE_SECONDS (how long a
day's pruning may take before the benchmark moves on, default 240) change
its size. To compare two builds' pruning, set BENCH_AB to a second
binary: the days pruned alternate between the two, REGHOOK_BIN's first."""

import asyncio
import os
import statistics
import subprocess
import threading
import time

from common import (HERE, RUNS, DurablePostgres, Nginx, bench_event, bench_reghook, fresh_database,
                    harness)
from latency import Sender, percentile

ATTEMPTS = int(os.environ.get('HISTORY_ATTEMPTS', '10000000'))
QUERY_RUNS = 7
TARGET_MS = 10
RATE = 500
BASELINE_SECONDS = 20
PRUNE_SECONDS_MAX = int(os.environ.get('HISTORY_PRUNE_SECONDS', '240'))
CYCLES = int(os.environ.get('HISTORY_CYCLES', '3'))
TABLES = ('events', 'deliveries', 'delivery_attempts')
EXAMPLE_DELIVERY = '6f1c0a52-8a53-4a4f-9c55-0d8e1c7f3b21'
ROLES = {'viewer': 'hist_viewer', 'contributor': 'hist_contributor', 'owner': 'hist_owner',
         'admin': 'hist_admin'}


# --- the history ------------------------------------------------------------------


def table_keys(db):
    """(drop, make): statements that drop the indexes, primary keys, unique
    constraints and foreign keys of TABLES, and that make them again as
    they were."""
    rows = db.psql("""
        SELECT 'ALTER TABLE ' || c.conrelid::regclass || ' DROP CONSTRAINT ' || quote_ident(c.conname),
               'ALTER TABLE ' || c.conrelid::regclass || ' ADD CONSTRAINT ' || quote_ident(c.conname) || ' '
                   || pg_get_constraintdef(c.oid), c.contype
        FROM pg_constraint c
        WHERE c.contype IN ('p', 'u', 'f')
          AND (c.conrelid::regclass::text = ANY (ARRAY['reghook.events', 'reghook.deliveries',
                                                        'reghook.delivery_attempts'])
               OR c.confrelid::regclass::text = ANY (ARRAY['reghook.events', 'reghook.deliveries']))
        ORDER BY c.contype = 'f' DESC;""").splitlines()
    indexes = db.psql("""
        SELECT 'DROP INDEX ' || i.indexrelid::regclass, pg_get_indexdef(i.indexrelid)
        FROM pg_index i
        WHERE i.indrelid::regclass::text = ANY (ARRAY['reghook.events', 'reghook.deliveries',
                                                      'reghook.delivery_attempts'])
          AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid);""").splitlines()
    cons = [r.split('|') for r in rows if r]
    idx = [r.split('|') for r in indexes if r]
    drop = [c[0] for c in cons] + [i[0] for i in idx]
    # Keys first (the foreign keys need them), foreign keys last.
    make = ([c[1] for c in cons if c[2] != 'f'] + [i[1] for i in idx]
            + [c[1] for c in cons if c[2] == 'f'])
    return drop, make


def psql(db, path, wait=True, **variables):
    """psql -f path with -v NAME=VALUE for each variable; its process if not wait."""
    argv = ['/usr/bin/psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', db.url(), '-f', path]
    for name, value in variables.items():
        argv[1:1] = ['-v', f'{name}={value}']
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**harness.child_env(), 'PGOPTIONS': '-c jit=off'})
    if wait and proc.wait() != 0:
        raise RuntimeError(f'{path} failed: {proc.stderr.read()}')
    return proc


def parallel_psql(db, statements):
    """Runs the statements on two connections at once (the machine's two
    cores), each statement in its own transaction."""
    halves = [statements[0::2], statements[1::2]]
    procs = [subprocess.Popen(['/usr/bin/psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', db.url()],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=harness.child_env())
             for _ in halves]
    errors = []
    for proc, half in zip(procs, halves):
        proc.stdin.write("SET maintenance_work_mem = '512MB';\n"
                         + ''.join(s + ';\n' for s in half))
        proc.stdin.close()
    for proc in procs:
        if proc.wait() != 0:
            errors.append(proc.stderr.read())
    if errors:
        raise RuntimeError('\n'.join(errors))


def make_history(db, rh, attempts):
    """Makes the history; returns the seconds each step took."""
    rh.run_cli('migrate')
    harness.register(rh, name='bench')
    source = int(db.psql("SELECT id FROM reghook.registry_sources WHERE name = 'bench'"))
    events = round(attempts / 2 / 1.18)
    took = {}
    start = time.monotonic()
    drop, make = table_keys(db)
    db.psql(';\n'.join(drop) + ';')
    data = os.path.join(HERE, 'history_data.sql')
    psql(db, data, events=events, source=source, first=1, last=1)  # the namespaces and webhooks
    half = events // 2
    procs = [psql(db, data, wait=False, events=events, source=source, first=first, last=last)
             for first, last in ((2, half), (half + 1, events))]
    for proc in procs:
        if proc.wait() != 0:
            raise RuntimeError(f'history_data.sql failed: {proc.stderr.read()}')
    db.psql(f"SELECT setval(pg_get_serial_sequence('reghook.events', 'id'), {events})")
    took['rows'] = time.monotonic() - start
    mark = time.monotonic()
    parallel_psql(db, [s for s in make if 'FOREIGN KEY' not in s])
    parallel_psql(db, [s for s in make if 'FOREIGN KEY' in s])
    took['indexes and keys'] = time.monotonic() - mark
    mark = time.monotonic()
    # As autovacuum would have left a history made over 30 days.
    parallel_psql(db, [f'VACUUM (ANALYZE) reghook.{t}' for t in TABLES]
                  + ['VACUUM (ANALYZE) reghook.webhooks', 'VACUUM (ANALYZE) reghook.namespaces'])
    took['vacuum and analyze'] = time.monotonic() - mark
    took['total'] = time.monotonic() - start
    return took


def counts(db):
    out = db.psql("""SELECT (SELECT count(*) FROM reghook.events), (SELECT count(*) FROM reghook.deliveries),
                            (SELECT count(*) FROM reghook.delivery_attempts)""").strip().split('|')
    return dict(zip(TABLES, map(int, out)))


def sizes(db):
    """pg_total_relation_size of TABLES in MiB, and their dead rows."""
    out = db.psql("""SELECT relname, pg_total_relation_size(relid) / 1048576.0, n_dead_tup, autovacuum_count
                     FROM pg_stat_user_tables WHERE schemaname = 'reghook'
                       AND relname IN ('events', 'deliveries', 'delivery_attempts')""")
    return {r.split('|')[0]: (float(r.split('|')[1]), int(r.split('|')[2]), int(r.split('|')[3]))
            for r in out.splitlines() if r}


# --- the Cookbook ---------------------------------------------------------------------


def cookbook_queries(db):
    """README's Cookbook as (role, title, [(sql, as a role that may create
    roles)]), its example delivery and namespace made ones of this history."""
    from test_cookbook import cookbook
    delivery = db.psql("""SELECT id FROM reghook.deliveries WHERE webhook_id = 7 AND status = 'succeeded'
                          AND attempts >= 2 ORDER BY created_at DESC LIMIT 1""").strip()
    return [(role, title, [(sql.replace(EXAMPLE_DELIVERY, delivery).replace("'team-a'", "'team-00'"), creates)
                           for sql, creates in statements])
            for role, title, statements in cookbook()]


def make_roles(db):
    for kind, role in ROLES.items():
        db.psql(f"""DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;""")
        if kind == 'admin':
            db.psql(f"GRANT {db.group_role('admin')} TO {role}")
        else:
            db.psql(f"SELECT reghook.namespace_grant('team-00', '{role}', '{kind}')")


def timed(conn, sql):
    start = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(sql)
        if cur.description:
            cur.fetchall()
    ms = (time.perf_counter() - start) * 1000
    conn.rollback()
    return ms


def plan_of(conn, sql):
    with conn.cursor() as cur:
        cur.execute('EXPLAIN (ANALYZE, BUFFERS) ' + sql)
        lines = [r[0] for r in cur.fetchall()]
    conn.rollback()
    return lines


def cookbook_times(db):
    """{title: (min ms, median ms, plan lines or None, seq scans of the big tables)}."""
    import psycopg2
    make_roles(db)
    results = {}
    for role, title, statements in cookbook_queries(db):
        conn = psycopg2.connect(db.url(ROLES[role]))
        try:
            for sql, creates in statements:
                if creates:  # CREATE ROLE, by a role that may: not part of the query timed
                    code = sql.split('--')[0].strip().rstrip(';')
                    db.psql(f"DO $$ BEGIN {code}; EXCEPTION WHEN duplicate_object THEN NULL; END $$;")
                    continue
                times = sorted(timed(conn, sql) for _ in range(QUERY_RUNS))
                plan = plan_of(conn, sql) if sql.lstrip().upper().startswith('SELECT') else None
                seq = [line.strip() for line in plan or ()
                       if any(f'Seq Scan on {t} ' in line for t in TABLES)]
                results[title] = (times[0], statistics.median(times), plan, seq)
        finally:
            conn.close()
    db.psql('DROP ROLE IF EXISTS team_a_ci')
    return results


# --- retention ------------------------------------------------------------------------


class IngestSender(Sender):
    """latency.py's Sender posting events of namespace team-07 (whose two
    webhooks then deliver to nginx); a connection closed or refused counts
    as a failure of its own (dropped), apart from answers other than 200."""

    def __init__(self, token, prefix):
        super().__init__(None, token, make_envelope=ingest_envelope)
        self.prefix = prefix
        self.dropped = 0

    async def post(self, tag, scheduled):
        try:
            await super().post(tag, scheduled)
        except (OSError, asyncio.IncompleteReadError):
            self.dropped += 1


def ingest_envelope(tag):
    event = bench_event(f'history-{tag}', tag).replace('team-a/app', 'team-07/app-3')
    return ('{"events":[' + event + ']}').encode()


async def post_until(sender, stop, seconds):
    """Posts RATE envelopes a second until stop is set or seconds pass;
    returns their tags."""
    start = time.monotonic()
    tasks, tags = [], []
    i = 0
    while not stop.is_set() and time.monotonic() - start < seconds:
        scheduled = start + i / RATE
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tag = f'{sender.prefix}{i}'
        tags.append(tag)
        tasks.append(asyncio.create_task(sender.post(tag, scheduled)))
        i += 1
    await asyncio.gather(*tasks)
    for _, writer in sender.idle:
        writer.close()
    sender.idle.clear()
    return tags


def latencies(sender, tags):
    ms = sorted((sender.answered[t] - sender.sent[t]) * 1000 for t in tags if t in sender.answered)
    if not ms:
        return None
    return {'n': len(ms), 'p50': percentile(ms, 50), 'p99': percentile(ms, 99), 'max': ms[-1]}


def oldest_finished(db):
    return float(db.psql("""SELECT extract(epoch FROM now() - min(completed_at)) / 86400
                            FROM reghook.deliveries WHERE status IN ('succeeded', 'failed')""") or 0)


def wal_bytes(db):
    return int(db.psql('SELECT wal_bytes FROM pg_stat_wal'))


def prune_day(pg, db, nginx, token, retention_days, label, build, binary):
    """reghook (binary, called build) with history_retention retention_days, RATE events
    a second posted until the janitor has pruned what is older (or
    PRUNE_SECONDS_MAX pass), and 5 s more; returns latencies during and
    after pruning, how long it took and the WAL written meanwhile."""
    rh = bench_reghook(db, {'history_retention': f'{retention_days}d'}, binary)
    wal_before = wal_bytes(db)
    sender = IngestSender(token, f'{label}-{build}-')
    stop = threading.Event()
    progress = []  # (monotonic, days of the oldest finished delivery)

    def watch():
        pruned_at = None
        while not stop.is_set():
            days = oldest_finished(db)
            progress.append((time.monotonic(), days))
            if pruned_at is None and days <= retention_days + 0.001:
                pruned_at = time.monotonic()
            if pruned_at is not None and time.monotonic() - pruned_at > 5:
                stop.set()
            time.sleep(0.5)
    try:
        rh.start()
        rh.wait_ready()
        sender.port = rh.port
        started = time.monotonic()
        watcher = threading.Thread(target=watch)
        watcher.start()
        tags = asyncio.run(post_until(sender, stop, PRUNE_SECONDS_MAX))
        stop.set()
        watcher.join()
    finally:
        rh.stop()
        rh.cleanup()
    wal = wal_bytes(db) - wal_before
    done = next((t for t, days in progress if days <= retention_days + 0.001), None)
    during = [t for t in tags if done is None or sender.sent[t] < done]
    after = [t for t in tags if done is not None and sender.sent[t] >= done]
    return {'prune_s': None if done is None else done - started, 'oldest_days': progress[-1][1] if progress else None,
            'during': latencies(sender, during),
            'after': latencies(sender, after), 'failures': sender.failures,
            'dropped': sender.dropped, 'build': build, 'wal_mib': wal / 2**20}


def baseline(db, token):
    """RATE events a second for BASELINE_SECONDS with nothing to prune."""
    rh = bench_reghook(db, {'history_retention': '31d'})
    sender = IngestSender(token, 'base-')
    try:
        rh.start()
        rh.wait_ready()
        sender.port = rh.port
        tags = asyncio.run(post_until(sender, threading.Event(), BASELINE_SECONDS))
    finally:
        rh.stop()
        rh.cleanup()
    return {'during': latencies(sender, tags), 'failures': sender.failures,
            'dropped': sender.dropped}


def dirty_mib():
    with open('/proc/meminfo') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('Dirty:')) // 1024


def writeback_settings():
    """The kernel's writeback of dirty pages, which sets when PostgreSQL's
    data files go to the disk that its WAL flushes wait on (README,
    Benchmarks: a burst every dirty_writeback_centisecs of what has been
    dirty for dirty_expire_centisecs)."""
    values = []
    for name in ('dirty_expire_centisecs', 'dirty_writeback_centisecs', 'dirty_background_bytes',
                 'dirty_background_ratio'):
        with open(f'/proc/sys/vm/{name}') as f:
            values.append(f'vm.{name} {f.read().strip()}')
    return ', '.join(values)


def settle(db, label):
    """A CHECKPOINT, then the kernel's writeback of what it left dirty, so
    that a phase does not pay for the writes of the one before (making the
    history leaves gigabytes to write: the ingest's p99 with nothing to
    prune was 470 ms in a run without this)."""
    start, dirty = time.monotonic(), dirty_mib()
    db.psql('CHECKPOINT')
    os.sync()
    print(f'  [{label}] settled in {time.monotonic() - start:.1f} s ({dirty} MiB dirty before)',
          flush=True)


def retention(pg, db, nginx):
    # Deliveries of the events posted go to nginx.
    db.psql(f"UPDATE reghook.webhooks SET url = '{nginx.url('/')}' || 'hook-' || id")
    rh = bench_reghook(db)
    out = rh.run_cli('registry', 'add', 'ingest').stdout
    token = next(w for w in out.split() if w.startswith('rgh_'))
    rh.cleanup()
    settle(db, 'baseline')
    # Read as the phases start, not when they are printed: the host's to change.
    result = {'writeback': writeback_settings(), 'baseline': baseline(db, token), 'days': []}
    result['sizes'] = [sizes(db)]
    binaries = [('main', os.environ['REGHOOK_BIN'])]
    if os.environ.get('BENCH_AB'):
        binaries.append(('new', os.environ['BENCH_AB']))
    for day in range(1 + CYCLES):
        settle(db, f'day{day}')
        build, binary = binaries[day % len(binaries)]
        result['days'].append(prune_day(pg, db, nginx, token, 29 - day, f'day{day}', build, binary))
        result['sizes'].append(sizes(db))
    return result


# --- the run -----------------------------------------------------------------------


def describe_retention(k):
    b = k['baseline']['during']
    lines = [f'kernel writeback: {k["writeback"]}',
             f'ingest at {RATE}/s, nothing to prune: p50 {b["p50"]:.2f} ms, p99 {b["p99"]:.2f} ms '
             f'({b["n"]} requests, non-200 {k["baseline"]["failures"]}, connections dropped '
             f'{k["baseline"]["dropped"]})']
    for i, d in enumerate(k['days']):
        dur, aft = d['during'], d['after']
        lines.append(f'day {i + 1} ({d["build"]}) pruned in '
                     + (f'(not done in {PRUNE_SECONDS_MAX} s: oldest {d["oldest_days"]:.2f} days)'
                        if d['prune_s'] is None else f'{d["prune_s"]:.1f} s')
                     + (f': ingest while pruning p50 {dur["p50"]:.2f} ms, p99 {dur["p99"]:.2f} ms, '
                        f'max {dur["max"]:.1f} ms ({dur["n"]} requests)' if dur else '')
                     + (f'; after it p50 {aft["p50"]:.2f} ms, p99 {aft["p99"]:.2f} ms' if aft else '')
                     + f'; non-200 {d["failures"]}, connections dropped {d["dropped"]}; '
                     f'WAL {d["wal_mib"]:.0f} MiB')
    for i, s in enumerate(k['sizes']):
        lines.append(f'sizes {"before" if i == 0 else f"after day {i}"}: '
                     + ', '.join(f'{t} {s[t][0]:.0f} MiB ({s[t][1]:,} dead, {s[t][2]} autovacuums)'
                                 for t in TABLES))
    return '\n  '.join(lines)


def main():
    """One history (making it takes minutes), RUNS passes of the Cookbook
    over it, then the retention phases."""
    pg = DurablePostgres()
    nginx = Nginx()
    try:
        pg.start()
        with fresh_database(pg, 'history') as db:
            rh = bench_reghook(db)
            try:
                took = make_history(db, rh, ATTEMPTS)
            finally:
                rh.cleanup()
            rows = counts(db)
            print(f'history: {rows["events"]:,} events, {rows["deliveries"]:,} deliveries, '
                  f'{rows["delivery_attempts"]:,} attempts, made in {took["total"]:.0f} s ('
                  + ', '.join(f'{k} {v:.0f} s' for k, v in took.items() if k != 'total') + ')', flush=True)
            passes = []
            for run in range(RUNS):
                passes.append(cookbook_times(db))
                print(f'Cookbook, pass {run + 1}, as the roles the queries name:', flush=True)
                for title, (lo, med, plan, seq) in passes[-1].items():
                    print(f'  {title}: min {lo:.2f} ms, median {med:.2f} ms'
                          + (f'  (over {TARGET_MS} ms)' if med > TARGET_MS else '')
                          + (f'  SEQ SCAN: {seq}' if seq else ''), flush=True)
                    if plan and os.environ.get('HISTORY_PLANS'):
                        print('    ' + '\n    '.join(plan))
            print(f'Cookbook on {rows["delivery_attempts"]:,} attempts, median of {QUERY_RUNS} (range over '
                  f'{len(passes)} passes; target {TARGET_MS} ms):')
            for title in passes[0]:
                meds = [p[title][1] for p in passes]
                print(f'  {title}: {min(meds):.2f}-{max(meds):.2f} ms')
            nginx.start()
            print('retention:\n  ' + describe_retention(retention(pg, db, nginx)), flush=True)
    finally:
        nginx.stop()
        pg.destroy()


if __name__ == '__main__':
    main()
