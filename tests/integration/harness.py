"""Real servers and helpers for reghook's integration tests.

Every class here runs one real server on a free loopback port, with its
files in a temporary directory of its own that cleanup (destroy for
Postgres) removes:

- Postgres: a private PostgreSQL cluster (initdb + pg_ctl); Database: one
  database on such a cluster, and the ways a test reaches it (URL, psql,
  psycopg2).
- Reghook: the `reghook serve` under test ($REGHOOK_BIN, normally the
  sanitizer build), with its config file and log.
- Registry: Debian's docker-registry with htpasswd auth and, optionally, a
  notification endpoint; images are built with umoci and pushed with skopeo.
- Endpoint: a webhook target that records every request and answers as the
  test scripts it.

conftest.py turns these into fixtures that stop everything even when a test
fails. Nothing here depends on pytest, so a helper can be tried by hand.
"""

import collections
import dataclasses
import functools
import glob
import gzip
import hashlib
import http.client
import http.server
import json
import os
import pwd
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import psycopg2
import yaml

IS_ROOT = os.geteuid() == 0

# libpq's variables (PGHOST, PGOPTIONS, PGTZ...) are not the tests': the
# programs under test never get them (child_env()), nor do the harness's own
# connections in this process.
for _name in [k for k in os.environ if k.startswith('PG')]:
    del os.environ[_name]

# Markers of AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer
# reports in a sanitizer build's output.
SANITIZER_MARKERS = ('ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:')

# Sanitizer settings for the programs under test, unless the caller (tests/run)
# set its own: report leaks, and stop at the first undefined behaviour.
SANITIZER_ENV = {
    'ASAN_OPTIONS': 'abort_on_error=0:detect_leaks=1',
    'UBSAN_OPTIONS': 'print_stacktrace=1:halt_on_error=1',
}

# registry_url given to reghook when a test does not care: the base of the
# repo_url in payloads. Nothing ever connects to it.
DEFAULT_REGISTRY_URL = 'https://registry.reghook.test'


def _ephemeral_ports():
    """The kernel's range of local ports for outgoing connections."""
    try:
        with open('/proc/sys/net/ipv4/ip_local_port_range') as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago, below the
    kernel's range for outgoing connections: a port the kernel handed out
    (bind to port 0) could be taken as the source port of some connection
    (to PostgreSQL, an endpoint, wrk's) before the server meant to listen
    on it started, and the server then failed with `Address already in
    use`. Random, so that tests running at once rarely pick the same."""
    low, high = _ephemeral_ports()
    first, last = (10000, low - 1) if low > 12000 else (high + 1, 65535)
    for _ in range(100):
        port = random.randint(first, last)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(('127.0.0.1', port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_until(fn, timeout=10, interval=0.05, msg=''):
    """Calls fn until it returns something true, and returns that.

    Raises AssertionError, naming msg, when timeout seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f'timed out after {timeout}s waiting for {msg or fn}')
        time.sleep(interval)


def stop_and_wait(pid, timeout=10):
    """SIGSTOP to pid, then waits until each of its threads is stopped.

    The signal is delivered when the process next runs: a process busy or
    asleep in epoll_wait on a loaded machine may still take what arrives
    meanwhile (its epoll_wait returning those sockets on SIGCONT).
    """
    os.kill(pid, signal.SIGSTOP)

    def stopped():
        """True when every thread is stopped, or the process is gone."""
        try:
            tasks = os.listdir(f'/proc/{pid}/task')
            states = []
            for task in tasks:
                with open(f'/proc/{pid}/task/{task}/stat') as f:
                    states.append(f.read().rsplit(')', 1)[1].split()[0])
        except FileNotFoundError:
            return True
        return all(state in ('T', 't', 'Z', 'X') for state in states)

    wait_until(stopped, timeout=timeout, interval=0.005, msg=f'process {pid} to stop')


def in_ci():
    """Whether this is a CI run (CI set, not false or 0, as tests/run reads
    it): where a test would fall back to a weaker check, it fails instead."""
    return os.environ.get('CI', '') not in ('', 'false', '0')


