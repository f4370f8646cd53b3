"""README's Cookbook, query by query, run as the role each names (a viewer,
a contributor, an owner of the namespace, an admin) on a history of real
deliveries; and `reghook webhook show` as a viewer and a contributor, who
see the webhook and never its password, signing secret, header values or
callback tokens."""

import json
import re

import psycopg2
import pytest

from harness import add_webhook, register, run_reghook
from test_delivery import FAST, event, post, rows, wait_attempts, wait_status
from test_readme import code_blocks, section

PASSWORD = 'pw-7f3a-never-shown'
SECRET = 'whsec_c2VjcmV0LW5ldmVyLXNob3duLTEyMzQ1Njc4'
HEADER_VALUE = 'hdr-token-never-shown'
EXAMPLE_DELIVERY = '6f1c0a52-8a53-4a4f-9c55-0d8e1c7f3b21'
ROLES = {'viewer': 'viewer_a', 'contributor': 'contrib_a', 'owner': 'owner_a', 'admin': 'admin_a'}


def cookbook():
    """(role, title, [(statement, runs as a role that may create roles)])
    for every ```sql block of the Cookbook."""
    out = []
    for block in code_blocks(section('Cookbook'), 'sql'):
        first = block.splitlines()[0]
        m = re.match(r'-- As an? (viewer|contributor|owner|admin)\b[^:]*: (.*)', first)
        assert m, f'a Cookbook query that names no role: {first!r}'
        statements, current = [], []
        for line in block.splitlines()[1:]:
            if line.startswith('--'):
                continue
            current.append(line)
            code = line.split('--')[0].rstrip()
            if code.endswith(';'):
                statements.append(('\n'.join(current), 'as a role that may create roles' in line))
                current = []
        assert statements and not current, block
        out.append((m.group(1), m.group(2), statements))
    return out


