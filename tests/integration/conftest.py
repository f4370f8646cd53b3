"""pytest fixtures for reghook's integration tests (servers in harness.py).

Databases:
  pg_server        one PostgreSQL cluster for the whole session
  pg               a fresh database on it for each test (a harness.Database);
                   afterwards every database and role the test made is dropped
  pg_own           a cluster of the test's own (a harness.Postgres), for tests
                   that stop or restart PostgreSQL
Programs under test and their peers:
  reghook_factory  starts `reghook serve` daemons on the test's database
  reghook          one such daemon with the default configuration
  registry_factory starts docker-registry instances
  endpoint_factory starts webhook endpoints
  samples_dir      the recorded registry notifications (tests/fixtures/samples)
  cloudevents_sdk  reads an HTTP message with the CloudEvents SDK for JavaScript
                   (tests/js, installed by `npm ci` into the build directory)

Tests marked soak (long runs) are collected only when REGHOOK_SOAK is set,
as `make soak` does.

Everything a fixture starts is stopped at teardown, even when the test
failed. A sanitizer report in a reghook's log, a reghook that ignores
SIGTERM, and a reghook that ended otherwise than the test said (exit
status 0 unless it called daemon.expect_exit(); kill9() says so itself)
fail the test at teardown.

Every test has a deadline (DEFAULT_DEADLINE seconds, REGHOOK_TEST_DEADLINE
in the environment, or its own with @pytest.mark.deadline(seconds)) for
its set-up and body, and TEARDOWN_DEADLINE more for its teardown: a test
that hangs fails, with the end of its daemons' logs, and the run goes on.
"""

import fcntl
import itertools
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

from harness import Database, Endpoint, Postgres, Registry, Reghook, tail

_db_numbers = itertools.count(1)


DEFAULT_DEADLINE = 600
SOAK_DEADLINE = 3600
TEARDOWN_DEADLINE = 180


def pytest_configure(config):
    config.addinivalue_line('markers', 'soak: a long run, collected only with REGHOOK_SOAK=1 '
                                       '(make soak)')
    config.addinivalue_line('markers', 'deadline(seconds): this test\'s deadline for set-up '
                                       'and body, instead of the default')
    config.addinivalue_line('markers', 'long: takes 15 s or more; run first (see '
                                       'pytest_collection_modifyitems)')


# --- deadlines ------------------------------------------------------------------
# SIGALRM, whose handler (run on the main thread, where pytest runs the test)
# fails the test wherever it is waiting. Each phase arms the timer inside
# pytest's own handling of that phase, so the failure is reported as the
# test's, and disarms it before pytest goes on.


def deadline_of(item):
    marker = item.get_closest_marker('deadline')
    if marker:
        return float(marker.args[0])
    if item.get_closest_marker('soak'):
        return SOAK_DEADLINE
    return float(os.environ.get('REGHOOK_TEST_DEADLINE') or DEFAULT_DEADLINE)


class _Deadline:
    """Fails the test when left seconds pass; what and seconds name the
    deadline in the message."""

    def __init__(self, left, what, seconds):
        self.left, self.what, self.seconds = left, what, seconds

    def _expired(self, signum, frame):
        signal.setitimer(signal.ITIMER_REAL, 0)
        pytest.fail(f'deadline: {self.what} took more than {self.seconds:g} s (a hang?); '
                    'the traceback shows where it waited', pytrace=True)

    def __enter__(self):
        self._old = signal.signal(signal.SIGALRM, self._expired)
        signal.setitimer(signal.ITIMER_REAL, max(self.left, 0.001))

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    seconds = deadline_of(item)
    item.reghook_deadline_end = time.monotonic() + seconds
    with _Deadline(seconds, 'its set-up and body', seconds):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    seconds = deadline_of(item)
    end = getattr(item, 'reghook_deadline_end', None) or time.monotonic() + seconds
    with _Deadline(end - time.monotonic(), 'its set-up and body', seconds):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    with _Deadline(TEARDOWN_DEADLINE, 'its teardown', TEARDOWN_DEADLINE):
        yield


def pytest_collection_modifyitems(config, items):
    """Soak tests (the long versions of the reliability tests) run only under
    `make soak`, which sets REGHOOK_SOAK=1; make test leaves them out.

    The modules holding a test marked long go first, each whole and in its
    order, the rest after in theirs: pytest-xdist hands tests to its workers
    in this order, and a long test handed out last kept one worker busy
    while the others had nothing left (a 57 s test started in the run's last
    minute). Whole modules, so that a module's fixtures (test_containers'
    image) are set up once per worker, not again for the tests sorted apart."""
    if not os.environ.get('REGHOOK_SOAK'):
        soak = [item for item in items if item.get_closest_marker('soak')]
        if soak:
            config.hook.pytest_deselected(items=soak)
            items[:] = [item for item in items if not item.get_closest_marker('soak')]
    with_long = {item.module.__name__ for item in items if item.get_closest_marker('long')}
    items.sort(key=lambda item: item.module.__name__ not in with_long)


@pytest.fixture(scope='session')
def pg_server():
    server = Postgres()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg(pg_server):
    """A fresh database test_<n> on the session's cluster."""
    db = Database(pg_server, f'test_{next(_db_numbers)}')
    pg_server.create_db(db.dbname)
    try:
        yield db
    finally:
        db.close_connections()
        pg_server.reset()