def child_env():
    """Environment for the programs under test and the tools run by tests.

    libpq's PG* variables and reghook's own REGHOOK_* variables (which
    reghook reads as configuration, above its config file) are removed, so
    that only what a test sets reaches them.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith('PG') and not k.startswith('REGHOOK_')}
    for key, value in SANITIZER_ENV.items():
        env.setdefault(key, value)
    return env


def http_request(port, method, path, body=None, headers=None, timeout=30, context=None):
    """One HTTP/1.1 request to 127.0.0.1:port, over HTTPS when context (an
    ssl.SSLContext) is given.

    Returns (status, headers, body) with header names lower-cased (a repeated
    header keeps its last value).
    """
    if context is not None:
        conn = http.client.HTTPSConnection('127.0.0.1', port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def sanitizer_report(text, context=30):
    """The sanitizer reports in text: each marker line and the lines after it."""
    lines = text.splitlines()
    keep = set()
    for i, line in enumerate(lines):
        if any(m in line for m in SANITIZER_MARKERS):
            keep.update(range(i, min(i + context + 1, len(lines))))
    return '\n'.join(lines[i] for i in sorted(keep))


def tail(path, lines=60):
    """The last lines of a text file, or '' when it does not exist."""
    try:
        with open(path, errors='replace') as f:
            return ''.join(collections.deque(f, maxlen=lines))
    except FileNotFoundError:
        return ''


def stop_process(proc, timeout):
    """SIGTERM, then SIGKILL after timeout seconds.

    Returns True when the process exited by itself in time.
    """
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def describe_exit(returncode):
    """A Popen returncode in words: 'exited with status 1', 'was killed by SIGABRT'."""
    if returncode is None:
        return 'is still running'
    if returncode < 0:
        try:
            return f'was killed by {signal.Signals(-returncode).name}'
        except ValueError:
            return f'was killed by signal {-returncode}'
    return f'exited with status {returncode}'


def _quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text):
    """A string literal (standard_conforming_strings, as the server's default)."""
    return "'" + text.replace("'", "''") + "'"


# --------------------------------------------------------------------------
# PostgreSQL


class PsqlError(Exception):
    """psql failed; the message holds its stderr (e.g. 'permission denied')."""


# Where a psql script needs psql itself: its meta-commands (any backslash, to
# be sure), COPY through the client, and BEGIN ATOMIC function bodies, which
# psql does not split at their semicolons.
_PSQL_ONLY = re.compile(r'\\|\bCOPY\b.*\b(STDIN|STDOUT)\b|\bATOMIC\b', re.I | re.S)
_DOLLAR_QUOTE = re.compile(r'\$([A-Za-z_\u0080-\U0010ffff][A-Za-z_0-9\u0080-\U0010ffff]*)?\$')


def split_statements(sql):
    """The statements of a psql script, split where psql splits them (at
    semicolons outside quotes, dollar quotes, comments and parentheses),
    without those that are only comments; None when only psql can run it
    (see _PSQL_ONLY) or a quote is left open."""
    if _PSQL_ONLY.search(sql):
        return None
    statements, start, depth, token, i, n = [], 0, 0, False, 0, len(sql)
    while i < n:
        c = sql[i]
        if c in '\'"':
            end = i + 1
            while True:
                end = sql.find(c, end)
                if end < 0:
                    return None
                if sql.startswith(c * 2, end):
                    end += 2
                    continue
                break
            i, token = end + 1, True
        elif sql.startswith('--', i):
            end = sql.find('\n', i)
            i = n if end < 0 else end + 1
        elif sql.startswith('/*', i):
            level, i = 1, i + 2
            while level and i < n:
                if sql.startswith('/*', i):
                    level, i = level + 1, i + 2
                elif sql.startswith('*/', i):
                    level, i = level - 1, i + 2
                else:
                    i += 1
            if level:
                return None
        elif c == '$' and (m := _DOLLAR_QUOTE.match(sql, i)) and not (
                i and (sql[i - 1].isalnum() or sql[i - 1] in '_$')):
            end = sql.find(m.group(0), m.end())
            if end < 0:
                return None
            i, token = end + len(m.group(0)), True
        else:
            if c == '(':
                depth += 1
            elif c == ')':
                depth -= 1
            elif c == ';' and depth <= 0:
                if token:
                    statements.append(sql[start:i + 1].strip())  # with its ';', as psql sends it
                start, token = i + 1, False
                i += 1
                continue
            token = token or not c.isspace()
            i += 1
    if token:
        statements.append(sql[start:].strip())
    return statements


# A script after which a session is not kept: it set a custom setting, which
# DISCARD ALL leaves defined (as '' where a new session has none).
_KEEPS_A_SETTING = re.compile(r'set_config\s*\(|\bSET\s+(SESSION\s+|LOCAL\s+)?"?\w+"?\s*\.', re.I)

# How long a psql() statement may take, as psql's process was given.
PSQL_TIMEOUT = 120


def _wait(conn, deadline):
    """Waits for an asynchronous psycopg2 connection's operation, in Python
    (a signal's handler, the test's deadline, interrupts it), until deadline
    (time.monotonic()); then cancels it and raises PsqlError."""
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            if conn.fileno() >= 0 and not conn.closed:
                conn.cancel()
            raise PsqlError(f'no answer from the server in {PSQL_TIMEOUT} s')
        if state == psycopg2.extensions.POLL_READ:
            select.select([conn.fileno()], [], [], left)
        else:
            select.select([], [conn.fileno()], [], left)


class _Sessions:
    """Idle psycopg2 sessions of one server by (user, database), which
    Database.psql() runs its scripts on: a psql process and the backend
    PostgreSQL forks for it cost about 70 ms of CPU a call here, and tests
    make thousands of calls. A call takes an idle session of its own (another
    thread's call gets another), and leaves it as a new one: rolled back,
    DISCARD ALL (settings, SET ROLE, temporary tables, advisory locks,
    LISTEN). What only a new session would see is checked before each reuse
    and after each call: a session whose login would now go otherwise (a
    role or database setting, CONNECT, a configuration file of the server
    written, pg_hba.conf among them) is closed, and a new one made, which
    fails as psql would. Not kept: sessions in template databases, those of
    a role or database with a connection limit (they would hold a slot), and
    those that set a custom setting. Connections are asynchronous, so that
    waiting for the server can be interrupted and has a time limit."""

    # What the login of `user` to `db` depends on, as that user may read it.
    LOGIN_STATE = """
        SELECT pg_conf_load_time(), r::text, d.datacl, d.datallowconn, d.datconnlimit,
               has_database_privilege(r.oid, d.oid, 'CONNECT'),
               ARRAY(SELECT s.setconfig::text FROM pg_db_role_setting s
                     WHERE s.setdatabase IN (0, d.oid) AND s.setrole IN (0, r.oid)
                     ORDER BY s.setdatabase, s.setrole),
               r.rolconnlimit <> -1 OR d.datconnlimit <> -1
        FROM pg_roles r, pg_database d WHERE r.rolname = %s AND d.datname = %s"""

    def __init__(self, config_dir):
        self.config_dir = config_dir  # the data directory: its configuration files
        self.lock = threading.Lock()
        self.idle = collections.defaultdict(list)  # (user, db) -> [(conn, login state)]

    def _login_state(self, conn, user, db, deadline):
        files = []
        for name in ('postgresql.conf', 'postgresql.auto.conf', 'pg_hba.conf', 'pg_ident.conf'):
            try:
                files.append(os.stat(os.path.join(self.config_dir, name)).st_mtime_ns)
            except OSError:
                files.append(None)
        with conn.cursor() as cur:
            cur.execute(self.LOGIN_STATE, (user, db))
            _wait(conn, deadline)
            return files, cur.fetchall()

    def take(self, url, user, db, deadline):
        """(conn, login state): an idle session whose login still holds, or a
        new one. Raises psycopg2.Error when a new one cannot log in."""
        while True:
            with self.lock:
                if not self.idle[(user, db)]:
                    break
                conn, state = self.idle[(user, db)].pop()
            try:
                if self._login_state(conn, user, db, deadline) == state:
                    return conn, state
            except (psycopg2.Error, PsqlError):
                pass  # the server restarted, or ended the session
            conn.close()
        conn = psycopg2.connect(url, async_=1, application_name='psql')
        try:
            _wait(conn, deadline)
            # Each value as the server's text, as psql prints it.
            with conn.cursor() as cur:
                cur.execute('SELECT oid FROM pg_type')
                _wait(conn, deadline)
                oids = tuple(oid for (oid,) in cur.fetchall())
            psycopg2.extensions.register_type(
                psycopg2.extensions.new_type(oids, 'AS_TEXT', lambda value, cur: value), conn)
            return conn, self._login_state(conn, user, db, deadline)
        except BaseException:
            conn.close()
            raise

    def give_back(self, conn, state, user, db, sql):
        """Leaves the session as a new one and idle, or closes it."""
        deadline = time.monotonic() + PSQL_TIMEOUT
        try:
            del conn.notices[:]
            with conn.cursor() as cur:
                if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    cur.execute('ROLLBACK')
                    _wait(conn, deadline)
                cur.execute('DISCARD ALL')
                _wait(conn, deadline)
            keep = (db not in ('template0', 'template1') and not _KEEPS_A_SETTING.search(sql)
                    and self._login_state(conn, user, db, deadline) == state
                    and not any(row[-1] == 't' for row in state[1]))
        except (psycopg2.Error, PsqlError):
            keep = False
        if not keep:
            conn.close()
            return
        with self.lock:
            self.idle[(user, db)].append((conn, state))

    def close(self, keep=lambda user, db: False):
        """Closes the idle sessions, but those for which keep(user, db)."""
        with self.lock:
            for key in list(self.idle):
                if not keep(*key):
                    for conn, _ in self.idle.pop(key):
                        conn.close()


@functools.cache
def _pg_bindir():
    """Where the PostgreSQL server programs are: pg_config's bindir when it
    holds them, else the newest /usr/lib/postgresql/*/bin (as run-local).
    Its psql too, for the scripts Database.psql() leaves to psql: Debian's
    /usr/bin/psql is a Perl wrapper that costs 40 ms more a call."""
    try:
        bindir = subprocess.run(['pg_config', '--bindir'], capture_output=True,
                                text=True).stdout.strip()
    except FileNotFoundError:
        bindir = ''
    if bindir and os.path.exists(os.path.join(bindir, 'postgres')):
        return bindir

    def version(path):
        v = path.split('/')[-2]
        return int(v) if v.isdigit() else 0

    candidates = sorted(glob.glob('/usr/lib/postgresql/*/bin'), key=version)
    candidates = [d for d in candidates if os.path.exists(os.path.join(d, 'postgres'))]
    if not candidates:
        raise RuntimeError('no PostgreSQL server installed (run packaging/install-deps)')
    return candidates[-1]


def _as_postgres(argv):
    """PostgreSQL refuses to run as root; root runs it as user postgres."""
    return ['runuser', '-u', 'postgres', '--', *argv] if IS_ROOT else argv


def _initdb_locale():
    out = subprocess.run(['locale', '-a'], capture_output=True, text=True).stdout
    has_c_utf8 = any(l.lower() in ('c.utf8', 'c.utf-8') for l in out.split())
    return 'C.UTF-8' if has_c_utf8 else 'C'


class Database:
    """One database of a PostgreSQL server, as a test reaches it.

    Every method defaults to this database and to the superuser postgres;
    user and dbname select another role or database of the same server
    (authentication is trust, so any login role connects without password).
    """

    def __init__(self, server, dbname):
        self.server = server
        self.port = server.port
        self.dbname = dbname
        self._conns = []

    def url(self, user='postgres', dbname=None):
        """libpq URI, e.g. postgresql://postgres@127.0.0.1:5432/reghook."""
        return f'postgresql://{user}@127.0.0.1:{self.port}/{dbname or self.dbname}'

    def psql(self, sql, user='postgres', dbname=None):
        """Runs sql (one or more statements) as psql would; returns what psql
        prints: unaligned rows, columns separated by '|', no headers or
        command tags. Each statement commits by itself, and the first that
        fails ends the script. Raises PsqlError when a statement fails.

        The statements run on an idle session of the server's (_Sessions),
        one after another, as psql sends them; a script that needs psql
        (meta-commands, COPY through the client) runs in psql."""
        dbname = dbname or self.dbname
        sessions = self.server.sessions
        if re.search(r'\bDATABASE\b', sql, re.I):
            # A database that a session is in can be neither dropped nor copied.
            sessions.close(keep=lambda u, db: (u, db) == (user, dbname))
        statements = split_statements(sql)
        if statements is None:
            return self._psql_process(sql, user, dbname)
        deadline = time.monotonic() + PSQL_TIMEOUT
        try:
            conn, state = sessions.take(self.url(user, dbname), user, dbname, deadline)
        except psycopg2.Error as err:
            raise PsqlError(f'psql as {user} failed: {str(err).strip()}\nSQL: {sql}') from None
        out = []
        clean = True  # the session answered every statement sent, error or not
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    clean = False
                    cur.execute(statement)
                    try:
                        _wait(conn, time.monotonic() + PSQL_TIMEOUT)
                    except psycopg2.Error as err:
                        # The statement's error, the session intact: it can be kept.
                        clean = not conn.closed and not isinstance(
                            err, (psycopg2.OperationalError, psycopg2.InterfaceError))
                        raise
                    clean = True
                    if cur.description:
                        out += ['|'.join('' if v is None else v for v in row) + '\n'
                                for row in cur.fetchall()]
        except psycopg2.Error as err:
            # What psql printed: the warnings and notices before the error.
            said = ''.join(conn.notices) + (err.pgerror or str(err))
            raise PsqlError(f'psql as {user} failed: {said.strip()}\nSQL: {sql}') from None
        finally:
            if clean:
                sessions.give_back(conn, state, user, dbname, sql)
            else:
                conn.close()
        return ''.join(out)

    def _psql_process(self, sql, user, dbname):
        argv = [os.path.join(_pg_bindir(), 'psql'), '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
                '-d', self.url(user, dbname)]
        proc = subprocess.run(argv, input=sql, capture_output=True, text=True,
                              env=child_env(), timeout=120)
        if proc.returncode != 0:
            raise PsqlError(f'psql as {user} failed: {proc.stderr.strip()}\nSQL: {sql}')
        return proc.stdout

    def connect(self, user='postgres', dbname=None):
        """A psycopg2 connection in autocommit mode, closed at teardown."""
        conn = psycopg2.connect(self.url(user, dbname))
        conn.autocommit = True
        self._conns.append(conn)
        return conn

    def create_db(self, name):
        self.psql(f'CREATE DATABASE {_quote_ident(name)}', dbname='postgres')

    def create_login_role(self, name):
        """A role that can log in (no password needed: trust). Returns name."""
        self.psql(f'CREATE ROLE {_quote_ident(name)} LOGIN', dbname='postgres')
        return name

    def apply_released_migrations(self, count, dbname=None):
        """Applies the first `count` numbered migrations as reghook released
        them (tests/fixtures/released-schema, written by
        tests/fixtures/make-released-schema), as the `reghook migrate` of
        that time applied them: schema_migrations made as its bootstrap made
        it, then one transaction each, recorded there. The database is then
        as an earlier reghook, which knew only those, left it."""
        root = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'released-schema')
        self.psql("""CREATE SCHEMA reghook;
            CREATE TABLE reghook.schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now());
            COMMENT ON TABLE reghook.schema_migrations IS
                'Migrations of schema/ applied to this database, by version.';
            COMMENT ON COLUMN reghook.schema_migrations.version IS
                'Number of the migration (its file name''s prefix).';
            COMMENT ON COLUMN reghook.schema_migrations.name IS 'Name of the migration (its file name''s rest).';
            COMMENT ON COLUMN reghook.schema_migrations.applied_at IS 'When it was applied.';""",
                  dbname=dbname)
        for name in sorted(f for f in os.listdir(root) if f.endswith('.sql.gz'))[:count]:
            version, rest = name[:3], name[4:-len('.sql.gz')]
            with gzip.open(os.path.join(root, name), 'rt') as f:
                self.psql(f'BEGIN; SET LOCAL search_path = reghook, pg_catalog;\n{f.read()}\n;'
                          f"INSERT INTO reghook.schema_migrations VALUES ({int(version)}, '{rest}');"
                          ' COMMIT;', dbname=dbname)

    def group_role(self, kind, dbname=None):
        """The name of a group role (admin, dispatcher, member) of a migrated
        database, as reghook.role_name() gives it, quoted for SQL."""
        name = self.psql(f"SELECT reghook.role_name('{kind}')", dbname=dbname).strip()
        return _quote_ident(name)

    def close_connections(self):
        """Closes the connections of connect(), and the idle psql sessions
        in this database."""
        for conn in self._conns:
            conn.close()
        self._conns.clear()
        self.server.sessions.close(keep=lambda user, db: db != self.dbname)


