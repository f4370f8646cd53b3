"""A dead webhook with a backlog: after 20 failures in a row it rests (one
delivery at a time, no sooner than 10 s after its last failure) while
another webhook of the same namespace is delivered; a probe that succeeds
ends the rest and the backlog drains. The 10 s pause is skipped by moving
the webhook's last failure back in SQL, rather than waited for."""

import time

from harness import add_webhook, free_port, register, wait_until
from test_delivery import event, post, rows, wait_status

# Retries due a second after a failure: without the rest, a refusing
# endpoint would be sent every delivery again within the quiet periods below.
FAST = {'retry_schedule': '0,1s'}


def health(pg, webhook_id):
    return rows(pg, f"""SELECT failures_in_a_row, enabled,
                               (SELECT sum(attempts) FROM reghook.deliveries
                                WHERE webhook_id = w.id)::int AS attempts,
                               (SELECT count(*) FROM reghook.deliveries
                                WHERE webhook_id = w.id AND status = 'pending')::int AS pending
                        FROM reghook.webhooks w WHERE id = {int(webhook_id)}""")[0]


def wait_resting(pg, webhook_id):
    return wait_until(lambda: (lambda h: h if h['failures_in_a_row'] >= 20 else None)(
        health(pg, webhook_id)), timeout=20, msg=f'webhook {webhook_id} to fail 20 times')


def wait_settled(pg, webhook_id):
    """Waits until none of a webhook's deliveries is in flight: what was
    claimed has been sent and its attempt written."""
    wait_until(lambda: rows(pg, f"""SELECT count(*) AS n FROM reghook.deliveries
                                    WHERE webhook_id = {int(webhook_id)}
                                      AND status = 'in_flight'""")[0]['n'] == 0,
               timeout=20, msg=f'webhook {webhook_id} with nothing in flight')


def wait_claims_begun_before(pg):
    """Waits until every claim that began before now has ended: its
    statements may have read a webhook as it was before a change just
    committed, and leased a delivery by it (wait_settled() then waits for
    that delivery's attempt)."""
    since = pg.psql('SELECT clock_timestamp()').strip()
    wait_until(lambda: pg.psql(f"""SELECT count(*) FROM pg_stat_activity
                                 WHERE pid <> pg_backend_pid() AND state = 'active'
                                   AND query LIKE '%claim_deliveries(%'
                                   AND query_start < '{since}'""").strip() == '0',
               timeout=10, interval=0.01, msg='the claims begun before')


def test_a_refusing_webhook_rests_while_another_of_the_namespace_is_delivered(
        reghook_factory, pg, endpoint_factory):
    daemon = reghook_factory(FAST)
    token = register(daemon, 'team-a')
    hook = endpoint_factory()
    healthy = add_webhook(daemon, 'team-a', hook.url('/'))
    dead = add_webhook(daemon, 'team-a', f'http://127.0.0.1:{free_port()}/')
    tags = [f't{i}' for i in range(300)]
    post(daemon, token, *[event(tag=t) for t in tags])

    received = hook.wait_for(300, timeout=30)
    assert sorted(r.json()['push_data']['tag'] for r in received) == sorted(tags)
    wait_status(pg, healthy, 'succeeded')
    wait_resting(pg, dead)
    wait_claims_begun_before(pg)  # one may have read the webhook before its 20th failure
    # Resting: nothing more is claimed for it until 10 s after its last
    # failure, though its retries came due a second after each failure. The
    # pause counts from now, whatever the healthy deliveries took on a busy
    # machine (a probe 10 s after the last failure is due).
    pg.psql(f'UPDATE reghook.webhooks SET last_failure_at = now() WHERE id = {int(dead)}')
    wait_claims_begun_before(pg)  # one may have read the time before, and leased a probe
    wait_settled(pg, dead)
    before = health(pg, dead)
    time.sleep(3)
    after = health(pg, dead)
    assert after['attempts'] == before['attempts'], (before, after)
    assert after['enabled'] and after['pending'] == 300, after
    # What was not sent before the rest began (claims run ahead of the
    # writing of the failures) keeps its attempts: it waits for the endpoint.
    assert rows(pg, f"""SELECT count(*) AS n FROM reghook.deliveries
                        WHERE webhook_id = {int(dead)} AND attempts = 0""")[0]['n'] > 0

    # The healthy webhook still gets what comes next, at once.
    post(daemon, token, event(tag='later'))
    assert hook.wait_for(301)[300].json()['push_data']['tag'] == 'later'


