"""Security, beyond what test_receiver.py and test_delivery.py check:
bearer tokens that are almost right (the stored hash, a removed
registry's token, a changed character, the token outside the header);
token scopes at namespace boundaries; the SSRF guard for a name that
resolves to loopback and for IPv6 and odd IPv4 spellings of private
addresses; and secrets (database password, registry tokens, webhook
passwords and signing keys) in no log line, even at debug level, and in
no history row of any table."""

import base64
import json
import os
import time
import uuid

import pytest

from harness import add_webhook, register, wait_until
from test_delivery import FAST, attempts, deliveries, set_fields, wait_attempts, wait_status
from test_receiver import V1, counts, event, events, post


def test_almost_right_tokens_get_401_and_store_nothing(reghook, pg):
    token = register(reghook, 'team-a')
    other = register(reghook, name='other')
    body = {'events': [event()]}
    stored_hash = pg.psql("SELECT encode(token_sha256, 'hex') FROM reghook.registry_sources "
                          "WHERE name = 'main'").strip()
    changed = token[:-1] + ('a' if token[-1] != 'a' else 'b')
    for authorization in [f'Bearer {stored_hash}', f'Bearer {changed}', f'Bearer {token}x',
                          f'Bearer x{token}', 'Bearer ', f'Token {token}', token,
                          f'Bearer {token[:len(token) // 2]}']:
        status, headers, out = reghook.post('/events', json.dumps(body).encode(),
                                            {'Content-Type': V1,
                                             'Authorization': authorization})
        assert status == 401, authorization
        assert headers['www-authenticate'].startswith('Bearer'), authorization
    # Not in the query string, not in a cookie.
    for path, headers in [(f'/events?access_token={token}', {}),
                          ('/events', {'Cookie': f'token={token}'})]:
        status, _, _ = reghook.post(path, json.dumps(body).encode(),
                                    {'Content-Type': V1, **headers})
        assert status == 401, path
    assert events(pg) == []

    # A registry removed with SQL loses its access as soon as reghook hears of it.
    assert post(reghook, other, body)[0] == 200
    pg.psql("DELETE FROM reghook.registry_sources WHERE name = 'other'")
    wait_until(lambda: post(reghook, other, {'events': [event()]})[0] == 401, timeout=15,
               msg="the removed registry's token to be refused")
    assert post(reghook, token, {'events': [event()]})[2] == counts(accepted=1)
    # The scheme is case-insensitive (RFC 7235).
    assert post(reghook, None, body, content_type=V1)[0] == 401
    status, _, _ = reghook.post('/events', json.dumps({'events': [event()]}).encode(),
                                {'Content-Type': V1, 'Authorization': f'bearer {token}'})
    assert status == 200


def test_scope_holds_at_namespace_boundaries(reghook, pg):
    register(reghook, 'team-a', 'team-a/sub', 'team-ab')
    token = register(reghook, scope='team-a/sub', name='sub-only')
    repos = ['team-a/sub/app', 'team-a/sub', 'team-a/app', 'team-a/subway', 'team-ab/app',
             'TEAM-A/sub/app']
    # team-a/sub/../app would be routed to team-a/sub by prefix and name
    # team-a/app in every URL made of it: refused (no registry makes it).
    status, _, out = post(reghook, token, {'events': [event(repository='team-a/sub/../app')]})
    assert status == 400 and "a path component '.' or '..'" in out['error'], out
    status, _, out = post(reghook, token, {'events': [event(repository=r) for r in repos]})
    assert status == 200
    stored = sorted(r['repository'] for r in events(pg))
    assert all(r.startswith('team-a/sub/') or r == 'team-a/sub' for r in stored), stored
    assert 'team-a/app' not in stored and 'team-a/subway' not in stored
    assert out['rejected'] == 3  # team-a/app, team-a/subway, team-ab/app
    assert out['accepted'] + out['ignored'] + out['rejected'] == len(repos)


def loopback_name():
    """A name of this test's own that resolves to loopback on any machine,
    whatever /etc/hosts and DNS hold: under .localhost, which libcurl
    resolves to 127.0.0.1 and ::1 itself (RFC 6761), as a name made to
    point at an internal address would. The guard must refuse it on the
    address; the test checks that the refusal names loopback."""
    return f'ssrf-{uuid.uuid4().hex[:8]}.localhost'