class Postgres(Database):
    """A private PostgreSQL cluster in a temporary directory.

    It listens on 127.0.0.1 at a free port (kept across restarts) and on a
    unix socket in its directory, trusts every local connection (replication
    too), and runs without fsync (a crash of the machine is not what tests
    simulate). Its default database is `reghook`, created at the first start.

    settings: more postgresql.conf lines. standby_of: instead of initdb, a
    streaming standby of that (running) cluster, made by pg_basebackup -R,
    named `name` (its cluster_name, which the primary's
    synchronous_standby_names refers to). port: the port to listen on (a
    standby rebuilt where an old primary was keeps its place in a URL).
    """

    SETTINGS = """
# added by tests/integration/harness.py
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{dir}'
fsync = off
full_page_writes = off
"""

    def __init__(self, settings='', standby_of=None, name=None, port=None):
        self.port = port or free_port()
        super().__init__(self, 'reghook')
        self.dir = tempfile.mkdtemp(prefix='reghook-pg-')
        self.datadir = os.path.join(self.dir, 'data')
        self.sessions = _Sessions(self.datadir)
        self.logfile = os.path.join(self.dir, 'postgres.log')
        self.bindir = _pg_bindir()
        self.running = False
        # Databases and roles after the first start; a standby has its primary's.
        self._baseline = None if standby_of is None else standby_of._baseline
        try:
            self._make_dir()
            if standby_of is None:
                self._initdb()
            else:
                self._basebackup(standby_of)
            with open(os.path.join(self.datadir, 'postgresql.conf'), 'a') as f:
                f.write(self.SETTINGS.format(port=self.port, dir=self.dir))
                if name:
                    f.write(f"cluster_name = '{name}'\n")
                f.write(settings + '\n')
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _make_dir(self):
        if IS_ROOT:
            pw = pwd.getpwnam('postgres')
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            if subprocess.run(_as_postgres(['test', '-w', self.dir])).returncode != 0:
                raise RuntimeError(f'user postgres cannot reach {self.dir}: '
                                   'set TMPDIR to a directory it can reach')

    def _initdb(self):
        self._run('initdb', '-D', self.datadir, '--auth=trust', '-U', 'postgres',
                  '--encoding=UTF8', f'--locale={_initdb_locale()}', '--no-sync',
                  '--no-instructions')

    def _basebackup(self, primary):
        """A copy of primary's data directory that starts as its standby
        (-R: standby.signal and primary_conninfo). The copied configuration
        is the primary's; the lines written after it (port, directory,
        settings) win."""
        self._run('pg_basebackup', '-D', self.datadir, '-R', '-X', 'stream', '-c', 'fast',
                  '--no-sync', '-h', '127.0.0.1', '-p', str(primary.port), '-U', 'postgres')

    def _run(self, program, *args):
        """Runs a server program (initdb, pg_ctl) as the cluster's owner."""
        argv = _as_postgres([os.path.join(self.bindir, program), *args])
        proc = subprocess.run(argv, cwd=self.dir, capture_output=True, text=True,
                              env=child_env(), timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f'{program} failed ({proc.returncode}): {proc.stdout}'
                               f'{proc.stderr}\nserver log:\n{tail(self.logfile)}')

    def start(self):
        self._run('pg_ctl', 'start', '-w', '-t', '60', '-D', self.datadir, '-l', self.logfile)
        self.running = True
        if self._baseline is None:
            self.create_db('reghook')
            self._baseline = self._names()

    def stop(self, mode='fast'):
        """Stops the server (mode: smart, fast or immediate)."""
        self.sessions.close()  # a smart stop would wait for them
        if self.running:
            self._run('pg_ctl', 'stop', '-w', '-t', '60', '-D', self.datadir, '-m', mode)
            self.running = False

    def promote(self):
        """Promotes a standby to primary; returns once it takes writes."""
        self._run('pg_ctl', 'promote', '-w', '-t', '60', '-D', self.datadir)

    def postmaster_pid(self):
        with open(os.path.join(self.datadir, 'postmaster.pid')) as f:
            return int(f.readline())

    def processes(self):
        """PIDs of the cluster's processes: every process whose working
        directory is its data directory (PostgreSQL's processes all chdir
        there), the postmaster's orphaned children included."""
        pids = []
        for entry in os.listdir('/proc'):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f'/proc/{entry}/cwd') == self.datadir:
                    pids.append(int(entry))
            except OSError:
                pass
        return pids

    def kill9(self):
        """SIGKILL to the postmaster, as a crash of the server would. Its
        children notice and exit by themselves; destroy() ends stragglers."""
        os.kill(self.postmaster_pid(), signal.SIGKILL)
        self.running = False
        self.sessions.close()

    def signal_all(self, sig):
        """Sends sig (SIGSTOP, SIGCONT) to every process of the cluster; after
        a SIGSTOP, returns once each is stopped."""
        for pid in self.processes():
            try:
                if sig == signal.SIGSTOP:
                    stop_and_wait(pid)
                else:
                    os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def restart(self):
        self.stop()
        self.start()

    def destroy(self):
        """Stops the server and removes its directory. A server that was
        killed, or whose stop fails, has its processes ended by PID."""
        self.close_connections()
        try:
            self.stop()
        finally:
            for pid in self.processes():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(self.dir, ignore_errors=True)

    def _names(self):
        """The databases and the non-builtin roles of the cluster, and the
        databases that take connections (one psql call)."""
        rows = self.psql("SELECT 'd', datallowconn, datname FROM pg_database UNION ALL "
                         "SELECT 'r', false, rolname FROM pg_roles WHERE rolname !~ '^pg_'",
                         dbname='postgres').splitlines()
        rows = [row.split('|', 2) for row in rows]
        self._allowed = {name for kind, allowed, name in rows if kind == 'd' and allowed == 't'}
        return ({name for kind, _, name in rows if kind == 'd'},
                {name for kind, _, name in rows if kind == 'r'})

    def reset(self):
        """Drops the databases and roles made since the first start.

        A cluster shared by many tests is reset after each, so that every
        test sees the databases and roles of a fresh cluster (roles are
        cluster-wide: those that reghook's migrations or a test create would
        otherwise leak into the next test). The idle psql sessions in those
        databases or as those roles are closed first; then the databases
        are dropped, what the roles own or were granted is dropped in each
        database left that holds some of it (pg_shdepend says which; in
        postgres always, for the privileges on databases), and the roles go.
        """
        base_dbs, base_roles = self._baseline
        dbs, roles = self._names()
        extra_dbs = sorted(dbs - base_dbs)
        extra_roles = sorted(roles - base_roles)
        self.sessions.close(keep=lambda user, db: db not in extra_dbs and user not in extra_roles)
        if extra_dbs:
            self.psql(''.join(f'DROP DATABASE {_quote_ident(name)} WITH (FORCE);' for name in extra_dbs),
                      dbname='postgres')
        if extra_roles:
            names = ', '.join(_quote_ident(r) for r in extra_roles)
            listed = ', '.join(_quote_literal(r) for r in extra_roles)
            holders = self.psql(f"""SELECT DISTINCT d.datname FROM pg_shdepend s
                                    JOIN pg_database d ON d.oid = s.dbid
                                    WHERE s.refclassid = 'pg_authid'::regclass
                                      AND s.refobjid IN (SELECT oid FROM pg_roles WHERE rolname IN ({listed}))""",
                                dbname='postgres').splitlines()
            for db in sorted(({'postgres'} | set(holders)) & (self._allowed - set(extra_dbs))):
                self.psql(f'DROP OWNED BY {names}', dbname=db)
            self.psql(f'DROP ROLE {names}', dbname='postgres')


