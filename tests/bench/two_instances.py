"""Delivery with one and with two `reghook serve` on one database: how many
deliveries per second each setup drains from a full queue.

EVENTS registry events are ingested once through POST /events (their
webhooks still disabled, so no delivery exists yet). For each round the
queue is refilled with one delivery per event and webhook (WEBHOOKS
webhooks, all answered 200 by an nginx on loopback), the instances are
started, the webhooks enabled, and the time until every delivery has
succeeded is measured. Figures: deliveries/s for one instance and for two,
and how the two shared the work."""

import json
import os
import time

from common import DurablePostgres, Nginx, harness

EVENTS = int(os.environ.get('BENCH_EVENTS', '3000'))
WEBHOOKS = 4
ROUNDS = [int(x) for x in os.environ.get('BENCH_ROUNDS', '1,2,1,2').split(',')]


def refill(pg, hooks):
    pg.psql(f"""
        DELETE FROM reghook.deliveries;
        INSERT INTO reghook.deliveries (webhook_id, event_id, action)
        SELECT w, e.id, e.action FROM reghook.events e,
               unnest(ARRAY[{','.join(hooks)}]::bigint[]) AS w;
        VACUUM ANALYZE reghook.deliveries;""")


def drain(pg, hooks, instances):
    """Starts the instances, enables the webhooks, and returns (seconds
    until every delivery succeeded, attempts per instance)."""
    daemons = []
    try:
        for i in range(instances):
            d = harness.Reghook(pg.url(), {'log_level': 'warn', 'instance_name': f'bench-{i}'})
            daemons.append(d)
            d.start()
        for d in daemons:
            d.wait_ready()
        total = int(pg.psql('SELECT count(*) FROM reghook.deliveries'))
        t0 = time.monotonic()
        pg.psql(';'.join(f'SELECT reghook.webhook_enable({h})' for h in hooks))
        while int(pg.psql("SELECT count(*) FROM reghook.deliveries WHERE status = 'succeeded'")) \
                < total:
            time.sleep(0.1)
        seconds = time.monotonic() - t0
        pg.psql(';'.join(f"SELECT reghook.webhook_disable({h}, 'bench round over')"
                         for h in hooks))
        by_instance = json.loads(pg.psql(
            "SELECT json_object_agg(instance, n) FROM (SELECT instance, count(*) AS n "
            "FROM reghook.delivery_attempts GROUP BY 1) t"))
        return total, seconds, by_instance
    finally:
        for d in daemons:
            d.stop()
            d.cleanup()


def main():
    pg = DurablePostgres()
    sink = None
    setup = None
    try:
        pg.start()
        sink = Nginx()
        sink.start()
        setup = harness.Reghook(pg.url(), {'log_level': 'warn'})
        setup.start()
        setup.wait_ready()
        token = harness.register(setup, 'team-a')
        hooks = [harness.add_webhook(setup, 'team-a', f'http://127.0.0.1:{sink.port}/h{i}',
                                     enable=False) for i in range(WEBHOOKS)]
        for start in range(0, EVENTS, 1000):
            body = json.dumps({'events': [harness.registry_event(tag=f't{i}')
                                          for i in range(start, min(EVENTS, start + 1000))]})
            status, _, out = setup.post('/events', body.encode(),
                                        {'Content-Type': harness.RegistrySender.V1,
                                         'Authorization': f'Bearer {token}'})
            assert status == 200, out
        setup.stop()

        print(f'delivery, {EVENTS} events x {WEBHOOKS} webhooks, nginx answering 200, '
              f'durable commits:')
        rates = {1: [], 2: []}
        for instances in ROUNDS:
            refill(pg, hooks)
            pg.psql('DELETE FROM reghook.delivery_attempts')
            total, seconds, by_instance = drain(pg, hooks, instances)
            rates[instances].append(total / seconds)
            print(f'  {instances} instance(s): {total} deliveries in {seconds:6.2f} s = '
                  f'{total / seconds:7.0f} deliveries/s  (attempts by instance: '
                  f'{by_instance})')
        mean = {k: sum(v) / len(v) for k, v in rates.items() if v}
        if len(mean) == 2:
            print(f'  mean: one {mean[1]:.0f}/s, two {mean[2]:.0f}/s, two / one: '
                  f'{mean[2] / mean[1]:.2f}x')
    finally:
        if setup:
            setup.stop()
            setup.cleanup()
        if sink:
            sink.stop()
        pg.destroy()


if __name__ == '__main__':
    main()
