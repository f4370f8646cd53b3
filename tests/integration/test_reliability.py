"""Reliability: nothing acknowledged is lost.

- A `reghook serve` killed with SIGKILL at random moments and restarted,
  while registry events pour in and deliveries go out to three webhooks:
  every event answered 200 is stored once and delivered at least once to
  every matching webhook; the figures (and how many were delivered more
  than once) are printed.
- PostgreSQL restarted, then stopped for a while, during ingest and
  delivery: the receiver answers 503 with Retry-After meanwhile, recovers
  by itself, loses no acknowledged event, and deliveries resume.
- Two instances on one database: each attempt is made by one instance, no
  delivery is attempted by both at once, and each is delivered once.

The events are posted as a registry posts them (one per request, every
answer but 200 retried) by harness.RegistrySender. The long versions are
marked soak: `make soak` runs them (REGHOOK_SOAK=1)."""

import collections
import json
import os
import random
import signal
import threading
import time

import pytest

from harness import (RegistrySender, Response, add_webhook, register, registry_event,
                     wait_until)
from test_delivery import post


def plain_bin():
    """The build without sanitizers (tests/run exports it): restarted dozens
    of times, it starts faster."""
    return os.environ.get('REGHOOK_PLAIN_BIN') or None


def query(pg, sql):
    """Rows of a query as a list of dicts."""
    return json.loads(pg.psql(f"SELECT coalesce(json_agg(t), '[]') FROM ({sql}) t"))


def make_events(n):
    """n events of team-a/app with unique tags: pushes tagged v<i> or r<i>,
    every fifth one a delete of its tag."""
    out = []
    for i in range(n):
        tag = f'v{i}' if i % 2 == 0 else f'r{i}'
        out.append(registry_event(action='delete' if i % 5 == 4 else 'push', tag=tag))
    return out


def receipts(endpoint):
    """(delivery id, action, tag) of every request an endpoint received."""
    out = []
    for r in endpoint.requests:
        body = r.json()
        data = body.get('push_data') or body.get('delete_data')
        out.append((r.header('X-Reghook-Delivery'), body['action'], data['tag']))
    return out


def check_delivered(pg, sent, expected_hooks, endpoints):
    """Asserts that every event sent is stored once and has exactly one
    delivery per matching webhook, all succeeded and each received at least
    once by its endpoint carrying that event; returns the figures."""
    stored = query(pg, 'SELECT event_uuid, count(*) AS n FROM reghook.events GROUP BY 1')
    assert all(r['n'] == 1 for r in stored)
    assert {r['event_uuid'] for r in stored} == {ev['id'] for ev in sent}

    rows = query(pg, """SELECT d.id::text, d.webhook_id, d.status, e.event_uuid, e.action,
                               e.tag FROM reghook.deliveries d
                        JOIN reghook.events e ON e.id = d.event_id""")
    by_event = collections.defaultdict(list)
    for r in rows:
        by_event[r['event_uuid']].append(r['webhook_id'])
    for ev in sent:
        assert sorted(by_event[ev['id']]) == sorted(expected_hooks(ev)), ev
    assert {r['status'] for r in rows} <= {'succeeded'}, collections.Counter(
        r['status'] for r in rows)

    got = collections.Counter()
    for webhook_id, endpoint in endpoints.items():
        mine = {r['id']: r for r in rows if r['webhook_id'] == webhook_id}
        for delivery_id, action, tag in receipts(endpoint):
            d = mine.get(delivery_id)
            assert d is not None, f'unknown delivery {delivery_id} at webhook {webhook_id}'
            assert (action, tag) == (d['action'], d['tag']), (delivery_id, action, tag, d)
            got[delivery_id] += 1
    missing = [r for r in rows if got[r['id']] == 0]
    assert not missing, f'{len(missing)} deliveries never arrived: {missing[:5]}'
    return {'stored': len(stored), 'deliveries': len(rows),
            'received': sum(got.values()),
            'more_than_once': sum(1 for c in got.values() if c > 1),
            'extra_copies': sum(c - 1 for c in got.values())}


