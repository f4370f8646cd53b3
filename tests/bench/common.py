"""Shared set-up for the benchmarks: a durable private PostgreSQL (fsync
on, unlike the test suite's), a reghook, the endpoints deliveries go to
(nginx, and endpoint.py for what nginx cannot do: record receipt times,
answer late), a way to queue deliveries without the dispatcher running,
and helpers to read figures."""

import contextlib
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))

import harness  # noqa: E402


class DurablePostgres(harness.Postgres):
    """The test cluster, but durable: commits wait for the disk."""

    SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{dir}'
max_connections = 200
"""


# Runs of each delivery benchmark (drain, latency, rss), each on a fresh database.
RUNS = int(os.environ.get('BENCH_RUNS', '2'))

# The registry event the benchmarks post, with @ID@ (event and request id),
# @TAG@ and @TIME@ to fill in (post_event.lua reads the same file).
with open(os.path.join(HERE, 'event.json')) as _f:
    EVENT_TEMPLATE = _f.read()


def registry_time():
    """Now, as a registry stamps its events. A delivery's id starts with
    its event's time (schema/functions/ingest.sql), so events stamped with
    one fixed time would put new ids all over one place of the indexes."""
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def bench_event(event_id, tag):
    """event.json's event, as JSON text, with this id and tag, stamped now."""
    return (EVENT_TEMPLATE.replace('@ID@', event_id).replace('@TAG@', tag)
            .replace('@TIME@', registry_time()))


def each_run(run_once, describe):
    """Calls run_once(server, run) RUNS times on one DurablePostgres,
    printing describe(result) after each; returns the results."""
    pg = DurablePostgres()
    try:
        pg.start()
        results = []
        for run in range(RUNS):
            results.append(run_once(pg, run))
            print(f'  run {run + 1}: {describe(results[-1])}', flush=True)
        return results
    finally:
        pg.destroy()


def wrk(url, seconds, connections, script, *args):
    """Runs wrk with a Lua script; returns the RESULT fields as ints."""
    out = subprocess.run(['wrk', '-t', '2', '-c', str(connections), '-d', f'{seconds}s',
                          '--timeout', '10s', '-s', script, url, '--', *args],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r'^RESULT (.*)$', out, re.M)
    if not m:
        raise RuntimeError(f'wrk printed no result:\n{out}')
    return {k: int(v) for k, v in (kv.split('=') for kv in m.group(1).split())}


def pgbench(pg, sql, seconds, clients):
    """Runs a custom pgbench script with clients connections (in up to two
    threads); returns transactions per second."""
    path = os.path.join(pg.dir, 'bench.sql')
    with open(path, 'w') as f:
        f.write(sql)
    os.chmod(pg.dir, 0o755)
    out = subprocess.run([os.path.join(pg.bindir, 'pgbench'), '-n', '-c', str(clients),
                          '-j', str(min(2, clients)), '-T', str(seconds), '-f', path,
                          '-h', '127.0.0.1', '-p', str(pg.port), '-U', 'postgres', 'reghook'],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r'tps = ([0-9.]+)', out)
    return float(m.group(1))


@contextlib.contextmanager
def fresh_database(server, name):
    """A new database on server (a DurablePostgres) for one run, as a
    harness.Database; dropped afterwards."""
    server.create_db(name)
    db = harness.Database(server, name)
    try:
        yield db
    finally:
        db.close_connections()
        server.psql(f'DROP DATABASE "{name}" WITH (FORCE)', dbname='postgres')


def bench_reghook(pg, config=None, binary=None):
    """A harness.Reghook on pg (not started) for the benchmarks: quiet logs,
    loopback targets allowed, config adding or overriding keys; binary, if
    given, instead of REGHOOK_BIN."""
    return harness.Reghook(pg.url(), {'log_level': 'warn', 'allow_private_targets': True,
                                      **(config or {})}, **({'bin': binary} if binary else {}))


def prepare_webhook(pg, rh, url, namespace='team-a'):
    """Brings the schema current and adds, through the CLI, the namespace, a
    registry source `bench` and an enabled webhook to url, with no dispatcher
    running. Returns (webhook id, source id)."""
    rh.run_cli('migrate')
    harness.register(rh, namespace, name='bench')
    webhook_id = harness.add_webhook(rh, namespace, url)
    source_id = int(pg.psql("SELECT id FROM reghook.registry_sources WHERE name = 'bench'"))
    return int(webhook_id), source_id


def queue_events(pg, source_id, count, repository='team-a/app', chunk=10000):
    """Stores count single-tag push events through reghook.ingest(), as the
    receiver would, creating a delivery for each enabled webhook of the
    namespace. Tags are t0, t1, ... (the event ids bench-0, bench-1, ...)."""
    for start in range(0, count, chunk):
        end = min(start + chunk, count) - 1
        pg.psql(f"""
            SELECT count(*) FROM reghook.ingest((
                SELECT jsonb_agg(jsonb_build_object(
                    'i', g, 's', {int(source_id)}, 'id', 'bench-' || g, 'action', 'push',
                    'repository', '{repository}', 'tag', 't' || g,
                    'digest', 'sha256:{'ab' * 32}',
                    'media_type', 'application/vnd.oci.image.manifest.v1+json',
                    'request_id', 'req-' || g, 'actor', 'alice', 'ts', now(),
                    'raw', jsonb_build_object('id', 'bench-' || g)))
                FROM generate_series({start}, {end}) g), NULL, 0, 0, '{{}}', 0)""")


