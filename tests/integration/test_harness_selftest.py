"""Tests of the test harness itself: its servers work without reghook; and
the runner (tests/run) and the fixtures fail loudly where a broken build,
a missing tool, a daemon that died or a hang could otherwise pass unseen,
shown by breaking each on purpose in a run of its own."""

import http.client
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET

import psycopg2
import pytest

import harness
from harness import PsqlError, Response, build_index, wait_until

DIGEST = re.compile(r'^sha256:[0-9a-f]{64}$')
HERE = pathlib.Path(__file__).resolve().parent


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


# --- tests/run: what is missing is a failure ---------------------------------------


def executable(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def mini_tree(tmp_path):
    """A copy of tests/run and tests/fuzz/run in a project of two unit tests,
    two fuzz harnesses and one integration test, with stand-ins for their
    binaries that pass. Returns run(env=None) -> (exit status, output)."""
    root, build, asan = tmp_path / 'tree', tmp_path / 'build', tmp_path / 'asan'
    executable(root / 'tests' / 'run', (HERE.parent / 'run').read_text())
    executable(root / 'tests' / 'fuzz' / 'run', (HERE.parent / 'fuzz' / 'run').read_text())
    for name in ('a', 'b'):
        (root / 'tests' / 'unit').mkdir(parents=True, exist_ok=True)
        (root / 'tests' / 'unit' / f'test_{name}.c').write_text('/* a unit test */\n')
        executable(asan / 'tests' / 'unit' / f'test_{name}',
                   f'#!/bin/sh\necho "ok - {name}"\necho "1 passed, 0 failed"\n')
        (root / 'tests' / 'fuzz' / f'fuzz_{name}.c').write_text('/* a harness */\n')
        executable(build / 'fuzz' / f'fuzz_{name}',
                   '#!/bin/sh\necho "Done 7 runs in 1 second(s)"\n')
    (root / 'tests' / 'integration').mkdir()
    (root / 'tests' / 'integration' / 'test_mini.py').write_text('def test_one():\n    pass\n')

    def run(env=None):
        proc = subprocess.run([str(root / 'tests' / 'run'), str(build), str(asan)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=300,
                              env={**os.environ, 'FUZZ_TEST_SECONDS': '1', **(env or {})})
        return proc.returncode, proc.stdout

    run.root, run.build, run.asan = root, build, asan
    return run


def test_runner_passes_a_whole_tree(mini_tree):
    rc, out = mini_tree()
    assert out.splitlines()[-1] == '5 passed, 0 failed', out
    assert rc == 0, out


def test_runner_fails_without_pytest(mini_tree, tmp_path):
    # A pytest package that cannot be imported, ahead of the real one: as if
    # python3-pytest were not installed.
    hide = tmp_path / 'hide'
    (hide / 'pytest').mkdir(parents=True)
    (hide / 'pytest' / '__init__.py').write_text(
        'raise ImportError("No module named pytest (hidden by the self-test)")\n')
    rc, out = mini_tree({'PYTHONPATH': str(hide)})
    assert out.splitlines()[-1] == '4 passed, 1 failed', out
    assert 'wrote no report' in out
    assert rc == 1, out


def test_runner_fails_on_a_unit_test_not_built(mini_tree):
    (mini_tree.asan / 'tests' / 'unit' / 'test_b').unlink()
    rc, out = mini_tree()
    assert out.splitlines()[-1] == '4 passed, 1 failed', out
    assert re.search(r'test_b: 0 passed, 1 failed \(not built', out), out
    assert rc == 1, out


def test_runner_fails_on_a_fuzz_harness_not_built(mini_tree):
    (mini_tree.build / 'fuzz' / 'fuzz_b').unlink()
    rc, out = mini_tree()
    assert out.splitlines()[-1] == '4 passed, 1 failed', out
    assert 'FAIL - fuzz_b: not built' in out
    assert rc == 1, out


def test_runner_fails_when_nothing_is_built(mini_tree):
    shutil.rmtree(mini_tree.build)
    shutil.rmtree(mini_tree.asan)
    rc, out = mini_tree()
    assert out.splitlines()[-1] == '1 passed, 4 failed', out
    assert rc == 1, out


def test_runner_fails_on_a_skip_or_nothing_collected_under_ci(mini_tree):
    """A test that skips itself is counted apart; in CI it is a failure, as
    is a run that collected no test (the suite would pass with less run)."""
    integration = mini_tree.root / 'tests' / 'integration'
    (integration / 'test_skips.py').write_text(
        'import pytest\n\ndef test_skips():\n    pytest.skip("no such tool")\n')
    rc, out = mini_tree({'CI': ''})
    assert out.splitlines()[-1] == '5 passed, 0 failed, 1 skipped', out
    assert rc == 0, out
    rc, out = mini_tree({'CI': 'true'})
    assert out.splitlines()[-1] == '5 passed, 1 failed', out
    assert 'FAIL - skipped under CI: tests.integration.test_skips::test_skips: no such tool' in out, out
    assert rc == 1, out
    for path in integration.iterdir():
        path.unlink()
    rc, out = mini_tree({'CI': 'false'})
    assert out.splitlines()[-1] == '4 passed, 0 failed', out
    assert rc == 0, out
    rc, out = mini_tree({'CI': 'true'})
    assert out.splitlines()[-1] == '4 passed, 1 failed', out
    assert 'none was collected' in out, out
    assert rc == 1, out


# --- the fixtures: how a daemon ends, and a hang ----------------------------------


def run_pytest(tmp_path, source, env=None):
    """Runs pytest, as tests/run does, on a test file made of source beside
    copies of conftest.py and harness.py. Returns ({test: 'passed' |
    'failed' | 'skipped'}, output); a test that passed but failed at
    teardown is 'failed'."""
    where = tmp_path / 'inner'
    where.mkdir()
    for name in ('conftest.py', 'harness.py'):
        shutil.copy(HERE / name, where / name)
    (where / 'test_inner.py').write_text(textwrap.dedent(source))
    junit = tmp_path / 'inner.xml'
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                           f'--junitxml={junit}', str(where)], cwd=where, capture_output=True,
                          text=True, timeout=900, env={**os.environ, **(env or {})})
    out = proc.stdout + proc.stderr
    assert junit.exists(), out
    outcomes = {}
    for case in ET.parse(junit).getroot().iter('testcase'):
        tags = {child.tag for child in case}
        outcome = ('failed' if tags & {'failure', 'error'} else
                   'skipped' if 'skipped' in tags else 'passed')
        if outcomes.get(case.get('name')) != 'failed':
            outcomes[case.get('name')] = outcome
    return outcomes, out