def as_role(pg, role, sql):
    """Runs sql as a login role; the rows as dicts."""
    conn = psycopg2.connect(pg.url(role))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
            if not cur.description:
                return None
            names = [d.name for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        conn.close()


def world(reghook_factory, pg, endpoint_factory):
    """Namespaces team-a and team-b; in team-a the webhook `good` (a
    password, a secret, a header; answered 500, then 200), `bad` (one
    attempt, answered 503: failed) and `off` (disabled, with a reason), one
    push delivered to good and bad; in team-b a webhook; the login roles of
    ROLES for team-a (admin_a a member of the admin group role) and
    viewer_b of team-b."""
    daemon = reghook_factory(FAST)
    token = register(daemon, 'team-a', 'team-b')
    ok, down = endpoint_factory(), endpoint_factory()
    ok.script([(500, b'no'), (200, b'ok')])
    down.respond(503, b'maintenance')
    good = add_webhook(daemon, 'team-a', ok.url('/good'), '--username', 'u', '--password', PASSWORD,
                       '--secret', SECRET, '--header', f'X-Api-Key: {HEADER_VALUE}')
    bad = add_webhook(daemon, 'team-a', down.url('/bad'), '--max-attempts', '1')
    post(daemon, token, event(repository='team-a/app', tag='1.0'))
    delivery = wait_status(pg, good, 'succeeded')[0]['id']
    failed = wait_status(pg, bad, 'failed')[0]['id']
    wait_attempts(pg, good, 2)
    wait_attempts(pg, bad, 1)
    off = add_webhook(daemon, 'team-a', ok.url('/off'), enable=False)
    pg.psql(f"SELECT reghook.webhook_disable({off}, 'endpoint retired')")
    other = add_webhook(daemon, 'team-b', ok.url('/b'), '--password', PASSWORD)
    for role, ns, access in [('viewer_a', 'team-a', 'viewer'), ('contrib_a', 'team-a', 'contributor'),
                             ('owner_a', 'team-a', 'owner'), ('viewer_b', 'team-b', 'viewer')]:
        pg.create_login_role(role)
        daemon.run_cli('namespace', 'grant', ns, role, access)
    pg.create_login_role('admin_a')
    pg.psql(f"GRANT {pg.group_role('admin')} TO admin_a")
    return dict(daemon=daemon, ok=ok, down=down, good=good, bad=bad, off=off, other=other,
                delivery=delivery, failed=failed)


def test_every_cookbook_query_runs_as_the_role_it_names(reghook_factory, pg, endpoint_factory):
    w = world(reghook_factory, pg, endpoint_factory)
    good, bad, delivery = int(w['good']), int(w['bad']), w['delivery']
    w['ok'].respond(200, b'ok')
    # Before the retrigger, not after: its attempt may start at once.
    w['down'].respond(200, b'back')

    def check_failures(r):
        assert {(x['url'], x['response_status'], x['error_class'], x['tag']) for x in r} == {
            (w['ok'].url('/good'), 500, 'http', '1.0'), (w['down'].url('/bad'), 503, 'http', '1.0')}
        assert all(x['error'] for x in r)

    def check_last_attempts(r):
        assert [(x['delivery_id'], x['attempt'], x['response_status']) for x in r] == [
            (delivery, 2, 200), (delivery, 1, 500)]

    def check_attempt(r):
        assert len(r) == 1 and r[0]['method'] == 'POST' and r[0]['url'] == w['ok'].url('/good')
        assert r[0]['response_status'] == 500 and r[0]['response'] == 'no'
        assert not r[0]['response_truncated']
        names = [h[0].lower() for h in r[0]['request_headers']]
        assert 'x-api-key' in names and 'authorization' in names
        for secret in (PASSWORD, SECRET, HEADER_VALUE):
            assert secret not in json.dumps(r[0]['request_headers'], default=str)

    def check_full_attempt(r):
        check_attempt(r)
        body = json.loads(r[0]['request_body'])
        assert '1.0' in json.dumps(body)

    def check_disabled(r):
        assert [(x['webhook_id'], x['namespace'], x['disabled_reason']) for x in r] == [
            (int(w['off']), 'team-a', 'endpoint retired')]

    def check_retrigger(r):
        assert r == [{'retrigger': delivery}]
        wait_attempts(pg, w['good'], 3)
        assert wait_status(pg, w['good'], 'succeeded')[0]['attempts'] == 3

    def check_retrigger_failed(r):
        assert r == [{'retrigger_failed': 1}]
        assert wait_status(pg, w['bad'], 'succeeded', timeout=20)[0]['id'] == w['failed']

    def check_grant(r):
        assert as_role(pg, 'team_a_ci', 'SELECT name FROM reghook.namespaces') == [{'name': 'team-a'}]
        assert as_role(pg, 'team_a_ci', 'SELECT webhook_id FROM reghook.webhook_health ORDER BY 1') == [
            {'webhook_id': i} for i in sorted((good, bad, int(w['off'])))]

    # What each query of webhook 7 / the example delivery means here, and what it must return.
    expected = {
        'what failed in the last hour, and why': (None, check_failures),
        "a webhook's last 50 attempts": (good, check_last_attempts),
        'the request and response of one attempt': (None, check_attempt),
        'the full request and response of one attempt, with the body sent': (None, check_full_attempt),
        'which webhooks are disabled, and why': (None, check_disabled),
        'retrigger one delivery': (None, check_retrigger),
        'retrigger everything that failed for webhook 7 since yesterday': (bad, check_retrigger_failed),
        'grant a team read access to it': (None, check_grant),
    }
    queries = cookbook()
    assert sorted(next(k for k in expected if title.startswith(k)) for _, title, _ in queries) == \
        sorted(expected)
    for role, title, statements in queries:
        webhook_id, check = next(v for k, v in expected.items() if title.startswith(k))
        result = None
        for sql, needs_createrole in statements:
            sql = sql.replace(EXAMPLE_DELIVERY, delivery)
            if webhook_id is not None:
                sql = re.sub(r'\b7\b', str(webhook_id), sql)
            try:
                result = as_role(pg, 'postgres' if needs_createrole else ROLES[role], sql)
            except psycopg2.Error as e:
                pytest.fail(f'{title!r} as {role}: {e}')
        check(result)

    # The admin-only query is refused to a viewer.
    full = next(s for _, t, s in queries if t.startswith('the full request'))[0][0]
    with pytest.raises(psycopg2.Error) as err:
        as_role(pg, 'viewer_a', full.replace(EXAMPLE_DELIVERY, delivery))
    assert 'permission denied' in str(err.value)


def show(pg, role, webhook_id):
    return run_reghook(['webhook', 'show', webhook_id], database_url=pg.url(role), check=False)


def fields(out):
    return {line[:18].strip(): line[19:] for line in out.splitlines()}


def test_webhook_show_as_viewer_and_contributor_shows_no_secret(reghook_factory, pg,
                                                                 endpoint_factory):
    w = world(reghook_factory, pg, endpoint_factory)
    tokens = pg.psql('SELECT callback_token FROM reghook.deliveries WHERE callback_token IS NOT NULL'
                     ).split()
    for role in ('viewer_a', 'contrib_a'):
        res = show(pg, role, w['good'])
        assert res.returncode == 0, res.stderr
        f = fields(res.stdout)
        assert f['id'] == w['good'] and f['namespace'] == 'team-a'
        assert f['url'] == w['ok'].url('/good') and f['username'] == 'u'
        assert f['password'] == 'set' and f['secret'] == 'set'
        assert f['headers'] == 'X-Api-Key: (hidden)'
        assert f['enabled'] == 't' and f['failures_in_a_row'] == '0' and f['last_success_at']
        for secret in (PASSWORD, SECRET, HEADER_VALUE, *tokens):
            assert secret not in res.stdout + res.stderr, (role, secret)
        f = fields(show(pg, role, w['bad']).stdout)
        assert (f['password'], f['secret'], f['headers']) == ('none', 'none', '')
        f = fields(show(pg, role, w['off']).stdout)
        assert (f['enabled'], f['disabled_reason']) == ('f', 'endpoint retired')
    # An admin still sees the header values (never the password or secret).
    res = show(pg, 'admin_a', w['good'])
    assert res.returncode == 0, res.stderr
    f = fields(res.stdout)
    assert f['headers'] == f'X-Api-Key: {HEADER_VALUE}' and f['password'] == 'set'
    assert PASSWORD not in res.stdout and SECRET not in res.stdout
    # The member function answers only for a webhook the caller may see.
    assert as_role(pg, 'viewer_a', f"SELECT * FROM reghook.webhook_secret_state({w['good']})") == [
        {'has_password': True, 'has_secret': True}]
    with pytest.raises(psycopg2.Error) as err:
        as_role(pg, 'viewer_b', f"SELECT * FROM reghook.webhook_secret_state({w['good']})")
    assert f"webhook {w['good']} does not exist" in str(err.value)


def test_webhook_show_of_another_namespace_or_no_webhook_does_not_exist(reghook_factory, pg,
                                                                         endpoint_factory):
    w = world(reghook_factory, pg, endpoint_factory)
    for role, webhook_id in [('viewer_a', w['other']), ('contrib_a', w['other']),
                             ('viewer_b', w['good']), ('viewer_a', '999999')]:
        res = show(pg, role, webhook_id)
        assert res.returncode == 1, (role, webhook_id, res)
        assert res.stdout == '' and res.stderr == f'reghook: webhook {webhook_id} does not exist\n'
        assert PASSWORD not in res.stderr
    # As for the other commands, bad usage is exit status 2.
    res = show(pg, 'viewer_a', 'nope')
    assert res.returncode == 2 and res.stderr.startswith('reghook webhook: ')