def drained(db):
    """True when no delivery of db is pending or in flight (a cheap query:
    both states have an index of their own)."""
    return db.psql("""SELECT NOT EXISTS (SELECT FROM reghook.deliveries
                                         WHERE status IN ('pending', 'in_flight'))""") \
        .strip() == 't'


def wait_drained(rh, db, timeout, interval=0.05, each=None):
    """Polls until no delivery of db is pending or in flight, calling each()
    (if given) before every poll; raises if reghook exits or timeout seconds
    pass first."""
    start = time.monotonic()
    while True:
        if each:
            each()
        if drained(db):
            return
        if not rh.running():
            raise RuntimeError(f'reghook exited:\n{rh.log()[-3000:]}')
        if time.monotonic() - start > timeout:
            raise RuntimeError(f'not drained after {timeout} s')
        time.sleep(interval)


def cpu_seconds(pid):
    """User plus system CPU seconds a process has used so far."""
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def server_cpu(server):
    """CPU seconds used so far by each process of a PostgreSQL server living
    now (the postmaster and its children), by pid."""
    with open(os.path.join(server.datadir, 'postmaster.pid')) as f:
        postmaster = int(f.readline())
    pids = [postmaster]
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    if int(f.read().rsplit(')', 1)[1].split()[1]) == postmaster:
                        pids.append(int(entry))
            except (OSError, ValueError):
                pass  # gone meanwhile
    used = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            used[pid] = cpu_seconds(pid)
    return used


def machine_busy():
    """The machine's busy and total CPU time so far, in clock ticks."""
    with open('/proc/stat') as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def proc_status(pid):
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    with open(f'/proc/{pid}/status') as f:
        fields = dict(line.split(':', 1) for line in f)
    return {k: int(fields[k].split()[0]) for k in ('VmRSS', 'VmHWM')}


class Nginx:
    """nginx answering `200 ok` to everything on a free loopback port: a fast
    endpoint. Its files (configuration, pid file, error log) are in a
    temporary directory; it runs in the foreground as our child and is
    stopped by its PID."""

    CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_body_buffer_size 64k;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "ok"; }}
    }}
}}
"""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='reghook-nginx-')
        self.port = harness.free_port()
        self.proc = None

    def start(self):
        conf = os.path.join(self.dir, 'nginx.conf')
        with open(conf, 'w') as f:
            f.write(self.CONF.format(dir=self.dir, port=self.port))
        self.proc = subprocess.Popen(['/usr/sbin/nginx', '-p', self.dir, '-c', conf,
                                      '-e', os.path.join(self.dir, 'error.log')],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        harness.wait_until(lambda: self._answers(), timeout=10, msg='nginx to answer')

    def _answers(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f'nginx exited: {harness.tail(os.path.join(self.dir, "error.log"))}')
        try:
            return harness.http_request(self.port, 'GET', '/', timeout=1)[0] == 200
        except OSError:
            return False

    def url(self, path='/'):
        return f'http://127.0.0.1:{self.port}{path}'

    def stop(self):
        if self.proc:
            harness.stop_process(self.proc, 10)  # SIGTERM: nginx's fast shutdown
        shutil.rmtree(self.dir, ignore_errors=True)


class AsyncEndpoint:
    """endpoint.py in a process of its own: answers 200 after delay seconds,
    holding any number of connections; with record=True, stop() returns
    {tag: monotonic receipt time} of every request received. peak is then
    the largest number of requests it held at once."""

    def __init__(self, delay=0, record=False):
        self.dir = tempfile.mkdtemp(prefix='reghook-endpoint-')
        self.record = os.path.join(self.dir, 'received') if record else None
        self.delay = delay
        self.proc = None
        self.port = None
        self.peak = None

    def start(self):
        port_file = os.path.join(self.dir, 'port')
        argv = [sys.executable, os.path.join(HERE, 'endpoint.py'), port_file,
                '--delay', str(self.delay)]
        if self.record:
            argv += ['--record', self.record]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        harness.wait_until(lambda: os.path.exists(port_file) or self.proc.poll() is not None,
                           timeout=10, msg='the endpoint to listen')
        if self.proc.poll() is not None:
            raise RuntimeError('endpoint.py exited at start')
        with open(port_file) as f:
            self.port = int(f.read())

    def url(self, path='/'):
        return f'http://127.0.0.1:{self.port}{path}'

    def stop(self):
        received = {}
        if self.proc:
            harness.stop_process(self.proc, 30)
            with open(os.path.join(self.dir, 'port.peak')) as f:
                self.peak = int(f.read())
            if self.record and os.path.exists(self.record):
                with open(self.record) as f:
                    for line in f:
                        tag, at = line.split()
                        received[tag] = float(at)
        shutil.rmtree(self.dir, ignore_errors=True)
        return received
