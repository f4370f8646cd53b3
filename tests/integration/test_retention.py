"""history_retention: the janitor removes finished deliveries (with their
attempts) and unreferenced events older than the retention, and nothing
newer or unfinished."""

import re

from harness import run_reghook, wait_until


def namespace_with_webhook(pg):
    """Namespace team-a (id 1), registry source main (1), webhook 1 to a
    closed port, through the CLI."""
    run_reghook(['migrate'], database_url=pg.url())
    run_reghook(['namespace', 'add', 'team-a'], database_url=pg.url())
    run_reghook(['registry', 'add', 'main'], database_url=pg.url())
    run_reghook(['webhook', 'add', 'team-a', 'http://127.0.0.1:9/'], database_url=pg.url())


def test_old_history_is_pruned_and_recent_kept(pg, reghook_factory):
    namespace_with_webhook(pg)
    pg.psql("""
        INSERT INTO reghook.events (source_id, event_uuid, namespace_id, repository, name,
            action, tag, digest, occurred_at, received_at, raw)
        SELECT 1, 'e' || i, 1, 'team-a/app', 'app', 'push', 't', 'sha256:1',
               now() - make_interval(hours => i), now() - make_interval(hours => i), '{}'
        FROM generate_series(1, 6) i;
        -- Finished 3 h ago, finished just now, and a 5 h old one still pending.
        INSERT INTO reghook.deliveries (webhook_id, event_id, action, status, completed_at)
        VALUES (1, 3, 'push', 'failed', now() - interval '3 hours'),
               (1, 4, 'push', 'succeeded', now()),
               (1, 5, 'push', 'pending', NULL);
        INSERT INTO reghook.delivery_attempts (delivery_id, attempt, webhook_id, attempted_at,
            duration_ms, method, url, request_headers, instance)
        SELECT id, 1, 1, now() - interval '3 hours', 5, 'POST', 'http://x/', '[]', 'test'
        FROM reghook.deliveries;
    """)
    reghook_factory({'history_retention': '2h'})

    def remaining():
        return pg.psql('SELECT string_agg(event_uuid, \',\' ORDER BY event_uuid) '
                       'FROM reghook.events').strip()
    # Events e1 (1 h old) stays; e2, e3, e6 go (old, nothing refers to them
    # once e3's finished delivery is gone); e4 and e5 have live deliveries.
    wait_until(lambda: remaining() == 'e1,e4,e5', timeout=15, msg='pruning')
    assert pg.psql("SELECT string_agg(status, ',' ORDER BY status) FROM reghook.deliveries"
                   ).strip() == 'pending,succeeded'
    assert pg.psql('SELECT count(*) FROM reghook.delivery_attempts').strip() == '2'