def wait_all_succeeded(pg, expected, timeout):
    def done():
        r = query(pg, "SELECT count(*) AS n, count(*) FILTER (WHERE status = 'succeeded') "
                      "AS ok FROM reghook.deliveries")[0]
        return r['n'] == expected and r['ok'] == expected
    wait_until(done, timeout=timeout, interval=0.5, msg=f'{expected} deliveries to succeed')


# --- SIGKILL at random moments --------------------------------------------------


def crash_run(reghook_factory, pg, endpoint_factory, n_events, seconds, after_kills, seed):
    """Sends n_events over about `seconds` while killing and restarting
    reghook at random moments (then after_kills more while the deliveries
    drain), and checks that nothing acknowledged was lost."""
    rng = random.Random(seed)
    # A short request timeout keeps the leases of a killed daemon short
    # (timeout + 15 s) before another process takes them over.
    daemon = reghook_factory({'request_timeout': '2s', 'retry_schedule': '0,1s',
                              'log_level': 'info'}, bin=plain_bin())
    token = register(daemon, 'team-a')
    pushes, everything, v_tags = endpoint_factory(), endpoint_factory(), endpoint_factory()
    for endpoint in (pushes, everything, v_tags):
        endpoint.respond(200, b'ok', delay=0.01)
    w_push = int(add_webhook(daemon, 'team-a', pushes.url('/push')))
    w_all = int(add_webhook(daemon, 'team-a', everything.url('/all'), '--actions', 'push,delete'))
    w_v = int(add_webhook(daemon, 'team-a', v_tags.url('/v'), '--tag', 'v*'))

    def expected_hooks(ev):
        if ev['action'] == 'delete':
            return [w_all]
        return [w_push, w_all] + ([w_v] if ev['target']['tag'].startswith('v') else [])

    sent = make_events(n_events)
    queues = 4
    sender = RegistrySender(daemon.port, token, sent, queues=queues,
                            pause=queues * seconds / n_events, backoff=0.1)
    kills = 0

    def kill_and_restart():
        nonlocal kills
        daemon.kill9()
        kills += 1
        time.sleep(rng.uniform(0, 0.3))
        daemon.start()
        # Mostly let it come up and get busy; sometimes kill it while starting.
        if rng.random() < 0.8:
            daemon.wait_ready()

    t0 = time.monotonic()
    sender.start()
    try:
        while not sender.done():
            time.sleep(rng.uniform(0.5, 3.0))
            kill_and_restart()
        for _ in range(after_kills):
            time.sleep(rng.uniform(0.05, 1.0))
            kill_and_restart()
        daemon.wait_ready()
        sender.join(timeout=120)
    finally:
        sender.stop()
    expected = sum(len(expected_hooks(ev)) for ev in sent)
    wait_all_succeeded(pg, expected, timeout=180)
    figures = check_delivered(pg, sent, expected_hooks,
                              {w_push: pushes, w_all: everything, w_v: v_tags})
    acked = len(set(sender.acked))
    assert acked == n_events
    print(f'\nSIGKILL x{kills} (seed {seed}, {time.monotonic() - t0:.0f} s): '
          f'events sent {n_events}, acknowledged {acked}, stored {figures["stored"]}; '
          f'deliveries {figures["deliveries"]}, all delivered, requests received '
          f'{figures["received"]}, delivered more than once {figures["more_than_once"]} '
          f'({figures["extra_copies"]} extra copies); answers to the registry '
          f'{dict(sender.statuses)}')
    return figures


@pytest.mark.long
def test_sigkill_at_random_moments_loses_nothing(reghook_factory, pg, endpoint_factory):
    crash_run(reghook_factory, pg, endpoint_factory, n_events=2000, seconds=20, after_kills=2,
              seed=random.randrange(1 << 30))


@pytest.mark.soak
def test_soak_sigkill_at_random_moments_loses_nothing(reghook_factory, pg, endpoint_factory):
    crash_run(reghook_factory, pg, endpoint_factory, n_events=20000, seconds=240,
              after_kills=5, seed=random.randrange(1 << 30))