class PgBouncer:
    """Debian's pgbouncer in front of a Postgres, on a free loopback port,
    with a generated ini in a temporary directory (never the system
    service). pool_mode is session, transaction or statement; every user
    that connects must be listed in users (trust: no passwords)."""

    def __init__(self, server, pool_mode='session', users=('postgres',), pool_size=20):
        self.server = server
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix='reghook-pgbouncer-')
        self.log_path = os.path.join(self.dir, 'pgbouncer.log')
        self.proc = None
        with open(os.path.join(self.dir, 'userlist.txt'), 'w') as f:
            f.writelines(f'"{u}" ""\n' for u in users)
        with open(os.path.join(self.dir, 'pgbouncer.ini'), 'w') as f:
            f.write(f"""[databases]
* = host=127.0.0.1 port={server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/userlist.txt
pool_mode = {pool_mode}
default_pool_size = {pool_size}
max_client_conn = 200
ignore_startup_parameters = extra_float_digits
logfile = {self.log_path}
pidfile = {self.dir}/pgbouncer.pid
""")
        if IS_ROOT:
            # pgbouncer refuses to run as root: it runs as postgres.
            pw = pwd.getpwnam('postgres')
            for path in (self.dir, *(os.path.join(self.dir, n) for n in os.listdir(self.dir))):
                os.chown(path, pw.pw_uid, pw.pw_gid)

    def url(self, user='postgres', dbname='reghook'):
        return f'postgresql://{user}@127.0.0.1:{self.port}/{dbname}'

    def start(self, timeout=30):
        """Starts it and waits until it accepts connections."""
        kwargs = {'user': 'postgres', 'group': 'postgres', 'extra_groups': []} if IS_ROOT else {}
        self.proc = subprocess.Popen(
            ['/usr/sbin/pgbouncer', os.path.join(self.dir, 'pgbouncer.ini')],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=self.dir, env=child_env(), start_new_session=True, **kwargs)

        def answers():
            if self.proc.poll() is not None:
                raise AssertionError(f'pgbouncer exited with {self.proc.returncode}; '
                                     f'log:\n{tail(self.log_path)}')
            try:
                with socket.create_connection(('127.0.0.1', self.port), timeout=1):
                    return True
            except OSError:
                return False

        wait_until(answers, timeout=timeout, msg='pgbouncer to listen')

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, 10)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------
# reghook


