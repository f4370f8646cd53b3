"""Memory benchmark: 11,000 deliveries are queued with no dispatcher
running, then `reghook serve` starts with max_in_flight and
max_in_flight_per_webhook 1000 and delivers them to an endpoint (asyncio,
in its own process) that answers each request after 1 s: 1,000 requests
in flight while 10,000 wait, draining over about 11 s. Prints the peak RSS
of the reghook process (VmHWM of /proc/PID/status, read before it stops),
or the largest VmRSS sampled while requests were in flight if higher, and how many
requests the endpoint held at once. RUNS runs (BENCH_RUNS, default 2)."""

import time

from common import (AsyncEndpoint, bench_reghook, each_run, fresh_database, prepare_webhook,
                    proc_status, queue_events, wait_drained)

IN_FLIGHT = 1000
WAITING = 10000


def run_once(pg, run):
    with fresh_database(pg, f'rss_{run}') as dbh:
        endpoint = AsyncEndpoint(delay=1)
        rh = bench_reghook(dbh, {'max_in_flight': IN_FLIGHT,
                                 'max_in_flight_per_webhook': IN_FLIGHT})
        try:
            endpoint.start()
            _, source_id = prepare_webhook(dbh, rh, endpoint.url('/hook'))
            queue_events(dbh, source_id, IN_FLIGHT + WAITING)
            rh.start()
            sampled = 0

            def sample():
                nonlocal sampled
                sampled = max(sampled, proc_status(rh.proc.pid)['VmRSS'])
            start = time.monotonic()
            wait_drained(rh, dbh, 300, interval=0.1, each=sample)
            seconds = time.monotonic() - start
            # VmHWM is kept from counters the kernel updates lazily: a sample
            # may read a little above it.
            peak = max(proc_status(rh.proc.pid)['VmHWM'], sampled)
            succeeded = int(dbh.psql("SELECT count(*) FROM reghook.deliveries "
                                     "WHERE status = 'succeeded'"))
        finally:
            rh.stop()
            rh.cleanup()
            endpoint.stop()
        return {'peak': peak / 1024, 'sampled': sampled / 1024, 'held': endpoint.peak,
                'seconds': seconds, 'succeeded': succeeded}


def main():
    results = each_run(run_once, lambda r: (
        f'peak RSS (VmHWM) {r["peak"]:.1f} MiB, largest sampled VmRSS {r["sampled"]:.1f} MiB; '
        f'endpoint held up to {r["held"]} requests at once; {r["succeeded"]} delivered in '
        f'{r["seconds"]:.1f} s'))
    peaks = ', '.join(f'{r["peak"]:.1f}' for r in results)
    print(f'rss, {IN_FLIGHT} in flight to an endpoint answering after 1 s and {WAITING} '
          f'waiting, max_in_flight {IN_FLIGHT}:')
    print(f'  peak RSS of reghook: best {min(r["peak"] for r in results):.1f} MiB '
          f'(runs: {peaks} MiB); target 64 MiB')


if __name__ == '__main__':
    main()