@pytest.mark.long
def test_a_delivery_lost_on_its_last_attempt_is_sent_again(reghook_factory, pg,
                                                           endpoint_factory):
    """SIGKILL while the one attempt a webhook allows is under way: nobody
    knows whether it arrived, so once the lease runs out the delivery is
    sent again (at-least-once), not failed unsent; the lost attempt is in
    the history before the one that succeeded."""
    daemon = reghook_factory({'instance_name': 'one'}, bin=plain_bin())
    token = register(daemon, 'team-a')
    endpoint = endpoint_factory()
    endpoint.respond(200, b'ok', delay=3)
    add_webhook(daemon, 'team-a', endpoint.url('/hook'), '--timeout', '2s', '--max-attempts', '1')
    post(daemon, token, registry_event(tag='v1'))
    endpoint.wait_for(1)
    daemon.kill9()
    endpoint.respond(200, b'ok')
    daemon.start()
    daemon.wait_ready()
    # The lease: the request timeout + 15 s.
    wait_until(lambda: pg.psql('SELECT status FROM reghook.deliveries').strip() == 'succeeded',
               timeout=45, msg='the delivery sent again and succeeded')
    assert len(endpoint.requests) == 2
    rows = query(pg, 'SELECT attempt, method, response_status FROM reghook.delivery_attempts '
                     'ORDER BY attempt')
    assert rows == [{'attempt': 1, 'method': '', 'response_status': None},
                    {'attempt': 2, 'method': 'POST', 'response_status': 200}], rows


# --- PostgreSQL restarted and stopped --------------------------------------------


def outage_run(pg_own, reghook_factory, endpoint_factory, stop_seconds):
    daemon = reghook_factory({'request_timeout': '2s', 'retry_schedule': '0,1s'})
    pid = daemon.proc.pid
    token = register(daemon, 'team-a')
    hook = endpoint_factory()
    # Slow enough that deliveries are in flight when the database goes.
    hook.respond(200, b'ok', delay=0.2)
    webhook_id = int(add_webhook(daemon, 'team-a', hook.url('/')))
    n = 300
    sent = [registry_event(tag=f't{i}') for i in range(n)]
    sender = RegistrySender(daemon.port, token, sent, queues=2, pause=0.04, backoff=0.2)
    sender.start()
    try:
        wait_until(lambda: len(sender.acked) >= 40, timeout=30, msg='events before the restart')
        pg_own.restart()
        at_restart = len(sender.acked)
        wait_until(lambda: len(sender.acked) >= at_restart + 40, timeout=60,
                   msg='events acknowledged after the restart')

        told_503 = sum(sender.retry_after.values())
        pg_own.stop('immediate')
        stopped = time.monotonic()
        status, headers, _ = daemon.post('/events', json.dumps(
            {'events': [registry_event(tag='during')]}).encode(),
            {'Content-Type': RegistrySender.V1, 'Authorization': f'Bearer {token}'})
        assert status == 503 and int(headers['retry-after']) > 0, (status, headers)
        wait_until(lambda: sum(sender.retry_after.values()) > told_503, timeout=30,
                   msg='the registry to be told 503')
        time.sleep(max(0, stop_seconds - (time.monotonic() - stopped)))
        assert daemon.get('/healthz')[0] == 200 and daemon.get('/readyz')[0] == 503
        restarting = time.monotonic()
        # No request sent while the database was down was answered 200 (one
        # sent before the stop may have been committed before it).
        with sender._lock:
            while_down = [x for x in sender.exchanges if x[0] >= stopped and x[1] < restarting]
        during = [x for x in while_down if x[2] == 200]
        pg_own.start()
        sender.join(timeout=120)
    finally:
        sender.stop()
    wait_all_succeeded(pg_own, n, timeout=120)
    figures = check_delivered(pg_own, sent, lambda ev: [webhook_id], {webhook_id: hook})
    assert daemon.proc.pid == pid and daemon.running()
    assert while_down and during == [], 'acknowledged while the database was down'
    assert set(sender.retry_after) == {'5'}, sender.retry_after
    print(f'\nPostgreSQL restarted, then stopped {stop_seconds} s: events acknowledged '
          f'{len(sender.acked)} of {n}, stored {figures["stored"]}, deliveries '
          f'{figures["deliveries"]} all delivered, more than once {figures["more_than_once"]}; '
          f'answers to the registry {dict(sender.statuses)}')


