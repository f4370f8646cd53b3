"""POST /events: what a registry gets back, and what is stored, for every
kind of event and every kind of bad request; then the real registry,
pushed to with skopeo, including while PostgreSQL is down."""

import base64
import concurrent.futures
import copy
import http.client
import json
import re
import time
import uuid

import pytest

from harness import add_webhook, register, stop_and_wait, wait_until

V1 = 'application/vnd.docker.distribution.events.v1+json'
DIGEST = 'sha256:' + 'ab' * 32


def post(daemon, token, body, content_type=V1, raw=False):
    headers = {'Content-Type': content_type}
    if token is not None:
        headers['Authorization'] = f'Bearer {token}'
    data = body if raw else json.dumps(body).encode()
    status, hdrs, out = daemon.post('/events', data, headers)
    try:
        return status, hdrs, json.loads(out)
    except ValueError:
        return status, hdrs, out


def event(action='push', repository='team-a/app', tag='1.0', digest=DIGEST,
          media_type='application/vnd.oci.image.manifest.v1+json', request_id=None, **extra):
    target = {'mediaType': media_type, 'size': 344, 'digest': digest, 'length': 344,
              'repository': repository,
              'url': f'http://127.0.0.1:5000/v2/{repository}/manifests/{digest}'}
    if tag is not None:
        target['tag'] = tag
    ev = {'id': str(uuid.uuid4()), 'timestamp': '2026-11-22T18:20:32.255357202Z',
          'action': action, 'target': target,
          'request': {'id': request_id or str(uuid.uuid4()), 'method': 'PUT'},
          'actor': {'name': 'alice'}, 'source': {'addr': 'vm:5000'}}
    ev.update(extra)
    return ev


def events(pg, where='true'):
    rows = pg.psql(f"""SELECT coalesce(json_agg(e ORDER BY e.id), '[]') FROM (
        SELECT ev.id, ev.event_uuid, n.name AS namespace, ev.repository, ev.name, ev.action,
               ev.tag, ev.digest, ev.actor, ev.request_id, ev.occurred_at
        FROM reghook.events ev JOIN reghook.namespaces n ON n.id = ev.namespace_id
        WHERE {where}) e""")
    return json.loads(rows)


def counts(accepted=0, duplicates=0, ignored=0, rejected=0):
    return {'accepted': accepted, 'duplicates': duplicates, 'ignored': ignored,
            'rejected': rejected}


def test_samples_are_classified_and_linked(reghook, pg, samples_dir):
    token = register(reghook, 'team-a')
    expected = {'push-blob': counts(ignored=1), 'pull': counts(ignored=1),
                'push-manifest-tag': counts(accepted=1), 'delete': counts(accepted=1)}
    for path in sorted(samples_dir.glob('*.json')):
        status, _, body = post(reghook, token, path.read_bytes(), raw=True)
        kind = next(k for k in expected if k in path.name)
        assert (status, body) == (200, expected[kind]), path.name
    rows = events(pg)
    assert [(r['action'], r['tag']) for r in rows] == [
        ('push', '1.0'), ('push', 'latest'), ('delete', None), ('delete', 'latest'),
        ('delete', '1.0')]
    assert {r['actor'] for r in rows} == {'alice'}
    assert {r['namespace'] for r in rows} == {'team-a'} and {r['name'] for r in rows} == {'app'}
    digest = rows[0]['digest']
    # The tag deletes carry the digest of the delete-by-digest request they came from.
    assert all(r['digest'] == digest for r in rows)
    assert len({r['request_id'] for r in rows[2:]}) == 1
    assert rows[0]['occurred_at'].startswith('2026-11-22T18:20:32.255357')


def test_untagged_manifest_is_stored_and_triggers_nothing(reghook, pg, endpoint_factory):
    token = register(reghook, 'team-a')
    hook = endpoint_factory()
    webhook_id = add_webhook(reghook, 'team-a', hook.url('/'), '--actions', 'push,delete')
    status, _, body = post(reghook, token, {'events': [event(tag=None)]})
    assert (status, body) == (200, counts(accepted=1))
    assert len(events(pg)) == 1
    assert deliveries(pg, webhook_id) == 0


def deliveries(pg, webhook_id):
    return int(pg.psql(f'SELECT count(*) FROM reghook.deliveries WHERE webhook_id = {webhook_id}'))


def test_deliveries_only_for_enabled_matching_webhooks(reghook, pg, endpoint_factory):
    token = register(reghook, 'team-a', 'team-b')
    url = endpoint_factory().url('/')
    every = add_webhook(reghook, 'team-a', url, '--actions', 'push,delete')
    push_only = add_webhook(reghook, 'team-a', url)
    delete_only = add_webhook(reghook, 'team-a', url, '--actions', 'delete')
    app_only = add_webhook(reghook, 'team-a', url, '--repository', 'app')
    release_tags = add_webhook(reghook, 'team-a', url, '--tag', 'v?.*')
    disabled = add_webhook(reghook, 'team-a', url, enable=False)
    other_ns = add_webhook(reghook, 'team-b', url, '--actions', 'push,delete')

    post(reghook, token, {'events': [event(tag='v1.2')]})
    post(reghook, token, {'events': [event(repository='team-a/tools', tag='latest')]})
    post(reghook, token, {'events': [event(action='delete', tag='old', digest='')]})

    assert deliveries(pg, every) == 3
    assert deliveries(pg, push_only) == 2
    assert deliveries(pg, delete_only) == 1
    assert deliveries(pg, app_only) == 1  # its push; it takes no deletes
    assert deliveries(pg, release_tags) == 1
    assert deliveries(pg, disabled) == 0
    assert deliveries(pg, other_ns) == 0