@pytest.mark.long
def test_ssrf_guard_refuses_private_names_and_address_forms(reghook_factory, pg,
                                                             endpoint_factory):
    """With allow_private_targets off, every one of these is refused on the
    address it resolves to, recorded with error class `blocked`, and the
    endpoint (on 127.0.0.1) hears nothing. Where the guard to fail, the
    IPv4 forms would reach the endpoint and the IPv6 ones fail as `connect`."""
    daemon = reghook_factory({'allow_private_targets': False})
    token = register(daemon, 'team-a')
    hook = endpoint_factory()
    port = hook.port
    name = loopback_name()
    hosts = [
        name, '[::1]', '[::ffff:127.0.0.1]', '[::ffff:7f00:1]', '[fe80::1]', '[fc00::1]', '[::]',
        '[::127.0.0.1]', '[64:ff9b::7f00:1]', '127.1', '2130706433', '0x7f000001',
        '0177.0.0.1', '0.0.0.0', '10.255.255.1', '169.254.169.254', '100.64.0.1']
    ids = {}
    for host in hosts:
        ids[host] = add_webhook(daemon, 'team-a', f'http://{host}:{port}/{uuid.uuid4().hex}')
        set_fields(pg, ids[host], max_attempts=1)
    post(daemon, token, {'events': [event()]})
    for host, webhook_id in ids.items():
        [attempt] = wait_attempts(pg, webhook_id, 1, timeout=30)
        assert attempt['error_class'] == 'blocked', (host, attempt)
        assert attempt['response_status'] is None, host
        wait_status(pg, webhook_id, 'failed')
    # Refused on the address it resolved to, not for want of one.
    assert 'loopback' in attempts(pg, ids[name])[0]['error_message']
    assert hook.requests == []
    print('blocked:', ', '.join(hosts))


def test_addresses_refused_whatever_the_setting_say_so(reghook_factory, pg, endpoint_factory):
    """Unspecified and multicast addresses are refused with
    allow_private_targets on too: the refusal says so, and neither the log
    nor `webhook test` tells the operator to turn the setting on."""
    daemon = reghook_factory({'allow_private_targets': True, 'log_level': 'info'})
    token = register(daemon, 'team-a')
    port = endpoint_factory().port
    ids = {}
    for host in ('0.0.0.0', '[::]', '[::ffff:0.0.0.0]', '224.0.0.1'):
        ids[host] = add_webhook(daemon, 'team-a', f'http://{host}:{port}/')
        set_fields(pg, ids[host], max_attempts=1)
    post(daemon, token, {'events': [event()]})
    for host, webhook_id in ids.items():
        [attempt] = wait_attempts(pg, webhook_id, 1, timeout=30)
        assert attempt['error_class'] == 'blocked', (host, attempt)
        assert attempt['error_message'].endswith('; always refused'), (host, attempt)
    assert 'allow_private_targets' not in daemon.log()
    res = daemon.run_cli('webhook', 'test', ids['0.0.0.0'], check=False)
    assert res.returncode == 1 and 'always refused' in res.stdout, res.stdout
    assert 'allow_private_targets' not in res.stdout


def secret_values():
    """Values that must never be written anywhere but webhook_secrets."""
    tag = uuid.uuid4().hex[:12]
    key = os.urandom(32)
    return {
        'db_password': f'dbpw-{tag}',
        'webhook_password': f'hookpw-{tag}',
        'url_password': f'urlpw-{tag}',
        'signing_key': 'whsec_' + base64.b64encode(key).decode(),
        'wrong_token': f'rgh_wrong{tag}',
    }


