"""Endpoint faults: webhook targets that hang, answer slowly, reset the
connection, answer something that is not HTTP, answer a huge body, redirect
to themselves, or present a certificate nobody trusts. Each attempt is
recorded in reghook.delivery_attempts with the right error class, and a
healthy webhook of the same namespace gets its deliveries while the faulty
ones are still in progress.

(A plain timeout, a redirect elsewhere and a refused connection are in
test_delivery.py.)"""

import json
import os
import socket
import ssl
import struct
import subprocess
import threading

import pytest

from harness import add_webhook, register, registry_event, wait_until
from test_http_strict import daemon_with_descriptors

V1 = 'application/vnd.docker.distribution.events.v1+json'


class RawServer:
    """A TCP server on a free loopback port that runs handle(conn) on a
    thread of its own for every connection; stop() closes everything."""

    def __init__(self, handle):
        self.handle = handle
        self.accepted = 0
        self.stopping = threading.Event()
        self._conns = []
        self._lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(1024)  # bursts of 256 connections at once
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, path='/'):
        return f'http://127.0.0.1:{self.port}{path}'

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            self.handle(self, conn)
        except (OSError, ssl.SSLError):
            pass  # reghook hung up, as it should on a fault

    def stop(self):
        self.stopping.set()
        self.sock.close()
        self._thread.join()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.close()
                except OSError:
                    pass


def read_request(conn):
    """Reads one HTTP request (headers and a Content-Length body)."""
    data = b''
    while b'\r\n\r\n' not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b'\r\n\r\n')
    length = 0
    for line in head.split(b'\r\n')[1:]:
        name, _, value = line.partition(b':')
        if name.strip().lower() == b'content-length':
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b'\r\n\r\n' + body


def hang(server, conn):
    """Reads the request and never answers."""
    read_request(conn)
    server.stopping.wait()


def trickle(server, conn):
    """Answers 200 a byte every 0.1 s: slow, but within the timeout."""
    read_request(conn)
    body = b'slowly-but-surely'
    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n'
                 % len(body))
    for i in range(len(body)):
        if server.stopping.wait(0.1):
            return
        conn.sendall(body[i:i + 1])
    conn.close()


def reset(server, conn):
    """Reads the request, then resets the connection (RST, not FIN)."""
    read_request(conn)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    conn.close()


def garbage(server, conn):
    """Answers bytes that are not HTTP, then closes."""
    read_request(conn)
    conn.sendall(b'\x00\x16\x03garbage, not HTTP at all\r\n\x7f\xff\r\n\r\n')
    conn.close()


def endless(server, conn):
    """Answers 200 with a body it says is 100 GB long, sent as fast as the
    other side reads, until it goes away."""
    read_request(conn)
    try:
        conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n')
        chunk = b'x' * 65536
        while not server.stopping.is_set():
            conn.sendall(chunk)
    except OSError:
        pass
    conn.close()


def big_header(server, conn):
    """Answers 200 with one header line of 2 MiB."""
    read_request(conn)
    try:
        conn.sendall(b'HTTP/1.1 200 OK\r\nX-Big: ' + b'b' * (2 << 20) +
                     b'\r\nContent-Length: 2\r\n\r\nok')
    except OSError:
        pass
    conn.close()


def self_signed(tmp_path):
    """An SSL context serving a fresh self-signed certificate for 127.0.0.1."""
    cert, key = tmp_path / 'cert.pem', tmp_path / 'key.pem'
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
                    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
                    '-keyout', str(key), '-out', str(cert)],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def tls_answering(ctx):
    def handle(server, conn):
        with ctx.wrap_socket(conn, server_side=True) as tls:
            read_request(tls)
            tls.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
    return handle


def cut_in_headers(server, conn):
    """Answers a status line and a header, then closes: no blank line ends
    the headers (an endpoint, or a proxy, that died mid-answer)."""
    read_request(conn)
    conn.sendall(b'HTTP/1.1 200 OK\r\nX-A: b\r\n')
    conn.close()


def continue_then_ok(server, conn):
    """A 100 Continue, then a whole 200."""
    read_request(conn)
    conn.sendall(b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n'
                 b'Connection: close\r\n\r\nok')
    conn.close()