@pytest.mark.long
def test_database_restart_and_stop_lose_nothing(pg_own, reghook_factory, endpoint_factory):
    outage_run(pg_own, reghook_factory, endpoint_factory, stop_seconds=5)


@pytest.mark.soak
def test_soak_database_stopped_30s_loses_nothing(pg_own, reghook_factory, endpoint_factory):
    outage_run(pg_own, reghook_factory, endpoint_factory, stop_seconds=30)


def test_a_stop_during_a_database_restart_records_the_requests_in_flight(
        pg_own, reghook_factory, endpoint_factory):
    """SIGTERM while PostgreSQL restarts (a host shutting both down, say),
    with a request in flight: reghook waits up to db_timeout for the
    database to come back and records the attempt before it exits. Gone
    for longer, it exits after db_timeout and says what was not written
    (before, it exited at once, silently, the delivery left leased)."""
    endpoint = endpoint_factory()
    endpoint.respond(200, b'ok', delay=1.5)
    for phase, down in (('back', 1), ('gone', None)):
        daemon = reghook_factory({'db_timeout': '4s'}, bin=plain_bin())
        token = register(daemon, f'team-{phase}', name=f'registry-{phase}')
        add_webhook(daemon, f'team-{phase}', endpoint.url(f'/{phase}'))
        post(daemon, token, registry_event(repository=f'team-{phase}/app', tag='v1'))
        wait_until(lambda: any(r.path == f'/{phase}' for r in endpoint.requests), timeout=10,
                   msg='the request to start')
        pg_own.stop('fast')
        daemon.proc.send_signal(signal.SIGTERM)
        if down:
            time.sleep(down)
            pg_own.start()
        daemon.proc.wait(20)
        if not down:
            pg_own.start()
            assert 'attempt record(s) not written: the database was not reachable' in daemon.log()
            continue
        assert pg_own.psql(f"""SELECT d.status, a.response_status
                               FROM reghook.deliveries d
                               JOIN reghook.webhooks w ON w.id = d.webhook_id
                               JOIN reghook.namespaces n ON n.id = w.namespace_id
                               JOIN reghook.delivery_attempts a ON a.delivery_id = d.id
                               WHERE n.name = 'team-{phase}'""").strip() == 'succeeded|200'
        assert 'not written' not in daemon.log()


def test_a_stop_gives_up_requests_past_request_timeout_and_gives_their_deliveries_back(
        reghook_factory, pg, endpoint_factory):
    """A webhook's own timeout may be a day: SIGTERM with such a request
    hanging waited for it, until the service manager killed the process at
    its own timeout (90 s for the packaged unit), and the delivery stayed
    leased for that day. Past request_timeout the stop gives it up, gives
    the delivery back to the queue with the attempt it had not finished,
    and exits 0; the next start sends it at once. A request that ends
    before the deadline is recorded as always."""
    hanging, quick = endpoint_factory(), endpoint_factory()
    hanging.respond(200, b'late', delay=600)
    quick.respond(200, b'ok', delay=0.5)
    daemon = reghook_factory({'request_timeout': '2s'})
    token = register(daemon, 'team-a')
    slow_hook = add_webhook(daemon, 'team-a', hanging.url('/slow'), '--timeout', '24h')
    quick_hook = add_webhook(daemon, 'team-a', quick.url('/quick'))
    post(daemon, token, registry_event(tag='v1'))
    hanging.wait_for(1, timeout=15)
    quick.wait_for(1, timeout=15)
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.proc.wait(15)
    assert daemon.proc.returncode == 0
    assert 'given up' in daemon.log() and '1 delivery(ies) given back' in daemon.log()
    assert query(pg, f"""SELECT status, attempts, lease_owner FROM reghook.deliveries
                         WHERE webhook_id = {slow_hook}""") == [
        {'status': 'pending', 'attempts': 0, 'lease_owner': None}]
    assert query(pg, f"""SELECT d.status, a.response_status FROM reghook.deliveries d
                         JOIN reghook.delivery_attempts a ON a.delivery_id = d.id
                         WHERE d.webhook_id = {quick_hook}""") == [
        {'status': 'succeeded', 'response_status': 200}]

    hanging.respond(200, b'ok')
    reghook_factory()
    hanging.wait_for(2, timeout=15)
    wait_until(lambda: query(pg, f"""SELECT status FROM reghook.deliveries
                                     WHERE webhook_id = {slow_hook}""") == [
        {'status': 'succeeded'}], timeout=15, msg='the delivery given back, delivered')