def test_enabling_later_does_not_replay_old_events(reghook, pg, endpoint_factory):
    token = register(reghook, 'team-a')
    webhook_id = add_webhook(reghook, 'team-a', endpoint_factory().url('/'), enable=False)
    post(reghook, token, {'events': [event()]})
    reghook.run_cli('webhook', 'enable', webhook_id)
    assert deliveries(pg, webhook_id) == 0
    post(reghook, token, {'events': [event(tag='2.0')]})
    assert deliveries(pg, webhook_id) == 1


def test_longest_namespace_wins_and_unrouted_is_not_stored(reghook, pg):
    token = register(reghook, 'team-a', 'team-a/sub')
    status, _, body = post(reghook, token, {'events': [
        event(repository='team-a/sub/app'), event(repository='team-a/subway'),
        event(repository='team-a'), event(repository='elsewhere/app'),
        event(repository='team-ab/app')]})
    assert (status, body) == (200, counts(accepted=3, ignored=2))
    rows = events(pg)
    assert sorted((r['namespace'], r['name']) for r in rows) == [
        ('team-a', ''), ('team-a', 'subway'), ('team-a/sub', 'app')]


def test_scoped_token_rejects_foreign_namespaces(reghook, pg):
    register(reghook, 'team-a', 'team-b', 'team-b/sub')
    token = register(reghook, scope='team-b', name='scoped')
    status, _, body = post(reghook, token, {'events': [
        event(repository='team-a/app'), event(repository='team-b/app'),
        event(repository='team-b/sub/app')]})
    assert (status, body) == (200, counts(accepted=2, rejected=1))
    assert sorted(r['namespace'] for r in events(pg)) == ['team-b', 'team-b/sub']
    assert 'may not post events for namespace team-a' in reghook.log()


def test_a_registry_scope_is_names_or_nothing(reghook, pg):
    """--namespaces takes names, spaces around them dropped; an empty name
    (an empty list, a trailing comma) is a usage error, not a token that
    refuses every event; in SQL, an empty scope or a NULL name is refused."""
    register(reghook, 'team-a', 'team-b')
    for bad in ('', 'team-a,', 'team-a,,team-b', ' , '):
        res = reghook.run_cli('registry', 'add', 'r', '--namespaces', bad, check=False)
        assert res.returncode == 2 and '--namespaces: an empty name' in res.stderr, (bad, res)
    res = reghook.run_cli('registry', 'add', 'r', '--namespaces', 'team-a team-b', check=False)
    assert res.returncode == 1 and 'namespace "team-a team-b" does not exist' in res.stderr, res
    out = reghook.run_cli('registry', 'add', 'r', '--namespaces', ' team-a , team-b').stdout
    assert 'limited to namespaces' in out
    for scope in ("'{}'", "ARRAY['team-a', NULL]"):
        with pytest.raises(Exception) as err:
            pg.psql(f"SELECT reghook.registry_add('s', {scope})")
        assert 'namespaces: give their names, or NULL for all' in str(err.value)
    got = pg.psql("SELECT json_agg(json_build_array(name, namespaces) ORDER BY id) "
                  "FROM reghook.registry_sources")
    assert json.loads(got) == [['main', None], ['r', ['team-a', 'team-b']]]


def test_duplicates_sequential_and_concurrent(reghook, pg, endpoint_factory):
    token = register(reghook, 'team-a')
    webhook_id = add_webhook(reghook, 'team-a', endpoint_factory().url('/'))
    ev = event()
    assert post(reghook, token, {'events': [ev]})[2] == counts(accepted=1)
    assert post(reghook, token, {'events': [ev]})[2] == counts(duplicates=1)
    # The same event twice in one envelope counts once.
    twin = event()
    assert post(reghook, token, {'events': [twin, twin]})[2] == counts(accepted=1, duplicates=1)

    racer = event(tag='race')
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: post(reghook, token, {'events': [racer]}), range(16)))
    assert all(r[0] == 200 for r in results)
    assert sum(r[2]['accepted'] for r in results) == 1
    assert sum(r[2]['duplicates'] for r in results) == 15
    assert len(events(pg, f"event_uuid = '{racer['id']}'")) == 1
    assert deliveries(pg, webhook_id) == 3


@pytest.mark.long
def test_concurrent_requests_share_commits(reghook, pg):
    """Many clients at once: every one answered after its own events are stored."""
    token = register(reghook, 'team-a')
    sent = [event(tag=f't{i}') for i in range(200)]

    def send(ev):
        status, _, body = post(reghook, token, {'events': [ev]})
        # Answered 200 means committed: the row is readable now.
        stored = events(pg, f"event_uuid = '{ev['id']}'") if status == 200 else []
        return status, body, len(stored)

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(send, sent))
    assert all(r == (200, counts(accepted=1), 1) for r in results)


def test_requests_arriving_together_share_one_commit(reghook, pg):
    """Ten registries whose requests reach reghook at the same moment (it is
    stopped while they send, then continued) are stored in one transaction,
    not in a first one holding the first request and others after it."""
    import http.client
    token = register(reghook, 'team-a')
    conns = [http.client.HTTPConnection('127.0.0.1', reghook.port, timeout=30)
             for _ in range(10)]
    for conn in conns:
        conn.connect()
    wait_until(lambda: gauge(reghook, 'reghook_events_queued') == 0, msg='an idle receiver')
    post_together(reghook, pg, token, conns)