def attempts_of(pg, webhook_id):
    out = pg.psql(f"""SELECT coalesce(json_agg(t ORDER BY t.at), '[]') FROM (
        SELECT delivery_id::text, attempt, response_status, error_class, error_message,
               response_truncated, length(response_body) AS body_len,
               encode(response_body, 'escape') AS body, response_headers, duration_ms,
               extract(epoch FROM attempted_at)::float8 AS at
        FROM reghook.delivery_attempts WHERE webhook_id = {int(webhook_id)}) t""")
    return json.loads(out)


def test_an_answer_cut_within_its_headers_is_a_failure(reghook_factory, pg):
    """libcurl takes a 200 whose connection closed before the blank line
    ending its headers as whole; the delivery was recorded as delivered.
    RFC 9112 (section 8) calls such an answer incomplete: the attempt fails
    and the delivery waits for its next one. A 100 Continue before a whole
    200 is still a success."""
    daemon = reghook_factory()
    token = register(daemon, 'team-a')
    cut, fine = RawServer(cut_in_headers), RawServer(continue_then_ok)
    try:
        cut_id = add_webhook(daemon, 'team-a', cut.url('/cut'), '--repository', 'cut')
        fine_id = add_webhook(daemon, 'team-a', fine.url('/fine'), '--repository', 'fine')
        for repository in ('team-a/cut', 'team-a/fine'):
            status, _, out = daemon.post('/events', json.dumps(
                {'events': [registry_event(repository=repository)]}).encode(),
                {'Content-Type': V1, 'Authorization': f'Bearer {token}'})
            assert status == 200, out
        [a] = wait_until(lambda: attempts_of(pg, cut_id) or None, timeout=30, msg='the attempt')
        assert (a['error_class'], a['response_status']) == ('other', None), a
        assert 'ended before the end of its headers' in a['error_message'], a
        assert pg.psql(f'SELECT status FROM reghook.deliveries WHERE webhook_id = {cut_id}'
                       ).strip() == 'pending'
        [b] = wait_until(lambda: attempts_of(pg, fine_id) or None, timeout=30, msg='the attempt')
        assert (b['error_class'], b['response_status']) == (None, 200), b
    finally:
        cut.stop()
        fine.stop()