def test_requests_started_after_the_stops_deadline_are_given_up_too(reghook_factory, pg,
                                                                    endpoint_factory):
    """An ingest batch out at the stop's deadline (here held by a lock on
    the webhooks' headers, which its jobs read) hands its delivery over
    after it: that request is given up and its delivery given back as well,
    where the stop waited for it for as long as the webhook's timeout."""
    hanging = endpoint_factory()
    hanging.respond(200, b'late', delay=600)
    daemon = reghook_factory({'request_timeout': '2s'})
    token = register(daemon, 'team-a')
    hook = add_webhook(daemon, 'team-a', hanging.url('/slow'), '--timeout', '24h')
    post(daemon, token, registry_event(tag='v1'))
    hanging.wait_for(1, timeout=15)
    holder = pg.connect()
    holder.autocommit = False
    holder.cursor().execute('LOCK TABLE reghook.webhook_headers IN ACCESS EXCLUSIVE MODE')
    late = threading.Thread(target=lambda: daemon.post(
        '/events', json.dumps({'events': [registry_event(tag='v2')]}).encode(),
        {'Content-Type': 'application/json', 'Authorization': f'Bearer {token}'}))
    late.start()
    wait_until(lambda: pg.psql("SELECT count(*) FROM pg_stat_activity "
                               "WHERE wait_event_type = 'Lock'").strip() != '0',
               timeout=15, msg='the batch waiting for the lock')
    daemon.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: 'given up' in daemon.log(), timeout=15, msg='the deadline')
    holder.rollback()
    late.join(15)
    daemon.proc.wait(15)
    assert daemon.proc.returncode == 0
    assert daemon.log().count('given back to the queue') == 2, daemon.log()
    assert query(pg, f"""SELECT status, attempts, lease_owner FROM reghook.deliveries
                         WHERE webhook_id = {hook} ORDER BY created_at""") == [
        {'status': 'pending', 'attempts': 0, 'lease_owner': None}] * 2


def test_a_claim_lost_in_a_database_crash_is_not_sent_twice_nor_its_success_lost(
        pg_own, reghook_factory, endpoint_factory):
    """PostgreSQL crashes (stop -m immediate) while a claimed retry is being
    sent, and the endpoint takes it (200). The claim committed without
    waiting for the disk was lost with the crash: the delivery, pending
    again with its old attempt count, was claimed again under the same
    attempt number while the first request was out, sent a second time at
    once, and the 200 taken for the new lease or not recorded at all; the
    delivery ended failed though its endpoint had taken it. Now the claim
    is durable, and a lease made again for an attempt under way here does
    not send it twice."""
    daemon = reghook_factory({'retry_schedule': '0,1s', 'request_timeout': '5s'})
    token = register(daemon, 'team-a')
    hook, seen, crashed = endpoint_factory(), [], threading.Event()

    def answer(request):
        seen.append(request)
        if len(seen) == 1:
            return Response(500, b'first')  # its retry is claimed a second later
        if len(seen) == 2:  # the claimed retry: the database crashes meanwhile
            pg_own.stop('immediate')
            crashed.set()
            return Response(200, b'ok', delay=1.5)
        return Response(500, b'later')
    hook.answer_with(answer)
    add_webhook(daemon, 'team-a', hook.url('/h'), '--max-attempts', '3')
    post(daemon, token, registry_event(tag='v1'))
    assert crashed.wait(20), 'the retry was not sent'
    time.sleep(0.3)
    pg_own.start()

    def settled():
        rows = query(pg_own, "SELECT status FROM reghook.deliveries WHERE status IN "
                             "('succeeded', 'failed')")
        return rows and rows[0]['status']
    assert wait_until(settled, timeout=30, msg='the delivery settled') == 'succeeded'
    history = [a['response_status'] for a in query(
        pg_own, 'SELECT response_status FROM reghook.delivery_attempts ORDER BY attempt')]
    assert history == [500, 200], history
    time.sleep(1)
    assert len(seen) == 2, [r.path for r in seen]


