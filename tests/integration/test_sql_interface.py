"""The SQL interface, as people use it with their own login roles: the views
delivery_history and webhook_health, retrigger() and retrigger_failed(),
row-level security per namespace (viewer, contributor, owner), secrets that
no member reads, SQL injection through every function argument, the
dispatcher running as its own role, the query plans on a large history, and
the `deliveries` and `retrigger` commands."""

import base64
import json
import re
import select
import threading
import time
import uuid

import psycopg2
import pytest

from harness import add_webhook, register, run_reghook, wait_until
from test_delivery import FAST, event, post, rows, wait_attempts, wait_status

PASSWORD = 'pw-7f3a-never-shown'
SECRET = 'whsec_c2VjcmV0LW5ldmVyLXNob3duLTEyMzQ1Njc4'
HEADER_VALUE = 'hdr-token-never-shown'

HISTORY_COLUMNS = ['delivery_id', 'attempt', 'webhook_id', 'webhook_name', 'namespace',
                   'repository', 'tag', 'digest', 'action', 'url', 'status', 'response_status',
                   'duration_ms', 'error', 'attempted_at', 'next_attempt_at']
HEALTH_COLUMNS = ['webhook_id', 'webhook_name', 'namespace', 'enabled', 'disabled_reason',
                  'last_success_at', 'last_failure_at', 'failures_in_a_row', 'pending',
                  'success_rate_24h']


# --- helpers -------------------------------------------------------------------


_conns = {}


def as_role(pg, role, sql, params=None):
    """Runs sql as a login role over a connection of its own (kept for the
    test: autocommit, so an error leaves it usable); returns all rows."""
    key = (pg.dbname, role)
    conn = _conns.get(key)
    if conn is None or conn.closed:
        conn = _conns[key] = pg.connect(user=role)
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else None


def refused(pg, role, sql, params=None):
    """Runs sql as role, expecting an error; returns (sqlstate, message)."""
    with pytest.raises(psycopg2.Error) as err:
        as_role(pg, role, sql, params)
    return err.value.pgcode, err.value.pgerror


def two_teams(daemon, pg, hook):
    """Namespaces team-a and team-b with a webhook each (with a password, a
    signing secret and a secret header), one delivered push each, and the
    roles viewer_a, contrib_a, owner_a (of team-a) and viewer_b."""
    token = register(daemon, 'team-a', 'team-b')
    hooks = {}
    for ns in ('team-a', 'team-b'):
        hooks[ns] = add_webhook(daemon, ns, hook.url(f'/{ns}'), '--username', 'u',
                                '--password', PASSWORD, '--secret', SECRET,
                                '--header', f'X-Api-Key: {HEADER_VALUE}')
        post(daemon, token, event(repository=f'{ns}/app', tag=f'{ns}-1'))
    for ns in hooks:
        wait_status(pg, hooks[ns], 'succeeded')
        wait_attempts(pg, hooks[ns], 1)
    for role, ns, access in [('viewer_a', 'team-a', 'viewer'), ('contrib_a', 'team-a', 'contributor'),
                             ('owner_a', 'team-a', 'owner'), ('viewer_b', 'team-b', 'viewer')]:
        pg.create_login_role(role)
        daemon.run_cli('namespace', 'grant', ns, role, access)
    return token, hooks


def webhook_of(pg, webhook_id):
    return rows(pg, f'SELECT * FROM reghook.webhooks WHERE id = {int(webhook_id)}')[0]


def notified_since_last(cur, listener):
    """Whether reghook_deliveries was notified since the last call (listener
    LISTENs; cur autocommits). Notifications come in the order of their
    commits, so all that the statements before made came before a sentinel
    sent now: no sleep to guess how long they take."""
    cur.execute("NOTIFY reghook_deliveries, 'test-sentinel'")
    got = sentinel = False
    deadline = time.monotonic() + 10
    while not sentinel:
        assert time.monotonic() < deadline, 'the sentinel notification never came'
        select.select([listener], [], [], 1)
        listener.poll()
        for n in listener.notifies:
            sentinel = sentinel or n.payload == 'test-sentinel'
            got = got or n.payload != 'test-sentinel'
        del listener.notifies[:]
    return got


# --- views -----------------------------------------------------------------------


def test_views_have_the_promised_columns(reghook, pg):
    def columns(view):
        return pg.psql(f"SELECT attname FROM pg_attribute WHERE attrelid = 'reghook.{view}'::regclass"
                       " AND attnum > 0 ORDER BY attnum").split()
    assert columns('delivery_history')[:len(HISTORY_COLUMNS)] == HISTORY_COLUMNS
    assert columns('webhook_health')[:len(HEALTH_COLUMNS)] == HEALTH_COLUMNS


def test_history_and_health_show_attempts_and_waiting_deliveries(reghook_factory, pg,
                                                                  endpoint_factory):
    daemon = reghook_factory(FAST)
    token = register(daemon, 'team-a')
    hook = endpoint_factory()
    hook.script([(500, b'no'), (200, b'ok')])
    webhook_id = add_webhook(daemon, 'team-a', hook.url('/{tag}'))
    post(daemon, token, event(tag='1.0'))
    delivery = wait_status(pg, webhook_id, 'succeeded')[0]
    wait_attempts(pg, webhook_id, 2)
    # A second webhook, disabled after an event was queued for it: the
    # delivery waits, never tried (made here as ingest would have made it).
    waiting = add_webhook(daemon, 'team-a', hook.url('/w'), enable=False)
    pg.psql(f"INSERT INTO reghook.deliveries (webhook_id, event_id, action)"
            f" SELECT {waiting}, id, 'push' FROM reghook.events")

    history = rows(pg, f'SELECT * FROM reghook.delivery_history WHERE webhook_id = {webhook_id}'
                       ' ORDER BY attempt')
    assert [(h['attempt'], h['status'], h['response_status'], h['error']) for h in history if
            h['tag'] == '1.0'] == [(1, 'succeeded', 500, 'HTTP 500'), (2, 'succeeded', 200, None)]
    first = history[0]
    assert first['delivery_id'] == delivery['id'] and first['namespace'] == 'team-a'
    assert first['repository'] == 'team-a/app' and first['action'] == 'push'
    assert first['url'] == hook.url('/1.0') and first['next_attempt_at'] is None
    untried = rows(pg, f'SELECT * FROM reghook.delivery_history WHERE webhook_id = {waiting}')
    assert len(untried) == 1 and untried[0]['attempt'] is None
    assert untried[0]['status'] == 'pending' and untried[0]['next_attempt_at'] is not None

    health = {h['webhook_id']: h for h in rows(pg, 'SELECT * FROM reghook.webhook_health')}
    ok = health[int(webhook_id)]
    assert ok['enabled'] and ok['failures_in_a_row'] == 0 and ok['pending'] == 0
    assert float(ok['success_rate_24h']) == 0.5 and ok['last_success_at'] and ok['last_failure_at']
    off = health[int(waiting)]
    assert not off['enabled'] and off['disabled_reason'] is None
    assert off['pending'] == 1 and off['success_rate_24h'] is None


def test_history_queries_come_from_indexes(reghook, pg):
    """A webhook's last 50 attempts and the failures of the last hour, on a
    history of 200,000 attempts: the plans use the attempts' indexes (the
    README shows the first, timed, on 10,000,000)."""
    register(reghook, 'team-a')
    hooks = [add_webhook(reghook, 'team-a', f'http://127.0.0.1:9/{i}') for i in range(8)]
    pg.psql(f"""
        INSERT INTO reghook.deliveries (webhook_id, action, status, attempts, completed_at, created_at)
        SELECT (ARRAY[{','.join(hooks)}])[1 + g % 8], 'push',
               CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'succeeded' END, 2,
               now() - g * interval '1 second', now() - g * interval '1 second'
        FROM generate_series(1, 100000) g;
        INSERT INTO reghook.delivery_attempts (delivery_id, attempt, webhook_id, attempted_at,
            duration_ms, method, url, request_headers, response_status, error_class, error_message,
            instance)
        SELECT d.id, a, d.webhook_id, d.created_at + a * interval '1 ms', 5, 'POST', 'http://x/', '[]',
               CASE a WHEN 1 THEN 500 ELSE 200 END, CASE a WHEN 1 THEN 'http' END,
               CASE a WHEN 1 THEN 'HTTP 500' END, 'bench'
        FROM reghook.deliveries d, generate_series(1, 2) a;
        ANALYZE reghook.deliveries; ANALYZE reghook.delivery_attempts;""")

    def plan(sql):
        return pg.psql('EXPLAIN (COSTS OFF) ' + sql)
    last_50 = plan(f'SELECT * FROM reghook.delivery_attempts WHERE webhook_id = {hooks[3]}'
                   ' ORDER BY attempted_at DESC LIMIT 50')
    assert 'Index Scan using delivery_attempts_webhook_time' in last_50, last_50
    assert 'Sort' not in last_50, last_50
    last_hour = plan("SELECT * FROM reghook.delivery_history WHERE attempted_at > now() - interval '1 hour'"
                     ' AND error IS NOT NULL')
    assert 'delivery_attempts_time' in last_hour or 'delivery_attempts_webhook_time' in last_hour, \
        last_hour
    assert 'Seq Scan on delivery_attempts' not in last_hour, last_hour
    # What waits, per webhook and for the CLI's deliveries not tried yet (the
    # first half of its query), comes from the queue's partial indexes, not
    # from the whole history.
    health = plan(f'SELECT * FROM reghook.webhook_health WHERE webhook_id = {hooks[3]}')
    assert 'deliveries_due' in health and 'Seq Scan on deliveries' not in health, health
    untried = plan("SELECT * FROM reghook.delivery_history WHERE attempt IS NULL"
                   " AND (status = 'pending' OR status = 'in_flight')"
                   ' ORDER BY created_at DESC LIMIT 50')
    assert 'deliveries_due' in untried and 'Seq Scan on deliveries' not in untried, untried
    # The CLI's query, on the same history, answers with the newest 50.
    out = json.loads(reghook.run_cli('deliveries', '--webhook', hooks[3], '--json').stdout)
    assert len(out) == 50
    stamps = [h['attempted_at'] for h in out]
    assert stamps == sorted(stamps, reverse=True)


# --- row-level security ---------------------------------------------------------


def test_viewer_reads_its_namespace_and_nothing_of_another(reghook, pg, endpoint_factory):
    hook = endpoint_factory()
    _, hooks = two_teams(reghook, pg, hook)

    for role, mine, other in [('viewer_a', 'team-a', 'team-b'), ('viewer_b', 'team-b', 'team-a')]:
        assert as_role(pg, role, 'SELECT name FROM reghook.namespaces') == [(mine,)]
        assert as_role(pg, role, 'SELECT id FROM reghook.webhooks') == [(int(hooks[mine]),)]
        assert as_role(pg, role, 'SELECT repository FROM reghook.events') == [(f'{mine}/app',)]
        assert {r[0] for r in as_role(pg, role, 'SELECT namespace FROM reghook.delivery_history')} \
            == {mine}
        assert [r[0] for r in as_role(pg, role, 'SELECT webhook_id FROM reghook.webhook_health')] \
            == [int(hooks[mine])]
        assert len(as_role(pg, role, 'SELECT id FROM reghook.deliveries')) == 1
        assert len(as_role(pg, role, 'SELECT attempt FROM reghook.delivery_attempts')) == 1
        assert as_role(pg, role, 'SELECT name FROM reghook.webhook_headers') == [('X-Api-Key',)]
        # Another namespace's webhook does not exist, for this role.
        code, msg = refused(pg, role, 'SELECT reghook.webhook_disable(%s)', (int(hooks[other]),))
        assert code == 'P0002' and f'webhook {hooks[other]} does not exist' in msg
    for table in ('registry_sources', 'webhook_secrets'):
        code, _ = refused(pg, 'viewer_a', f'SELECT count(*) FROM reghook.{table}')
        assert code == '42501'
    # A role that is no member does not even connect; let in, it sees nothing at all.
    pg.create_login_role('stranger')
    with pytest.raises(psycopg2.OperationalError, match='permission denied for database'):
        pg.connect(user='stranger')
    pg.psql(f'GRANT CONNECT ON DATABASE {pg.dbname} TO stranger')
    code, _ = refused(pg, 'stranger', 'SELECT count(*) FROM reghook.webhooks')
    assert code == '42501'


