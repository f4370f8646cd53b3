"""Drain benchmark: 100,000 deliveries are queued (events stored through
reghook.ingest() while no dispatcher runs), then `reghook serve` starts and
delivers them to nginx answering 200, recording every attempt. Prints
deliveries/s from the daemon's start until every delivery is `succeeded`
and every attempt row exists, and, in the same run, wrk's raw request rate
posting the same payload to the same nginx at the same concurrency.

Settings (as a user would raise them for a busy webhook): max_in_flight and
max_in_flight_per_webhook both BENCH_IN_FLIGHT (default 256); RUNS runs
(BENCH_RUNS, default 2), each on a fresh database."""

import os
import time

from common import (RUNS, fresh_database, HERE, DurablePostgres, Nginx, bench_reghook, wait_drained,
                    prepare_webhook, queue_events, wrk)

COUNT = 100000
IN_FLIGHT = int(os.environ.get('BENCH_IN_FLIGHT', '256'))


def drain_once(pg, nginx, run):
    """One run on a fresh database; returns (deliveries/s, seconds, a delivered body)."""
    with fresh_database(pg, f'drain_{run}') as dbh:
        rh = bench_reghook(dbh, {'max_in_flight': IN_FLIGHT,
                                 'max_in_flight_per_webhook': IN_FLIGHT})
        try:
            _, source_id = prepare_webhook(dbh, rh, nginx.url('/hook'))
            queue_events(dbh, source_id, COUNT)
            queued = int(dbh.psql("SELECT count(*) FROM reghook.deliveries "
                                  "WHERE status = 'pending'"))
            assert queued == COUNT, queued

            start = time.monotonic()
            rh.start()
            # Cheap while work remains; then the counts, once.
            wait_drained(rh, dbh, 600)
            done = dbh.psql("""SELECT (SELECT count(*) FROM reghook.deliveries
                                       WHERE status = 'succeeded'),
                                      (SELECT count(*) FROM reghook.delivery_attempts)""")
            succeeded, attempts = (int(x) for x in done.strip().split('|'))
            if succeeded != COUNT or attempts != COUNT:
                raise RuntimeError(f'drained with {succeeded} succeeded, {attempts} attempts')
            seconds = time.monotonic() - start
            body = dbh.psql('SELECT request_body FROM reghook.delivery_attempts LIMIT 1')
            return COUNT / seconds, seconds, body.rstrip('\n')
        finally:
            rh.stop()
            rh.cleanup()


def main():
    pg = DurablePostgres()
    nginx = Nginx()
    try:
        pg.start()
        nginx.start()
        rates, wrk_rates = [], []
        for run in range(RUNS):
            rate, seconds, body = drain_once(pg, nginx, run)
            body_path = os.path.join(nginx.dir, 'body.json')
            with open(body_path, 'w') as f:
                f.write(body)
            raw = wrk(nginx.url('/hook'), 5, IN_FLIGHT, os.path.join(HERE, 'post_file.lua'),
                      body_path)
            raw_rate = raw['requests'] / (raw['duration_us'] / 1e6)
            rates.append(rate)
            wrk_rates.append(raw_rate)
            print(f'  run {run + 1}: {COUNT} deliveries in {seconds:.1f} s: {rate:8.0f} '
                  f'deliveries/s; wrk on the same nginx, {IN_FLIGHT} connections, '
                  f'{len(body)}-byte body: {raw_rate:8.0f} requests/s', flush=True)
        print(f'drain, {COUNT} deliveries to nginx with full history, max_in_flight and '
              f'max_in_flight_per_webhook {IN_FLIGHT}, durable commits:')
        print(f'  best {max(rates):8.0f} deliveries/s (runs: '
              f'{", ".join(f"{r:.0f}" for r in rates)}); target 10000')
        print(f'  wrk raw rate in the same runs: {", ".join(f"{r:.0f}" for r in wrk_rates)} '
              f'requests/s')
    finally:
        nginx.stop()
        pg.destroy()


if __name__ == '__main__':
    main()
