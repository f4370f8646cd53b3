"""valgrind memcheck over the daemon's main path: the build without
sanitizers ($REGHOOK_PLAIN_BIN, -O2 -g) serves under valgrind while the
real registry is pushed to with skopeo, the event is delivered to a real
endpoint, the delivery is queued again and retried after a failure, and
SIGTERM stops it. valgrind must report no error and no definite leak.

The sanitizer build runs the rest of the suite; valgrind adds what ASan
does not see: reads of uninitialised memory, and leaks counted by a
different allocator than ASan's (it is slower, so one scenario only)."""

import os
import re
import shutil
import stat

import pytest

from harness import add_webhook, register
from test_delivery import FAST, deliveries, wait_attempts, wait_status


def valgrind_wrapper(directory, plain_bin):
    """An executable that runs plain_bin under memcheck, its report in
    directory/valgrind.<pid>.log. No suppressions: libevent, libcurl,
    libpq, OpenSSL and yajl report nothing on this path."""
    log = os.path.join(directory, 'valgrind.%p.log')
    args = ['valgrind', '--error-exitcode=99', '--leak-check=full',
            '--errors-for-leak-kinds=definite', '--show-leak-kinds=definite',
            '--track-origins=yes', '--num-callers=30', f'--log-file={log}']
    path = os.path.join(directory, 'reghook-under-valgrind')
    with open(path, 'w') as f:
        f.write('#!/bin/sh\nexec ' + ' '.join(args) + f' {plain_bin} "$@"\n')
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def memcheck_bin(directory):
    """The build without sanitizers under memcheck, reporting into directory
    (skips the test where either is missing)."""
    plain = os.environ.get('REGHOOK_PLAIN_BIN')
    if not plain:
        pytest.skip('REGHOOK_PLAIN_BIN not set (tests/run sets it)')
    if not shutil.which('valgrind'):
        pytest.skip('valgrind not installed (packaging/install-deps)')
    os.chmod(directory, 0o755)
    return valgrind_wrapper(str(directory), plain)


def stop_clean(daemon, directory):
    """Stops the daemon; its one memcheck report must show no error and no
    definite leak, and it must have exited 0."""
    assert daemon.stop(timeout=120) is not None
    reports = list(directory.glob('valgrind.*.log'))
    assert len(reports) == 1, reports
    report = reports[0].read_text(errors='replace')
    print(report[-3000:])
    summary = re.search(r'ERROR SUMMARY: (\d+) errors', report)
    assert summary, report[-2000:]
    assert summary.group(1) == '0', report
    definite = re.search(r'definitely lost: ([\d,]+) bytes', report)
    assert definite is None or definite.group(1) == '0', report
    assert daemon.proc.returncode == 0, report[-2000:]


def test_push_deliver_retrigger_under_valgrind(reghook_factory, pg, registry_factory,
                                               endpoint_factory, tmp_path):
    wrapper = memcheck_bin(tmp_path)

    daemon = reghook_factory(FAST, bin=wrapper, wait=False)
    daemon.wait_ready(timeout=180)
    token = register(daemon, 'team-a')
    hook = endpoint_factory()
    # The push is delivered at once; the delivery queued again fails once, then succeeds.
    hook.script([200, 500, 200])
    webhook_id = add_webhook(daemon, 'team-a', hook.url('/deploy?tag={tag}'), '--secret',
                             'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', '--header', 'X-Team: a')
    registry = registry_factory(daemon.url('/events'), token)
    digest = registry.push('team-a/app:1.0')
    [first] = hook.wait_for(1, timeout=120)
    assert first.json()['push_data']['images'] == [digest]
    assert first.query == 'tag=1.0'
    wait_status(pg, webhook_id, 'succeeded', timeout=120)
    delivery = deliveries(pg, webhook_id)[0]['id']

    # Queued again: the same delivery, attempts 2 (fails) and 3.
    pg.psql(f"SELECT reghook.retrigger('{delivery}')")
    hook.wait_for(3, timeout=120)
    wait_status(pg, webhook_id, 'succeeded', timeout=120)
    assert [a['attempt'] for a in wait_attempts(pg, webhook_id, 3, timeout=120)] == [1, 2, 3]
    assert [r.header('X-Team') for r in hook.requests] == ['a'] * 3
    assert {r.header('X-Reghook-Delivery') for r in hook.requests} == {delivery}

    stop_clean(daemon, tmp_path)