def test_contributor_manages_webhooks_in_its_namespace_only(reghook, pg, endpoint_factory):
    hook = endpoint_factory()
    _, hooks = two_teams(reghook, pg, hook)

    new_id = as_role(pg, 'contrib_a', "SELECT reghook.webhook_add('team-a', %s, %s)",
                     (hook.url('/new'), json.dumps({'name': 'ci', 'actions': ['push', 'delete']})))[0][0]
    as_role(pg, 'contrib_a', "SELECT reghook.webhook_set(%s, '{\"method\": \"PUT\"}')", (new_id,))
    as_role(pg, 'contrib_a', "SELECT reghook.webhook_set_headers(%s, ARRAY['X-A: 1'])", (new_id,))
    as_role(pg, 'contrib_a', 'SELECT reghook.webhook_enable(%s)', (new_id,))
    w = webhook_of(pg, new_id)
    assert (w['name'], w['method'], w['enabled'], w['actions']) == ('ci', 'PUT', True, ['push', 'delete'])
    as_role(pg, 'contrib_a', "SELECT reghook.webhook_disable(%s, 'maintenance')", (new_id,))
    assert webhook_of(pg, new_id)['disabled_reason'] == 'maintenance'
    test_id = as_role(pg, 'contrib_a', 'SELECT reghook.test_webhook(%s)', (int(hooks['team-a']),))[0][0]
    assert wait_until(lambda: any(r.header('X-Reghook-Delivery') == test_id for r in hook.requests))
    as_role(pg, 'contrib_a', 'SELECT reghook.webhook_remove(%s)', (new_id,))
    assert rows(pg, f'SELECT id FROM reghook.webhooks WHERE id = {new_id}') == []

    # Not in team-b: there it sees nothing, so nothing exists.
    code, msg = refused(pg, 'contrib_a', "SELECT reghook.webhook_add('team-b', 'http://127.0.0.1:9/')")
    assert code == 'P0002' and 'namespace "team-b" does not exist' in msg
    b = int(hooks['team-b'])
    for sql in ["SELECT reghook.webhook_set(%s, '{\"name\": \"x\"}')", 'SELECT reghook.webhook_enable(%s)',
                'SELECT reghook.webhook_remove(%s)', 'SELECT reghook.test_webhook(%s)',
                "SELECT reghook.webhook_set_headers(%s, '{}')", 'SELECT reghook.retrigger_failed(%s)']:
        assert refused(pg, 'contrib_a', sql, (b,))[0] == 'P0002', sql
    # No direct writes: every change goes through the functions.
    code, _ = refused(pg, 'contrib_a', "UPDATE reghook.webhooks SET url = 'http://127.0.0.1:9/x'")
    assert code == '42501'
    assert webhook_of(pg, b)['name'] == '127.0.0.1'


def test_viewer_cannot_change_or_retrigger(reghook, pg, endpoint_factory):
    hook = endpoint_factory()
    _, hooks = two_teams(reghook, pg, hook)
    a = int(hooks['team-a'])
    delivery_id = rows(pg, f'SELECT id FROM reghook.deliveries WHERE webhook_id = {a}')[0]['id']
    for sql, params in [("SELECT reghook.webhook_set(%s, '{\"name\": \"x\"}')", (a,)),
                        ('SELECT reghook.webhook_disable(%s)', (a,)),
                        ('SELECT reghook.test_webhook(%s)', (a,)),
                        ('SELECT reghook.retrigger(%s)', (delivery_id,)),
                        ('SELECT reghook.retrigger_failed(%s)', (a,)),
                        ("SELECT reghook.webhook_add('team-a', 'http://127.0.0.1:9/')", None),
                        ("SELECT reghook.namespace_grant('team-a', 'viewer_b', 'viewer')", None)]:
        code, msg = refused(pg, 'viewer_a', sql, params)
        assert code == '42501' and 'access to namespace "team-a" is needed' in msg, (sql, msg)
    assert webhook_of(pg, a)['enabled'] is True
    # Admin functions are not a member's at all.
    code, msg = refused(pg, 'owner_a', "SELECT reghook.namespace_add('team-c')")
    assert code == '42501'
    code, msg = refused(pg, 'owner_a', "SELECT * FROM reghook.registry_add('r2')")
    assert code == '42501'


def test_owner_manages_members_of_its_namespace(reghook, pg, endpoint_factory):
    hook = endpoint_factory()
    two_teams(reghook, pg, hook)
    pg.create_login_role('newcomer')
    as_role(pg, 'owner_a', "SELECT reghook.namespace_grant('team-a', 'newcomer', 'viewer')")
    assert as_role(pg, 'newcomer', 'SELECT name FROM reghook.namespaces') == [('team-a',)]
    members = as_role(pg, 'owner_a', 'SELECT role_name, access FROM reghook.namespace_members'
                                     ' ORDER BY role_name')
    assert ('newcomer', 'viewer') in members and all(m[0] != 'viewer_b' for m in members)
    as_role(pg, 'owner_a', "SELECT reghook.namespace_grant('team-a', 'newcomer', 'owner')")
    reghook.run_cli('namespace', 'grant', 'team-b', 'newcomer', 'viewer')
    as_role(pg, 'owner_a', "SELECT reghook.namespace_revoke('team-a', 'newcomer')")
    assert as_role(pg, 'newcomer', 'SELECT name FROM reghook.namespaces') == [('team-b',)]
    # With its last namespace it loses the member role, and with it the schema.
    pg.psql("SELECT reghook.namespace_revoke('team-b', 'newcomer')")
    code, _ = refused(pg, 'newcomer', 'SELECT name FROM reghook.namespaces')
    assert code == '42501'
    as_role(pg, 'owner_a', "SELECT reghook.namespace_grant('team-a', 'newcomer', 'viewer')")
    assert as_role(pg, 'newcomer', 'SELECT name FROM reghook.namespaces') == [('team-a',)]
    as_role(pg, 'owner_a', "SELECT reghook.namespace_revoke('team-a', 'newcomer')")
    # A contributor does not manage members; an owner of team-a not those of team-b.
    code, msg = refused(pg, 'contrib_a', "SELECT reghook.namespace_grant('team-a', 'newcomer', 'owner')")
    assert code == '42501' and 'owner access' in msg
    code, _ = refused(pg, 'owner_a', "SELECT reghook.namespace_grant('team-b', 'newcomer', 'viewer')")
    assert code == 'P0002'
    code, msg = refused(pg, 'owner_a', "SELECT reghook.namespace_grant('team-a', 'nobody', 'viewer')")
    assert code == '42704' and 'role "nobody" does not exist' in msg
    code, msg = refused(pg, 'owner_a', "SELECT reghook.namespace_grant('team-a', 'newcomer', 'god')")
    assert code == '22023'


def test_no_member_reads_a_password_secret_or_header_value(reghook, pg, endpoint_factory):
    hook = endpoint_factory()
    two_teams(reghook, pg, hook)
    # The contributor may set them, and still cannot read them back.
    a = rows(pg, "SELECT w.id FROM reghook.webhooks w JOIN reghook.namespaces n"
                 " ON n.id = w.namespace_id WHERE n.name = 'team-a'")[0]['id']
    as_role(pg, 'contrib_a', 'SELECT reghook.webhook_set(%s, %s)',
            (a, json.dumps({'password': PASSWORD + '2', 'headers': [f'X-Api-Key: {HEADER_VALUE}2']})))
    assert rows(pg, f'SELECT password FROM reghook.webhook_secrets WHERE webhook_id = {a}') == [
        {'password': PASSWORD + '2'}]

    tokens = pg.psql('SELECT callback_token FROM reghook.deliveries').split()
    assert tokens
    tables = pg.psql("SELECT c.relname FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace"
                     " WHERE s.nspname = 'reghook' AND c.relkind IN ('r', 'v')").split()
    columns = rows(pg, "SELECT c.relname AS tbl, a.attname AS col FROM pg_attribute a"
                       " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace s ON s.oid = c.relnamespace"
                       " WHERE s.nspname = 'reghook' AND c.relkind IN ('r', 'v') AND a.attnum > 0"
                       " AND NOT a.attisdropped")
    assert 'webhook_secrets' in tables and len(columns) > 50
    for role in ('viewer_a', 'contrib_a', 'owner_a', 'viewer_b'):
        readable = 0
        for col in columns:
            try:
                values = as_role(pg, role, f'SELECT "{col["col"]}"::text FROM reghook."{col["tbl"]}"')
            except psycopg2.errors.InsufficientPrivilege:
                continue
            readable += 1
            text = json.dumps(values)
            for secret in (PASSWORD, SECRET, HEADER_VALUE, *tokens):
                assert secret not in text, (role, col)
        assert readable > 30, role
        for sql in ('SELECT * FROM reghook.webhook_secrets', 'SELECT value FROM reghook.webhook_headers',
                    'SELECT callback_token FROM reghook.deliveries', 'SELECT * FROM reghook.deliveries'):
            assert refused(pg, role, sql)[0] == '42501', (role, sql)


def test_a_members_functions_in_a_writable_schema_never_run_for_reghook(reghook_factory, pg,
                                                                       endpoint_factory):
    """Where everyone may create objects in public (PostgreSQL 14, or a
    database upgraded from it), a member's function that matches a call's
    argument types more closely than the built-in one would run as whoever
    made the call: array_to_string(text[], text) in `webhook list`, an
    operator ||(integer, text) in the daemon's start-up check. reghook's
    sessions look names up in pg_catalog only: the member's code runs for
    the member alone."""
    daemon = reghook_factory(FAST)
    hook = endpoint_factory()
    two_teams(daemon, pg, hook)
    pg.psql('GRANT CREATE ON SCHEMA public TO PUBLIC')
    as_role(pg, 'contrib_a', """
        CREATE TABLE public.ran_as (who text, secrets bigint);
        GRANT INSERT ON public.ran_as TO PUBLIC;
        CREATE FUNCTION public.array_to_string(a text[], sep text) RETURNS text
        LANGUAGE plpgsql AS $$
        DECLARE n bigint;
        BEGIN
            BEGIN
                SELECT count(*) INTO n FROM reghook.webhook_secrets;
            EXCEPTION WHEN insufficient_privilege THEN
                n := NULL;
            END;
            INSERT INTO public.ran_as VALUES (current_user, n);
            RETURN pg_catalog.array_to_string(a, sep);
        END $$;
        CREATE FUNCTION public.cat(a integer, b text) RETURNS text LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.ran_as VALUES (current_user, NULL);
            RETURN pg_catalog.textcat(a::text, b);
        END $$;
        CREATE OPERATOR public.|| (LEFTARG = integer, RIGHTARG = text, FUNCTION = public.cat);
        GRANT EXECUTE ON FUNCTION public.array_to_string(text[], text), public.cat(integer, text)
            TO PUBLIC""")
    # The member's own session (search_path "$user", public) does run them:
    # what the test would catch is real.
    as_role(pg, 'contrib_a', "SELECT array_to_string(ARRAY['a', 'b'], ','), 1 || 'x'::text")
    assert pg.psql('SELECT who FROM public.ran_as ORDER BY who').split() == ['contrib_a'] * 2

    listed = daemon.run_cli('webhook', 'list').stdout
    assert hook.url('/team-a') in listed, listed
    daemon.run_cli('deliveries')
    daemon.run_cli('webhook', 'show', '1')
    as_role(pg, 'contrib_a', "SELECT 1")
    again = reghook_factory(FAST)  # the start-up checks of a second daemon
    assert again.get('/readyz')[0] == 200
    assert pg.psql("SELECT count(*) FROM public.ran_as WHERE who <> 'contrib_a'").strip() == '0', \
        pg.psql('SELECT * FROM public.ran_as')