def test_prune_history_batches_and_frees_the_events_of_the_deliveries_it_removes(pg):
    """prune_history(retention, batch) called by hand, as the janitor calls
    it: each call removes at most `batch` finished deliveries (their
    attempts with them) and frees the events they were the last to refer
    to; an event still referred to by another delivery stays until that one
    goes; old events that no delivery ever referred to go once no old
    finished delivery is left; unfinished deliveries and recent rows stay."""
    run_reghook(['migrate'], database_url=pg.url())
    run_reghook(['namespace', 'add', 'team-a'], database_url=pg.url())
    run_reghook(['registry', 'add', 'main'], database_url=pg.url())
    for path in ('a', 'b'):
        run_reghook(['webhook', 'add', 'team-a', f'http://127.0.0.1:9/{path}'], database_url=pg.url())
    pg.psql("""
        -- Events 1-6 are 3 days old, 7 is 1 hour old; 8 and 9 (3 days old) had no webhook.
        INSERT INTO reghook.events (source_id, event_uuid, namespace_id, repository, name,
            action, tag, occurred_at, received_at, raw)
        SELECT 1, 'e' || i, 1, 'team-a/app', 'app', 'push', 't',
               now() - CASE WHEN i = 7 THEN interval '1 hour' ELSE interval '3 days' END,
               now() - CASE WHEN i = 7 THEN interval '1 hour' ELSE interval '3 days' END, '{}'
        FROM generate_series(1, 9) i;
        -- Events 1-5 to both webhooks, finished 3 days ago, except: event 5's
        -- delivery to webhook 2 is pending; event 6 to webhook 1 finished an
        -- hour ago; event 7's finished just now.
        INSERT INTO reghook.deliveries (webhook_id, event_id, action, status, completed_at, created_at)
        SELECT w, e, 'push', CASE WHEN e = 5 AND w = 2 THEN 'pending' ELSE 'succeeded' END,
               CASE WHEN e = 5 AND w = 2 THEN NULL
                    WHEN e = 6 THEN now() - interval '1 hour'
                    WHEN e = 7 THEN now()
                    ELSE now() - interval '3 days' + e * interval '1 minute' + w * interval '1 second' END,
               now() - interval '3 days'
        FROM generate_series(1, 7) e, generate_series(1, 2) w
        WHERE e <= 5 OR w = 1;
        INSERT INTO reghook.delivery_attempts (delivery_id, attempt, webhook_id, attempted_at,
            duration_ms, method, url, request_headers, instance)
        SELECT id, a, webhook_id, created_at, 5, 'POST', 'http://x/', '[]', 'test'
        FROM reghook.deliveries, generate_series(1, 2) a;
    """)

    def state():
        return pg.psql("""SELECT (SELECT string_agg(event_uuid, ',' ORDER BY id) FROM reghook.events),
                                 (SELECT count(*) FROM reghook.deliveries),
                                 (SELECT count(*) FROM reghook.delivery_attempts)""").strip()

    def prune(batch):
        return int(pg.psql(f"SELECT reghook.prune_history(interval '2 days', {batch})"))
    assert state() == 'e1,e2,e3,e4,e5,e6,e7,e8,e9|12|24'
    # Three of the nine old finished deliveries (in completion order): event
    # 1's two, and event 2's first, so event 2 stays for its second.
    assert prune(3) == 3 + 1
    assert state() == 'e2,e3,e4,e5,e6,e7,e8,e9|9|18'
    assert prune(3) == 3 + 2
    assert state() == 'e4,e5,e6,e7,e8,e9|6|12'
    # The last three old finished ones; event 5's pending delivery keeps it.
    assert prune(3) == 3 + 1
    assert state() == 'e5,e6,e7,e8,e9|3|6'
    # No old finished delivery is left: the old events no delivery ever
    # referred to go, `batch` at a time.
    assert prune(1) == 1
    assert prune(1) == 1
    assert state() == 'e5,e6,e7|3|6'
    assert prune(3) == 0
    assert state() == 'e5,e6,e7|3|6'


def test_the_janitor_prunes_a_long_expiry_batch_after_batch(pg, reghook_factory):
    """More old history than many of the janitor's batches: it goes on,
    batch after batch, until all of it is gone."""
    namespace_with_webhook(pg)
    pg.psql("""
        INSERT INTO reghook.events (source_id, event_uuid, namespace_id, repository, name,
            action, tag, digest, occurred_at, received_at, raw)
        SELECT 1, 'old' || i, 1, 'team-a/app', 'app', 'push', 't' || i, 'sha256:1',
               now() - interval '3 days', now() - interval '3 days', '{}'
        FROM generate_series(1, 2500) i;
        INSERT INTO reghook.deliveries (webhook_id, event_id, action, status, completed_at)
        SELECT 1, id, 'push', 'succeeded', now() - interval '3 days' FROM reghook.events;
        INSERT INTO reghook.delivery_attempts (delivery_id, attempt, webhook_id, attempted_at,
            duration_ms, method, url, request_headers, instance)
        SELECT id, 1, 1, now() - interval '3 days', 5, 'POST', 'http://x/', '[]', 'test'
        FROM reghook.deliveries;
        -- And 300 events older still that no delivery refers to.
        INSERT INTO reghook.events (source_id, event_uuid, namespace_id, repository, name,
            action, tag, digest, occurred_at, received_at, raw)
        SELECT 1, 'orphan' || i, 1, 'team-a/app', 'app', 'push', 'o' || i, 'sha256:1',
               now() - interval '4 days', now() - interval '4 days', '{}'
        FROM generate_series(1, 300) i;
        -- A day old: kept.
        INSERT INTO reghook.events (source_id, event_uuid, namespace_id, repository, name,
            action, tag, digest, occurred_at, received_at, raw)
        VALUES (1, 'recent', 1, 'team-a/app', 'app', 'push', 'r', 'sha256:1',
                now() - interval '1 day', now() - interval '1 day', '{}');
    """)
    reghook_factory({'history_retention': '2d'})

    def counts():
        return pg.psql("""SELECT (SELECT count(*) FROM reghook.events) || ',' ||
                                 (SELECT count(*) FROM reghook.deliveries) || ',' ||
                                 (SELECT count(*) FROM reghook.delivery_attempts)""").strip()
    wait_until(lambda: counts() == '1,0,0', timeout=60, msg='pruning all the old history')
    assert pg.psql('SELECT event_uuid FROM reghook.events').strip() == 'recent'