def test_a_resting_webhook_is_probed_one_at_a_time_and_drains_when_it_answers(
        reghook_factory, pg, endpoint_factory):
    daemon = reghook_factory(FAST)
    token = register(daemon, 'team-a')
    hook = endpoint_factory()
    hook.respond(503, b'down')
    webhook_id = add_webhook(daemon, 'team-a', hook.url('/'))
    post(daemon, token, *[event(tag=f't{i}') for i in range(60)])
    wait_resting(pg, webhook_id)
    wait_claims_begun_before(pg)  # one may have read the webhook before its 20th failure
    wait_settled(pg, webhook_id)
    seen = len(hook.requests)

    def pause_over():
        pg.psql("UPDATE reghook.webhooks SET last_failure_at = now() - interval '1 minute' "
                f'WHERE id = {int(webhook_id)}')

    # Its pause over, it gets one probe; failing, that probe starts another pause.
    pause_over()
    hook.wait_for(seen + 1)
    time.sleep(2)
    assert len(hook.requests) == seen + 1
    # The endpoint is back: the next probe succeeds, and the rest follow.
    hook.respond(200, b'ok')
    pause_over()
    wait_status(pg, webhook_id, 'succeeded', timeout=30)
    assert {r.json()['push_data']['tag'] for r in hook.requests} == {f't{i}' for i in range(60)}
    assert health(pg, webhook_id)['failures_in_a_row'] == 0


def test_a_disabled_webhooks_backlog_is_not_read_at_every_claim(reghook_factory, pg):
    """A webhook disabled with deliveries waiting (by hand, a 410, or the
    5-day rule) keeps them until it is enabled again. Every claim asked
    whether it had a test push to send by reading through all of them:
    20,000 rows a claim here (50 ms at 100,000 waiting, for as long as it
    stayed disabled), and the claim that took a test push read them again.
    Its test pushes have an index of their own now; one is still sent, the
    others still wait. Nor are they read by a plan made while little was
    due (a claim's plan is kept for its session): the question asked of
    each webhook could be answered for all at once, from every due
    delivery (1,000 webhooks of another namespace here)."""
    daemon = reghook_factory()
    register(daemon, 'team-a', 'team-b')
    webhook = add_webhook(daemon, 'team-a', f'http://127.0.0.1:{free_port()}/')
    other = add_webhook(daemon, 'team-b', f'http://127.0.0.1:{free_port()}/')
    daemon.stop()
    columns = pg.psql("""SELECT string_agg(quote_ident(column_name), ', ')
                         FROM information_schema.columns
                         WHERE table_schema = 'reghook' AND table_name = 'webhooks'
                           AND column_name <> 'id'""").strip()
    pg.psql(f"""INSERT INTO reghook.webhooks ({columns})
                SELECT {columns} FROM reghook.webhooks, generate_series(1, 999)
                WHERE id = {int(other)}""")
    source = int(pg.psql('SELECT id FROM reghook.registry_sources').strip())

    def queue(repository, count):
        pg.psql(f"""SELECT count(*) FROM reghook.ingest((
            SELECT jsonb_agg(jsonb_build_object(
                'i', g, 's', {source}, 'id', '{repository}-' || g, 'action', 'push',
                'repository', '{repository}', 'tag', 't' || g,
                'digest', 'sha256:{'ab' * 32}',
                'media_type', 'application/vnd.oci.image.manifest.v1+json',
                'request_id', 'req-' || g, 'actor', 'alice', 'ts', now(),
                'raw', jsonb_build_object('id', '{repository}-' || g)))
            FROM generate_series(1, {count}) g), NULL, 0, 0, '{{}}', 0)""")

    # team-b's 1,000 webhooks have a delivery each, due tomorrow; the
    # statistics see nothing due.
    queue('team-b/app', 1)
    pg.psql("UPDATE reghook.deliveries SET next_attempt_at = now() + interval '1 day'")
    pg.psql('VACUUM ANALYZE reghook.deliveries')
    pg.psql('ANALYZE reghook.webhooks')
    conn = pg.connect()
    cur = conn.cursor()

    def rows_read():
        """Rows of deliveries this session read (counted until PostgreSQL
        takes its counts in, after the transaction: so a difference)."""
        cur.execute("""SELECT coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0)
                       FROM pg_stat_xact_user_tables
                       WHERE relid = 'reghook.deliveries'::regclass""")
        return cur.fetchone()[0]

    def claim():
        """What one claim leased (is_test of each) and the rows of
        deliveries it read."""
        cur.execute('BEGIN')
        before = rows_read()
        cur.execute("SELECT is_test FROM reghook.claim_deliveries('test', 64, 16, '{}', 10000)")
        leased = [row[0] for row in cur.fetchall()]
        read = rows_read() - before
        cur.execute('COMMIT')
        return leased, read

    assert claim()[0] == []  # its plan made now, kept
    queue('team-a/app', 20000)
    daemon.run_cli('webhook', 'disable', str(webhook))
    leased, read = claim()
    assert leased == [] and read < 100, read
    assert rows(pg, f"""SELECT count(*) AS n FROM reghook.deliveries
                        WHERE webhook_id = {int(webhook)} AND status = 'pending'""")[0]['n'] == 20000
    pg.psql(f'SELECT reghook.test_webhook({int(webhook)})')
    leased, read = claim()
    assert leased == [True] and read < 100, read
    leased, read = claim()
    assert leased == [] and read < 100, read