def test_an_error_quoting_a_members_text_reaches_the_terminal_printable(reghook, pg,
                                                                        endpoint_factory):
    """A reason a contributor gave (webhook_disable) is quoted by the error
    an operator's retrigger gets: its control characters are '?' there too,
    as in the tables, so that it cannot retitle the window or erase the
    line."""
    hook = endpoint_factory()
    _, hooks = two_teams(reghook, pg, hook)
    as_role(pg, 'contrib_a', 'SELECT reghook.webhook_disable(%s, %s)',
            (int(hooks['team-a']), 'gone\x1b]0;PWNED\x07\x1b[2K\r\u009b1m'))
    proc = reghook.run_cli('retrigger', '--webhook', hooks['team-a'], '--failed', check=False)
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith(f"reghook: webhook {hooks['team-a']} is disabled"), proc.stderr
    assert 'gone?]0;PWNED??[2K??1m' in proc.stderr, proc.stderr
    assert not any(c in proc.stderr for c in '\x1b\x07\r\u009b'), proc.stderr


def test_sql_injection_through_function_arguments_is_harmless(reghook, pg, endpoint_factory):
    hook = endpoint_factory()
    two_teams(reghook, pg, hook)
    attacks = ["x'); DROP TABLE reghook.events; --", 'x"; DROP TABLE reghook.events; --',
               "'; UPDATE reghook.webhooks SET enabled = false; --", '$$; DROP SCHEMA reghook CASCADE; $$',
               "team-a' OR '1'='1"]
    before = pg.psql('SELECT count(*) FROM reghook.events').strip()
    a = rows(pg, "SELECT w.id FROM reghook.webhooks w JOIN reghook.namespaces n"
                 " ON n.id = w.namespace_id WHERE n.name = 'team-a'")[0]['id']
    for attack in attacks:
        for role in ('contrib_a', 'owner_a'):
            # Refused as data, never run as SQL.
            for sql, params in [
                    ('SELECT reghook.webhook_add(%s, %s)', (attack, 'http://127.0.0.1:9/')),
                    ('SELECT reghook.namespace_grant(%s, %s, %s)', ('team-a', attack, 'viewer')),
                    ('SELECT reghook.namespace_grant(%s, %s, %s)', ('team-a', 'viewer_b', attack)),
                    ('SELECT reghook.namespace_revoke(%s, %s)', (attack, 'viewer_b')),
                    ('SELECT reghook.retrigger(%s::uuid)', (attack,)),
                    ('SELECT reghook.retrigger_failed(%s, %s::timestamptz)', (a, attack)),
                    ('SELECT reghook.webhook_set(%s, %s)', (a, json.dumps({attack: 1}))),
                    ('SELECT reghook.webhook_set_headers(%s, ARRAY[%s])', (a, attack))]:
                with pytest.raises(psycopg2.Error):
                    as_role(pg, role, sql, params)
            # Accepted as data, stored verbatim.
            as_role(pg, role, 'SELECT reghook.webhook_set(%s, %s)', (a, json.dumps({'name': attack})))
            assert webhook_of(pg, a)['name'] == attack
            as_role(pg, role, 'SELECT reghook.webhook_disable(%s, %s)', (a, attack))
            assert webhook_of(pg, a)['disabled_reason'] == attack
            as_role(pg, role, 'SELECT reghook.webhook_set_headers(%s, ARRAY[%s])', (a, 'X-Q: ' + attack))
    # A role whose name needs quoting is granted as itself, and nothing else happens.
    weird = 'team"; DROP ROLE viewer_b; --'
    pg.psql(f'CREATE ROLE "{weird.replace(chr(34), chr(34) * 2)}" LOGIN', dbname='postgres')
    as_role(pg, 'owner_a', 'SELECT reghook.namespace_grant(%s, %s, %s)', ('team-a', weird, 'viewer'))
    assert as_role(pg, weird, 'SELECT name FROM reghook.namespaces') == [('team-a',)]
    assert pg.psql("SELECT count(*) FROM pg_roles WHERE rolname = 'viewer_b'").strip() == '1'
    assert pg.psql('SELECT count(*) FROM reghook.events').strip() == before
    assert pg.psql("SELECT count(*) FROM reghook.namespaces").strip() == '2'
    # Through the command line too.
    for args in (['deliveries', '--status', "failed' OR '1'='1"], ['deliveries', '--webhook', '1 OR 1=1'],
                 ['deliveries', '--since', "1h'; DROP TABLE reghook.events; --"],
                 ['retrigger', "00000000-0000-0000-0000-000000000000'; --"]):
        assert reghook.run_cli(*args, check=False).returncode == 2, args
    assert pg.psql('SELECT count(*) FROM reghook.events').strip() == before


# --- retrigger -------------------------------------------------------------------


def test_retrigger_keeps_the_id_and_continues_the_attempts(reghook_factory, pg, endpoint_factory):
    daemon = reghook_factory(FAST)
    token = register(daemon, 'team-a')
    hook = endpoint_factory()
    hook.respond(500, b'down')
    webhook_id = add_webhook(daemon, 'team-a', hook.url('/'), '--max-attempts', '2')
    pg.psql(f"SELECT reghook.webhook_set({webhook_id}, '{{\"max_attempts\": 2}}')")
    post(daemon, token, event())
    delivery = wait_status(pg, webhook_id, 'failed')[0]
    wait_attempts(pg, webhook_id, 2)

    # retrigger NOTIFYs the dispatchers: a listener sees it.
    listener = pg.connect()
    with listener.cursor() as cur:
        cur.execute('LISTEN reghook_deliveries')
    hook.respond(500, b'still down')
    out = daemon.run_cli('retrigger', delivery['id']).stdout
    assert out == f'Delivery {delivery["id"]} queued again.\n'
    assert select.select([listener], [], [], 10) != ([], [], [])
    listener.poll()
    assert 'reghook_deliveries' in [n.channel for n in listener.notifies]

    # A new round of max_attempts: attempts 3 and 4, then failed again.
    reqs = hook.wait_for(4, timeout=20)
    assert {r.header('X-Reghook-Delivery') for r in reqs} == {delivery['id']}
    wait_status(pg, webhook_id, 'failed')
    history = wait_attempts(pg, webhook_id, 4)
    assert [h['attempt'] for h in history] == [1, 2, 3, 4]
    d = rows(pg, f"SELECT attempts, round_start, retriggered_by FROM reghook.deliveries"
                 f" WHERE id = '{delivery['id']}'")[0]
    assert d == {'attempts': 4, 'round_start': 2, 'retriggered_by': 'postgres'}

    hook.respond(200, b'back')
    start = time.monotonic()
    daemon.run_cli('retrigger', delivery['id'])
    hook.wait_for(5, timeout=10)
    print(f'retrigger to attempt: {time.monotonic() - start:.3f}s (including the CLI)')
    assert wait_status(pg, webhook_id, 'succeeded')[0]['attempts'] == 5
    assert [h['attempt'] for h in wait_attempts(pg, webhook_id, 5)] == [1, 2, 3, 4, 5]


def test_retrigger_refusals_are_clear(reghook_factory, pg, endpoint_factory):
    daemon = reghook_factory(FAST)
    token = register(daemon, 'team-a')
    hook = endpoint_factory()
    hook.respond(500, b'down')
    webhook_id = add_webhook(daemon, 'team-a', hook.url('/'))
    post(daemon, token, event())
    hook.wait_for(1)
    pending = wait_status(pg, webhook_id, 'pending')[0]['id']
    # A pending delivery has its next attempt made due now (test_first_hour.py).
    missing = str(uuid.uuid4())
    res = daemon.run_cli('retrigger', missing, check=False)
    assert res.returncode == 1 and f'delivery {missing} does not exist' in res.stderr
    res = daemon.run_cli('retrigger', '--webhook', '999999', '--failed', check=False)
    assert res.returncode == 1 and 'webhook 999999 does not exist' in res.stderr
    # A failed delivery of a disabled webhook: enable it first.
    pg.psql(f"SELECT reghook.webhook_set({webhook_id}, '{{\"max_attempts\": 1}}')")
    failed = wait_status(pg, webhook_id, 'failed', timeout=20)[0]['id']
    daemon.run_cli('webhook', 'disable', webhook_id)
    res = daemon.run_cli('retrigger', failed, check=False)
    assert res.returncode == 1 and f'webhook {webhook_id} is disabled' in res.stderr
    res = daemon.run_cli('retrigger', '--webhook', webhook_id, '--failed', check=False)
    assert res.returncode == 1 and 'enable it first' in res.stderr
    # Bad usage: exit 2, nothing done.
    for args in (['retrigger'], ['retrigger', 'nope'], ['retrigger', '--failed'],
                 ['retrigger', '--webhook', webhook_id], ['retrigger', failed, '--webhook', '1', '--failed'],
                 ['retrigger', '--webhook', 'x', '--failed'], ['retrigger', '--webhook', webhook_id,
                                                              '--failed', '--since', 'soon-ish'],
                 ['retrigger', '--bogus']):
        res = daemon.run_cli(*args, check=False)
        assert res.returncode == 2 and res.stderr.startswith('reghook retrigger: '), (args, res.stderr)
    assert wait_status(pg, webhook_id, 'failed')


def test_retrigger_failed_brings_failed_deliveries_to_an_endpoint_that_recovered(
        reghook_factory, pg, endpoint_factory):
    daemon = reghook_factory(FAST)
    token = register(daemon, 'team-a')
    hook = endpoint_factory()
    hook.respond(503, b'maintenance')
    webhook_id = add_webhook(daemon, 'team-a', hook.url('/'))
    pg.psql(f"SELECT reghook.webhook_set({webhook_id}, '{{\"max_attempts\": 1}}')")
    tags = [f'v{i}' for i in range(5)]
    post(daemon, token, *[event(tag=t) for t in tags])
    failed = wait_status(pg, webhook_id, 'failed', timeout=20)
    assert len(failed) == 5

    hook.respond(200, b'ok')
    # Failed since a time still to come: none.
    res = daemon.run_cli('retrigger', '--webhook', webhook_id, '--failed', '--since', '2100-01-01')
    assert res.stdout == f'0 failed deliveries of webhook {webhook_id} queued again.\n'
    res = daemon.run_cli('retrigger', '--webhook', webhook_id, '--failed', '--since', '1d')
    assert res.stdout == f'5 failed deliveries of webhook {webhook_id} queued again.\n'
    reqs = hook.wait_for(10, timeout=20)
    assert sorted(json.loads(r.body)['push_data']['tag'] for r in reqs[5:]) == tags
    done = wait_status(pg, webhook_id, 'succeeded')
    assert {d['id'] for d in done} == {d['id'] for d in failed}
    assert all(d['attempts'] == 2 for d in done)


# --- the dispatcher's own role ---------------------------------------------------