def post_together(daemon, pg, token, conns):
    """Posts a new event on each connection (http.client's, connected) while
    the daemon is stopped, then continues it: each is answered 200, and all
    are stored in one transaction."""
    import signal
    headers = {'Content-Type': V1, 'Authorization': f'Bearer {token}'}
    sent = [event(tag=f'together{i}') for i in range(len(conns))]
    try:
        # Stopped before the first request goes: a daemon that took it
        # before the signal did would store it in a commit of its own.
        stop_and_wait(daemon.proc.pid)
        for conn, ev in zip(conns, sent):
            conn.request('POST', '/events', json.dumps({'events': [ev]}), headers)
        # Every request in its socket's queue before reghook goes on: on a
        # loaded machine loopback may hand over the last ones a moment late.
        time.sleep(0.5)
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    for conn in conns:
        answer = conn.getresponse()
        assert (answer.status, json.loads(answer.read())) == (200, counts(accepted=1))
        conn.close()
    ids = ', '.join(f"'{ev['id']}'" for ev in sent)
    assert pg.psql(f"""SELECT count(DISTINCT xmin::text) FROM reghook.events
                       WHERE event_uuid IN ({ids})""").strip() == '1'


def gauge(daemon, name):
    """A gauge of GET /metrics without labels."""
    text = daemon.get('/metrics')[2].decode()
    return float(re.search(rf'^{name} (\S+)$', text, re.M).group(1))


def ingest_waiting_for_locks(pg):
    """How many of reghook's ingest statements wait for a lock."""
    return int(pg.psql("""SELECT count(*) FROM pg_stat_activity
        WHERE wait_event_type = 'Lock' AND query LIKE '%reghook.ingest(%'"""))


HOLDING_LOCKS = {'db_timeout': '60s'}


def hold_ingest_locks_longer(pg):
    """ingest() waits 5 s for a lock before it fails; the tests that hold
    one give it a minute, so that a slow machine does not fail them. Their
    daemon needs a db_timeout as long (HOLDING_LOCKS), or it gives up on
    the statement first."""
    pg.psql("ALTER FUNCTION reghook.ingest(jsonb, text, integer, integer, jsonb, integer) SET lock_timeout = '60s'")


def hold_namespace(pg, name):
    """A transaction holding a namespace's row, which storing its events
    waits for (a key-share lock): release it with rollback()."""
    hold_ingest_locks_longer(pg)
    held = pg.connect()
    held.autocommit = False
    held.cursor().execute('SELECT 1 FROM reghook.namespaces WHERE name = %s FOR UPDATE', (name,))
    return held


def test_batch_waiting_for_a_lock_holds_back_nobody(reghook_factory, pg):
    """A batch stuck on a lock keeps its connection, and the events queued
    meanwhile go through the other connection after a moment (20 ms), not
    when the lock is released; and what queued while both connections were
    held shares one commit."""
    reghook = reghook_factory(HOLDING_LOCKS)
    token = register(reghook, 'team-a', 'team-b')
    # Storing a team-a event takes a key-share lock on its namespace row.
    held = hold_namespace(pg, 'team-a')
    pool = concurrent.futures.ThreadPoolExecutor(16)
    try:
        five = pool.submit(post, reghook, token,
                           {'events': [event(tag=f'f{i}') for i in range(5)]})
        wait_until(lambda: gauge(reghook, 'reghook_events_storing') == 5, timeout=10,
                   interval=0.001, msg='the batch of five to start')
        # One event queued behind a batch of five waits for a fuller
        # queue, but not longer than the batch's first 20 ms (a timer).
        status, _, body = post(reghook, token,
                               {'events': [event(repository='team-b/app')]})
        assert (status, body) == (200, counts(accepted=1))
        assert ingest_waiting_for_locks(pg) == 1 and not five.done()
        # The second connection waits for the lock too; ten requests queue.
        other = pool.submit(post, reghook, token, {'events': [event(tag='other')]})
        wait_until(lambda: ingest_waiting_for_locks(pg) == 2, timeout=10,
                   msg='both connections to wait for the lock')
        queued = [event(repository='team-b/app', tag=f'q{i}') for i in range(10)]
        answers = [pool.submit(post, reghook, token, {'events': [ev]}) for ev in queued]
        wait_until(lambda: gauge(reghook, 'reghook_events_queued') == 10, timeout=10,
                   msg='ten events queued')
        assert gauge(reghook, 'reghook_events_storing') == 6
        assert not any(a.done() for a in answers)
        held.rollback()
        assert five.result(timeout=30)[2] == counts(accepted=5)
        assert other.result(timeout=30)[2] == counts(accepted=1)
        assert all(a.result(timeout=30)[2] == counts(accepted=1) for a in answers)
        ids = ', '.join(f"'{ev['id']}'" for ev in queued)
        assert pg.psql(f"""SELECT count(DISTINCT xmin::text) FROM reghook.events
                           WHERE event_uuid IN ({ids})""").strip() == '1'
    finally:
        held.rollback()
        pool.shutdown(wait=True)