def test_secrets_appear_in_no_log_line_and_no_history_row(reghook_factory, pg_server, pg,
                                                          endpoint_factory):
    s = secret_values()
    # Trust authentication ignores the password, but reghook must not repeat it.
    db_url = pg.url().replace('postgres@', f"postgres:{s['db_password']}@")
    daemon = reghook_factory({**FAST, 'log_level': 'debug', 'database_url': db_url},
                             database_url=db_url)
    token = register(daemon, 'team-a')
    hook = endpoint_factory()
    hook.script([500, 200, 500, 200, 500, 200])
    signed = add_webhook(daemon, 'team-a', hook.url('/signed'), '--username', 'bob',
                         '--password', s['webhook_password'], '--secret', s['signing_key'],
                         '--header', 'X-Plain: visible')
    in_url = add_webhook(daemon, 'team-a',
                         f"http://carol:{s['url_password']}@127.0.0.1:{hook.port}/in-url")
    post(daemon, token, {'events': [event()]})
    assert post(daemon, s['wrong_token'], {'events': [event()]})[0] == 401
    # The test push meets a 500 or a 200 (webhook test exits 1 on the 500).
    daemon.run_cli('webhook', 'test', signed, check=False)
    for webhook_id in (signed, in_url):
        wait_status(pg, webhook_id, 'succeeded', timeout=30)
    # What was delivered did carry them (so the search below looks for the right things).
    basic = base64.b64encode(f"bob:{s['webhook_password']}".encode()).decode()
    assert any(r.header('Authorization') == f'Basic {basic}' for r in hook.requests)
    assert any(r.header('webhook-signature') for r in hook.requests)
    assert len(attempts(pg, signed)) >= 2 and len(deliveries(pg, in_url)) == 1
    # An endpoint calls back: the token is the path.
    callback_token = deliveries(pg, in_url)[0]['callback_token']
    assert daemon.post(f'/callback/{callback_token}', b'{"state": "success"}',
                       {'Content-Type': 'application/json'})[0] == 200
    daemon.stop()

    needles = dict(s, registry_token=token, basic_auth=basic,
                   url_basic=base64.b64encode(f"carol:{s['url_password']}".encode()).decode(),
                   signing_key_base64=s['signing_key'][len('whsec_'):])
    log = daemon.log()
    assert 'debug' in log  # the log was at debug level
    # The callback token is in no log line (the history keeps it: the delivery's).
    for name, value in dict(needles, callback_token=callback_token).items():
        assert value not in log, f'{name} in the log'

    # Every column of every table but webhook_secrets, as text (bytea as its bytes).
    columns = json.loads(pg.psql("""
        SELECT json_agg(json_build_array(table_name, column_name, data_type))
        FROM information_schema.columns c
        JOIN information_schema.tables t USING (table_schema, table_name)
        WHERE table_schema = 'reghook' AND t.table_type = 'BASE TABLE'
          AND table_name <> 'webhook_secrets'"""))
    tables = sorted({t for t, _, _ in columns})
    assert {'events', 'deliveries', 'delivery_attempts', 'webhooks',
            'registry_sources'} <= set(tables)
    for table in tables:
        texts, tests = [], []
        for t, column, data_type in columns:
            if t != table:
                continue
            if data_type == 'bytea':
                tests.append(f"""coalesce(position(convert_to(n.value, 'UTF8') IN x."{column}")
                                 > 0, false)""")
            else:
                texts.append(f'x."{column}"::text')
        tests.append(f"concat_ws(' ', {', '.join(texts)}) LIKE '%' || n.value || '%'")
        found = json.loads(pg.psql(f"""
            SELECT coalesce(json_agg(n), '[]') FROM (
                SELECT DISTINCT n.key AS n
                FROM reghook."{table}" x, jsonb_each_text('{json.dumps(needles)}'::jsonb) n
                WHERE {' OR '.join(tests)}) q"""))
        assert found == [], f'{found} in reghook.{table}'
    # The search does find what is there: the secrets table holds two of them.
    assert 'hookpw-' in pg.psql('SELECT password FROM reghook.webhook_secrets')
    # Credentials written into a URL moved there too, out of the url column.
    assert s['url_password'] in pg.psql('SELECT password FROM reghook.webhook_secrets')
    assert pg.psql(f'SELECT url, username FROM reghook.webhooks WHERE id = {in_url}').strip() == \
        f'http://127.0.0.1:{hook.port}/in-url|carol'