def test_dispatcher_runs_as_its_own_role(reghook_factory, pg, endpoint_factory):
    run_reghook(['migrate'], database_url=pg.url())
    pg.create_login_role('rh_dispatcher')
    pg.psql(f'GRANT {pg.group_role("dispatcher")} TO rh_dispatcher')
    daemon = reghook_factory(FAST, database_url=pg.url('rh_dispatcher'))
    # Set-up as the admin (the schema owner); serving as the dispatcher.
    run_reghook(['namespace', 'add', 'team-a'], database_url=pg.url())
    out = run_reghook(['registry', 'add', 'main'], database_url=pg.url()).stdout
    token = next(w for w in out.split() if w.startswith('rgh_'))
    hook = endpoint_factory()
    hook.script([500, 200])
    out = run_reghook(['webhook', 'add', 'team-a', hook.url('/'), '--secret', SECRET],
                      database_url=pg.url()).stdout
    webhook_id = out.split()[1]
    run_reghook(['webhook', 'enable', webhook_id], database_url=pg.url())

    post(daemon, token, event())
    reqs = hook.wait_for(2, timeout=20)
    assert reqs[1].header('Webhook-Signature', '').startswith('v1,')
    wait_status(pg, webhook_id, 'succeeded')
    assert [h['attempt'] for h in wait_attempts(pg, webhook_id, 2)] == [1, 2]
    # The dispatcher role may not manage anything.
    code, _ = refused(pg, 'rh_dispatcher', "SELECT reghook.namespace_add('team-z')")
    assert code == '42501'
    code, _ = refused(pg, 'rh_dispatcher', 'SELECT reghook.webhook_disable(%s)', (int(webhook_id),))
    assert code == '42501'
    assert 'permission denied' not in daemon.log()


# --- the deliveries command ------------------------------------------------------


def test_deliveries_command_table_json_and_filters(reghook_factory, pg, endpoint_factory):
    daemon = reghook_factory(FAST)
    token = register(daemon, 'team-a')
    good, bad = endpoint_factory(), endpoint_factory()
    bad.respond(500, b'nope')
    good_id = add_webhook(daemon, 'team-a', good.url('/'))
    bad_id = add_webhook(daemon, 'team-a', bad.url('/'))
    pg.psql(f"SELECT reghook.webhook_set({bad_id}, '{{\"max_attempts\": 2}}')")
    post(daemon, token, event(tag='1.0'))
    wait_status(pg, good_id, 'succeeded')
    wait_status(pg, bad_id, 'failed', timeout=20)
    wait_attempts(pg, bad_id, 2)

    table = daemon.run_cli('deliveries').stdout.splitlines()
    assert table[0].split()[:7] == ['delivery_id', 'attempt', 'result', 'webhook', 'image',
                                    'action', 'status']
    assert len(table) == 4  # header, one success, two failures
    # Each attempt's own result beside the delivery's status now.
    assert sorted(line.split()[2] for line in table[1:]) == ['http', 'http', 'ok']
    assert any('team-a/app:1.0' in line and 'HTTP 500' in line for line in table)

    as_json = json.loads(daemon.run_cli('deliveries', '--webhook', bad_id, '--json').stdout)
    assert [(h['attempt'], h['status'], h['response_status'], h['error']) for h in as_json] == [
        (2, 'failed', 500, 'HTTP 500'), (1, 'failed', 500, 'HTTP 500')]
    assert set(HISTORY_COLUMNS) <= set(as_json[0])
    only_ok = json.loads(daemon.run_cli('deliveries', '--status', 'succeeded', '--json').stdout)
    assert [h['webhook_id'] for h in only_ok] == [int(good_id)]
    assert len(json.loads(daemon.run_cli('deliveries', '--limit', '1', '--json').stdout)) == 1
    assert json.loads(daemon.run_cli('deliveries', '--since', '2100-01-01', '--json').stdout) == []
    assert len(json.loads(daemon.run_cli('deliveries', '--since', '1h', '--json').stdout)) == 3

    for args in (['--status', 'done'], ['--limit', '0'], ['--limit', '100001'], ['--limit', 'x'],
                 ['--webhook', '-1'], ['--since', 'after lunch'], ['--since'], ['stray'], ['--color']):
        res = daemon.run_cli('deliveries', *args, check=False)
        assert res.returncode == 2 and res.stderr.startswith('reghook deliveries: '), (args, res.stderr)
        assert res.stdout == ''


def test_a_member_runs_the_commands_as_itself(reghook, pg, endpoint_factory):
    hook = endpoint_factory()
    _, hooks = two_teams(reghook, pg, hook)
    out = json.loads(run_reghook(['deliveries', '--json'], database_url=pg.url('viewer_b')).stdout)
    assert {h['namespace'] for h in out} == {'team-b'}
    delivery_id = out[0]['delivery_id']
    res = run_reghook(['retrigger', delivery_id], database_url=pg.url('viewer_b'), check=False)
    assert res.returncode == 1 and 'contributor access to namespace "team-b" is needed' in res.stderr
    res = run_reghook(['retrigger', delivery_id], database_url=pg.url('contrib_a'), check=False)
    assert res.returncode == 1 and 'does not exist' in res.stderr


def test_credentials_in_a_url_move_to_the_secrets(reghook, pg):
    register(reghook, 'team-a')
    # The user information ends at the last @: a raw @ in the password stays in it.
    raw_at = add_webhook(reghook, 'team-a', 'http://u:p@ss@hooks.example/', enable=False)
    assert rows(pg, f'SELECT url, username, name FROM reghook.webhooks WHERE id = {raw_at}') == [
        {'url': 'http://hooks.example/', 'username': 'u', 'name': 'hooks.example'}]
    assert rows(pg, f'SELECT password FROM reghook.webhook_secrets WHERE webhook_id = {raw_at}') \
        == [{'password': 'p@ss'}]
    webhook_id = add_webhook(reghook, 'team-a', 'https://us%65r:p%40ss%3Aword@hooks.example/x?y=1')
    assert rows(pg, f'SELECT url, username FROM reghook.webhooks WHERE id = {webhook_id}') == [
        {'url': 'https://hooks.example/x?y=1', 'username': 'user'}]
    assert rows(pg, f'SELECT password FROM reghook.webhook_secrets WHERE webhook_id = {webhook_id}') \
        == [{'password': 'p@ss:word'}]
    # On set too; a --username given beside the URL wins over the URL's.
    reghook.run_cli('webhook', 'set', webhook_id, '--url', 'https://ann:pw2@hooks.example/',
                    '--username', 'bob')
    assert rows(pg, f'SELECT url, username FROM reghook.webhooks WHERE id = {webhook_id}') == [
        {'url': 'https://hooks.example/', 'username': 'bob'}]
    assert rows(pg, f'SELECT password FROM reghook.webhook_secrets WHERE webhook_id = {webhook_id}') \
        == [{'password': 'pw2'}]


def test_upgrade_from_a_database_of_the_first_five_migrations(pg, endpoint_factory, reghook_factory):
    """A database migrated by a reghook that knew migrations 001-005 (applied
    here as they were released, as migrate applied them), with a webhook whose URL holds
    credentials and a failed delivery: `reghook migrate` brings it to the
    current schema, and the SQL interface works on the old rows."""
    pg.apply_released_migrations(5)
    hook = endpoint_factory()
    pg.psql(f"""SELECT reghook.namespace_add('team-a');
        SELECT reghook.webhook_add('team-a', 'http://ci:p%40ss@127.0.0.1:{hook.port}/old');
        SELECT reghook.webhook_enable(1);
        INSERT INTO reghook.deliveries (webhook_id, action, is_test, status, attempts, completed_at)
        VALUES (1, 'push', true, 'failed', 8, now());
        -- 004 named a webhook after what followed the URL's first '@': the
        -- password's tail (a raw '@' in it), read by every member.
        SELECT reghook.webhook_add('team-a', 'https://ci:s3cr@tPW%2Dtail@hooks.example/x');
        SELECT reghook.webhook_add('team-a', 'https://ci:pw@hooks.example/y',
                                   '{{"name": "ops@hooks.example"}}');
        SELECT reghook.webhook_add('team-a', 'https://ci:pa@ss:word@hooks.example/z');
        SELECT reghook.webhook_add('team-a', 'https://ci:p@w@hooks.example/q',
                                   '{{"name": "build%ff@hooks.example"}}');
        -- Before 006 a webhook's own header was kept in clear in the history
        -- unless its name held a word such as token.
        INSERT INTO reghook.delivery_attempts (delivery_id, attempt, webhook_id, attempted_at,
            duration_ms, method, url, request_headers, instance)
        SELECT id, 1, 1, now(), 1, 'POST', 'http://x/',
               '[["Content-Type", "application/json"], ["X-Auth-Key", "OLDHDRSECRET"],
                 ["Authorization", "[redacted]"], ["X-Reghook-Event", "push"]]', 'old'
        FROM reghook.deliveries;""")
    assert rows(pg, 'SELECT name FROM reghook.webhooks WHERE id IN (2, 4) ORDER BY id') == [
        {'name': 'tPW%2Dtail@hooks.example'}, {'name': 'ss'}]

    out = run_reghook(['migrate'], database_url=pg.url()).stdout
    assert 'migration(s) applied' in out and '(0 migration' not in out
    assert rows(pg, 'SELECT url, username FROM reghook.webhooks WHERE id = 1') == [
        {'url': hook.url('/old'), 'username': 'ci'}]
    assert rows(pg, 'SELECT password FROM reghook.webhook_secrets WHERE webhook_id = 1') == [
        {'password': 'p@ss'}]
    assert rows(pg, 'SELECT id, name FROM reghook.webhooks WHERE id > 1 ORDER BY id') == [
        {'id': 2, 'name': 'hooks.example'}, {'id': 3, 'name': 'ops@hooks.example'},
        {'id': 4, 'name': 'hooks.example'}, {'id': 5, 'name': 'build%ff@hooks.example'}]
    assert rows(pg, 'SELECT request_headers FROM reghook.delivery_attempts') == [
        {'request_headers': [['Content-Type', 'application/json'], ['X-Auth-Key', '[redacted]'],
                             ['Authorization', '[redacted]'], ['X-Reghook-Event', 'push']]}]
    daemon = reghook_factory(FAST)
    delivery = rows(pg, 'SELECT id FROM reghook.deliveries')[0]['id']
    daemon.run_cli('retrigger', delivery)
    [req] = hook.wait_for(1, timeout=15)
    assert req.header('X-Reghook-Delivery') == delivery and req.path == '/old'
    assert req.header('Authorization') == 'Basic ' + base64.b64encode(b'ci:p@ss').decode()
    assert wait_status(pg, 1, 'succeeded')[0]['attempts'] == 9