def test_the_queue_is_bounded_in_bytes_too(reghook_factory, pg):
    """While both database connections are held, large envelopes (a
    megabyte of extra fields each, within max_request_body) queue until
    64 MiB of events wait; then 503 with Retry-After: 1, nothing of those
    stored; and everything answered 200 is stored once the lock goes."""
    reghook = reghook_factory(HOLDING_LOCKS)
    token = register(reghook, 'team-a')
    held = hold_namespace(pg, 'team-a')
    pool = concurrent.futures.ThreadPoolExecutor(120)
    try:
        sent = [event(tag=f'big{i}', padding='p' * 1_000_000) for i in range(120)]
        answers = [pool.submit(post, reghook, token, {'events': [ev]}) for ev in sent]
        # Two batches (up to 16 MiB each) wait for the lock, 64 MiB queue.
        wait_until(lambda: sum(a.done() for a in answers) >= 120 - 2 * 16 - 68,
                   timeout=20, msg='the envelopes over 64 MiB answered')
        time.sleep(1)
        refused = [a.result() for a in answers if a.done()]
        assert all(status == 503 and hdrs.get('retry-after') == '1' and
                   body == {'error': 'too many events waiting; retry'}
                   for status, hdrs, body in refused), refused[:1]
        assert 64 <= gauge(reghook, 'reghook_events_queued') <= 68
        held.rollback()
        results = [a.result(timeout=60) for a in answers]
        stored = [ev['id'] for ev, (status, _, _) in zip(sent, results) if status == 200]
        assert all(status in (200, 503) for status, _, _ in results)
        assert len(stored) == 120 - len(refused)
        got = {e['event_uuid'] for e in events(pg)}
        assert got == set(stored)
    finally:
        held.rollback()
        pool.shutdown(wait=True)


def test_v2_delete_shapes_and_timestamps(reghook, pg):
    token = register(reghook, 'team-a')
    request_id = str(uuid.uuid4())
    by_digest = event(action='delete', tag=None, media_type='', request_id=request_id)
    by_digest['target'] = {'repository': 'team-a/app', 'digest': DIGEST, 'size': 0,
                           'mediaType': ''}
    by_digest['timestamp'] = '2026-11-22T20:20:32.5+02:00'
    tag_delete = event(action='delete', request_id=request_id)
    tag_delete['target'] = {'repository': 'team-a/app', 'tag': 'latest', 'digest': '',
                            'mediaType': '', 'size': 0}
    tag_delete['timestamp'] = '2026-11-22T18:20:32Z'
    status, _, body = post(reghook, token, {'events': [by_digest]},
                           content_type='application/vnd.docker.distribution.events.v2+json')
    assert (status, body) == (200, counts(accepted=1))
    status, _, body = post(reghook, token, {'events': [tag_delete]},
                           content_type='application/json; charset=utf-8')
    assert (status, body) == (200, counts(accepted=1))
    rows = events(pg)
    assert [(r['tag'], r['digest']) for r in rows] == [(None, DIGEST), ('latest', DIGEST)]
    assert rows[0]['occurred_at'].startswith('2026-11-22T18:20:32.5')


def digest_delete(repository, request_id, digest):
    ev = event(action='delete', repository=repository, tag=None, request_id=request_id,
               digest=digest)
    ev['target'] = {'repository': repository, 'digest': digest}
    return ev


def tag_delete(repository, request_id, tag='latest'):
    ev = event(action='delete', repository=repository, tag=tag, request_id=request_id)
    ev['target'] = {'repository': repository, 'tag': tag}
    return ev


def test_a_tag_delete_takes_the_digest_of_its_own_request_and_repository_only(reghook, pg):
    """A delete by digest and its tag deletes share a request id, and one
    request deletes in one repository: another repository's digest under
    the same request id is not taken, nor that of an event refused for
    the token's scope in the same envelope."""
    token = register(reghook, 'team-a', 'team-b')
    b_only = register(reghook, scope='team-b', name='b-only')
    digest_a, digest_c, digest_w = ('sha256:' + c * 64 for c in 'acd')
    shared = str(uuid.uuid4())
    assert post(reghook, token, {'events': [digest_delete('team-a/app', shared, digest_a)]})[2] \
        == counts(accepted=1)
    assert post(reghook, token, {'events': [tag_delete('team-b/app', shared)]})[2] == \
        counts(accepted=1)
    scoped = str(uuid.uuid4())
    status, _, body = post(reghook, b_only, {'events': [
        digest_delete('team-a/app', scoped, digest_c), tag_delete('team-b/web', scoped)]})
    assert (status, body) == (200, counts(accepted=1, rejected=1))
    # The same request, repository and source: in one envelope, and across two.
    same = str(uuid.uuid4())
    assert post(reghook, token, {'events': [digest_delete('team-a/web', same, digest_w),
                                            tag_delete('team-a/web', same, 'v1')]})[2] == \
        counts(accepted=2)
    assert post(reghook, token, {'events': [tag_delete('team-a/web', same, 'v2')]})[2] == \
        counts(accepted=1)
    # (An envelope's events are not stored in their order: compared sorted.)
    got = sorted((r['repository'], r['tag'] or '', r['digest'] or '') for r in events(pg))
    assert got == [('team-a/app', '', digest_a), ('team-a/web', '', digest_w),
                   ('team-a/web', 'v1', digest_w), ('team-a/web', 'v2', digest_w),
                   ('team-b/app', 'latest', ''), ('team-b/web', 'latest', '')], got