@pytest.fixture
def pg_own():
    """A cluster of this test's own; its default database is reghook."""
    server = Postgres()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def reghook_factory(request):
    """start(config=None, database_url=None, wait=True, bin=None, env=None,
             ssl_context=None) -> harness.Reghook

    Starts a `reghook serve`. database_url defaults to the test's database:
    that of pg_own when the test uses pg_own, else that of pg. config adds or
    overrides config keys. wait=False returns before /readyz answers 200
    (for a daemon expected not to become ready); otherwise it waits. bin
    replaces $REGHOOK_BIN (the sanitizer build); env adds environment
    variables; ssl_context is the client side of a daemon configured with
    TLS (see harness.Reghook). At teardown each daemon is stopped and must exit 0, unless
    the test said otherwise with daemon.expect_exit() or used kill9().
    """
    # Requested here rather than as a parameter, so that a test on pg_own
    # does not also create a database on the shared cluster. pytest then
    # tears this fixture down before the database.
    db = request.getfixturevalue('pg_own' if 'pg_own' in request.fixturenames else 'pg')
    started = []

    def start(config=None, database_url=None, wait=True, bin=None, env=None, ssl_context=None):
        daemon = Reghook(database_url or db.url(), config, bin, env, ssl_context)
        started.append(daemon)
        daemon.start()
        if wait:
            try:
                daemon.wait_ready()
            except AssertionError:
                # Its port taken by another test's server meanwhile: once more.
                if not daemon.move_off_a_taken_port():
                    raise
                daemon.start()
                daemon.wait_ready()
        return daemon

    yield start

    problems = []
    for daemon in started:
        daemon.stop()
        # Captured output is shown only when the test fails.
        print(f'--- reghook on port {daemon.port}, end of its log:\n{tail(daemon.log_path)}')
        problems += [f'reghook on port {daemon.port}: {p}' for p in daemon.problems()]
        daemon.cleanup()
    if problems:
        pytest.fail('\n\n'.join(problems), pytrace=False)


@pytest.fixture
def reghook(reghook_factory):
    """One ready `reghook serve` with the default configuration."""
    return reghook_factory()


@pytest.fixture
def registry_factory():
    """start(events_url=None, token=None, ignore=None, env=None) -> harness.Registry

    Starts a docker-registry; with events_url and token it sends its
    notifications there (ignore: the endpoint's optional ignore block; env:
    environment variables added, such as SSL_CERT_FILE).
    """
    started = []

    def start(events_url=None, token=None, ignore=None, env=None):
        registry = Registry(events_url, token, ignore, env)
        started.append(registry)
        registry.start()
        return registry

    yield start

    for registry in started:
        registry.stop()
        print(f'--- registry on port {registry.port}, end of its log:\n'
              f'{tail(registry.log_path, 20)}')
        registry.cleanup()


@pytest.fixture
def endpoint_factory():
    """start(host='127.0.0.1') -> harness.Endpoint, a recording webhook target."""
    started = []

    def start(host='127.0.0.1'):
        endpoint = Endpoint(host)
        started.append(endpoint)
        return endpoint

    yield start

    for endpoint in started:
        endpoint.stop()


@pytest.fixture(scope='session')
def samples_dir():
    """pathlib.Path of the recorded registry notifications, which the
    checkout carries in tests/fixtures/samples (see its README.md)."""
    return pathlib.Path(__file__).resolve().parents[1] / 'fixtures' / 'samples'


# --- the CloudEvents SDK for JavaScript -----------------------------------------
# tests/js pins it (package.json, package-lock.json); `npm ci` installs it into
# <build>/js, beside the build trees (build/js for build/asan/reghook), never
# into the checkout, and again only when the lock file has changed. The
# workers of one run take turns through a lock file.


def _js_dir():
    override = os.environ.get('REGHOOK_JS_DIR')
    if override:
        return pathlib.Path(override)
    from harness import _reghook_bin
    return pathlib.Path(_reghook_bin()).resolve().parent.parent / 'js'


def _npm_ci(src, dest):
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lockfile = (src / 'package-lock.json').read_bytes()
        installed = dest / 'node_modules' / 'cloudevents' / 'package.json'
        copied = dest / 'package-lock.json'
        if installed.exists() and copied.exists() and copied.read_bytes() == lockfile:
            return
        if not shutil.which('npm') or not shutil.which('node'):
            pytest.fail('node and npm are missing: packaging/install-deps installs them')
        shutil.copyfile(src / 'package.json', dest / 'package.json')
        shutil.copyfile(src / 'package-lock.json', copied)
        done = subprocess.run(['npm', 'ci', '--prefix', str(dest), '--no-audit', '--no-fund',
                               '--loglevel=error'], capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0:
            copied.unlink()
            pytest.fail(f'npm ci failed:\n{done.stdout}{done.stderr}')


@pytest.fixture(scope='session')
def cloudevents_sdk():
    """A function that hands an HTTP message ({'headers': {...}, 'body': str})
    to the CloudEvents SDK for JavaScript (tests/js/ce-parse.js: HTTP.toEvent,
    then validation) and returns the event it read, {'attributes': {...},
    'data': ...}, or raises AssertionError with the SDK's reason."""
    src = pathlib.Path(__file__).resolve().parents[1] / 'js'
    dest = _js_dir()
    _npm_ci(src, dest)
    env = dict(os.environ, NODE_PATH=str(dest / 'node_modules'))

    def parse(message):
        done = subprocess.run(['node', str(src / 'ce-parse.js')], input=json.dumps(message),
                              capture_output=True, text=True, env=env, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f'the SDK refused the message: {done.stderr.strip()}')
        return json.loads(done.stdout)
    return parse
