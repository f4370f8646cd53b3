"""Pipeline benchmark, with default settings as a user runs reghook: one
namespace, one enabled webhook pointing at nginx (answering 200 at once),
and 32 clients posting single-event envelopes as fast as they go for 10 s.
Prints, per run: events acknowledged per second while posting; events
acknowledged AND delivered per second, from the first post to the last
delivery recorded (succeeded, its attempt written); and the rate at which
the backlog left when posting stopped drained. Beside them, measured in
the same run on the same machine: wrk posting the same envelopes straight
at nginx (the HTTP floor), and pgbench's single-row INSERT rate of the
same event at the same concurrency (the database floor), so the figures
read as ratios on a machine whose load varies.

The machine is shared: to compare two builds, set BENCH_AB to a second
binary; the runs then alternate, main's binary ($REGHOOK_BIN) first, and
each line names its binary. BENCH_RUNS runs (default 2) of each.

Each run also posts for 10 s with no webhook at all, events only stored
(the receiver's ceiling, which the pipeline cannot pass), and prints the
CPU time each event cost, from the first post to the last attempt
written: reghook's process, PostgreSQL's processes, and the machine's
busy share, which says whether the two cores were the limit."""

import json
import os
import time

from common import (RUNS, HERE, DurablePostgres, Nginx, bench_event, cpu_seconds, harness,
                    machine_busy, pgbench, server_cpu, wait_drained, wrk)

CLIENTS = 32
SECONDS = 10


def delivered(db):
    """Deliveries succeeded with their attempt written, and when the last was."""
    out = db.psql("""SELECT count(*), coalesce(extract(epoch FROM max(a.attempted_at)), 0)
                     FROM reghook.deliveries d
                     JOIN reghook.delivery_attempts a ON a.delivery_id = d.id
                     WHERE d.status = 'succeeded'""")
    n, last = out.strip().split('|')
    return int(n), float(last)


def pipeline_once(pg, nginx, binary, run, deliver=True):
    """One run on a fresh database; returns a dict of figures. With
    deliver=False there is no webhook: the events are only stored."""
    name = f'pipeline_{run}'
    pg.create_db(name)
    db = harness.Database(pg, name)
    rh = harness.Reghook(db.url(), {'log_level': 'warn', 'allow_private_targets': True},
                         bin=binary)
    try:
        rh.start()
        rh.wait_ready()
        rh.run_cli('namespace', 'add', 'team-a')
        out = rh.run_cli('registry', 'add', 'bench').stdout
        token = next(w for w in out.split() if w.startswith('rgh_'))
        if deliver:
            harness.add_webhook(rh, 'team-a', nginx.url('/hook'))
        script = os.path.join(HERE, 'post_event.lua')
        cpu = (cpu_seconds(rh.proc.pid), server_cpu(pg), machine_busy())
        posted_at = time.time()
        posted = wrk(rh.url('/'), SECONDS, CLIENTS, script, token, f'pipeline-{run}')
        post_seconds = posted['duration_us'] / 1e6
        if not deliver:
            events = int(db.psql('SELECT count(*) FROM reghook.events'))
            return {'acked': events / post_seconds, 'events': events,
                    **cpu_per_event(rh, pg, cpu, events)}
        stopped = time.monotonic()
        backlog = int(db.psql("SELECT count(*) FROM reghook.deliveries "
                              "WHERE status IN ('pending', 'in_flight')"))
        wait_drained(rh, db, 900, interval=0.1)
        drain_seconds = time.monotonic() - stopped
        # Attempts are written after their delivery moves on: wait for the last.
        events = int(db.psql('SELECT count(*) FROM reghook.events'))
        harness.wait_until(lambda: delivered(db)[0] >= events, timeout=60,
                           msg='every attempt written')
        count, last = delivered(db)
        if count != events:
            raise RuntimeError(f'{events} events stored, {count} delivered')
        return {**cpu_per_event(rh, pg, cpu, events),
                'acked': events / post_seconds, 'events': events,
                'delivered': count / (last - posted_at), 'backlog': backlog,
                'drain': backlog / drain_seconds if backlog else float('nan'),
                'after': last - posted_at - post_seconds}
    finally:
        rh.stop()
        rh.cleanup()
        db.close_connections()
        pg.psql(f'DROP DATABASE "{name}" WITH (FORCE)', dbname='postgres')