def test_tag_deletes_sharing_a_request_id_cost_no_more_as_they_pile_up(reghook, pg):
    """Tag deletes of one request id with no delete by digest each looked
    up every earlier one (a token posting thousands made each ingest
    slower than the last). Counted in index entries read by one more
    ingest: rows of events fetched through an index, in the test's own
    transaction."""
    token = register(reghook, 'team-a')
    shared = str(uuid.uuid4())
    for n in range(2):
        body = {'events': [tag_delete('team-a/app', shared, f't{n}-{i}') for i in range(1000)]}
        assert post(reghook, token, body)[2] == counts(accepted=1000)
    source = int(pg.psql("SELECT id FROM reghook.registry_sources WHERE name = 'main'"))
    raw = tag_delete('team-a/app', shared, 'one-more')
    batch = [{'i': 0, 's': source, 'id': raw['id'], 'action': 'delete',
              'repository': 'team-a/app', 'tag': 'one-more', 'request_id': shared,
              'actor': 'alice', 'ts': raw['timestamp'], 'raw': raw}]
    conn = pg.connect()
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("SELECT i, outcome FROM reghook.ingest(%s::jsonb, NULL, 0, 0, '{}', 10000) "
                    "WHERE i IS NOT NULL", [json.dumps(batch)])
        assert cur.fetchall() == [(0, 'accepted')]
        cur.execute("SELECT idx_tup_fetch FROM pg_stat_xact_user_tables "
                    "WHERE schemaname = 'reghook' AND relname = 'events'")
        read = cur.fetchone()[0]
    conn.rollback()
    assert read < 50, f'one more tag delete read {read} rows of events'


BAD_BODIES = [
    (b'', 'empty body'),
    (b'not json', 'not JSON'),
    (b'{"events": [', 'not JSON'),
    (b'[1, 2]', 'not an envelope'),
    (b'{"event": []}', 'not an envelope'),
    (b'{"events": {}}', 'events: not an array'),
    (b'{"events": [5]}', 'events[0]: not an object'),
    (b'{"events": [{"id": "x"}]}', 'events[0].action: missing'),
    (b'{"events": [{"action": 7}]}', 'events[0].action: not a string'),
    (b'{"events": [{"action": "push", "target": {"tag": 5}}]}', 'events[0].target.tag'),
    (b'{"events": [{"action": "push", "target": []}]}', 'events[0].target: not an object'),
    (b'{"events": [{"action": "push", "target": {"tag": "1", "repository": "team-a/x",'
     b' "digest": "sha256:1"}, "timestamp": "2026-11-22T18:20:32Z"}]}', 'events[0].id: missing'),
    (b'{"events": [{"id": "1", "action": "push", "target": {"tag": "1", "repository": "team-a/x"},'
     b' "timestamp": "2026-11-22T18:20:32Z"}]}', 'events[0].target.digest: missing'),
    (b'{"events": [{"id": "1", "action": "push", "target": {"tag": "1", "repository": "team-a/x",'
     b' "digest": "sha256:1"}, "timestamp": "yesterday"}]}', 'events[0].timestamp'),
    (b'{"events": [{"id": "1", "action": "delete", "target": {"repository": "team-a/x"},'
     b' "timestamp": "2026-11-22T18:20:32Z"}]}', 'target.digest or target.tag'),
    # A repository name no registry gives, whose prefixes would cost the
    # square of its length: over 255 bytes, or with an empty component.
    (b'{"events": [{"id": "1", "action": "push", "target": {"repository": "' + b'/' * 1024
     + b'", "tag": "t", "digest": "sha256:1"}, "timestamp": "2026-11-22T18:20:32Z"}]}',
     'events[0].target.repository: longer than 255 bytes'),
    (b'{"events": [{"id": "1", "action": "push", "target": {"repository": "team-a//app",'
     b' "tag": "t", "digest": "sha256:1"}, "timestamp": "2026-11-22T18:20:32Z"}]}',
     "events[0].target.repository: an empty path component in 'team-a//app'"),
    # A dot-segment, which every URL made of the name would lose.
    (b'{"events": [{"id": "1", "action": "push", "target": {"repository": "team-a/../admin",'
     b' "tag": "t", "digest": "sha256:1"}, "timestamp": "2026-11-22T18:20:32Z"}]}',
     "a path component '.' or '..' in 'team-a/../admin'"),
    # Second 60: no registry sends it, consumers refuse or replace it.
    (b'{"events": [{"id": "1", "action": "push", "target": {"repository": "team-a/x",'
     b' "tag": "t", "digest": "sha256:1"}, "timestamp": "2026-11-22T18:20:60.5+05:30"}]}',
     'events[0].timestamp: not an RFC 3339 time (seconds 00 to 59)'),
    (b'{"events": []}\x00', 'NUL'),
    (b'{"events": ["\xff\xfe"]}', 'not JSON'),
    (b'[' * 5000 + b']' * 5000, 'nested deeper'),
]


def test_bad_envelopes_get_400_naming_the_problem(reghook, pg):
    token = register(reghook, 'team-a')
    good = event()
    for body, fragment in BAD_BODIES:
        status, headers, out = post(reghook, token, body, raw=True)
        assert status == 400, (body[:60], out)
        assert fragment in out['error'], (body[:60], out)
        assert headers['content-type'] == 'application/json'
    # A bad event fails its whole envelope: nothing of it is stored.
    mixed = {'events': [good, {'action': 'push', 'target': {'tag': 1}}]}
    assert post(reghook, token, mixed)[0] == 400
    assert events(pg) == []
    # And the daemon is none the worse.
    assert post(reghook, token, {'events': [good]})[2] == counts(accepted=1)