def test_a_new_url_or_method_must_be_given_the_password_and_headers_again(reghook, pg,
                                                                        endpoint_factory):
    """Otherwise a contributor could point the webhook at a host of its own
    and read them from the next request, or call another path (or method)
    of the same host with them and read the answer in the history."""
    hook = endpoint_factory()
    _, hooks = two_teams(reghook, pg, hook)
    a = int(hooks['team-a'])
    for change in ({'url': 'http://attacker.example/'}, {'url': hook.url('/admin/export?all=1')},
                   {'method': 'GET'}, {'url': hook.url('/team-a'), 'method': 'put'}):
        code, msg = refused(pg, 'contrib_a', 'SELECT reghook.webhook_set(%s, %s)',
                            (a, json.dumps(change)))
        assert code == '22023' and 'give them again' in msg, (change, msg)
    res = reghook.run_cli('webhook', 'set', str(a), '--url', 'http://attacker.example/', check=False)
    assert res.returncode == 1 and 'give them again' in res.stderr
    assert (webhook_of(pg, a)['url'], webhook_of(pg, a)['method']) == (hook.url('/team-a'), 'POST')
    # The same URL and method again: nothing moves. With both given again
    # (or cleared): fine.
    as_role(pg, 'contrib_a', 'SELECT reghook.webhook_set(%s, %s)',
            (a, json.dumps({'url': hook.url('/team-a'), 'method': 'POST', 'name': 'same'})))
    as_role(pg, 'contrib_a', 'SELECT reghook.webhook_set(%s, %s)',
            (a, json.dumps({'url': hook.url('/moved'), 'password': 'again',
                            'headers': ['X-Api-Key: again']})))
    assert webhook_of(pg, a)['url'] == hook.url('/moved')
    as_role(pg, 'contrib_a', 'SELECT reghook.webhook_set(%s, %s)',
            (a, json.dumps({'url': 'http://new.example/', 'password': '', 'headers': []})))
    assert webhook_of(pg, a)['url'] == 'http://new.example/'
    assert rows(pg, f'SELECT password FROM reghook.webhook_secrets WHERE webhook_id = {a}') == [{'password': None}]
    # The same from the CLI, as its refusal says: --header '' clears the headers.
    b = hooks['team-b']
    res = reghook.run_cli('webhook', 'set', b, '--url', 'http://other.example/', check=False)
    assert res.returncode == 1 and "--header '', clears them" in res.stderr, res.stderr
    res = reghook.run_cli('webhook', 'set', b, '--header', '', '--header', 'X-A: 1', check=False)
    assert res.returncode == 2 and 'give it alone' in res.stderr, res.stderr
    reghook.run_cli('webhook', 'set', b, '--url', 'http://other.example/', '--password', '',
                    '--header', '')
    assert webhook_of(pg, b)['url'] == 'http://other.example/'
    assert rows(pg, f'SELECT * FROM reghook.webhook_headers WHERE webhook_id = {b}') == []


def in_open_transaction(pg, sql):
    """A connection that ran sql in a transaction it leaves open."""
    conn = pg.connect()
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute(sql)
    return conn


def cli_while_held(pg, daemon, conn, *args):
    """Runs `reghook ARGS` while conn's transaction holds what it changed,
    commits conn once the command is seen waiting for it, and returns the
    command's result."""
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault(
        'res', daemon.run_cli(*args, check=False)))
    thread.start()
    wait_until(lambda: pg.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'").strip() != '0'
        or not thread.is_alive(), timeout=20, msg='the command waiting for the lock')
    conn.commit()
    thread.join(30)
    return out['res']


def test_a_change_made_at_the_same_moment_cannot_slip_past_the_new_url_rule(reghook, pg,
                                                                           endpoint_factory):
    """One person gives the webhook a password (or headers) for its host
    while another moves it to another host without giving them again: the
    second used to read the webhook before the first committed, pass the
    rule, and send the first one's password to the new host. A webhook
    removed meanwhile is said not to exist, where the change used to be
    reported done (or a foreign key message came)."""
    register(reghook, 'team-a')
    hook, other = endpoint_factory(), endpoint_factory()
    a = int(add_webhook(reghook, 'team-a', hook.url('/a')))
    for given in ({'username': 'ci', 'password': 'pw-for-host-a'},
                  {'headers': ['X-Token: for-host-a']}):
        held = in_open_transaction(
            pg, f"SELECT reghook.webhook_set({a}, '{json.dumps(given)}')")
        res = cli_while_held(pg, reghook, held, 'webhook', 'set', str(a), '--url', other.url('/b'))
        assert res.returncode == 1 and 'give them again' in res.stderr, (given, res.stderr)
        assert rows(pg, f'SELECT url FROM reghook.webhooks WHERE id = {a}') == [
            {'url': hook.url('/a')}]
    # The headers alone, through their own function, hold the row as well.
    held = in_open_transaction(
        pg, f"SELECT reghook.webhook_set_headers({a}, ARRAY['X-Other: for-host-a'])")
    res = cli_while_held(pg, reghook, held, 'webhook', 'set', str(a), '--url', other.url('/b'),
                         '--password', '')
    assert res.returncode == 1 and 'give them again' in res.stderr, res.stderr

    # Removed while a change, or a test push, waited for it.
    for args in (['webhook', 'set', str(a), '--name', 'x'],
                 ['webhook', 'set', str(a), '--password', 'p'],
                 ['webhook', 'test', str(a)]):
        b = int(add_webhook(reghook, 'team-a', hook.url('/b')))
        args = [str(b) if x == str(a) else x for x in args]
        held = in_open_transaction(pg, f'SELECT reghook.webhook_remove({b})')
        res = cli_while_held(pg, reghook, held, *args)
        assert res.returncode == 1 and f'webhook {b} does not exist' in res.stderr, (args,
                                                                                     res.stderr)
        assert 'foreign key' not in res.stderr


def test_a_change_starts_the_webhooks_run_of_failures_again(reghook, pg):
    """Only attempts made since a person's last change count (README,
    Delivery rules): a webhook resting after failures at its old URL is
    tried at once at its new one, and its old run of failures does not
    disable it under the 5-day rule at its first failure there."""
    register(reghook, 'team-a')
    a = int(add_webhook(reghook, 'team-a', 'http://127.0.0.1:9/old'))
    for change in (['--url', 'http://127.0.0.1:9/new'], ['--header', 'X-A: 1'],
                   ['--name', 'renamed']):
        pg.psql(f"""UPDATE reghook.webhooks SET failures_in_a_row = 25,
                        failing_since = now() - interval '5 days 1 minute' WHERE id = {a}""")
        reghook.run_cli('webhook', 'set', str(a), *change)
        assert rows(pg, f"""SELECT failures_in_a_row, failing_since, enabled
                            FROM reghook.webhooks WHERE id = {a}""") == [
            {'failures_in_a_row': 0, 'failing_since': None, 'enabled': True}], change
    # Through the headers' own function too.
    pg.psql(f"""UPDATE reghook.webhooks SET failures_in_a_row = 25,
                    failing_since = now() - interval '5 days 1 minute' WHERE id = {a};
                SELECT reghook.webhook_set_headers({a}, ARRAY['X-B: 2'])""")
    assert rows(pg, f'SELECT failures_in_a_row, failing_since FROM reghook.webhooks '
                    f'WHERE id = {a}') == [{'failures_in_a_row': 0, 'failing_since': None}]


def test_a_member_holding_a_webhook_row_stalls_no_other_namespace(reghook_factory, pg, endpoint_factory):
    daemon = reghook_factory(FAST)
    hook = endpoint_factory()
    token, hooks = two_teams(daemon, pg, hook)
    # contrib_a changes its webhook in a transaction it leaves open.
    held = pg.connect(user='contrib_a')
    held.autocommit = False
    with held.cursor() as cur:
        cur.execute("SELECT reghook.webhook_set(%s, '{\"name\": \"held\"}')", (int(hooks['team-a']),))
    try:
        post(daemon, token, event(repository='team-b/app', tag='b-2'))
        post(daemon, token, event(repository='team-a/app', tag='a-2'))
        # team-b's delivery is sent and recorded while the row is held; so is team-a's
        # (only that webhook's health waits).
        assert len(wait_attempts(pg, hooks['team-b'], 2, timeout=20)) == 2
        assert len(wait_attempts(pg, hooks['team-a'], 2, timeout=20)) == 2
    finally:
        held.rollback()


def test_queue_plans_look_rows_up_by_key_whatever_the_statistics(pg):
    """The dispatcher's claim and completion find their rows by key even when
    the planner's statistics are stale. A connection keeps these statements'
    plans for its life: first made while a new database's tables are nearly
    empty, they are not made again until ANALYZE runs, while the deliveries
    grow by thousands a second. Planned from such statistics, each call
    scanned every delivery and every event (and a plan costed past
    jit_above_cost was compiled again at every call)."""
    run_reghook(['migrate'], pg.url())
    run_reghook(['namespace', 'add', 'team-a'], pg.url())
    run_reghook(['registry', 'add', 'main'], pg.url())
    out = run_reghook(['webhook', 'add', 'team-a', 'http://127.0.0.1:9/hook'], pg.url()).stdout
    hook = out.split()[1]
    run_reghook(['webhook', 'enable', hook], pg.url())
    conn = pg.connect()
    cur = conn.cursor()
    # Nothing may ANALYZE the tables while the test runs.
    for table in ('events', 'deliveries', 'delivery_attempts'):
        cur.execute(f'ALTER TABLE reghook.{table} SET (autovacuum_enabled = false)')

    def add(n, status):
        cur.execute(f"""
            WITH e AS (
                INSERT INTO reghook.events (source_id, event_uuid, namespace_id, repository, name,
                    action, tag, occurred_at, raw)
                SELECT (SELECT id FROM reghook.registry_sources), gen_random_uuid()::text,
                       (SELECT id FROM reghook.namespaces), 'team-a/app', 'app', 'push', 't' || g,
                       now(), '{{"action": "push"}}'
                FROM generate_series(1, {n}) g RETURNING id)
            INSERT INTO reghook.deliveries (webhook_id, event_id, action, status, completed_at)
            SELECT {hook}, id, 'push', '{status}',
                   CASE WHEN '{status}' = 'succeeded' THEN now() END FROM e""")

    def cycle():
        cur.execute("SELECT delivery_id, attempt, webhook_id FROM "
                    "reghook.claim_deliveries('test', 100, 100, '{}', 10000)")
        batch = [{'id': str(i), 'attempt': a, 'webhook_id': w, 'attempted_at': time.time() * 1000,
                  'duration_ms': 1, 'method': 'POST', 'url': 'http://127.0.0.1:9/hook',
                  'request_headers': [], 'response_status': 200, 'response_headers': [],
                  'outcome': 'succeeded'} for i, a, w in cur.fetchall()]
        cur.execute("SELECT recorded FROM reghook.complete_deliveries('test', %s)", (json.dumps(batch),))
        assert cur.fetchone()[0] == len(batch)
        return len(batch)

    # Plans made (and kept: more than 5 calls make them generic) on tiny tables.
    for _ in range(8):
        add(2, 'pending')
        assert cycle() == 2
    add(30000, 'succeeded')
    add(20, 'pending')
    cur.execute("LOAD 'auto_explain'")
    for setting in ('log_min_duration = 0', 'log_nested_statements = on',
                    'log_analyze = on'):
        cur.execute(f'SET auto_explain.{setting}')
    cur.execute('SET client_min_messages = log')
    del conn.notices[:]
    assert cycle() == 20
    plans = ''.join(conn.notices)
    assert 'claim_deliveries' in plans and 'Insert on delivery_attempts' in plans, plans
    for scan in ('Seq Scan on deliveries', 'Seq Scan on events', 'JIT:'):
        assert scan not in plans, plans


