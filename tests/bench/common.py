"""Shared set-up for the benchmarks: a durable private PostgreSQL (fsync
on, unlike the test suite's), a reghook, and helpers to read figures."""

import os
import re
import subprocess
import sys

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
    """Runs a custom pgbench script; returns transactions per second."""
    path = os.path.join(pg.dir, 'bench.sql')
    with open(path, 'w') as f:
        f.write(sql)
    os.chmod(pg.dir, 0o755)
    out = subprocess.run([os.path.join(pg.bindir, 'pgbench'), '-n', '-c', str(clients), '-j', '2',
                          '-T', str(seconds), '-f', path, '-h', '127.0.0.1', '-p', str(pg.port),
                          '-U', 'postgres', 'reghook'],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r'tps = ([0-9.]+)', out)
    return float(m.group(1))