def test_auth_media_type_and_size_errors(reghook_factory, pg):
    daemon = reghook_factory({'max_request_body': '4KiB', 'max_events_per_envelope': '3'})
    token = register(daemon, 'team-a')
    body = {'events': [event()]}

    status, headers, out = post(daemon, None, body)
    assert status == 401 and 'missing' in out['error']
    assert headers.get('www-authenticate', '').startswith('Bearer')
    assert post(daemon, 'rgh_wrong', body)[0] == 401
    assert post(daemon, token[:-1], body)[0] == 401
    status, _, out = daemon.post('/events', json.dumps(body).encode(),
                                 {'Authorization': f'Basic {token}', 'Content-Type': V1})
    assert status == 401

    assert post(daemon, token, body, content_type='text/plain')[0] == 415
    big = copy.deepcopy(body)
    big['events'][0]['actor']['name'] = 'x' * 5000
    assert post(daemon, token, big)[0] == 413
    status, _, out = post(daemon, token, {'events': [event() for _ in range(4)]})
    assert status == 413 and 'at most 3' in out['error']
    assert events(pg) == []
    assert post(daemon, token, body)[2] == counts(accepted=1)


# --- the real registry ------------------------------------------------------


def registry_for(daemon, registry_factory, token, **kw):
    return registry_factory(daemon.url('/events'), token, **kw)


def test_registry_push_retag_delete(reghook, pg, registry_factory, endpoint_factory):
    token = register(reghook, 'team-a', 'team-a/sub')
    url = endpoint_factory().url('/')
    push_hook = add_webhook(reghook, 'team-a', url)
    delete_hook = add_webhook(reghook, 'team-a', url, '--actions', 'delete')
    other_hook = add_webhook(reghook, 'team-a', url, '--repository', 'other')
    registry = registry_for(reghook, registry_factory, token)

    digest = registry.push('team-a/app:1.0')
    wait_until(lambda: len(events(pg)) == 1, timeout=30, msg='the push event')
    row = events(pg)[0]
    assert (row['namespace'], row['name'], row['action'], row['tag'], row['digest'],
            row['actor']) == ('team-a', 'app', 'push', '1.0', digest, 'alice')
    assert deliveries(pg, push_hook) == 1
    assert deliveries(pg, delete_hook) == 0 and deliveries(pg, other_hook) == 0

    registry.push('elsewhere/app:1.0')
    registry.push('team-a/sub/tool:2.0')
    wait_until(lambda: len(events(pg)) == 2, timeout=30, msg='the nested push')
    assert (events(pg)[1]['namespace'], events(pg)[1]['name']) == ('team-a/sub', 'tool')

    registry.copy('team-a/app:1.0', 'team-a/app:latest')
    wait_until(lambda: len(events(pg, "tag = 'latest'")) == 1, timeout=30, msg='the re-tag')

    registry.delete(f'team-a/app@{digest}')
    wait_until(lambda: len(events(pg, "action = 'delete'")) == 3, timeout=30,
               msg='digest delete and its two tag deletes')
    deletes = events(pg, "action = 'delete'")
    assert sorted(str(r['tag']) for r in deletes) == ['1.0', 'None', 'latest']
    assert {r['digest'] for r in deletes} == {digest}
    assert len({r['request_id'] for r in deletes}) == 1
    assert deliveries(pg, delete_hook) == 3
    # Nothing of the unregistered namespace was kept.
    assert events(pg, "repository LIKE 'elsewhere/%'") == []


def test_registry_retries_land_once_after_database_outage(pg_own, reghook_factory,
                                                          registry_factory, endpoint_factory):
    daemon = reghook_factory()
    token = register(daemon, 'team-a')
    hook = endpoint_factory()
    webhook_id = add_webhook(daemon, 'team-a', hook.url('/'))
    registry = registry_for(daemon, registry_factory, token,
                            ignore={'mediatypes': ['application/octet-stream']})
    registry.push('team-a/app:before')
    wait_until(lambda: len(events(pg_own)) == 1, timeout=30, msg='the first push')

    pg_own.stop()
    wait_until(lambda: daemon.get('/readyz')[0] == 503, timeout=15, msg='not ready')
    pushed = [registry.push(f'team-a/app:during-{i}') for i in range(3)]
    # Meanwhile the registry is told 503 and keeps retrying.
    assert daemon.get('/readyz')[0] == 503
    pg_own.start()
    wait_until(lambda: len(events(pg_own)) == 4, timeout=60, msg='every event after the outage')
    rows = events(pg_own)
    assert sorted(r['tag'] for r in rows) == ['before', 'during-0', 'during-1', 'during-2']
    assert {r['digest'] for r in rows[1:]} == set(pushed)
    # None doubled, even after every retry of the registry's has arrived:
    # it sends one endpoint's events in order, so once a later push is in,
    # all before it are. One delivery per event, each received once.
    registry.push('team-a/app:after')
    wait_until(lambda: len(events(pg_own)) == 5, timeout=60, msg='the push after')
    wait_until(lambda: len(hook.requests) >= 5, timeout=30, msg='every delivery')
    tags = sorted(r.json()['push_data']['tag'] for r in hook.requests)
    assert tags == ['after', 'before', 'during-0', 'during-1', 'during-2'], tags
    assert deliveries(pg_own, webhook_id) == 5


