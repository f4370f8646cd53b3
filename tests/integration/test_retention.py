"""history_retention: the janitor removes finished deliveries (with their
attempts) and unreferenced events older than the retention, and nothing
newer or unfinished."""

from harness import run_reghook, wait_until


def test_old_history_is_pruned_and_recent_kept(pg, reghook_factory):
    run_reghook(['migrate'], database_url=pg.url())
    run_reghook(['namespace', 'add', 'team-a'], database_url=pg.url())
    run_reghook(['registry', 'add', 'main'], database_url=pg.url())
    run_reghook(['webhook', 'add', 'team-a', 'http://127.0.0.1:9/'], database_url=pg.url())
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