@pytest.mark.long
def test_faulty_endpoints_are_classified_and_hold_back_no_one(reghook_factory, pg,
                                                              endpoint_factory, tmp_path):
    daemon = reghook_factory({'max_in_flight_per_webhook': '2', 'connect_timeout': '2s'})
    token = register(daemon, 'team-a')
    servers = []
    try:
        hanging = RawServer(hang)
        slow = RawServer(trickle)
        resetting = RawServer(reset)
        garbled = RawServer(garbage)
        untrusted = RawServer(tls_answering(self_signed(tmp_path)))
        streaming = RawServer(endless)
        headed = RawServer(big_header)
        servers += [hanging, slow, resetting, garbled, untrusted, streaming, headed]
        huge, looping, healthy = endpoint_factory(), endpoint_factory(), endpoint_factory()
        huge_body = bytes(range(256)) * (16 * 4096)  # 16 MiB
        huge.respond(200, huge_body)
        looping.respond(302, b'', {'Location': looping.url('/loop')})

        once = ('--max-attempts', '1')
        hooks = {
            'hanging': add_webhook(daemon, 'team-a', hanging.url('/hang'), '--timeout', '10s',
                                   *once),
            'slow': add_webhook(daemon, 'team-a', slow.url('/slow'), '--timeout', '30s', *once),
            'reset': add_webhook(daemon, 'team-a', resetting.url('/reset'), *once),
            'garbage': add_webhook(daemon, 'team-a', garbled.url('/garbage'), *once),
            'huge': add_webhook(daemon, 'team-a', huge.url('/huge'), *once),
            'endless': add_webhook(daemon, 'team-a', streaming.url('/endless'), '--timeout',
                                   '30s', *once),
            'bigheader': add_webhook(daemon, 'team-a', headed.url('/big'), *once),
            'loop': add_webhook(daemon, 'team-a', looping.url('/loop'), *once),
            'tls': add_webhook(daemon, 'team-a',
                               f'https://127.0.0.1:{untrusted.port}/tls', *once),
            'healthy': add_webhook(daemon, 'team-a', healthy.url('/healthy')),
        }
        n = 4
        for i in range(n):
            status, _, out = daemon.post('/events', json.dumps(
                {'events': [registry_event(tag=f'f{i}')]}).encode(),
                {'Content-Type': V1, 'Authorization': f'Bearer {token}'})
            assert status == 200, out

        got = healthy.wait_for(n, timeout=30)
        assert sorted(r.json()['push_data']['tag'] for r in got) == [f'f{i}' for i in range(n)]
        healthy_done = max(r.received_at for r in got)
        # The hanging endpoint holds its first two requests (two per webhook
        # at once, the third waits for a timeout 10 s away) while the healthy
        # one already has everything.
        wait_until(lambda: hanging.accepted >= 2, timeout=3, msg='two hanging requests')
        assert hanging.accepted == 2

        def all_attempts(name):
            return wait_until(lambda: (lambda a: a if len(a) == n else None)(
                attempts_of(pg, hooks[name])), timeout=60, msg=f'{n} attempts of {name}')

        found = {name: all_attempts(name) for name in hooks}
        print('\nendpoint faults: error class, status, message of each attempt')
        for name, rows in found.items():
            for a in rows:
                print(f'  {name:8} {a["error_class"]} {a["response_status"]} '
                      f'{a["error_message"]}')

        def ends(rows):
            return [a['at'] + a['duration_ms'] / 1000 for a in rows]

        for a in found['hanging']:
            assert (a['error_class'], a['response_status']) == ('timeout', None), a
        # Every healthy delivery arrived before the first hanging request gave up.
        assert healthy_done < min(ends(found['hanging'])), (healthy_done, ends(found['hanging']))

        for a in found['slow']:
            assert (a['error_class'], a['response_status']) == (None, 200), a
            assert a['body'] == 'slowly-but-surely' and a['duration_ms'] >= 1500, a
        assert healthy_done < max(ends(found['slow']))

        for a in found['reset']:
            assert (a['error_class'], a['response_status']) == ('other', None), a
            assert 'reset' in a['error_message'], a

        for a in found['garbage']:
            assert (a['error_class'], a['response_status']) == ('other', None), a
            assert 'HTTP/0.9' in a['error_message'], a  # what curl makes of it

        for a in found['huge']:
            assert (a['error_class'], a['response_status']) == (None, 200), a
            assert a['response_truncated'] is True and a['body_len'] == 64 * 1024, a

        # Read up to a megabyte past the limit, then cut: not streamed until
        # the timeout (30 s), the process busy reading what it drops.
        for a in found['endless']:
            assert (a['error_class'], a['response_status']) == (None, 200), a
            assert a['response_truncated'] is True and a['body_len'] == 64 * 1024, a
            assert a['duration_ms'] < 10000, a

        for a in found['bigheader']:
            assert (a['error_class'], a['response_status']) == ('other', None), a
            assert 'headers are too large' in a['error_message'], a

        for a in found['loop']:
            assert (a['error_class'], a['response_status']) == ('http', 302), a
            assert ['Location', looping.url('/loop')] in a['response_headers']
        # Not followed: one request per attempt, none to the Location.
        assert len(looping.requests) == n

        for a in found['tls']:
            assert (a['error_class'], a['response_status']) == ('tls', None), a
            assert 'certificate' in a['error_message'].lower(), a

        statuses = json.loads(pg.psql(
            "SELECT json_object_agg(webhook_id, s) FROM (SELECT webhook_id, "
            "json_agg(DISTINCT status) AS s FROM reghook.deliveries GROUP BY 1) t"))
        expect_ok = {'slow', 'huge', 'endless', 'healthy'}
        for name, webhook_id in hooks.items():
            assert statuses[str(webhook_id)] == (['succeeded'] if name in expect_ok
                                                 else ['failed']), (name, statuses)
    finally:
        for server in servers:
            server.stop()