# --- two instances on one database -----------------------------------------------


def test_two_instances_attempt_each_delivery_one_at_a_time(reghook_factory, pg,
                                                           endpoint_factory):
    config = {'retry_schedule': '0,1s', 'max_in_flight_per_webhook': '4', 'log_level': 'info'}
    one = reghook_factory({**config, 'instance_name': 'one'})
    two = reghook_factory({**config, 'instance_name': 'two'})
    token = register(one, 'team-a')
    steady, flaky = endpoint_factory(), endpoint_factory()
    steady.respond(200, b'ok', delay=0.01)
    seen, lock = set(), threading.Lock()

    def fail_first(req):
        """500 to the first attempt of every other delivery (tags t0, t1,
        t4, t5, ...: every other event of each sender), 200 to the second.
        Failures mixed with successes: 20 failures in a row would make the
        webhook rest (one delivery at a time, 10 s apart)."""
        with lock:
            first = req.header('X-Reghook-Delivery') not in seen
            seen.add(req.header('X-Reghook-Delivery'))
        failing = int(req.json()['push_data']['tag'][1:]) % 4 < 2
        return Response(500, b'first') if first and failing else Response(200, b'ok', delay=0.01)

    flaky.answer_with(fail_first)
    w_steady = int(add_webhook(one, 'team-a', steady.url('/steady')))
    w_flaky = int(add_webhook(one, 'team-a', flaky.url('/flaky')))
    n = 200
    sent = [registry_event(tag=f't{i}') for i in range(n)]
    senders = [RegistrySender(d.port, token, sent[i::2], queues=2).start()
               for i, d in enumerate((one, two))]
    for s in senders:
        s.join(timeout=60)
    wait_all_succeeded(pg, 2 * n, timeout=90)
    check_delivered(pg, sent, lambda ev: [w_steady, w_flaky], {w_steady: steady, w_flaky: flaky})

    attempts = query(pg, """SELECT delivery_id::text, webhook_id, attempt, instance,
                                   response_status,
                                   extract(epoch FROM attempted_at)::float8 AS at, duration_ms
                            FROM reghook.delivery_attempts ORDER BY delivery_id, attempt""")
    per = collections.defaultdict(list)
    for a in attempts:
        per[a['delivery_id']].append(a)
    tags = {r['id']: r['tag'] for r in query(pg, 'SELECT d.id::text AS id, e.tag FROM '
                                                 'reghook.deliveries d JOIN reghook.events e '
                                                 'ON e.id = d.event_id')}
    handovers = 0
    for delivery_id, mine in per.items():
        statuses = [a['response_status'] for a in mine]
        if mine[0]['webhook_id'] == w_steady or int(tags[delivery_id][1:]) % 4 >= 2:
            assert [a['attempt'] for a in mine] == [1] and statuses == [200], mine
        else:
            assert [a['attempt'] for a in mine] == [1, 2] and statuses == [500, 200], mine
            first, second = mine
            # The second attempt began after the first had ended, whoever made it.
            assert second['at'] >= first['at'] + first['duration_ms'] / 1000 - 0.002, mine
            handovers += first['instance'] != second['instance']
    assert len(per) == 2 * n
    # Every request the endpoints got is one recorded attempt.
    assert collections.Counter(r.header('X-Reghook-Delivery') for r in steady.requests) == \
        collections.Counter({d: 1 for d, m in per.items() if m[0]['webhook_id'] == w_steady})
    assert len(flaky.requests) == n + n // 2
    by_instance = collections.Counter(a['instance'] for a in attempts)
    assert set(by_instance) == {'one', 'two'}, by_instance
    print(f'\ntwo instances: attempts by instance {dict(by_instance)}; '
          f'{handovers} of {n // 2} retried deliveries had their second attempt made by the '
          f'other instance')