def registry_call(registry, method, path, body=b'', headers=None, host=None):
    """A request to the registry as a client makes it, with the Host header given."""
    conn = http.client.HTTPConnection('127.0.0.1', registry.port, timeout=30)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    sent = {'Host': host or registry.host, 'Content-Length': str(len(body)),
            'Authorization': 'Basic ' + base64.b64encode(registry.creds.encode()).decode(),
            **(headers or {})}
    for name, value in sent.items():
        conn.putheader(name, value)
    conn.endheaders()
    conn.send(body)
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_events_of_a_client_with_a_long_host_header_do_not_stall_the_registry(
        reghook, pg, registry_factory, endpoint_factory):
    """The registry builds target.url from the Host header its client sent:
    a push and a pull with a 1,000-byte one (both succeed) made events
    reghook answered 400, which the registry sends again and again, every
    later event of its queue behind them: nothing delivered any more. The
    push is stored and delivered, the pull ignored, and what comes after
    arrives. A pusher's long name (a token service's subject) too: cut
    where it is shown, whole in the raw event."""
    token = register(reghook, 'team-a')
    hook = endpoint_factory()
    add_webhook(reghook, 'team-a', hook.url('/'))
    registry = registry_for(reghook, registry_factory, token)
    registry.push('team-a/app:1.0')
    hook.wait_for(1, timeout=30)
    oci = 'application/vnd.oci.image.manifest.v1+json'
    status, manifest = registry_call(registry, 'GET', '/v2/team-a/app/manifests/1.0',
                                     headers={'Accept': oci})
    assert status == 200
    long_host = 'h' * 1000 + '.example'
    assert registry_call(registry, 'PUT', '/v2/team-a/app/manifests/long-host', manifest,
                         {'Content-Type': oci}, host=long_host)[0] == 201
    assert registry_call(registry, 'GET', '/v2/team-a/app/manifests/1.0',
                         headers={'Accept': oci}, host=long_host)[0] == 200
    registry.push('team-a/app:later')
    hook.wait_for(3, timeout=30)
    assert sorted(r.json()['push_data']['tag'] for r in hook.requests) == [
        '1.0', 'later', 'long-host']
    [raw] = json.loads(pg.psql("SELECT coalesce(json_agg(raw), '[]') FROM reghook.events "
                               "WHERE tag = 'long-host'"))
    assert long_host in raw['target']['url']

    name = 'ü' * 700  # 1,400 bytes
    ev = event(tag='long-actor')
    ev['actor']['name'] = name
    assert post(reghook, token, {'events': [ev]})[2] == counts(accepted=1)
    [row] = json.loads(pg.psql("SELECT coalesce(json_agg(json_build_object("
                               "'actor', actor, 'raw', raw ->> 'actor')), '[]') "
                               "FROM reghook.events WHERE tag = 'long-actor'"))
    assert row['actor'] == 'ü' * 512
    assert json.loads(row['raw'])['name'] == name
    hook.wait_for(4)
    assert hook.requests[-1].json()['push_data']['pusher'] == 'ü' * 512


def test_sigterm_during_ingest_answers_what_it_read(reghook_factory, pg):
    """Requests read before SIGTERM are answered after their commit; every
    200 is a stored event and every stored event got its 200; the daemon
    exits cleanly (no sanitizer report)."""
    daemon = reghook_factory()
    token = register(daemon, 'team-a')
    sent = [event(tag=f't{i}') for i in range(300)]

    def send(ev):
        try:
            return ev['id'], post(daemon, token, {'events': [ev]})[0]
        except OSError:
            return ev['id'], None

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(send, ev) for ev in sent]
        wait_until(lambda: sum(f.done() for f in futures) >= 50, timeout=30, msg='some answers')
        daemon.proc.terminate()
        results = [f.result() for f in futures]
    assert daemon.proc.wait(15) == 0
    stored = {r['event_uuid'] for r in events(pg)}
    ok = {i for i, status in results if status == 200}
    # Every 200 is a stored event, and every stored event was answered 200
    # (no answer left unwritten at the exit).
    assert ok and ok == stored
    # Requests that came on an open connection after the signal: 503, come back later.
    assert all(status in (200, 503, None) for _, status in results)