# Today's date in UTC, whose days the attempts' partitions are.
TODAY = "(now() AT TIME ZONE 'UTC')::date"


def partitions(pg):
    """The attempts' partitions but the default, by name."""
    return pg.psql("SELECT string_agg(partition::text, ',' ORDER BY lower NULLS FIRST) "
                   "FROM reghook.attempt_partitions()").strip().replace('reghook.', '').split(',')


def day_name(pg, days):
    return pg.psql(f"SELECT 'delivery_attempts_' || to_char({TODAY} + {days}, 'YYYYMMDD')").strip()


def five_days_of_history(pg):
    """Namespace, source and webhook as namespace_with_webhook(); the
    attempts' partitions of the last five days; a delivery finished in each
    of those days (at noon, UTC, its event received then), two attempts each."""
    namespace_with_webhook(pg)
    assert pg.psql(f'SELECT reghook.add_attempt_partitions({TODAY} - 5, {TODAY} - 1)').strip() == '5'
    pg.psql("""
        INSERT INTO reghook.events (source_id, event_uuid, namespace_id, repository, name,
            action, tag, digest, occurred_at, received_at, raw)
        SELECT 1, 'd' || i, 1, 'team-a/app', 'app', 'push', 't', 'sha256:1', t, t, '{}'
        FROM generate_series(1, 5) i,
             LATERAL (SELECT date_trunc('day', now(), 'UTC') - i * interval '1 day'
                             + interval '12 hours' AS t) x;
        INSERT INTO reghook.deliveries (webhook_id, event_id, action, status, completed_at, created_at)
        SELECT 1, id, 'push', 'succeeded', received_at, received_at FROM reghook.events;
        INSERT INTO reghook.delivery_attempts (delivery_id, attempt, webhook_id, attempted_at,
            duration_ms, method, url, request_headers, instance)
        SELECT id, a, 1, completed_at - (2 - a) * interval '1 minute', 5, 'POST', 'http://x/', '[]',
               'test'
        FROM reghook.deliveries, generate_series(1, 2) a;""")


def test_an_expired_day_of_attempts_is_dropped_whole(pg, reghook_factory):
    """delivery_attempts has a partition per UTC day: the janitor makes
    today's and the next two days' and drops a day's once all of it has
    expired, then deletes that day's deliveries and events (whole days, with
    a retention of a day or more). Nothing of the day is deleted row by row
    first: its partition's rows are all still there when it goes."""
    five_days_of_history(pg)
    assert pg.psql('SELECT count(*) FROM reghook.delivery_attempts_default').strip() == '0'
    # The oldest day's rows are never deleted one by one: a trigger counts any.
    pg.psql(f"""
        CREATE TABLE public.deleted_rows (n integer);
        CREATE FUNCTION public.count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO public.deleted_rows VALUES (1); RETURN OLD; END $$;
        CREATE TRIGGER count_deleted BEFORE DELETE ON reghook.{day_name(pg, -5)}
            FOR EACH ROW EXECUTE FUNCTION public.count_deleted();
        CREATE TRIGGER count_deleted BEFORE DELETE ON reghook.{day_name(pg, -4)}
            FOR EACH ROW EXECUTE FUNCTION public.count_deleted();
        GRANT INSERT ON public.deleted_rows TO PUBLIC;""")
    # 3 days: days -5 and -4 have expired whole (the cutoff is day -3's midnight).
    daemon = reghook_factory({'history_retention': '3d'})
    expected = [day_name(pg, d) for d in (-3, -2, -1, 0, 1, 2)]
    wait_until(lambda: partitions(pg) == expected, timeout=15, msg='expired partitions dropped')
    wait_until(lambda: pg.psql('SELECT count(*) FROM reghook.deliveries').strip() == '3',
               timeout=15, msg='their deliveries pruned')
    assert pg.psql("SELECT string_agg(event_uuid, ',' ORDER BY event_uuid) FROM reghook.events"
                   ).strip() == 'd1,d2,d3'
    assert pg.psql('SELECT count(*) FROM reghook.delivery_attempts').strip() == '6'
    assert pg.psql('SELECT count(*) FROM public.deleted_rows').strip() == '0'
    assert '2 expired day(s) of attempts dropped' in daemon.log()