@pytest.mark.long
def test_a_daemon_that_ends_otherwise_than_said_fails_its_test(tmp_path):
    """Each test below passes by its own checks; teardown fails those whose
    daemon ended otherwise than they said."""
    # reghook, behind a script that exits 3 once reghook has stopped on SIGTERM.
    exits_3 = tmp_path / 'exits-3'
    executable(exits_3, f'#!/bin/bash\n{os.environ["REGHOOK_BIN"]} "$@" &\npid=$!\n'
                        'trap \'kill -TERM $pid; wait $pid; exit 3\' TERM\nwait $pid\n')
    outcomes, out = run_pytest(tmp_path, f"""
        import signal


        def test_stopped_cleanly(reghook):
            assert reghook.get('/healthz')[0] == 200


        def test_aborted(reghook):
            reghook.proc.send_signal(signal.SIGABRT)
            reghook.proc.wait(30)


        def test_exits_non_zero_on_sigterm(reghook_factory):
            reghook_factory(bin={str(exits_3)!r})


        def test_fatal_at_start(reghook_factory, reghook):
            second = reghook_factory({{'listen': f'127.0.0.1:{{reghook.port}}'}}, wait=False)
            second.proc.wait(30)


        def test_fatal_at_start_as_expected(reghook_factory, reghook):
            second = reghook_factory({{'listen': f'127.0.0.1:{{reghook.port}}'}}, wait=False)
            second.expect_exit(1)
            assert second.proc.wait(30) == 1


        def test_abort_as_expected(reghook):
            reghook.expect_exit(-signal.SIGABRT)
            reghook.proc.send_signal(signal.SIGABRT)
            reghook.proc.wait(30)


        def test_kill9_and_restart(reghook):
            reghook.kill9()
            reghook.start()
            reghook.wait_ready()
            reghook.kill9()


        def test_dies_before_kill9(reghook):
            reghook.proc.send_signal(signal.SIGABRT)
            reghook.proc.wait(30)
            reghook.kill9()


        def test_dies_before_a_restart(reghook):
            reghook.proc.send_signal(signal.SIGABRT)
            reghook.proc.wait(30)
            reghook.start()
            reghook.wait_ready()
        """)
    assert outcomes == {
        'test_stopped_cleanly': 'passed',
        'test_aborted': 'failed',
        'test_exits_non_zero_on_sigterm': 'failed',
        'test_fatal_at_start': 'failed',
        'test_fatal_at_start_as_expected': 'passed',
        'test_abort_as_expected': 'passed',
        'test_kill9_and_restart': 'passed',
        'test_dies_before_kill9': 'failed',
        'test_dies_before_a_restart': 'failed',
    }, out
    assert 'was killed by SIGABRT before it was stopped' in out, out
    assert 'exited with status 3 on SIGTERM' in out, out
    assert 'exited with status 1 before it was stopped' in out, out
    assert 'was killed by SIGABRT before kill9() could kill it' in out, out
    assert 'was killed by SIGABRT before it was started again' in out, out


def test_a_hang_fails_its_test_and_the_run_goes_on(tmp_path):
    started = time.monotonic()
    outcomes, out = run_pytest(tmp_path, """
        import time

        import pytest


        @pytest.mark.deadline(120)
        def test_first(pg):
            pass  # starts the session's PostgreSQL, which takes a while


        @pytest.mark.deadline(5)
        def test_hangs(reghook):
            time.sleep(3600)


        def test_hangs_until_the_default_deadline():
            time.sleep(3600)


        def test_after():
            pass
        """, env={'REGHOOK_TEST_DEADLINE': '3'})
    assert outcomes == {'test_first': 'passed', 'test_hangs': 'failed',
                        'test_hangs_until_the_default_deadline': 'failed',
                        'test_after': 'passed'}, out
    assert 'deadline: its set-up and body took more than 5 s' in out, out
    assert 'deadline: its set-up and body took more than 3 s' in out, out
    # The daemon of the test that hung was stopped, and the end of its log shown.
    assert re.search(r'reghook on port \d+, end of its log', out), out
    assert time.monotonic() - started < 120


def test_a_port_taken_before_the_daemon_binds_it_is_left_for_another(reghook_factory, pg,
                                                                     monkeypatch):
    """free_port() answers with a port free a moment ago: another test's
    server may take it before reghook binds it (a full run failed so). The
    factory then starts the daemon once more on another port."""
    taken = socket.socket()
    try:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        ports = iter([taken.getsockname()[1]])
        real = harness.free_port
        monkeypatch.setattr(harness, 'free_port', lambda: next(ports, None) or real())
        daemon = reghook_factory()
        assert daemon.port != taken.getsockname()[1]
        assert daemon.get('/healthz')[0] == 200
        assert 'Address already in use' in daemon.log()
    finally:
        taken.close()