def test_sigterm_closes_keep_alive_connections_with_503(reghook_factory, pg):
    """A registry's keep-alive connection cannot hold a stop off: after
    SIGTERM, a POST on it is answered 503 with Retry-After and the
    connection is closed; a request read before the stop is still
    answered; the daemon exits."""
    import http.client
    daemon = reghook_factory(HOLDING_LOCKS)
    token = register(daemon, 'team-a', 'team-b')
    hold_ingest_locks_longer(pg)
    conn = http.client.HTTPConnection('127.0.0.1', daemon.port, timeout=10)
    headers = {'Content-Type': V1, 'Authorization': f'Bearer {token}'}
    conn.request('POST', '/events', json.dumps({'events': [event()]}), headers)
    first = conn.getresponse()
    assert first.status == 200 and first.getheader('Connection') != 'close'
    first.read()
    # Keep the daemon busy: a team-b event waits for a lock held here.
    held = pg.connect()
    held.autocommit = False
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            held.cursor().execute(
                "SELECT 1 FROM reghook.namespaces WHERE name = 'team-b' FOR UPDATE")
            busy = pool.submit(post, daemon, token,
                               {'events': [event(repository='team-b/app', tag='b')]})
            wait_until(lambda: ingest_waiting_for_locks(pg) == 1, timeout=10,
                       msg='the team-b event to wait for the lock')
            daemon.proc.terminate()
            wait_until(lambda: 'SIGTERM received' in daemon.log(), timeout=10)
            conn.request('POST', '/events', json.dumps({'events': [event(tag='2.0')]}),
                         headers)
            second = conn.getresponse()
            body = json.loads(second.read())
            assert second.status == 503 and second.getheader('Retry-After') == '5', body
            assert second.getheader('Connection') == 'close' and 'stopping' in body['error']
            assert daemon.proc.poll() is None
        finally:
            held.rollback()
        assert busy.result(timeout=30)[:1] == (200,)
    assert daemon.proc.wait(15) == 0
    assert sorted(e['tag'] for e in events(pg)) == ['1.0', 'b']


@pytest.mark.parametrize('removed', ['namespace', 'webhook'])
def test_an_event_stored_while_its_namespace_or_webhook_is_removed_is_stored(reghook, pg,
                                                                             removed):
    """A namespace or webhook removed while an event of it is being stored
    (its row deleted in a transaction that commits while ingest() waits for
    it) made a foreign key violation, which was answered 400 as if the
    event were malformed. It is no request's fault: the request is stored
    again, alone, and the removal is then seen (the event goes to the
    namespace above, or to no delivery of the removed webhook)."""
    token = register(reghook, 'team-a', 'team-a/sub')
    hook_id = add_webhook(reghook, 'team-a/sub', 'http://127.0.0.1:9/')
    held = pg.connect()
    held.autocommit = False
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            if removed == 'namespace':
                held.cursor().execute("DELETE FROM reghook.namespaces WHERE name = 'team-a/sub'")
            else:
                held.cursor().execute(f'DELETE FROM reghook.webhooks WHERE id = {hook_id}')
            answer = pool.submit(post, reghook, token,
                                 {'events': [event(repository='team-a/sub/app', tag='x')]})
            wait_until(lambda: ingest_waiting_for_locks(pg) == 1, timeout=10,
                       msg='the event to wait for the removal')
        finally:
            held.commit()
        status, _, body = answer.result(timeout=30)
    assert (status, body) == (200, counts(accepted=1)), body
    [stored] = events(pg)
    assert stored['namespace'] == ('team-a' if removed == 'namespace' else 'team-a/sub'), stored
    assert pg.psql('SELECT count(*) FROM reghook.deliveries').strip() == '0'
    assert 'storing each again, alone' in reghook.log()


def test_names_a_registry_never_makes_are_refused(reghook, pg):
    """A registry's tags are [A-Za-z0-9_][A-Za-z0-9_.-]{0,127} and its
    repository names letters, digits and separators; a token may post
    anything, and what a chat format shows as it is (Unicode's direction
    and zero-width characters, spaces, line breaks) is refused, naming the
    byte, not quoting it. Nothing of the envelope is stored."""
    token = register(reghook, 'team-a')
    for ev, where in ((event(repository='team-a/\u202eppa'),
                       'events[1].target.repository: byte 0xe2 at 7 is not in a registry\'s '
                       'repository names'),
                      (event(tag='v1\u200b'), 'events[1].target.tag: byte 0xe2 at 2'),
                      (event(tag='v1 rc'), 'events[1].target.tag: byte 0x20 at 2'),
                      (event(tag='-rc'), "events[1].target.tag: not a registry's tag"),
                      (event(repository='team-a/x\ny'),
                       'events[1].target.repository: byte 0x0a at 8'),
                      (event(digest='sha256:ab\u202ecd'), 'events[1].target.digest: byte 0xe2')):
        status, _, body = post(reghook, token, {'events': [event(tag='fine'), ev]})
        assert status == 400 and body['error'].startswith(where), (ev, body)
    assert events(pg) == []
    status, _, body = post(reghook, token, {'events': [
        event(repository='team-a/my_app.x-y__z', tag='_V1.0-rc.1')]})
    assert (status, body) == (200, counts(accepted=1)), body


def test_a_statement_past_db_timeout_does_not_run_on_in_postgresql(reghook_factory, pg):
    """An envelope whose deliveries take longer to create than db_timeout
    (1,000 events to 100 webhooks: 100,000 rows) is answered 503; the
    statement the daemon gave up on is ended by PostgreSQL too (its
    statement_timeout), rather than run on for seconds at each retry."""
    daemon = reghook_factory({'db_timeout': '1s'})
    token = register(daemon, 'team-a')
    pg.psql("""SELECT reghook.webhook_enable(reghook.webhook_add('team-a',
                   'http://127.0.0.1:9/h' || g)) FROM generate_series(1, 100) g""")
    status, _, body = post(daemon, token,
                           {'events': [event(tag=f't{i}') for i in range(1000)]})
    assert status == 503, body
    time.sleep(1.5)
    running = pg.psql("""SELECT count(*) FROM pg_stat_activity
                         WHERE state = 'active' AND query LIKE '%reghook.ingest(%'
                           AND pid <> pg_backend_pid()""").strip()
    assert running == '0', running
    assert events(pg) == []
    assert daemon.get('/healthz')[0] == 200