def test_attempts_go_with_their_deliveries_from_every_partition(pg):
    """The attempts of deleted deliveries go with them, whichever partition
    holds them (a day's, or the default for days that have none): a webhook
    removed takes its history; another's stays."""
    namespace_with_webhook(pg)
    run_reghook(['webhook', 'add', 'team-a', 'http://127.0.0.1:9/other'], database_url=pg.url())
    pg.psql(f"""
        SELECT reghook.add_attempt_partitions({TODAY} - 1, {TODAY});
        INSERT INTO reghook.deliveries (webhook_id, action, status, completed_at)
        SELECT w, 'push', 'succeeded', now() FROM generate_series(1, 2) w, generate_series(1, 3);
        -- Today, yesterday, and ten days ago (the default partition).
        INSERT INTO reghook.delivery_attempts (delivery_id, attempt, webhook_id, attempted_at,
            duration_ms, method, url, request_headers, instance)
        SELECT id, a, webhook_id, now() - (array[0, 1, 10])[a] * interval '1 day', 5, 'POST',
               'http://x/', '[]', 'test'
        FROM reghook.deliveries, generate_series(1, 3) a;""")

    def counts():
        return pg.psql("""SELECT string_agg(tableoid::regclass::text || ':' || webhook_id || ':' || n,
                                            ',' ORDER BY tableoid::regclass::text, webhook_id)
                          FROM (SELECT tableoid, webhook_id, count(*) n FROM reghook.delivery_attempts
                                GROUP BY 1, 2) x""").strip().replace('reghook.', '')
    yesterday, today = day_name(pg, -1), day_name(pg, 0)
    assert counts() == (f'{yesterday}:1:3,{yesterday}:2:3,{today}:1:3,{today}:2:3,'
                        'delivery_attempts_default:1:3,delivery_attempts_default:2:3')
    run_reghook(['webhook', 'remove', '1'], database_url=pg.url())
    assert counts() == f'{yesterday}:2:3,{today}:2:3,delivery_attempts_default:2:3'
    # By hand too, as an admin would.
    pg.psql("DELETE FROM reghook.deliveries WHERE id = (SELECT min(id::text)::uuid FROM reghook.deliveries)")
    assert counts() == f'{yesterday}:2:2,{today}:2:2,delivery_attempts_default:2:2'


def test_an_upgraded_history_becomes_one_partition_dropped_once_expired(pg, reghook_factory):
    """A database of before the partitions (migrations 001-010 as released),
    with attempts: `reghook migrate` makes its table the partition of
    everything before the next UTC midnight, every row kept and readable;
    new days get partitions of their own; and the old one goes whole once
    its newest day has expired."""
    pg.apply_released_migrations(10)
    pg.psql("""SELECT reghook.namespace_add('team-a');
        SELECT reghook.webhook_add('team-a', 'http://127.0.0.1:9/');
        INSERT INTO reghook.deliveries (webhook_id, action, status, completed_at)
        SELECT 1, 'push', 'succeeded', now() - i * interval '1 hour' FROM generate_series(1, 40) i;
        INSERT INTO reghook.delivery_attempts (delivery_id, attempt, webhook_id, attempted_at,
            duration_ms, method, url, request_headers, instance)
        SELECT id, 1, 1, completed_at, 5, 'POST', 'http://x/', '[]', 'test' FROM reghook.deliveries;""")
    run_reghook(['migrate'], database_url=pg.url())
    before = 'delivery_attempts_before_' + day_name(pg, 1)[len('delivery_attempts_'):]
    assert partitions(pg) == [before]
    assert pg.psql(f'SELECT count(*) FROM reghook.{before}').strip() == '40'
    assert pg.psql("SELECT count(*) FROM reghook.delivery_history WHERE attempt = 1").strip() == '40'
    # Kept while any of it is within the retention; then dropped whole.
    reghook_factory({'history_retention': '1d'})
    wait_until(lambda: partitions(pg) == [before, day_name(pg, 1), day_name(pg, 2)], timeout=15,
               msg='the next days made')
    # A retention that ends just after the next midnight: not yet.
    assert pg.psql("SELECT reghook.keep_attempt_partitions(interval '1 day' - "
                   "(date_trunc('day', now(), 'UTC') + interval '2 days' - now()) "
                   "+ interval '1 minute')").strip() == '0'
    # One that ends at it: the old table has expired whole.
    assert pg.psql("SELECT reghook.keep_attempt_partitions(interval '1 day' - "
                   "(date_trunc('day', now(), 'UTC') + interval '2 days' - now()))").strip() == '1'
    assert partitions(pg) == [day_name(pg, 1), day_name(pg, 2)]