def run_reghook(args, database_url=None, input=None, check=True, timeout=60, cwd=None,
                setting_up=False):
    """Runs `$REGHOOK_BIN ARGS [--database-url URL]` (a CLI command) and
    returns the CompletedProcess (text). check=True raises AssertionError on
    a non-zero exit; a sanitizer report on stderr raises it always.
    setting_up: a test's set-up, not what it tests (register(),
    add_webhook()): $REGHOOK_PLAIN_BIN when set, the same commands without
    sanitizers, which cost four times the CPU a call (their start and the
    leak check at exit: 116 against 30 ms, measured); the tests of the
    commands themselves run them with the sanitizers."""
    argv = [_setting_up_bin() if setting_up else _reghook_bin(), *(str(a) for a in args)]
    if database_url is not None:
        argv += ['--database-url', database_url]
    proc = subprocess.run(argv, input=input, capture_output=True, text=True,
                          env=child_env(), timeout=timeout, cwd=cwd)
    report = sanitizer_report(proc.stderr)
    if report:
        raise AssertionError(f'sanitizer report from {argv}:\n{report}')
    if check and proc.returncode != 0:
        raise AssertionError(f'{argv} exited {proc.returncode}\nstdout:\n{proc.stdout}'
                             f'\nstderr:\n{proc.stderr}')
    return proc


def _reghook_bin():
    path = os.environ.get('REGHOOK_BIN')
    if not path:
        raise RuntimeError('REGHOOK_BIN is not set: run the tests with `make test` '
                           '(tests/run), or set it to a built reghook')
    return path


def _setting_up_bin():
    return os.environ.get('REGHOOK_PLAIN_BIN') or _reghook_bin()