def test_a_rotated_token_is_refused_by_every_instance_and_the_history_stays(reghook_factory,
                                                                             pg):
    first = reghook_factory({'instance_name': 'one'})
    second = reghook_factory({'instance_name': 'two'})
    old = register(first, 'team-a')
    for daemon in (first, second):
        assert post(daemon, old, {'events': [event()]})[2]['accepted'] == 1
    out = first.run_cli('registry', 'rotate', 'main').stdout
    assert out.startswith('Registry source "main" has a new token; the old one is refused')
    new = next(w for w in out.split() if w.startswith('rgh_'))
    assert new != old and f'Authorization: [Bearer {new}]' in out
    for daemon in (first, second):
        wait_until(lambda: post(daemon, old, {'events': [event()]})[0] == 401, timeout=5,
                   msg='the old token refused')
        assert post(daemon, new, {'events': [event()]})[:2][0] == 200
    assert [r['name'] for r in json.loads(pg.psql(
        "SELECT json_agg(s) FROM (SELECT s.name FROM reghook.events e "
        "JOIN reghook.registry_sources s ON s.id = e.source_id) s"))] == ['main'] * 4
    res = first.run_cli('registry', 'rotate', 'nope', check=False)
    assert res.returncode == 1 and 'registry "nope" does not exist' in res.stderr, res.stderr
    res = first.run_cli('registry', 'rotate', check=False)
    assert res.returncode == 2 and 'missing NAME' in res.stderr, res.stderr
    assert 'rgh_' not in first.run_cli('registry', 'list').stdout
    for name in ('ünï', 'a b', '', '.a', 'x' * 64, 'a\x01b'):
        res = first.run_cli('registry', 'add', name, check=False)
        assert res.returncode != 0 and 'invalid registry name' in res.stderr, (name, res.stderr)


def test_a_token_rotated_while_the_connection_was_down_is_not_taken_after(reghook, pg):
    """The change's NOTIFY is lost with the connection that would hear it:
    once back, the receiver takes no event until it has read the sources
    again (503 meanwhile), so the old token is never accepted."""
    old = register(reghook, 'team-a')
    assert post(reghook, old, {'events': [event()]})[0] == 200
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'")
    new = 'rgh_' + uuid.uuid4().hex * 2  # as registry_rotate() would, through SQL
    pg.psql("UPDATE reghook.registry_sources SET token_sha256 = "
            f"sha256(convert_to('{new}', 'UTF8')) WHERE name = 'main'")
    statuses = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not statuses or statuses[-1] != 401):
        statuses.append(post(reghook, old, {'events': [event()]})[0])
    assert statuses[-1] == 401 and 200 not in statuses, statuses
    assert set(statuses) <= {401, 503}, statuses
    assert post(reghook, new, {'events': [event()]})[0] == 200
    assert pg.psql('SELECT count(*) FROM reghook.events').strip() == '2'


def test_an_event_whose_source_is_removed_while_it_waits_is_counted_rejected(reghook, pg):
    """The source is deleted (SQL) while its event waits for the database:
    the answer counts the event as rejected and the log says why, not an
    answer of 0 of everything for one event."""
    from concurrent.futures import ThreadPoolExecutor
    token = register(reghook, 'team-a')
    other = register(reghook, name='other')
    held = pg.connect()
    held.autocommit = False
    with ThreadPoolExecutor(max_workers=2) as pool, held.cursor() as cur:
        cur.execute('LOCK TABLE reghook.registry_sources IN ACCESS EXCLUSIVE MODE')
        waiting = pool.submit(post, reghook, token, {'events': [event()]})
        kept = pool.submit(post, reghook, other, {'events': [event(tag='2')]})
        time.sleep(1)
        cur.execute("DELETE FROM reghook.registry_sources WHERE name = 'main'")
        held.commit()
        status, _, body = waiting.result(timeout=30)
        assert (status, body) == (200, counts(rejected=1)), body
        assert kept.result(timeout=30)[2] == counts(accepted=1)
    wait_until(lambda: 'ingest: registry main was removed while its event waited: event '
                       'rejected' in reghook.log(), timeout=5, msg='the log line')