def test_a_long_query_on_the_history_delays_the_drop_not_the_pruning(pg, reghook_factory):
    """A person's query holding delivery_attempts open: the janitor waits
    100 ms for its lock, says so, and prunes the expired days row by row
    (the deliveries and their attempts); the partitions go at a later
    round, once the query has ended."""
    five_days_of_history(pg)
    reader = pg.connect()
    cur = reader.cursor()
    cur.execute('BEGIN')
    cur.execute('SELECT count(*) FROM reghook.delivery_attempts')
    assert cur.fetchone()[0] == 10
    daemon = reghook_factory({'history_retention': '3d'})
    wait_until(lambda: pg.psql('SELECT count(*) FROM reghook.deliveries').strip() == '3',
               timeout=15, msg='the expired deliveries pruned')
    assert pg.psql('SELECT count(*) FROM reghook.delivery_attempts').strip() == '6'
    assert [day_name(pg, -5), day_name(pg, -4)] == partitions(pg)[:2]
    assert "keeping the attempts' day partitions: canceling statement due to lock timeout" \
        in daemon.log()
    cur.execute('ROLLBACK')
    assert pg.psql("SELECT reghook.keep_attempt_partitions(interval '3 days')").strip() == '2'
    assert partitions(pg) == [day_name(pg, d) for d in (-3, -2, -1, 0, 1, 2)]


def test_deleted_deliveries_find_their_attempts_by_key(pg):
    """The trigger that takes a deleted delivery's attempts with it looks
    each one up by key, in the partitions old enough to hold it only: a
    hash join read every attempt of those partitions instead, a day's at
    each of the janitor's calls."""
    five_days_of_history(pg)
    # 3,000 attempts of kept deliveries in each of days -3 to -1, and 1,000
    # test pushes finished (and tried) in each of the expired days -5 and -4.
    pg.psql("""
        INSERT INTO reghook.deliveries (webhook_id, action, status, completed_at, created_at)
        SELECT 1, 'push', 'succeeded', now(), now() FROM generate_series(1, 9000);
        INSERT INTO reghook.delivery_attempts (delivery_id, attempt, webhook_id, attempted_at,
            duration_ms, method, url, request_headers, instance)
        SELECT id, 1, 1, now() - (1 + n % 3) * interval '1 day', 5, 'POST', 'http://x/', '[]', 'test'
        FROM (SELECT id, row_number() OVER () AS n FROM reghook.deliveries WHERE event_id IS NULL) d;
        WITH old AS (
            INSERT INTO reghook.deliveries (webhook_id, action, is_test, status, completed_at, created_at)
            SELECT 1, 'push', true, 'succeeded', t, t
            FROM generate_series(1, 2000) n,
                 LATERAL (SELECT date_trunc('day', now(), 'UTC') - (4 + n % 2) * interval '1 day'
                                 + interval '6 hours' AS t) x
            RETURNING id, completed_at)
        INSERT INTO reghook.delivery_attempts (delivery_id, attempt, webhook_id, attempted_at,
            duration_ms, method, url, request_headers, instance)
        SELECT id, 1, 1, completed_at, 5, 'POST', 'http://x/', '[]', 'test' FROM old;
        ANALYZE reghook.deliveries; ANALYZE reghook.delivery_attempts;""")
    conn = pg.connect()
    cur = conn.cursor()
    cur.execute("LOAD 'auto_explain'")
    for setting in ('log_min_duration = 0', 'log_nested_statements = on', 'log_analyze = on'):
        cur.execute(f'SET auto_explain.{setting}')
    cur.execute('SET client_min_messages = log')
    del conn.notices[:]
    cur.execute("SELECT reghook.prune_history(interval '3 days', 500)")
    assert cur.fetchone()[0] >= 500  # 500 deliveries, and the events they freed
    plan = next(n for n in conn.notices if 'DELETE FROM reghook.delivery_attempts a' in n)
    assert 'Nested Loop' in plan and 'Hash Join' not in plan, plan
    assert f'Index Scan using {day_name(pg, -3)}_pkey' in plan, plan
    assert f'Seq Scan on {day_name(pg, -3)}' not in plan and 'Materialize' not in plan, plan
    # Partitions newer than a day after the deliveries' completion are not read.
    assert re.search(rf'Index Scan using {day_name(pg, -1)}_pkey .*\(never executed\)', plan), plan
    assert pg.psql('SELECT count(*) FROM reghook.deliveries').strip() == str(9000 + 5 + 2000 - 500)
    assert pg.psql('SELECT count(*) FROM reghook.delivery_attempts a WHERE NOT EXISTS '
                   '(SELECT FROM reghook.deliveries d WHERE d.id = a.delivery_id)').strip() == '0'
