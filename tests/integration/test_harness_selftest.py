"""Tests of the test harness itself: its servers work without reghook."""

import http.client
import re

import psycopg2
import pytest

from harness import PsqlError, Response, build_index, wait_until

DIGEST = re.compile(r'^sha256:[0-9a-f]{64}$')


def test_postgres_answers(pg):
    assert pg.psql('select 1') == '1\n'
    with pg.connect().cursor() as cur:
        cur.execute('select current_database()')
        assert cur.fetchone()[0] == pg.dbname


def test_postgres_roles_and_errors(pg):
    role = pg.create_login_role('selftest_viewer')
    pg.psql('create table t (x int); insert into t values (1)')
    with pytest.raises(PsqlError, match='permission denied'):
        pg.psql('select x from t', user=role)
    pg.psql(f'grant select on t to {role}')
    assert pg.psql('select x from t', user=role) == '1\n'


def test_own_postgres_restarts(pg_own):
    conn = pg_own.connect()
    pg_own.stop()
    with pytest.raises(psycopg2.OperationalError):
        conn.cursor().execute('select 1')
    pg_own.start()
    assert pg_own.psql('select current_database()') == 'reghook\n'


def test_endpoint_records_and_follows_script(endpoint_factory):
    ep = endpoint_factory()
    ep.script([500, Response(201, b'created', {'X-Test': 'yes'})])
    conn = http.client.HTTPConnection('127.0.0.1', ep.port, timeout=5)
    answers = []
    for i in range(3):
        conn.request('POST', f'/hook/{i}?tag=1.0%2Bx', body=b'{"n": %d}' % i,
                     headers={'Content-Type': 'application/json', 'X-Reghook-Event': 'push'})
        resp = conn.getresponse()
        answers.append((resp.status, resp.getheader('X-Test'), resp.read()))
    conn.close()
    assert answers == [(500, None, b''), (201, 'yes', b'created'), (200, None, b'ok')]

    requests = ep.wait_for(3)
    assert [r.path for r in requests] == ['/hook/0', '/hook/1', '/hook/2']
    first = requests[0]
    assert first.method == 'POST'
    assert first.query == 'tag=1.0%2Bx'
    assert first.header('content-type') == 'application/json'
    assert ('X-Reghook-Event', 'push') in first.headers
    assert first.json() == {'n': 0}


def test_endpoint_drops_connection(endpoint_factory):
    ep = endpoint_factory()
    ep.respond(200, drop=True)
    conn = http.client.HTTPConnection('127.0.0.1', ep.port, timeout=5)
    conn.request('GET', '/')
    with pytest.raises(http.client.RemoteDisconnected):
        conn.getresponse()
    conn.close()
    assert ep.wait_for(1)[0].method == 'GET'


def test_registry_push_copy_delete(registry_factory):
    registry = registry_factory()
    digest = registry.push('team-a/app:1.0')
    assert DIGEST.match(digest)
    assert registry.push('team-a/app:2.0') != digest  # every image is unique
    assert registry.copy('team-a/app:1.0', 'team-a/app:latest') == digest
    registry.delete(f'team-a/app@{digest}')
    with pytest.raises(AssertionError, match='manifest unknown'):
        registry.skopeo('inspect', '--tls-verify=false', '--creds', registry.creds,
                        f'docker://{registry.host}/team-a/app:latest')


def test_registry_notifies_endpoint(registry_factory, endpoint_factory, tmp_path):
    ep = endpoint_factory()
    registry = registry_factory(events_url=ep.url('/events'), token='selftest-token',
                                ignore={'actions': ['pull']})
    digest = registry.push('team-a/multi:1.0', build_index(tmp_path))

    def manifest_pushes():
        events = [e for r in list(ep.requests) for e in r.json()['events']]
        return [e for e in events if e['action'] == 'push'
                and e['target']['mediaType'] != 'application/octet-stream']

    # distribution 2.8 sends one event per request: the two platform
    # manifests (untagged), then the index with its tag.
    pushes = wait_until(lambda: len(manifest_pushes()) >= 3 and manifest_pushes(),
                        msg='three manifest push events')
    assert [e['target'].get('tag') for e in pushes] == [None, None, '1.0']
    assert pushes[-1]['target']['digest'] == digest
    assert pushes[-1]['actor']['name'] == 'alice'
    request = ep.requests[0]
    assert request.header('Authorization') == 'Bearer selftest-token'
    assert request.header('Content-Type') == \
        'application/vnd.docker.distribution.events.v1+json'
    assert all(len(r.json()['events']) == 1 for r in ep.requests)