def test_reclaim_expired_looks_rows_up_by_key_whatever_the_statistics(pg):
    """reclaim_expired() (every 5 s at each dispatcher) finds the expired
    leases and their webhooks by key. Its statistics are stale by nature: a
    lease lasts a request's timeout and 15 s, so soon after ANALYZE every
    lease in them has run out, and the planner expected most of those in
    flight to be expired: a lease that was read every webhook (a merge or
    hash join over them: 100,000 webhooks, 290 ms a call) and every
    delivery."""
    run_reghook(['migrate'], pg.url())
    run_reghook(['namespace', 'add', 'team-a'], pg.url())
    out = run_reghook(['webhook', 'add', 'team-a', 'http://127.0.0.1:9/hook'], pg.url()).stdout
    hook = int(out.split()[1])
    conn = pg.connect()
    cur = conn.cursor()
    for table in ('webhooks', 'deliveries', 'delivery_attempts'):
        cur.execute(f'ALTER TABLE reghook.{table} SET (autovacuum_enabled = false)')
    cur.execute("""SELECT string_agg(quote_ident(column_name), ', ')
                   FROM information_schema.columns
                   WHERE table_schema = 'reghook' AND table_name = 'webhooks'
                     AND column_name <> 'id'""")
    columns = cur.fetchone()[0]
    cur.execute(f"""INSERT INTO reghook.webhooks ({columns})
                    SELECT {columns} FROM reghook.webhooks, generate_series(1, 2999)
                    WHERE id = {hook}""")
    # 5,000 deliveries in flight, their leases run out when ANALYZE sees them.
    cur.execute("""INSERT INTO reghook.deliveries (webhook_id, action, is_test, status, attempts,
                                                   lease_owner, lease_expires_at)
                   SELECT w.id, 'push', true, 'in_flight', 1, 'gone', now() - interval '1 minute'
                   FROM (SELECT id FROM reghook.webhooks ORDER BY id LIMIT 100) w,
                        generate_series(1, 50)""")
    cur.execute('ANALYZE reghook.webhooks')
    cur.execute('ANALYZE reghook.deliveries')
    # Then they are renewed, and one lease of the newest webhook runs out.
    cur.execute("UPDATE reghook.deliveries SET lease_expires_at = now() + interval '1 minute'")
    cur.execute(f"""INSERT INTO reghook.deliveries (webhook_id, action, is_test, status, attempts,
                                                    lease_owner, lease_expires_at)
                    SELECT max(id), 'push', true, 'in_flight', 1, 'gone',
                           now() - interval '1 second' FROM reghook.webhooks""")

    def rows_read(table):
        cur.execute(f"""SELECT coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0)
                        FROM pg_stat_xact_user_tables
                        WHERE relid = 'reghook.{table}'::regclass""")
        return cur.fetchone()[0]

    cur.execute('BEGIN')
    before = rows_read('webhooks'), rows_read('deliveries')
    cur.execute('SELECT reghook.reclaim_expired(8)')
    assert cur.fetchone()[0] == 1
    read = rows_read('webhooks') - before[0], rows_read('deliveries') - before[1]
    cur.execute('COMMIT')
    assert read[0] < 10 and read[1] < 100, read


def test_ingest_hands_new_deliveries_to_the_caller_within_its_room(pg):
    """ingest() with an instance name leases each new delivery to the caller
    in the transaction that stores its event, within the room it gives (in
    all, and per webhook less what it says it holds), never to a resting or
    disabled webhook; the rest wait for a claim, which only they NOTIFY.
    What is handed over comes back with the outcomes, a row with its job
    (what the request needs) for each delivery; leased_deliveries() reads it
    again for its holder only; it completes and expires like a claimed
    delivery."""
    run_reghook(['migrate'], pg.url())
    run_reghook(['namespace', 'add', 'team-a'], pg.url())
    run_reghook(['registry', 'add', 'main'], pg.url())
    hooks = {}
    for name in ('a', 'b', 'resting', 'off'):
        out = run_reghook(['webhook', 'add', 'team-a', f'http://127.0.0.1:9/{name}'],
                          pg.url()).stdout
        hooks[name] = int(out.split()[1])
        if name != 'off':
            run_reghook(['webhook', 'enable', str(hooks[name])], pg.url())
    conn = pg.connect()
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute('UPDATE reghook.webhooks SET failures_in_a_row = 20, timeout_ms = 2000 '
                'WHERE id = %s', (hooks['resting'],))
    cur.execute('UPDATE reghook.webhooks SET timeout_ms = 3000 WHERE id = %s', (hooks['b'],))
    cur.execute('SELECT id FROM reghook.registry_sources')
    source = cur.fetchone()[0]
    listener = pg.connect()
    listener.autocommit = True
    listener.cursor().execute('LISTEN reghook_deliveries')

    def batch(n):
        return json.dumps([{'i': i, 's': source, 'id': str(uuid.uuid4()), 'action': 'push',
                            'repository': 'team-a/app', 'tag': f't{i}',
                            'ts': '2026-11-22T18:20:32Z', 'raw': {'action': 'push'}}
                           for i in range(n)])

    def ingest(n, instance, total, per, in_flight):
        cur.execute('SELECT r.i, r.outcome, (r.job).delivery_id, (r.job).attempt, (r.job).url, '
                    '(r.job).tag, (r.job).namespace, (r.job).callback_token '
                    'FROM reghook.ingest(%s, %s, %s, %s, %s, 10000) r',
                    (batch(n), instance, total, per, json.dumps(in_flight)))
        out = cur.fetchall()
        # Each event's outcome in order, with no job; then a row for each
        # delivery handed over, with its job and nothing else.
        assert [(i, o, j[0]) for i, o, *j in out[:n]] == [(i, 'accepted', None)
                                                        for i in range(n)], out
        jobs = [job for i, o, *job in out[n:]]
        assert all(i is None and o is None and job[0] for i, o, *job in out[n:]), out
        for delivery, attempt, url, tag, namespace, token in jobs:
            assert (attempt, namespace, len(token)) == (1, 'team-a', 64), out
            # Time-ordered: a version 8 UUID starting with the event's time
            # in ms, and a token that starts with a version 7 UUID.
            assert str(delivery)[14] == '8' and token[12] == '7', out
            assert int(str(delivery)[:13].replace('-', ''), 16) == 1795371632000
            assert url.startswith('http://127.0.0.1:9/') and tag in [f't{i}' for i in range(n)]
        # The job is the row as inserted.
        cur.execute('SELECT d.id, d.attempts, e.tag, d.callback_token '
                    'FROM reghook.deliveries d JOIN reghook.events e ON e.id = d.event_id '
                    'WHERE d.id = ANY (%s::uuid[])', ([str(job[0]) for job in jobs],))
        assert sorted(cur.fetchall()) == sorted((d, a, t, k) for d, a, _, t, _, k in jobs), out
        return [str(job[0]) for job in jobs]

    def notified():
        return notified_since_last(cur, listener)

    def states(ids):
        cur.execute("""SELECT webhook_id, status, attempts, lease_owner,
                              round(extract(epoch FROM lease_expires_at - created_at))
                       FROM reghook.deliveries WHERE id = ANY (%s::uuid[])""", (ids,))
        return cur.fetchall()

    # Per webhook: a had one of 3 in flight, b none; the resting one and
    # the disabled one get nothing. 5 events: 2 to a, 3 to b.
    notified()
    handed = ingest(5, 'i1', 100, 3, {str(hooks['a']): 1})
    got = states(handed)
    assert sorted(w for w, *_ in got) == [hooks['a']] * 2 + [hooks['b']] * 3, got
    for webhook, status, attempts, owner, lease in got:
        assert (status, attempts, owner) == ('in_flight', 1, 'i1'), got
        assert lease == (25 if webhook == hooks['a'] else 18), got  # 10 s (or 3 s) + 15 s
    cur.execute("""SELECT webhook_id, count(*) FROM reghook.deliveries
                   WHERE status = 'pending' AND attempts = 0 AND lease_owner IS NULL
                   GROUP BY 1 ORDER BY 1""")
    assert cur.fetchall() == sorted([(hooks['a'], 3), (hooks['b'], 2), (hooks['resting'], 5)])
    assert notified()  # some wait for a claim

    # In all: max_total caps what is handed over, whatever the webhooks' room.
    assert len(ingest(4, 'i1', 3, 16, {})) == 3
    # Nothing without an instance or with no room; an in_flight that is
    # not an object counts nothing held.
    assert ingest(2, None, 100, 16, {}) == []
    assert ingest(2, 'i1', 0, 16, {}) == []
    assert ingest(2, 'i1', 100, 0, {}) == []
    assert ingest(2, 'i1', 100, -5, {}) == []
    assert len(ingest(1, 'i1', 100, 1, [])) == 2

    # Everything handed over: no NOTIFY wakes the dispatchers.
    cur.execute('UPDATE reghook.webhooks SET enabled = false WHERE id = %s', (hooks['resting'],))
    notified()
    handed = ingest(2, 'i1', 100, 16, {})
    assert len(handed) == 4 and not notified()

    # Read again by its holder only, with what the request needs.
    cur.execute('SELECT delivery_id, attempt, url, repository, tag, callback_token '
                'FROM reghook.leased_deliveries(%s, %s::uuid[])', ('i1', handed))
    got = cur.fetchall()
    assert sorted(str(r[0]) for r in got) == sorted(handed), got
    assert all(r[1] == 1 and r[2].startswith('http://127.0.0.1:9/') and
               r[3] == 'team-a/app' and r[4] in ('t0', 't1') and len(r[5]) == 64 for r in got), got
    cur.execute('SELECT count(*) FROM reghook.leased_deliveries(%s, %s::uuid[])',
                ('i2', handed))
    assert cur.fetchone() == (0,)

    # It completes like a claimed delivery, under its lease.
    done = [{'id': handed[0], 'attempt': 1, 'webhook_id': states([handed[0]])[0][0],
             'attempted_at': time.time() * 1000, 'duration_ms': 1, 'method': 'POST',
             'url': 'http://127.0.0.1:9/a', 'request_headers': [], 'response_status': 200,
             'response_headers': [], 'outcome': 'succeeded'}]
    cur.execute("SELECT recorded FROM reghook.complete_deliveries('i2', %s)", (json.dumps(done),))
    assert cur.fetchone() == (0,)
    cur.execute("SELECT recorded FROM reghook.complete_deliveries('i1', %s)", (json.dumps(done),))
    assert cur.fetchone() == (1,)
    assert states([handed[0]])[0][1:4] == ('succeeded', 1, None)
    # A holder that vanished: its lease runs out and the delivery waits again.
    cur.execute("UPDATE reghook.deliveries SET lease_expires_at = now() - interval '1 second' "
                'WHERE id = %s', (handed[1],))
    cur.execute('SELECT reghook.reclaim_expired(8)')
    assert cur.fetchone() == (1,)
    assert states([handed[1]])[0][1:4] == ('pending', 1, None)
    cur.execute('SELECT error_message FROM reghook.delivery_attempts WHERE delivery_id = %s',
                (handed[1],))
    assert 'lease' in cur.fetchone()[0]
    listener.close()
    conn.close()


def test_a_claim_is_fair_to_namespaces_not_only_to_webhooks(pg):
    """One namespace with 2,000 webhooks, 5 deliveries due to each, and
    another with one webhook with a delivery due (and 1,999 enabled or
    disabled with nothing due): every claim of 256 takes the lone
    delivery (namespaces with something due take turns). With the webhooks
    in random order alone a claim took it once in 40, and a fan-out of one
    team held another team's deliveries back for most of its backlog."""
    run_reghook(['migrate'], pg.url())
    hooks = {}
    for ns in ('team-a', 'team-b'):
        run_reghook(['namespace', 'add', ns], pg.url())
        out = run_reghook(['webhook', 'add', ns, f'http://127.0.0.1:9/{ns}'], pg.url()).stdout
        hooks[ns] = int(out.split()[1])
    pg.psql(f"""INSERT INTO reghook.webhooks (namespace_id, name, url)
                SELECT namespace_id, name || '-' || g, url
                FROM reghook.webhooks, generate_series(1, 1999) g WHERE id = {hooks['team-a']};
                SELECT reghook.test_webhook(w.id) FROM reghook.webhooks w, generate_series(1, 5)
                WHERE w.id <> {hooks['team-b']};""")
    pg.psql(f"""INSERT INTO reghook.webhooks (namespace_id, name, url, enabled)
                SELECT namespace_id, name || '-' || g, url, g % 2 = 0
                FROM reghook.webhooks, generate_series(1, 1999) g WHERE id = {hooks['team-b']}""")
    lone = pg.psql(f"SELECT reghook.test_webhook({hooks['team-b']})").strip()
    for _ in range(3):
        taken = pg.psql("SELECT delivery_id::text FROM "
                        "reghook.claim_deliveries('i1', 256, 16, '{}', 10000)").split()
        assert len(taken) == 256 and lone in taken
        assert pg.psql("SELECT reghook.release_deliveries('i1', ARRAY["
                       + ','.join(f"'{t}'" for t in taken) + "]::uuid[])").strip() == '256'