def test_new_tls_connections_share_one_ca_bundle(reghook_factory, pg):
    """Every new outbound TLS connection parsed the system's CA bundle again
    (libcurl shares one only without a CA directory, which Debian's sets):
    about 25 ms of CPU each, the event loop blocked, and three bursts of 256
    connections at once took RSS from 16 MB to 230 MB, kept by the allocator.
    Measured on the build without sanitizers (ASan's allocator keeps what it
    likes)."""
    daemon = reghook_factory({'request_timeout': '2s'},
                             bin=os.environ.get('REGHOOK_PLAIN_BIN') or None)
    token = register(daemon, 'team-a')
    hanging = RawServer(hang)
    try:
        # 16 webhooks a burst, each with its own tags: 16 failures in a row
        # each, fewer than the 20 after which a webhook rests. Made in one
        # statement (48 `webhook add` and `enable` took 25 s).
        made = pg.psql(
            "SELECT reghook.webhook_add('team-a', 'https://127.0.0.1:"
            f"{hanging.port}/b' || k || 'h' || i, jsonb_build_object('max_attempts', 1, "
            "'tag', 'b' || k || '-*')) FROM generate_series(0, 2) k, generate_series(0, 15) i "
            "ORDER BY k, i").split()
        hooks = [made[16 * k:16 * (k + 1)] for k in range(3)]
        pg.psql('SELECT reghook.webhook_enable(id) FROM reghook.webhooks')

        def rss_kib():
            with open(f'/proc/{daemon.proc.pid}/status') as f:
                return next(int(line.split()[1]) for line in f if line.startswith('VmRSS:'))

        def cpu_seconds():
            """The daemon's CPU time (user and system), not the clock's."""
            with open(f'/proc/{daemon.proc.pid}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')

        def burst(k):
            """16 events, so 256 requests at once, each a TLS connection to a
            server that never answers; waits for their 256 timeouts."""
            for i in range(16):
                status, _, out = daemon.post('/events', json.dumps(
                    {'events': [registry_event(tag=f'b{k}-{i}')]}).encode(),
                    {'Content-Type': V1, 'Authorization': f'Bearer {token}'})
                assert status == 200, out
            wait_until(lambda: int(pg.psql(
                'SELECT count(*) FROM reghook.delivery_attempts WHERE webhook_id = ANY '
                f"('{{{','.join(map(str, hooks[k]))}}}')")) >= 256, timeout=90,
                msg=f'the 256 attempts of burst {k + 1}')

        before, cpu_before = rss_kib(), cpu_seconds()
        sizes = []
        for k in range(3):
            burst(k)
            sizes.append(rss_kib())
        cpu = cpu_seconds() - cpu_before
        print(f'\nRSS before {before} KiB, after each burst of 256 TLS connections {sizes}; '
              f'CPU {cpu:.2f} s for the 768 connections')
        assert hanging.accepted >= 3 * 256
        classes = pg.psql('SELECT DISTINCT error_class FROM reghook.delivery_attempts')
        assert classes.split() == ['timeout'], classes
        # Parsing the bundle for each: about 25 ms of CPU a connection, 19 s
        # for these (0.3 s with one bundle), and RSS from 12 to 57, 60 and
        # 71 MB (to 230 MB with longer timeouts) against 33, 35 and 36.
        assert cpu < 5, f'{cpu:.2f} s of CPU for 768 new TLS connections'
        assert sizes[-1] - before < 48 * 1024, (before, sizes)
        assert daemon.running()
    finally:
        hanging.stop()


def test_out_of_file_descriptors_is_said_so(reghook_factory, pg):
    """With a file descriptor limit below what max_in_flight needs, the
    daemon warns at start; a request it cannot open a socket for is
    recorded as its own failure (other: could not open a socket), not as
    the endpoint refusing the connection."""
    daemon = daemon_with_descriptors(reghook_factory, 128, {'retry_schedule': '0,1h'})
    assert 'the file descriptor limit (128) leaves too little beside max_in_flight (256)' \
        in daemon.log()
    hanging = RawServer(hang)
    try:
        token = register(daemon, 'team-a')
        for i in range(10):
            add_webhook(daemon, 'team-a', hanging.url(f'/h{i}'))
        daemon.post('/events', json.dumps({'events': [registry_event(tag=f't{i}')
                                                      for i in range(20)]}).encode(),
                    {'Content-Type': 'application/json', 'Authorization': f'Bearer {token}'})
        wait_until(lambda: pg.psql("SELECT count(*) FROM reghook.delivery_attempts "
                                   "WHERE error_class = 'other'").strip() != '0',
                   timeout=30, msg='an attempt with no socket')
        message = pg.psql("SELECT error_message FROM reghook.delivery_attempts "
                          "WHERE error_class = 'other' LIMIT 1").strip()
        assert message.startswith('reghook could not open a socket: Too many open files'), \
            message
        assert pg.psql("SELECT count(*) FROM reghook.delivery_attempts "
                       "WHERE error_class = 'connect'").strip() == '0'
    finally:
        hanging.stop()
