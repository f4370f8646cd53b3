"""history_retention: the janitor removes finished deliveries (with their
attempts) and unreferenced events older than the retention, and nothing
newer or unfinished."""

import pytest

from harness import run_reghook, wait_until


def namespace_with_webhook(pg):
    """Namespace team-a (id 1), registry source main (1), webhook 1 to a
    closed port, through the CLI."""
    run_reghook(['migrate'], database_url=pg.url())
    run_reghook(['namespace', 'add', 'team-a'], database_url=pg.url())
    run_reghook(['registry', 'add', 'main'], database_url=pg.url())
    run_reghook(['webhook', 'add', 'team-a', 'http://127.0.0.1:9/'], database_url=pg.url())


def events_a_second_apart(prefix, count, days_ago):
    """SQL adding `count` events of team-a named prefix1..prefixN, received
    a second apart from `days_ago` days ago."""
    return f"""
        INSERT INTO reghook.events (source_id, event_uuid, namespace_id, repository, name,
            action, tag, occurred_at, received_at, raw)
        SELECT 1, '{prefix}' || i, 1, 'team-a/app', 'app', 'push', 't', now(),
               now() - interval '{days_ago} days' + i * interval '1 second', '{{}}'
        FROM generate_series(1, {count}) i;"""


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
    """prune_history(retention, batch) called by hand, as an older janitor calls
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
        # The two-argument form, which older instances' janitors call.
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


@pytest.mark.long
def test_the_scan_for_unreferenced_events_looks_at_a_bounded_stretch_per_call(pg):
    """2,000 old events that pending deliveries (a disabled webhook's, which
    wait) refer to, and 8 unreferenced ones: 5 received with 5 of the held
    ones in one ingest batch (one received_at) where a call's stretch ends,
    3 after all of them. Each call looks at 8 x batch old events at most,
    going on where the last left off (orphans_next, orphans_next_id: the id
    tells the batch's events apart), until the 8 are gone; the 2,000 stay.
    A scan from the oldest at every call looked at all 2,000 each time
    (millions of them outlasted db_timeout)."""
    namespace_with_webhook(pg)
    pg.psql(events_a_second_apart('held', 1995, 5) + """
        INSERT INTO reghook.events (source_id, event_uuid, namespace_id, repository, name,
            action, tag, occurred_at, received_at, raw)
        SELECT 1, CASE WHEN i <= 5 THEN 'held-in-batch' ELSE 'orphan-in-batch' END || i, 1,
               'team-a/app', 'app', 'push', 't', now(), now() - interval '4 days', '{}'
        FROM generate_series(1, 10) i ORDER BY i;
        INSERT INTO reghook.deliveries (webhook_id, event_id, action, status)
        SELECT 1, id, 'push', 'pending' FROM reghook.events WHERE event_uuid LIKE 'held%';
    """ + events_a_second_apart('orphan-late', 3, 3) + 'ANALYZE reghook.events;')

    at, at_id, calls, most = '-infinity', '0', 0, 0
    while pg.psql("SELECT count(*) FROM reghook.events WHERE event_uuid LIKE 'orphan%'"
                  ).strip() != '0':
        calls += 1
        assert calls <= 40, f'{calls} calls, and these are left: ' + pg.psql(
            "SELECT string_agg(event_uuid, ',') FROM reghook.events "
            "WHERE event_uuid LIKE 'orphan%'")
        assert at != 'edge', 'a pass ended with unreferenced events left'
        # The index entries the call read: the session's count before and
        # after it, in one transaction (no count is sent on meanwhile).
        read = "SELECT pg_stat_get_xact_tuples_returned('reghook.events_received'::regclass);"
        before, result, after = pg.psql(
            f"BEGIN; {read} SELECT pruned, coalesce(orphans_next::text, 'edge'), "
            f"coalesce(orphans_next_id, 0) "
            f"FROM reghook.prune_history_from(interval '2 days', 10, '{at}', {at_id}); {read} COMMIT"
        ).splitlines()
        pruned, at, at_id = result.split('|')
        most = max(most, int(after) - int(before))
    # 8 x 10 and a few more where the planner sorts the tail of the index
    # by id in groups; when few rows are left it may sort them whole: never
    # the 2,000 a scan from the oldest reads at every call.
    assert 80 <= most <= 500, most
    assert calls >= 2000 // 80, calls
    assert pg.psql("SELECT count(*) FROM reghook.events").strip() == '2000'


def test_a_pass_ends_only_when_its_last_stretch_is_all_looked_at(pg):
    """25 old unreferenced events and nothing else, batch 10: the first
    call's stretch reaches the retention's edge, but it had room for 10
    only: the pass goes on (orphans_next, not NULL) until none is left."""
    namespace_with_webhook(pg)
    pg.psql(events_a_second_apart('orphan', 25, 3))
    at, at_id, seen = '-infinity', '0', []
    while True:
        pruned, at, at_id = pg.psql(
            f"SELECT pruned, coalesce(orphans_next::text, 'edge'), coalesce(orphans_next_id, 0) "
            f"FROM reghook.prune_history_from(interval '2 days', 10, '{at}', {at_id})"
        ).strip().split('|')
        seen.append((int(pruned), at))
        if at == 'edge':
            break
        assert len(seen) < 10, seen
    assert [p for p, _ in seen] == [10, 10, 5], seen
    assert pg.psql('SELECT count(*) FROM reghook.events').strip() == '0'


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