class Reghook:
    """One `reghook serve`, configured by a file in its temporary directory.

    The defaults listen on a free loopback port, allow loopback webhook
    targets (the test endpoints) and log at debug level; config adds or
    overrides keys (True/False are written as true/false). bin replaces
    $REGHOOK_BIN, e.g. with $REGHOOK_PLAIN_BIN, the build without sanitizers.
    env adds environment variables (NOTIFY_SOCKET, say). ssl_context (an
    ssl.SSLContext) is for a daemon configured with TLS: the harness's own
    requests (wait_ready, get, post) go over HTTPS with it, and url() and
    the default public_url are https://.
    """

    def __init__(self, database_url, config=None, bin=None, env=None, ssl_context=None):
        self.bin = bin or _reghook_bin()
        self.env = dict(env or {})
        self.ssl_context = ssl_context
        self.scheme = 'https' if ssl_context is not None else 'http'
        self.dir = tempfile.mkdtemp(prefix='reghook-')
        self.port = free_port()
        self.database_url = database_url
        self.config = {
            'database_url': database_url,
            'listen': f'127.0.0.1:{self.port}',
            'public_url': f'{self.scheme}://127.0.0.1:{self.port}',
            'registry_url': DEFAULT_REGISTRY_URL,
            'allow_private_targets': True,
            'log_level': 'debug',
        }
        self.config.update(config or {})
        self.config_path = os.path.join(self.dir, 'reghook.conf')
        self.write_config()
        self.log_path = os.path.join(self.dir, 'reghook.log')
        self.proc = None
        self._problems = []  # what teardown must report besides sanitizer output
        # How self.proc is meant to end (see expect_exit), and the process
        # whose end was last checked against it: each process once.
        self._expected_exit = 0
        self._checked_proc = None

    def write_config(self):
        """Writes self.config to the config file (a running daemon reads it
        again on SIGHUP)."""
        with open(self.config_path, 'w') as f:
            for key, value in self.config.items():
                if isinstance(value, bool):
                    value = 'true' if value else 'false'
                f.write(f'{key} = {value}\n')

    def start(self):
        """Starts the daemon (it appends to the same log on a restart)."""
        if self.running():
            raise RuntimeError(f'reghook on port {self.port} is already running')
        self._check_exit('before it was started again')
        self._expected_exit = 0
        with open(self.log_path, 'ab') as log:
            # Its own session: a Ctrl-C on pytest's terminal reaches it only
            # through stop(), as it would under a service manager.
            self.proc = subprocess.Popen(
                [self.bin, 'serve', '--config', self.config_path],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.dir, env={**child_env(), **self.env}, start_new_session=True)

    def wait_ready(self, timeout=30):
        """Waits until GET /readyz answers 200."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f'reghook exited with {self.proc.returncode} before '
                                     f'it was ready; log:\n{tail(self.log_path)}')
            try:
                if self.get('/readyz', timeout=2)[0] == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() >= deadline:
                raise AssertionError(f'reghook not ready after {timeout}s; log:\n'
                                     f'{tail(self.log_path)}')
            time.sleep(0.05)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def url(self, path='/'):
        return f'{self.scheme}://127.0.0.1:{self.port}{path}'

    def request(self, method, path, body=None, headers=None, timeout=30):
        """(status, headers with lower-case names, body bytes)."""
        return http_request(self.port, method, path, body, headers, timeout, self.ssl_context)

    def get(self, path, headers=None, timeout=30):
        return self.request('GET', path, None, headers, timeout)

    def post(self, path, body, headers=None, timeout=30):
        return self.request('POST', path, body, headers, timeout)

    def run_cli(self, *args, check=True, database_url=None, input=None, setting_up=False):
        """`reghook ARGS --database-url URL`, by default this daemon's URL
        (setting_up: as run_reghook() says)."""
        return run_reghook(args, database_url or self.database_url, input=input,
                           check=check, cwd=self.dir, setting_up=setting_up)

    def stop(self, timeout=15):
        """SIGTERM and wait; SIGKILL after timeout seconds, which teardown
        then reports as a failure, as it does an exit status other than the
        expected one (expect_exit: 0 unless the test said otherwise).
        Returns the exit status."""
        if self.proc is None:
            return None
        how = 'on SIGTERM' if self.running() else 'before it was stopped'
        if not stop_process(self.proc, timeout):
            self._problems.append(f'did not exit within {timeout}s of SIGTERM; killed')
            self._checked_proc = self.proc
        self._check_exit(how)
        return self.proc.returncode

    def expect_exit(self, status):
        """Says how the running daemon is meant to end, for teardown to check:
        its exit status, a negative one for a signal (-signal.SIGABRT), or
        None for any end. Without it, the daemon must exit 0, whether on
        the SIGTERM of stop() or on a signal the test sent itself; kill9()
        needs no word. start() resets it to 0."""
        self._expected_exit = status

    def move_off_a_taken_port(self):
        """After a first start that ended because another server took its
        port between free_port() and the bind (tests run at once), takes
        another port and returns True; else returns False. Only for a
        daemon on the port this harness chose."""
        listen = f'127.0.0.1:{self.port}'
        if (self.proc is None or self.proc.poll() != 1 or self.config.get('listen') != listen
                or f'cannot listen on {listen}: Address already in use' not in self.log()):
            return False
        self._checked_proc = self.proc
        default_public_url = f'{self.scheme}://{listen}'
        self.port = free_port()
        self.config['listen'] = f'127.0.0.1:{self.port}'
        if self.config.get('public_url') == default_public_url:
            self.config['public_url'] = f'{self.scheme}://127.0.0.1:{self.port}'
        self.write_config()
        return True

    def _check_exit(self, how):
        """Records a problem when the last process started (or set as
        self.proc by a test) has ended otherwise than expected. Checks each
        process once; one still running is not checked."""
        proc = self.proc
        if proc is None or proc is self._checked_proc or proc.poll() is None:
            return
        self._checked_proc = proc
        want = self._expected_exit
        if want is not None and proc.returncode != want:
            wanted = (f'exit status {want}' if want >= 0
                      else describe_exit(want).replace('was killed by', 'death by'))
            self._problems.append(f'{describe_exit(proc.returncode)} {how} (pid {proc.pid}); '
                                  f'the test expected {wanted}')

    def kill9(self):
        """Kills the daemon at once, as a crash would. A daemon that had
        already ended is checked as stop() checks it."""
        if not self.running():
            self._check_exit('before kill9() could kill it')
            return
        self.proc.kill()
        self.proc.wait()
        self._checked_proc = self.proc

    def restart(self):
        self.stop()
        self.start()
        self.wait_ready()

    def log(self):
        with open(self.log_path, errors='replace') as f:
            return f.read()

    def problems(self):
        """What makes the test fail at teardown: sanitizer reports in the log,
        a shutdown that needed SIGKILL, and an exit status other than the
        expected one (call after stop())."""
        self._check_exit('before teardown')
        found = list(self._problems)
        if os.path.exists(self.log_path):
            report = sanitizer_report(self.log())
            if report:
                found.append('sanitizer report in its log:\n' + report)
        return found

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------
# Images and the registry

# The tag under which build_image() and build_index() leave their image in
# the OCI layout they make.
IMAGE_TAG = 'image'


def _umoci(*args):
    proc = subprocess.run(['umoci', *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'umoci {" ".join(args)} failed: {proc.stderr.strip()}')


def _add_image(layout, tag, workdir, arch=None):
    """Adds to an OCI layout an image of one small layer holding a file with
    a random name, so that its digest is unique."""
    bundle = os.path.join(workdir, f'bundle-{tag}')
    _umoci('new', '--image', f'{layout}:{tag}')
    _umoci('unpack', '--rootless', '--image', f'{layout}:{tag}', bundle)
    unique = uuid.uuid4().hex
    with open(os.path.join(bundle, 'rootfs', f'reghook-test-{unique}'), 'w') as f:
        f.write(unique + '\n')
    _umoci('repack', '--image', f'{layout}:{tag}', bundle)
    if arch:
        _umoci('config', '--image', f'{layout}:{tag}', '--architecture', arch, '--os', 'linux')
    shutil.rmtree(bundle)


def _new_layout(parent_dir):
    workdir = tempfile.mkdtemp(prefix='image-', dir=parent_dir)
    layout = os.path.join(workdir, 'oci')
    _umoci('init', '--layout', layout)
    return workdir, layout


def build_image(parent_dir):
    """A new OCI layout under parent_dir holding one unique single-platform
    image tagged IMAGE_TAG. Returns the layout's path."""
    workdir, layout = _new_layout(parent_dir)
    _add_image(layout, IMAGE_TAG, workdir)
    return layout


def build_index(parent_dir, archs=('amd64', 'arm64')):
    """A new OCI layout under parent_dir whose IMAGE_TAG is a multi-platform
    image index over one unique image per architecture. Pushing it makes the
    registry send one untagged manifest push per platform, then the tagged
    index. Returns the layout's path."""
    workdir, layout = _new_layout(parent_dir)
    for arch in archs:
        _add_image(layout, arch, workdir, arch=arch)
    index_path = os.path.join(layout, 'index.json')
    with open(index_path) as f:
        top = json.load(f)
    by_tag = {m['annotations']['org.opencontainers.image.ref.name']: m for m in top['manifests']}
    manifests = []
    for arch in archs:
        desc = {k: v for k, v in by_tag[arch].items() if k != 'annotations'}
        desc['platform'] = {'architecture': arch, 'os': 'linux'}
        manifests.append(desc)
    blob = json.dumps({'schemaVersion': 2,
                       'mediaType': 'application/vnd.oci.image.index.v1+json',
                       'manifests': manifests}).encode()
    digest = hashlib.sha256(blob).hexdigest()
    with open(os.path.join(layout, 'blobs', 'sha256', digest), 'wb') as f:
        f.write(blob)
    top['manifests'].append({'mediaType': 'application/vnd.oci.image.index.v1+json',
                             'digest': f'sha256:{digest}', 'size': len(blob),
                             'annotations': {'org.opencontainers.image.ref.name': IMAGE_TAG}})
    with open(index_path, 'w') as f:
        json.dump(top, f)
    return layout