def test_a_lost_lease_is_never_a_rounds_last_attempt(pg):
    """A lease that runs out says nothing of whether the request went out
    (a crash, or a batch's rows that never reached the dispatcher): it is
    recorded as a lost attempt and counts, but a delivery whose last
    attempt was lost goes back to the queue for one more; only one whose
    leases were all lost, more than max_attempts times, is failed."""
    run_reghook(['migrate'], pg.url())
    run_reghook(['namespace', 'add', 'team-a'], pg.url())
    out = run_reghook(['webhook', 'add', 'team-a', 'http://127.0.0.1:9/a', '--max-attempts', '2'],
                      pg.url()).stdout
    webhook = int(out.split()[1])
    run_reghook(['webhook', 'enable', str(webhook)], pg.url())
    delivery = pg.psql(f'SELECT reghook.test_webhook({webhook})').strip()

    def lose_lease():
        taken = pg.psql("SELECT count(*) FROM reghook.claim_deliveries('gone', 10, 10, '{}', 1000)")
        assert taken.strip() == '1'
        pg.psql("UPDATE reghook.deliveries SET lease_expires_at = now() - interval '1 second'")
        assert pg.psql('SELECT reghook.reclaim_expired(8)').strip() == '1'
        return pg.psql(f"SELECT status, attempts FROM reghook.deliveries WHERE id = '{delivery}'"
                       ).strip()

    assert lose_lease() == 'pending|1'
    # Its last attempt (2 of 2) lost: queued again, not failed unsent.
    assert lose_lease() == 'pending|2'
    # A third lease lost, more than max_attempts: failed.
    assert lose_lease() == 'failed|3'
    lost = pg.psql(f"""SELECT attempt, method, error_class FROM reghook.delivery_attempts
                       WHERE delivery_id = '{delivery}' ORDER BY attempt""").split()
    assert lost == ['1||other', '2||other', '3||other'], lost
    # A retrigger starts a new round: its lost attempts count from there.
    pg.psql(f"SELECT reghook.retrigger('{delivery}')")
    assert lose_lease() == 'pending|4'


def test_new_deliveries_have_time_ordered_ids_and_tokens(pg):
    """A delivery made by the column defaults (a test push here; ingest()
    calls the same functions) has a version 7 UUID, later ones sort after
    earlier ones, and its callback token is 64 hex digits starting with
    another such UUID, unique."""
    run_reghook(['migrate'], pg.url())
    run_reghook(['namespace', 'add', 'team-a'], pg.url())
    out = run_reghook(['webhook', 'add', 'team-a', 'http://127.0.0.1:9/a'], pg.url()).stdout
    webhook = int(out.split()[1])
    made = []
    for _ in range(5):
        made.append(pg.psql(f'SELECT reghook.test_webhook({webhook})').strip())
        time.sleep(0.003)
    rows = pg.psql(f"""SELECT id, callback_token FROM reghook.deliveries
                       WHERE webhook_id = {webhook} ORDER BY id""").split()
    ids = [r.split('|')[0] for r in rows]
    tokens = [r.split('|')[1] for r in rows]
    assert ids == made, (ids, made)
    assert all(d[14] == '7' and d[19] in '89ab' for d in ids), ids
    assert all(re.fullmatch('[0-9a-f]{64}', t) and t[12] == '7' for t in tokens), tokens
    assert tokens == sorted(tokens) and len(set(tokens)) == 5, tokens


def test_a_delivery_id_is_made_from_its_source_webhook_and_event(pg):
    """An event's delivery to a webhook has the same id whenever the
    registry posts that event (an ingest rolled back, then the event posted
    again), another id for another webhook or another registry source
    posting the same event id, and its event's time in ms first; a
    timestamp before 1970 or past 10889 takes the nearer end."""
    run_reghook(['migrate'], pg.url())
    run_reghook(['namespace', 'add', 'team-a'], pg.url())
    run_reghook(['registry', 'add', 'main'], pg.url())
    run_reghook(['registry', 'add', 'second'], pg.url())
    hooks = []
    for name in ('a', 'b'):
        out = run_reghook(['webhook', 'add', 'team-a', f'http://127.0.0.1:9/{name}'],
                          pg.url()).stdout
        hooks.append(int(out.split()[1]))
        run_reghook(['webhook', 'enable', out.split()[1]], pg.url())
    conn = pg.connect()
    conn.autocommit = False
    cur = conn.cursor()
    cur.execute('SELECT id FROM reghook.registry_sources ORDER BY id')
    main, second = [r[0] for r in cur.fetchall()]

    def ingest(*events):
        """{(source, event id, webhook): delivery id} of the events, each
        (source, event id, timestamp), ingested in one batch."""
        batch = [{'i': i, 's': s, 'id': eid, 'action': 'push', 'repository': 'team-a/app',
                  'tag': f't{i}', 'ts': ts, 'raw': {}} for i, (s, eid, ts) in enumerate(events)]
        cur.execute('SELECT r.outcome FROM reghook.ingest(%s, %s, 10, 10, %s, 10000) r '
                    'WHERE r.job IS NULL', (json.dumps(batch), 'test-instance', '{}'))
        assert [r[0] for r in cur.fetchall()] == ['accepted'] * len(events)
        cur.execute('SELECT e.source_id, e.event_uuid, d.webhook_id, d.id::text '
                    'FROM reghook.deliveries d JOIN reghook.events e ON e.id = d.event_id')
        return {(s, e, w): d for s, e, w, d in cur.fetchall()}

    ts = '2026-11-22T18:20:32.125Z'
    first = ingest((main, 'ev-1', ts), (second, 'ev-1', ts), (main, 'ev/2', ts))
    conn.rollback()
    again = ingest((main, 'ev/2', ts), (main, 'ev-1', ts), (second, 'ev-1', ts))
    assert again == first and len(set(first.values())) == 6, first
    assert all(d.startswith('01a2047d-05fd-8') and d[19] in '89ab' for d in first.values()), first
    conn.rollback()
    # Out of the 48 bits' range; a registry id with any characters.
    ends = ingest((main, 'old', '1969-07-20T20:17:40Z'), (main, 'late', '20000-01-01T00:00:00Z'),
                  (main, 'é\u00a0"\'/', ts))
    assert {d[:13] for (_, e, _), d in ends.items() if e == 'old'} == {'00000000-0000'}, ends
    assert {d[:13] for (_, e, _), d in ends.items() if e == 'late'} == {'ffffffff-ffff'}, ends
    assert len(set(ends.values())) == 6, ends
    conn.rollback()


def test_a_record_whose_delivery_another_transaction_holds_is_not_waited_for(pg):
    """complete_deliveries() skips a delivery whose row another transaction
    holds (here a DELETE of its webhook, not yet committed), records the
    others at once, and names the held one in busy; written again once the
    lock is gone, it is recorded. One whose lease is lost is not busy; one
    that does not exist is missing."""
    run_reghook(['migrate'], pg.url())
    run_reghook(['namespace', 'add', 'team-a'], pg.url())
    run_reghook(['registry', 'add', 'main'], pg.url())
    hooks = []
    for name in ('kept', 'removed'):
        out = run_reghook(['webhook', 'add', 'team-a', f'http://127.0.0.1:9/{name}'],
                          pg.url()).stdout
        hooks.append(int(out.split()[1]))
        run_reghook(['webhook', 'enable', str(hooks[-1])], pg.url())
    conn = pg.connect()
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute('SELECT id FROM reghook.registry_sources')
    source = cur.fetchone()[0]
    cur.execute("SELECT (r.job).delivery_id, (r.job).webhook_id FROM reghook.ingest(%s, 'i1', "
                "10, 10, '{}', 10000) r WHERE (r.job).delivery_id IS NOT NULL", (json.dumps([
                    {'i': i, 's': source, 'id': str(uuid.uuid4()), 'action': 'push',
                     'repository': 'team-a/app', 'tag': f't{i}', 'ts': '2026-11-22T18:20:32Z',
                     'raw': {}} for i in range(2)]),))
    leased = cur.fetchall()
    assert len(leased) == 4, leased

    def record(delivery, webhook, attempt=1):
        return {'id': str(delivery), 'attempt': attempt, 'webhook_id': webhook,
                'attempted_at': time.time() * 1000, 'duration_ms': 1, 'method': 'POST',
                'url': 'http://127.0.0.1:9/', 'request_headers': [], 'response_status': 200,
                'response_headers': [], 'outcome': 'succeeded'}

    holder = pg.connect()
    holder.autocommit = False
    holder.cursor().execute('DELETE FROM reghook.webhooks WHERE id = %s', (hooks[1],))
    removed = sorted(str(d) for d, w in leased if w == hooks[1])
    batch = [record(d, w) for d, w in leased]
    # A delivery of the kept webhook whose lease is no longer ours: neither
    # recorded nor busy.
    next(r for r in batch if r['webhook_id'] == hooks[0])['attempt'] = 7
    nowhere = str(uuid.uuid4())
    started = time.monotonic()
    cur.execute('SELECT recorded, busy::text[], missing::text[] '
                "FROM reghook.complete_deliveries('i1', %s)",
                (json.dumps(batch + [record(nowhere, hooks[0])]),))
    recorded, busy, missing = cur.fetchone()
    took = time.monotonic() - started
    assert (recorded, sorted(busy), missing) == (1, removed, [nowhere]), (recorded, busy)
    assert took < 2, f'waited {took:.1f} s for the held rows'
    cur.execute('SELECT webhook_id, count(*) FROM reghook.delivery_attempts GROUP BY 1')
    assert cur.fetchall() == [(hooks[0], 1)]

    # The person thinks better of it: written again, the held ones are recorded.
    holder.rollback()
    again = [r for r in batch if r['id'] in removed]
    cur.execute('SELECT recorded, busy::text[], missing::text[] '
                "FROM reghook.complete_deliveries('i1', %s)", (json.dumps(again),))
    assert cur.fetchone() == (2, [], [])
    cur.execute("SELECT status, count(*) FROM reghook.deliveries WHERE webhook_id = %s "
                "GROUP BY 1", (hooks[1],))
    assert cur.fetchall() == [('succeeded', 2)]
    # Written a third time, they are no longer ours to record: nothing, not busy.
    cur.execute('SELECT recorded, busy::text[], missing::text[] '
                "FROM reghook.complete_deliveries('i1', %s)", (json.dumps(again),))
    assert cur.fetchone() == (0, [], [])
    holder.close()


def one_enabled_webhook(pg):
    """A migrated database with namespace team-a, registry source main and
    an enabled webhook to a port where nothing listens; its id."""
    run_reghook(['migrate'], pg.url())
    run_reghook(['namespace', 'add', 'team-a'], pg.url())
    run_reghook(['registry', 'add', 'main'], pg.url())
    out = run_reghook(['webhook', 'add', 'team-a', 'http://127.0.0.1:9/h'], pg.url()).stdout
    hook = int(out.split()[1])
    run_reghook(['webhook', 'enable', str(hook)], pg.url())
    return hook