def cpu_per_event(rh, pg, before, events):
    """CPU microseconds per event since `before` (cpu_seconds of reghook,
    server_cpu, machine_busy), of reghook and of PostgreSQL, and the share
    of the machine's CPU time that was busy."""
    rh_cpu, pg_cpu, (busy, total) = before
    now = server_cpu(pg)
    busy_now, total_now = machine_busy()
    return {'rh_us': (cpu_seconds(rh.proc.pid) - rh_cpu) * 1e6 / events,
            'pg_us': sum(t - pg_cpu.get(pid, 0) for pid, t in now.items()) * 1e6 / events,
            'busy': (busy_now - busy) / max(1, total_now - total)}


def floors(pg, nginx):
    """The HTTP floor (wrk posting the envelope to nginx) and the database
    floor (pgbench inserting the event, one row per transaction)."""
    script = os.path.join(HERE, 'post_event.lua')
    http = wrk(nginx.url('/'), 5, CLIENTS, script, 'x', 'floor')
    http_rate = http['requests'] / (http['duration_us'] / 1e6)
    pg.psql('CREATE TABLE IF NOT EXISTS floor_rows (id bigserial PRIMARY KEY, '
            'at timestamptz NOT NULL DEFAULT now(), raw jsonb NOT NULL)', dbname='reghook')
    event = json.dumps(json.loads(bench_event('f', 't')))
    sql = f"INSERT INTO floor_rows (raw) VALUES ('{event.replace(chr(39), chr(39) * 2)}');\n"
    return http_rate, pgbench(pg, sql, 5, CLIENTS)


def main():
    binaries = [('main', os.environ['REGHOOK_BIN'])]
    if os.environ.get('BENCH_AB'):
        binaries.append(('new', os.environ['BENCH_AB']))
    pg = DurablePostgres()
    nginx = Nginx()
    try:
        pg.start()
        if pg.psql("SELECT count(*) FROM pg_database WHERE datname = 'reghook'",
                   dbname='postgres').strip() == '0':
            pg.create_db('reghook')  # where pgbench runs
        nginx.start()
        results = {label: [] for label, _ in binaries}
        for run in range(RUNS):
            for label, binary in binaries:
                r = pipeline_once(pg, nginx, binary, f'{label}_{run}')
                only = pipeline_once(pg, nginx, binary, f'{label}_{run}_stored', deliver=False)
                http, insert = floors(pg, nginx)
                r['http'], r['insert'], r['stored'] = http, insert, only['acked']
                results[label].append(r)
                print(f'  run {run + 1} {label}: {r["events"]} events, acknowledged '
                      f'{r["acked"]:6.0f}/s; acknowledged and delivered {r["delivered"]:6.0f}/s '
                      f'(last delivery {r["after"]:.1f} s after posting stopped); backlog of '
                      f'{r["backlog"]} drained at {r["drain"]:6.0f}/s\n'
                      f'    CPU per event: reghook {r["rh_us"]:.0f} us, PostgreSQL '
                      f'{r["pg_us"]:.0f} us, machine busy {r["busy"]:.0%} | stored only, no '
                      f'webhook: {only["acked"]:6.0f}/s, CPU per event: reghook '
                      f'{only["rh_us"]:.0f} us, PostgreSQL {only["pg_us"]:.0f} us, machine busy '
                      f'{only["busy"]:.0%}\n'
                      f'    floors: wrk to nginx {http:6.0f}/s, pgbench INSERT {insert:6.0f}/s; '
                      f'delivered/INSERT {r["delivered"] / insert:.2f}, delivered/stored only '
                      f'{r["delivered"] / only["acked"]:.2f}', flush=True)
        print(f'pipeline, defaults, {CLIENTS} clients for {SECONDS} s, one webhook to nginx:')
        for label, rs in results.items():
            d = [r['delivered'] for r in rs]
            dr = [r['drain'] for r in rs]
            drains = [x for x in dr if x == x]  # nan: no backlog was left
            none_left = len(dr) - len(drains)
            drains = drains or [0.0]
            ratio = [r['delivered'] / r['stored'] for r in rs]
            print(f'  {label}: acknowledged and delivered {min(d):.0f}-{max(d):.0f}/s '
                  f'({min(ratio):.2f}-{max(ratio):.2f} of storing only), drain '
                  f'{min(drains):.0f}-{max(drains):.0f}/s ({none_left} of {len(dr)} '
                  f'runs left no backlog); target 5000')
    finally:
        nginx.stop()
        pg.destroy()


if __name__ == '__main__':
    main()