class Registry:
    """Debian's docker-registry (distribution 2.8) on a free loopback port.

    htpasswd auth with one user, alice, whose password is random. With
    events_url and token, it posts its notifications there with
    `Authorization: Bearer <token>` (timeout 2s, threshold 5, backoff 1s);
    ignore is the endpoint's optional `ignore` block, e.g.
    {'actions': ['pull']}. env adds environment variables (SSL_CERT_FILE:
    the CA that an https:// events_url is verified against).
    """

    USER = 'alice'

    def __init__(self, events_url=None, token=None, ignore=None, env=None):
        self.env = dict(env or {})
        self.dir = tempfile.mkdtemp(prefix='reghook-registry-')
        self.port = free_port()
        self.password = uuid.uuid4().hex
        self.log_path = os.path.join(self.dir, 'registry.log')
        self.proc = None

        htpasswd = os.path.join(self.dir, 'htpasswd')
        out = subprocess.run(['htpasswd', '-Bbn', self.USER, self.password], check=True,
                             capture_output=True, text=True).stdout
        with open(htpasswd, 'w') as f:
            f.write(out)

        config = {
            'version': 0.1,
            'log': {'level': 'info'},
            'storage': {'filesystem': {'rootdirectory': os.path.join(self.dir, 'storage')},
                        'delete': {'enabled': True}},
            'http': {'addr': self.host, 'secret': uuid.uuid4().hex},
            'auth': {'htpasswd': {'realm': 'reghook-test', 'path': htpasswd}},
        }
        if events_url:
            endpoint = {'name': 'reghook', 'url': events_url,
                        'headers': {'Authorization': [f'Bearer {token}']},
                        'timeout': '2s', 'threshold': 5, 'backoff': '1s'}
            if ignore:
                endpoint['ignore'] = ignore
            config['notifications'] = {'endpoints': [endpoint]}
        self.config_path = os.path.join(self.dir, 'config.yml')
        with open(self.config_path, 'w') as f:
            yaml.safe_dump(config, f)

    @property
    def host(self):
        return f'127.0.0.1:{self.port}'

    @property
    def creds(self):
        return f'{self.USER}:{self.password}'

    def url(self, path='/'):
        return f'http://{self.host}{path}'

    def start(self, timeout=30):
        """Starts it and waits until GET /v2/ asks for credentials (401)."""
        with open(self.log_path, 'ab') as log:
            self.proc = subprocess.Popen(
                ['/usr/bin/docker-registry', 'serve', self.config_path],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.dir, env={**child_env(), **self.env}, start_new_session=True)

        def answers():
            if self.proc.poll() is not None:
                raise AssertionError(f'docker-registry exited with {self.proc.returncode}; '
                                     f'log:\n{tail(self.log_path)}')
            try:
                return http_request(self.port, 'GET', '/v2/', timeout=2)[0] == 401
            except (OSError, http.client.HTTPException):
                return False

        wait_until(answers, timeout=timeout, msg='docker-registry to answer /v2/')

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, 10)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        with open(self.log_path, errors='replace') as f:
            return f.read()

    def skopeo(self, *args):
        """Runs skopeo (with no signature policy: the images are our own)."""
        proc = subprocess.run(['skopeo', '--insecure-policy', *args], capture_output=True,
                              text=True, env=child_env(), timeout=120)
        if proc.returncode != 0:
            raise AssertionError(f'skopeo {" ".join(args)} failed: {proc.stderr.strip()}')
        return proc.stdout

    def _copy(self, src, dst, src_creds=False):
        """skopeo copy src dst; returns the digest of the manifest written.
        --all copies every platform of an index and changes nothing else."""
        digestfile = os.path.join(tempfile.mkdtemp(dir=self.dir), 'digest')
        args = ['copy', '--quiet', '--all', '--dest-tls-verify=false',
                '--dest-creds', self.creds, '--digestfile', digestfile]
        if src_creds:
            args += ['--src-tls-verify=false', '--src-creds', self.creds]
        self.skopeo(*args, src, dst)
        with open(digestfile) as f:
            return f.read().strip()

    def push(self, repo_tag, image_dir=None):
        """Pushes an image to REPO:TAG and returns its manifest digest.

        image_dir is a layout from build_image() or build_index() (push the
        same one twice to get the same digest); by default a new unique
        image is built.
        """
        if image_dir is None:
            image_dir = build_image(self.dir)
        return self._copy(f'oci:{image_dir}:{IMAGE_TAG}', f'docker://{self.host}/{repo_tag}')

    def copy(self, src_repo_tag, dst_repo_tag):
        """Copies an image within this registry (e.g. app:1.0 to app:latest);
        returns the digest, unchanged by the copy."""
        return self._copy(f'docker://{self.host}/{src_repo_tag}',
                          f'docker://{self.host}/{dst_repo_tag}', src_creds=True)

    def delete(self, repo_ref):
        """Deletes REPO@DIGEST, or the manifest REPO:TAG points at (and with
        it every tag pointing there: distribution 2.8 deletes by digest)."""
        self.skopeo('delete', '--tls-verify=false', '--creds', self.creds,
                    f'docker://{self.host}/{repo_ref}')


# --------------------------------------------------------------------------
# Webhook endpoints


@dataclasses.dataclass
class Response:
    """How an Endpoint answers one request.

    delay: seconds to wait before answering (a slow target); drop: close the
    connection without answering (a broken target).
    """
    status: int = 200
    body: bytes = b''
    headers: dict = dataclasses.field(default_factory=dict)
    delay: float = 0
    drop: bool = False