def test_two_dispatchers_batches_for_one_webhook_both_keep_its_health(pg):
    """Two instances write attempts of one webhook at once: the second
    waits for the first's commit instead of skipping the webhook's health,
    so its 410 disables the webhook and both batches' failures count. Only
    a row a person holds past 250 ms is passed over (its attempts are still
    recorded at once)."""
    hook = one_enabled_webhook(pg)
    source = int(pg.psql('SELECT id FROM reghook.registry_sources'))

    def leased(instance, n):
        return pg.psql(f"""SELECT (r.job).delivery_id FROM reghook.ingest('{json.dumps([
            {'i': i, 's': source, 'id': str(uuid.uuid4()), 'action': 'push',
             'repository': 'team-a/app', 'tag': f't{i}', 'ts': '2026-11-22T18:20:32Z',
             'raw': {}} for i in range(n)])}', '{instance}', 10, 10, '{{}}', 10000) r
            WHERE (r.job).delivery_id IS NOT NULL""").split()

    def records(ids, status, outcome):
        return json.dumps([{'id': d, 'attempt': 1, 'webhook_id': hook,
                            'attempted_at': time.time() * 1000, 'duration_ms': 1,
                            'method': 'POST', 'url': 'http://127.0.0.1:9/h',
                            'request_headers': [], 'response_status': status,
                            'response_headers': [], 'outcome': outcome, 'delay_ms': 60000}
                           for d in ids])

    def health():
        return pg.psql(f'SELECT enabled, failures_in_a_row, disabled_reason '
                       f'FROM reghook.webhooks WHERE id = {hook}').strip()

    first, second = pg.connect(), pg.connect()
    first.autocommit, second.autocommit = False, True
    a, b = leased('A', 3), leased('B', 1)
    first.cursor().execute("SELECT recorded FROM reghook.complete_deliveries('A', %s)",
                           (records(a, 500, 'retry'),))
    got = {}

    def write_second():
        cur = second.cursor()
        cur.execute("SELECT recorded FROM reghook.complete_deliveries('B', %s)",
                    (records(b, 410, 'gone'),))
        got['recorded'] = cur.fetchone()[0]

    writer = threading.Thread(target=write_second)
    writer.start()
    time.sleep(0.1)
    first.commit()  # A's batch, open until now, held the webhook's row
    writer.join(10)
    assert got == {'recorded': 1}
    assert health() == 'f|4|endpoint answered 410 Gone'

    # A person's open transaction holds the row: the batch is recorded
    # after 250 ms; that batch's health is not applied.
    pg.psql(f'SELECT reghook.webhook_enable({hook})')
    c = leased('B', 1)
    person = pg.connect()
    person.autocommit = False
    person.cursor().execute(f'SELECT 1 FROM reghook.webhooks WHERE id = {hook} FOR UPDATE')
    started = time.monotonic()
    cur = second.cursor()
    cur.execute("SELECT recorded FROM reghook.complete_deliveries('B', %s)",
                (records(c, 500, 'retry'),))
    assert cur.fetchone() == (1,) and time.monotonic() - started < 2
    person.rollback()
    assert health() == 't|0|'
    for conn in (first, second, person):
        conn.close()


def test_only_deliveries_a_claim_could_take_now_wake_the_dispatchers(pg):
    """NOTIFY reghook_deliveries goes out for a pending delivery that is due,
    of a webhook that is not resting, or a test push; not for a retry due
    later, nor for a resting webhook's new delivery (the poll takes those)."""
    hook = one_enabled_webhook(pg)
    conn = pg.connect()
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute('SELECT id FROM reghook.registry_sources')
    source = cur.fetchone()[0]
    listener = pg.connect()
    listener.autocommit = True
    listener.cursor().execute('LISTEN reghook_deliveries')

    def woke():
        return notified_since_last(cur, listener)

    def store():
        cur.execute("SELECT count(*) FROM reghook.ingest(%s, NULL, 0, 0, '{}', 0)", (json.dumps([
            {'i': 0, 's': source, 'id': str(uuid.uuid4()), 'action': 'push',
             'repository': 'team-a/app', 'tag': 't', 'ts': '2026-11-22T18:20:32Z',
             'raw': {}}]),))

    def attempt(delay_ms):
        cur.execute("SELECT delivery_id, attempt FROM reghook.claim_deliveries('i1', 10, 10, '{}', 1000)")
        (delivery, number), = cur.fetchall()
        cur.execute("SELECT recorded FROM reghook.complete_deliveries('i1', %s)", (json.dumps([{
            'id': str(delivery), 'attempt': number, 'webhook_id': hook,
            'attempted_at': time.time() * 1000, 'duration_ms': 1, 'method': 'POST',
            'url': 'http://127.0.0.1:9/h', 'request_headers': [], 'response_status': 503,
            'response_headers': [], 'outcome': 'retry', 'delay_ms': delay_ms}]),))

    woke()
    store()
    assert woke()  # new and due
    attempt(60000)
    assert not woke()  # a retry in a minute: the poll takes it then
    cur.execute("UPDATE reghook.deliveries SET next_attempt_at = now() - interval '1 second'")
    attempt(0)
    assert woke()  # a retry due at once
    cur.execute("UPDATE reghook.deliveries SET status = 'failed'")
    woke()
    cur.execute('UPDATE reghook.webhooks SET failures_in_a_row = 20')
    store()
    assert not woke()  # resting
    cur.execute('SELECT reghook.test_webhook(%s)', (hook,))
    assert woke()  # a test push goes anyway
    cur.execute('SELECT reghook.webhook_enable(%s)', (hook,))  # ends the rest
    woke()
    store()
    assert woke()
    listener.close()
    conn.close()


def test_webhook_health_holds_against_a_clock_ahead_and_a_change_meanwhile(reghook, pg):
    """complete_deliveries() called as a dispatcher would: a failure
    stamped an hour ahead (a dispatcher whose clock is ahead) counts as
    made now, so the next success still ends the run; and a batch whose
    attempts began before the webhook was changed (a new URL, enabling
    it) leaves its health alone, a 410 among them included."""
    register(reghook, 'team-a')
    webhook_id = int(add_webhook(reghook, 'team-a', 'http://127.0.0.1:9/'))
    conn = pg.connect()
    cur = conn.cursor()

    def leased():
        cur.execute("INSERT INTO reghook.deliveries (webhook_id, action, is_test, status, "
                    "attempts, lease_owner, lease_expires_at) VALUES (%s, 'push', true, "
                    "'in_flight', 1, 'x', now() + interval '1 hour') RETURNING id::text",
                    (webhook_id,))
        return cur.fetchone()[0]

    def complete(outcome, at_ms, status):
        attempt = {'id': leased(), 'attempt': 1, 'webhook_id': webhook_id,
                   'attempted_at': at_ms, 'duration_ms': 1, 'method': 'POST',
                   'url': 'http://127.0.0.1:9/', 'request_headers': [],
                   'response_status': status, 'response_headers': [], 'outcome': outcome}
        cur.execute("SELECT recorded FROM reghook.complete_deliveries('x', %s)",
                    (json.dumps([attempt]),))
        assert cur.fetchone() == (1,)

    def health():
        return rows(pg, f"""SELECT enabled, failures_in_a_row, failing_since IS NOT NULL AS failing,
                                   last_failure_at <= now() AS failure_not_ahead
                            FROM reghook.webhooks WHERE id = {webhook_id}""")[0]

    now_ms = time.time() * 1000
    complete('failed', now_ms + 3600 * 1000, 500)
    assert health() == {'enabled': True, 'failures_in_a_row': 1, 'failing': True,
                        'failure_not_ahead': True}
    complete('succeeded', time.time() * 1000 + 50, 200)
    assert health() == {'enabled': True, 'failures_in_a_row': 0, 'failing': False,
                        'failure_not_ahead': True}

    # Begun before the webhook's last change: no health, no disabling.
    before = time.time() * 1000
    time.sleep(0.05)
    reghook.run_cli('webhook', 'set', str(webhook_id), '--name', 'renamed')
    complete('gone', before, 410)
    complete('failed', before, 500)
    assert health() == {'enabled': True, 'failures_in_a_row': 0, 'failing': False,
                        'failure_not_ahead': True}


def test_a_resting_webhook_gets_one_probe_across_instances_claiming_at_once(reghook, pg):
    """Two dispatchers claim at the same moment: the first holds the resting
    webhook's probe in its open claim; the second gets none (not another
    delivery of the same webhook), then none either once the first has
    committed its lease."""
    register(reghook, 'team-a')
    webhook_id = int(add_webhook(reghook, 'team-a', 'http://127.0.0.1:9/'))
    reghook.stop()  # the test claims for itself
    pg.psql(f"""UPDATE reghook.webhooks SET failures_in_a_row = 20,
                    last_failure_at = now() - interval '1 minute' WHERE id = {webhook_id};
                INSERT INTO reghook.deliveries (webhook_id, action, is_test, next_attempt_at)
                SELECT {webhook_id}, 'push', false, now() - n * interval '1 second'
                FROM generate_series(1, 3) n""")
    first, second = pg.connect(), pg.connect()
    first.autocommit = False
    claim = ("SELECT delivery_id::text FROM reghook.claim_deliveries(%s, 100, 16, '{}', 10000)")
    with first.cursor() as a, second.cursor() as b:
        a.execute(claim, ('one',))
        probes = a.fetchall()
        assert len(probes) == 1, probes
        b.execute(claim, ('two',))
        assert b.fetchall() == []
        first.commit()
        b.execute(claim, ('two',))
        assert b.fetchall() == []
    assert pg.psql("SELECT count(*) FROM reghook.deliveries WHERE status = 'in_flight'"
                   ).strip() == '1'


def test_a_resting_webhooks_test_push_goes_at_once(reghook, pg):
    """`webhook test` on a resting webhook (20 failures in a row): its test
    push goes at the next claim, though the webhook failed a moment ago and
    has a probe in flight, and before its backlog; the backlog still waits.
    It used to wait behind the rest's probes, one every 10 s at best, and
    the CLI gave up after 20 s blaming `reghook serve`."""
    register(reghook, 'team-a')
    webhook_id = int(add_webhook(reghook, 'team-a', 'http://127.0.0.1:9/'))
    reghook.stop()  # the test claims for itself
    pg.psql(f"""UPDATE reghook.webhooks SET failures_in_a_row = 25, last_failure_at = now()
                WHERE id = {webhook_id};
                INSERT INTO reghook.deliveries (webhook_id, action, is_test, next_attempt_at,
                                                status, attempts, lease_owner, lease_expires_at)
                VALUES ({webhook_id}, 'push', false, now() - interval '1 hour', 'in_flight', 3,
                        'elsewhere', now() + interval '1 minute');
                INSERT INTO reghook.deliveries (webhook_id, action, is_test, next_attempt_at)
                SELECT {webhook_id}, 'push', false, now() - n * interval '1 second'
                FROM generate_series(1, 3) n""")
    test_id = pg.psql(f'SELECT reghook.test_webhook({webhook_id})').strip()
    claim = ("SELECT delivery_id::text, is_test "
             "FROM reghook.claim_deliveries('one', 100, 16, '{}', 10000)")
    assert pg.psql(claim).split() == [f'{test_id}|t']
    # Its backlog rests: nothing more, though the test push is in flight now.
    assert pg.psql(claim).strip() == ''
    # A disabled one's test push goes too, resting or not; the rest waits.
    pg.psql(f"SELECT reghook.webhook_disable({webhook_id}, 'by hand')")
    pg.psql(f"UPDATE reghook.webhooks SET failures_in_a_row = 25, last_failure_at = now() "
            f"WHERE id = {webhook_id}")
    second = pg.psql(f'SELECT reghook.test_webhook({webhook_id})').strip()
    assert pg.psql(claim).split() == [f'{second}|t']
    assert pg.psql(claim).strip() == ''