def test_bad_http_requests_under_valgrind(reghook_factory, pg, tmp_path):
    """Each request the HTTP layer or the JSON parser refuses, once, with the
    daemon under memcheck: no error, no definite leak, a clean exit."""
    from test_http_strict import bad_http_requests, raw

    daemon = reghook_factory({'client_timeout': '5s'}, bin=memcheck_bin(tmp_path), wait=False)
    daemon.wait_ready(timeout=180)
    token = register(daemon, 'team-a')
    for data, want in bad_http_requests(token):
        assert [a[0] for a in raw(daemon.port, data, timeout=120)] == [want], data[:60]
    # A request left unfinished: its deadline answers it.
    assert [a[0] for a in raw(daemon.port, b'POST /events HTTP/1.1\r\nHost: x\r\n',
                              timeout=120)] == [408]
    stop_clean(daemon, tmp_path)


def test_tls_connections_under_valgrind(reghook_factory, pg, tmp_path):
    """HTTPS with client certificates required, under memcheck: posts on
    new and kept-alive connections, a renewal reloaded while a connection
    stays open (and is still open at the stop), a broken certificate on
    reload, handshakes refused (no client certificate, another CA's), cut
    off halfway or after the ServerHello, left to the handshake deadline,
    plain HTTP, and a bad request inside TLS: no error, no definite leak,
    a clean exit."""
    import http.client
    import signal
    import socket
    import ssl

    from harness import wait_until
    from test_tls import Pki, client_context, client_hello, post_headers, tls_connect, tls_raw

    wrapper = memcheck_bin(tmp_path)
    pki = Pki(tmp_path / 'pki')
    ctx = client_context(pki.ca.cert, pki.client)
    config = {**pki.serve(pki.server, client_ca=pki.ca.cert), 'client_timeout': '5s'}
    daemon = reghook_factory(config, bin=wrapper, wait=False, ssl_context=ctx)
    daemon.wait_ready(timeout=180)
    token = register(daemon, 'team-a')
    body = b'{"events":[]}'
    assert daemon.post('/events', body, post_headers(token), timeout=120)[0] == 200

    kept = http.client.HTTPSConnection('127.0.0.1', daemon.port, timeout=120, context=ctx)

    def post_kept():
        kept.request('POST', '/events', body, post_headers(token))
        answer = kept.getresponse()
        answer.read()
        return answer.status

    assert post_kept() == 200
    kept_sock = kept.sock
    renewed = pki.ca.issue('renewed')
    pki.install(renewed)
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: 'TLS certificate' in daemon.log().split('SIGHUP received')[-1],
               timeout=120, msg='the renewal loaded')
    assert post_kept() == 200
    assert kept.sock is kept_sock  # the same connection, across the reload
    pki.break_cert()
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: 'configuration reload failed' in daemon.log(), timeout=120,
               msg='the refused reload')
    with tls_connect(daemon.port, ctx, timeout=120) as t:
        assert t.getpeercert()['serialNumber'] == renewed.serial

    outsider = pki.other.issue('outsider', usage='clientAuth')
    for refused, why in ((client_context(pki.ca.cert), 'peer did not return a certificate'),
                         (client_context(pki.ca.cert, outsider), 'certificate verify failed')):
        before = daemon.log().count('TLS handshake with')
        with pytest.raises((ssl.SSLError, OSError)):
            tls_raw(daemon.port, refused, b'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n',
                    timeout=120)
        wait_until(lambda: daemon.log().count('TLS handshake with') > before, timeout=120,
                   msg='the refused handshake in the log')
        assert why in [line for line in daemon.log().splitlines()
                       if 'TLS handshake with' in line][-1]
    hello = client_hello()
    for cut in (hello[:len(hello) // 2], hello, b''):
        with socket.create_connection(('127.0.0.1', daemon.port), timeout=120) as s:
            s.sendall(cut)
    stalled = socket.create_connection(('127.0.0.1', daemon.port), timeout=120)
    stalled.sendall(hello[:10])
    assert stalled.recv(100) == b''  # the handshake deadline, client_timeout from accept
    stalled.close()
    with socket.create_connection(('127.0.0.1', daemon.port), timeout=120) as s:
        s.sendall(b'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n')
        assert s.recv(100).startswith(b'HTTP/1.1 400 ')
    assert [a[0] for a in tls_raw(daemon.port, ctx, b'GET /healthz HTTP/1.1\r\n\r\n',
                                  timeout=120)] == [400]
    stop_clean(daemon, tmp_path)
    kept.close()