@dataclasses.dataclass
class Request:
    """A request as an Endpoint received it. path and query are raw (still
    percent-encoded); headers are (name, value) pairs in the order sent."""
    method: str
    path: str
    query: str
    headers: list
    body: bytes
    received_at: float  # time.time() when the whole request had arrived

    def header(self, name, default=None):
        """The first value of a header, by case-insensitive name."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return default

    def json(self):
        return json.loads(self.body)


class _EndpointHandler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive, as curl expects, and answers
    # `Expect: 100-continue` by itself.
    protocol_version = 'HTTP/1.1'

    def _handle(self):
        endpoint = self.server.endpoint
        body = self._read_body()
        path, _, query = self.path.partition('?')
        request = Request(self.command, path, query, list(self.headers.items()), body,
                          time.time())
        endpoint._record(request)
        resp = endpoint._next_response(request)
        if resp.delay:
            endpoint._stopping.wait(resp.delay)
        if resp.drop:
            self.close_connection = True
            return
        self.send_response(resp.status)
        headers = resp.headers.items() if isinstance(resp.headers, dict) else resp.headers
        for name, value in headers:
            self.send_header(name, value)
        if not any(name.lower() == 'content-length' for name, _ in headers):
            self.send_header('Content-Length', str(len(resp.body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(resp.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def _read_body(self):
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b';')[0], 16)
                if size == 0:
                    # trailers end with an empty line
                    while self.rfile.readline() not in (b'\r\n', b'\n', b''):
                        pass
                    return b''.join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(length) if length else b''

    def log_message(self, format, *args):
        pass  # the requests are recorded; stderr stays quiet


class _EndpointServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # socketserver listens with a backlog of 5: more connections opened at
    # once (reghook opens up to max_in_flight_per_webhook) overflow it, and
    # one may then wait for the kernel's retransmissions past a request
    # timeout. nginx's is 511.
    request_queue_size = 128
    block_on_close = False  # stop() must not wait for a delayed answer

    def handle_error(self, request, client_address):
        # A client that hangs up (reghook timing out on a delayed answer)
        # is part of the test; anything else is a harness bug worth seeing.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class Endpoint:
    """An HTTP server on a free loopback port that records every request and
    answers 200 `ok` unless told otherwise by respond() or script()."""

    def __init__(self, host='127.0.0.1'):
        self.host = host
        self.requests = []
        self._cond = threading.Condition()
        self._default = Response(200, b'ok')
        self._queue = collections.deque()
        self._answer = None
        self._stopping = threading.Event()
        self._server = _EndpointServer((host, 0), _EndpointHandler)
        self._server.endpoint = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={'poll_interval': 0.05}, daemon=True)
        self._thread.start()

    def url(self, path='/'):
        return f'http://{self.host}:{self.port}{path}'

    def respond(self, status, body=b'', headers=None, delay=0, drop=False):
        """Sets the answer used once the script is used up."""
        with self._cond:
            self._default = Response(status, body, headers or {}, delay, drop)

    def script(self, responses):
        """Sets the answers to the next requests, in order: each a Response,
        a status code, or a tuple of Response's fields (status, body, ...)."""
        def as_response(r):
            if isinstance(r, Response):
                return r
            if isinstance(r, int):
                return Response(r)
            return Response(*r)
        with self._cond:
            self._queue = collections.deque(as_response(r) for r in responses)

    def wait_for(self, n, timeout=10):
        """Waits until at least n requests arrived; returns all received so far."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= n, timeout):
                raise AssertionError(f'endpoint {self.url()} got {len(self.requests)} '
                                     f'requests in {timeout}s, expected {n}')
            return list(self.requests)

    def stop(self):
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _record(self, request):
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()

    def answer_with(self, fn):
        """Answers with fn(request) -> Response (called on the server's
        threads) instead of the script and the default; fn returning None
        falls back to them."""
        with self._cond:
            self._answer = fn

    def _next_response(self, request):
        with self._cond:
            fn = self._answer
        resp = fn(request) if fn else None
        if resp is not None:
            return resp
        with self._cond:
            return self._queue.popleft() if self._queue else self._default


# --------------------------------------------------------------------------
# Set-up through the CLI, as an operator does it


def register(daemon, *namespaces, scope=None, name='main'):
    """Adds the namespaces and a registry source (limited to scope, a
    comma-separated list, if given); returns the source's token."""
    for ns in namespaces:
        daemon.run_cli('namespace', 'add', ns, setting_up=True)
    args = ['registry', 'add', name] + (['--namespaces', scope] if scope else [])
    out = daemon.run_cli(*args, setting_up=True).stdout
    token = next(w for w in out.split() if w.startswith('rgh_'))
    # A running daemon hears of a new source through a NOTIFY and loads the
    # sources again: a post in the milliseconds before is refused 401, which
    # a registry posts again (README, Attaching a registry), and a test
    # would not. An empty envelope stores nothing.
    if daemon.proc is not None and daemon.running():
        wait_until(lambda: daemon.post('/events', b'{"events":[]}', {
            'Content-Type': 'application/json', 'Authorization': f'Bearer {token}'})[0] != 401,
                   timeout=15, interval=0.01, msg=f'the daemon to know registry source {name}')
    return token


def add_webhook(daemon, ns, url, *options, enable=True):
    """`webhook add NS URL OPTIONS` (then enable); returns the webhook id.
    Options are what a test is about: given any, `webhook add` runs with the
    sanitizers."""
    out = daemon.run_cli('webhook', 'add', ns, url, *options, setting_up=not options).stdout
    assert out.startswith('Webhook '), out
    webhook_id = out.split()[1]
    if enable:
        daemon.run_cli('webhook', 'enable', webhook_id, setting_up=True)
    return webhook_id


# --------------------------------------------------------------------------
# A registry's notification queue, without the registry


def registry_event(action='push', repository='team-a/app', tag='1.0',
                   digest='sha256:' + 'ab' * 32,
                   media_type='application/vnd.oci.image.manifest.v1+json'):
    """One notification event as distribution sends it for a manifest push or
    delete (tag None: a push without tag, or a delete by digest), with a new
    event id."""
    target = {'mediaType': media_type, 'size': 344, 'digest': digest, 'length': 344,
              'repository': repository,
              'url': f'http://127.0.0.1:5000/v2/{repository}/manifests/{digest}'}
    if tag is not None:
        target['tag'] = tag
    return {'id': str(uuid.uuid4()), 'timestamp': '2026-11-22T18:20:32.255357202Z',
            'action': action, 'target': target,
            'request': {'id': str(uuid.uuid4()), 'method': 'PUT'},
            'actor': {'name': 'alice'}, 'source': {'addr': 'vm:5000'}}


class RegistrySender:
    """Posts events to a reghook's POST /events the way a registry's
    notification endpoint does: one event per request, in order, and every
    answer but 200 (or a broken connection) is retried after `backoff`
    seconds until a 200 comes. `queues` such queues run side by side (each
    a registry, say), each taking every queues-th event; `pause` seconds
    between a queue's events spreads the load over time.

    After join(): acked (event ids answered 200, in order of the answers),
    statuses (a Counter of the statuses answered, 'error' for a broken
    connection), retry_after (the Retry-After values sent with 503s) and
    exchanges ((sent, answered, status) of every request, in the order of
    the answers, the times time.monotonic()'s).
    """

    V1 = 'application/vnd.docker.distribution.events.v1+json'

    def __init__(self, port, token, events, queues=4, pause=0.0, backoff=0.05):
        self.port = port
        self.token = token
        self.events = list(events)
        self.pause = pause
        self.backoff = backoff
        self.acked = []
        self.statuses = collections.Counter()
        self.retry_after = collections.Counter()
        self.exchanges = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(self.events[i::queues],),
                                          daemon=True) for i in range(queues)]

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def done(self):
        return not any(t.is_alive() for t in self._threads)

    def join(self, timeout):
        """Waits until every event is acknowledged; raises AssertionError
        (and stops the queues) after timeout seconds."""
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0, deadline - time.monotonic()))
        if not self.done():
            self._stop.set()
            raise AssertionError(f'{len(self.acked)} of {len(self.events)} events acknowledged '
                                 f'in {timeout}s; answers: {dict(self.statuses)}')

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join()

    def _run(self, events):
        headers = {'Content-Type': self.V1, 'Authorization': f'Bearer {self.token}'}
        for ev in events:
            body = json.dumps({'events': [ev]}).encode()
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    status, hdrs, _ = http_request(self.port, 'POST', '/events', body, headers,
                                                   timeout=10)
                except (OSError, http.client.HTTPException):
                    status, hdrs = 'error', {}
                with self._lock:
                    self.exchanges.append((sent, time.monotonic(), status))
                    self.statuses[status] += 1
                    if status == 503:
                        self.retry_after[hdrs.get('retry-after')] += 1
                    if status == 200:
                        self.acked.append(ev['id'])
                if status == 200:
                    break
                self._stop.wait(self.backoff)
            if self._stop.wait(self.pause):
                return
