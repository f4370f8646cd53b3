"""Bad input to POST /events, beyond the malformed envelopes of
test_receiver.py: 10,000 levels of nesting, truncated bodies, wrong types
and missing fields, invalid UTF-8, huge strings, bodies at and over
max_request_body, an envelope of 100,000 events, clients that trickle or
stall, and floods of headers.

Each gets the answer SPEC promises (400 with a JSON error naming the
problem, 413 over a limit, 401 without a token); nothing of a refused
envelope is stored; a well-behaved client posting meanwhile is answered
200 every time; the daemon survives (no sanitizer report either). Last,
on the build without sanitizers (whose allocator gives memory back as a
user's build does), the resident set size after many rounds of all of it
is compared with its level before.
"""

import http.client
import json
import os
import socket
import threading
import time

import pytest

from harness import register, wait_until
from test_receiver import V1, counts, event, events


# --- helpers -------------------------------------------------------------------


def http_bytes(token, body, extra_headers=b'', content_type=V1.encode(), chunked=False):
    """A whole POST /events request as bytes, as a client would write it."""
    head = (b'POST /events HTTP/1.1\r\nHost: reghook\r\nContent-Type: ' + content_type +
            b'\r\n')
    if token is not None:
        head += b'Authorization: Bearer ' + token.encode() + b'\r\n'
    head += extra_headers
    if chunked:
        head += b'Transfer-Encoding: chunked\r\n\r\n'
        step = 65536
        parts = [b'%x\r\n%s\r\n' % (len(body[i:i + step]), body[i:i + step])
                 for i in range(0, len(body), step)]
        return head + b''.join(parts) + b'0\r\n\r\n'
    return head + b'Content-Length: %d\r\n\r\n' % len(body) + body


def exchange(port, data, timeout=60):
    """Writes data on a new connection and reads one response.

    Returns (status, headers with lower-case names, body). A write that
    fails because the server answered early and closed is not an error:
    the answer is still read.
    """
    sock = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    try:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        sock.close()


def error_of(status_headers_body):
    """The message of a JSON error answer (asserting it is one)."""
    _, headers, body = status_headers_body
    assert headers.get('content-type') == 'application/json', (headers, body[:200])
    return json.loads(body)['error']


def envelope(*evs):
    return json.dumps({'events': list(evs)}, separators=(',', ':')).encode()


class GoodClient:
    """A registry posting one new event at a time, in a thread, while a
    test does its worst; every answer must be 200 with the event accepted."""

    def __init__(self, daemon, token):
        self.daemon, self.token = daemon, token
        self.sent, self.bad = [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(60)

    def _run(self):
        while not self._stop.is_set():
            ev = event(tag=f'good-{len(self.sent)}')
            try:
                status, _, body = self.daemon.post(
                    '/events', envelope(ev),
                    {'Content-Type': V1, 'Authorization': f'Bearer {self.token}'})
                ok = status == 200 and json.loads(body) == counts(accepted=1)
            except (OSError, http.client.HTTPException, ValueError) as e:
                status, body, ok = None, repr(e), False
            if ok:
                self.sent.append(ev['id'])
            else:
                self.bad.append((status, body))
            self._stop.wait(0.02)

    def check(self, pg):
        """Every post answered 200, at least one made, and the events stored
        are exactly the good client's (nothing of any refused envelope)."""
        assert self.bad == []
        assert len(self.sent) > 0
        assert sorted(r['event_uuid'] for r in events(pg)) == sorted(self.sent)


def nested(depth, kind):
    if kind == 'array':
        return b'[' * depth + b']' * depth
    return b'{"a":' * depth + b'1' + b'}' * depth


def with_tag(tag_json):
    """An otherwise good envelope whose target.tag is the raw JSON bytes given."""
    ev = event(tag='TAG-HERE')
    return envelope(ev).replace(b'"TAG-HERE"', tag_json)


def bad_envelopes():
    """(what, body, fragment of the 400's error message). None of them may
    store anything; test_receiver.py's BAD_BODIES are not repeated."""
    good = envelope(event(tag='truncated'))
    cases = [
        ('10,000 nested arrays', b'{"events":[' + nested(10000, 'array') + b']}',
         'nested deeper than 32'),
        ('10,000 nested objects', b'{"events":[' + nested(10000, 'object') + b']}',
         'nested deeper than 32'),
        ('10,000 levels inside an event', good.replace(b'"source":', b'"deep":' + nested(
            10000, 'array') + b',"source":'), 'nested deeper than 32'),
        ('top-level string', b'"events"', 'not an envelope'),
        ('top-level number', b'42', 'not an envelope'),
        ('top-level null', b'null', 'not an envelope'),
        ('events null', b'{"events":null}', 'events: not an array'),
        ('events a string', b'{"events":"[]"}', 'events: not an array'),
        ('two bodies', b'{"events":[]}{"events":[]}', 'not JSON'),
        # Stored exactly, each would come back from PostgreSQL as 131,072 digits.
        ('numbers with huge exponents', good.replace(
            b'"source":', b'"pad":[' + b','.join([b'1e131071'] * 1000) + b'],"source":'),
         'out of range: at most 40 characters, exponent within +-20'),
        ('a tiny number', good.replace(b'"source":', b'"pad":-1e-131071,"source":'),
         'out of range'),
        ('a 41-digit number', good.replace(b'"source":', b'"pad":' + b'9' * 41 + b',"source":'),
         'out of range'),
    ]
    # Cut anywhere, a good envelope is not JSON.
    for cut in (1, len(good) // 3, len(good) // 2, len(good) - 1):
        cases.append((f'truncated at byte {cut}', good[:cut], 'not JSON'))
    cases.append(('truncated inside a \\u escape', good[:good.index(b'"tag"')] +
                  b'"tag":"\\u00', 'not JSON'))

    def mutated(path, value):
        ev = event()
        obj = ev
        for key in path[:-1]:
            obj = obj[key]
        if value is KeyError:
            del obj[path[-1]]
        else:
            obj[path[-1]] = value
        return envelope(ev)

    for path, value, fragment in [
            (('id',), 12345, 'events[0].id: not a string'),
            (('timestamp',), {'t': 1}, 'events[0].timestamp: not a string'),
            (('target', 'repository'), ['team-a', 'app'],
             'events[0].target.repository: not a string'),
            (('target', 'digest'), True, 'events[0].target.digest: not a string'),
            (('request', 'id'), 7, 'events[0].request.id: not a string'),
            (('actor', 'name'), {}, 'events[0].actor.name: not a string'),
            (('timestamp',), KeyError, 'events[0].timestamp: missing'),
            (('target', 'repository'), KeyError, 'events[0].target.repository: missing'),
            (('timestamp',), '2026-13-01T00:00:00Z', 'events[0].timestamp: not an RFC 3339'),
            (('target', 'tag'), 'x' * 1025, 'events[0].target.tag: longer than 1024 bytes'),
    ]:
        cases.append((f'{".".join(path)} = {str(value)[:20]}', mutated(path, value), fragment))
    # One bad event fails the envelope, wherever it is.
    third = event()
    del third['id']
    cases.append(('third event without id', envelope(event(), event(), third),
                  'events[2].id: missing'))
    for what, tag, fragment in [
            ('Latin-1 byte', b'"caf\xe9"', 'invalid UTF-8'),
            ('overlong /', b'"\xc0\xaf"', 'invalid UTF-8'),
            ('UTF-8 encoded surrogate', b'"\xed\xa0\x80"', 'invalid UTF-8'),
            ('beyond U+10FFFF', b'"\xf4\x90\x80\x80"', 'invalid UTF-8'),
            ('cut multi-byte character', b'"\xe2\x82"', 'invalid UTF-8'),
            ('\\u0000', b'"v1\\u0000evil"', '\\u0000'),
            ('lone high surrogate', b'"\\ud800"', 'unpaired UTF-16 surrogate'),
            ('lone low surrogate', b'"\\udc00x"', 'unpaired UTF-16 surrogate'),
    ]:
        cases.append((f'tag with {what}', with_tag(tag), fragment))
    return cases


def read_rss_kib(pid):
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    fields = {}
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            key, _, value = line.partition(':')
            if key in ('VmRSS', 'VmHWM'):
                fields[key] = int(value.split()[0])
    return fields['VmRSS'], fields['VmHWM']


def rss_grows_in_every_quarter(rss):
    """rss: a process's RSS in KiB after a warm-up, then after each of four
    equal quarters of a run. A leak grows it in every quarter; the
    allocator's high-water mark may jump once, when a loaded machine lets
    requests pile up, and stay there. So True (a leak) unless at least one
    of the last three quarters added less than 512 KiB over the highest
    figure before it (the allocator may hand memory back, so a dip is no
    baseline)."""
    growth = [rss[i] - max(rss[:i]) for i in range(2, len(rss))]
    return min(growth) >= 512


# --- the tests ---------------------------------------------------------------------


def test_bad_envelopes_get_400_and_store_nothing(reghook, pg):
    token = register(reghook, 'team-a')
    with GoodClient(reghook, token) as good:
        for what, body, fragment in bad_envelopes():
            answer = exchange(reghook.port, http_bytes(token, body))
            assert answer[0] == 400, (what, answer)
            assert fragment in error_of(answer), (what, answer)
        wait_until(lambda: len(good.sent) >= 5, timeout=30, msg='some good posts')
    good.check(pg)
    assert reghook.running()
    assert reghook.get('/healthz')[0] == 200


def test_well_formed_unicode_is_stored_as_sent(reghook, pg):
    """The other side of the UTF-8 checks: what is valid arrives intact."""
    token = register(reghook, 'team-a')
    ev = event(tag='1')
    ev['actor']['name'] = 'ren\u00e9e \\ "quoted" caf\u00e9-\U0001f433'
    body = json.dumps({'events': [ev]}, ensure_ascii=False).encode()
    assert exchange(reghook.port, http_bytes(token, body))[0] == 200
    ev = event(tag='2')
    ev['actor']['name'] = '\U0001f433'
    escaped = json.dumps({'events': [ev]}, ensure_ascii=True).encode()
    assert b'\\ud83d\\udc33' in escaped
    assert exchange(reghook.port, http_bytes(token, escaped))[0] == 200
    rows = events(pg)
    assert [(r['tag'], r['actor']) for r in rows] == [
        ('1', 'ren\u00e9e \\ "quoted" caf\u00e9-\U0001f433'), ('2', '\U0001f433')]


def padded(size):
    """One good envelope of exactly size bytes (padding in source.pad,
    a field reghook keeps in the raw event but does not read)."""
    ev = event(tag=f'pad-{size}')
    ev['source']['pad'] = ''
    base = len(envelope(ev))
    ev['source']['pad'] = 'p' * (size - base)
    body = envelope(ev)
    assert len(body) == size
    return ev, body


def test_body_limits_and_100000_events(reghook, pg):
    """Default limits: max_request_body 1 MiB, max_events_per_envelope 1000."""
    token = register(reghook, 'team-a')
    limit = 1024 * 1024
    with GoodClient(reghook, token) as good:
        # A string that makes the body exactly the limit is fine; one byte more is not.
        at_limit, body = padded(limit)
        assert exchange(reghook.port, http_bytes(token, body))[:1] == (200,)
        over, body = padded(limit + 1)
        assert exchange(reghook.port, http_bytes(token, body))[0] == 413
        # The same, without a Content-Length to judge by.
        chunked, body = padded(limit + 1)
        assert exchange(reghook.port, http_bytes(token, body, chunked=True))[0] == 413

        # 100,000 events: small ones fit in 1 MiB, and the event count refuses them...
        tiny = b'{"events":[' + b','.join([b'{}'] * 100_000) + b']}'
        assert len(tiny) < limit
        answer = exchange(reghook.port, http_bytes(token, tiny))
        assert answer[0] == 413
        assert error_of(answer) == 'more than 1000 events in one envelope; at most 1000 are accepted'
        # ...real ones (about 30 MB) are over the body limit, answered 413, not a reset.
        real = envelope(*[event(tag=f'e{i}') for i in range(100_000)])
        assert len(real) > 20 * limit
        assert exchange(reghook.port, http_bytes(token, real), timeout=120)[0] == 413
        wait_until(lambda: len(good.sent) >= 5, timeout=30, msg='some good posts')
    good.sent.append(at_limit['id'])
    good.check(pg)
    stored = events(pg, f"event_uuid = '{at_limit['id']}'")
    assert stored and stored[0]['tag'] == f'pad-{limit}'
    assert over['id'] not in {r['event_uuid'] for r in events(pg)}


@pytest.mark.long
def test_slow_clients(reghook, pg):
    """A client that trickles its request is answered when it is complete;
    one that stops sending gets 408 when its request's deadline
    (client_timeout, 30 s from its first byte) has passed, and the
    connection closes; while they hang on, others are served."""
    token = register(reghook, 'team-a')
    trickled = event(tag='trickled')
    request = http_bytes(token, envelope(trickled))
    stalled = [event(tag=f'stalled-{i}') for i in range(20)]

    socks = []
    try:
        # 20 clients that send half a request (the header for some) and stop.
        for i, ev in enumerate(stalled):
            s = socket.create_connection(('127.0.0.1', reghook.port), timeout=120)
            data = http_bytes(token, envelope(ev))
            s.sendall(data[:40] if i % 2 else data[:len(data) - 30])
            socks.append(s)
        stalled_at = time.monotonic()

        with GoodClient(reghook, token) as good:
            # The trickler: 30 pieces, 0.2 s apart.
            t = socket.create_connection(('127.0.0.1', reghook.port), timeout=60)
            step = len(request) // 30 + 1
            for i in range(0, len(request), step):
                t.sendall(request[i:i + step])
                time.sleep(0.2)
            resp = http.client.HTTPResponse(t)
            resp.begin()
            assert (resp.status, json.loads(resp.read())) == (200, counts(accepted=1))
            t.close()
            served_meanwhile = len(good.sent)
        assert served_meanwhile >= 5

        # The stalled ones: 408 with a JSON error, then the connection closes.
        for s in socks:
            s.settimeout(max(1, 120 - (time.monotonic() - stalled_at)))
            data = b''
            while True:
                piece = s.recv(4096)
                if not piece:
                    break
                data += piece
            assert data.startswith(b'HTTP/1.1 408 '), data[:200]
            assert b'Connection: close\r\n' in data, data[:200]
            assert json.loads(data.split(b'\r\n\r\n', 1)[1]) == {
                'error': 'request not received in time'}
        elapsed = time.monotonic() - stalled_at
        print(f'stalled clients cut off after {elapsed:.1f} s')
        assert elapsed >= 25  # not before the deadline (30 s, some slack)
    finally:
        for s in socks:
            s.close()
    good.sent.append(trickled['id'])
    good.check(pg)
    assert reghook.running()


def test_header_floods(reghook, pg):
    """Headers are capped at 64 KiB in all: many headers or one huge one get
    431 (a JSON error) from the HTTP layer; a large but legal set is served as usual."""
    token = register(reghook, 'team-a')
    with GoodClient(reghook, token) as good:
        many = b''.join(b'X-Flood-%d: %s\r\n' % (i, b'v' * 40) for i in range(5000))
        assert exchange(reghook.port, http_bytes(token, envelope(event()), many))[0] == 431
        huge = b'X-Huge: ' + b'h' * 200_000 + b'\r\n'
        assert exchange(reghook.port, http_bytes(token, envelope(event()), huge))[0] == 431
        long_path = b'POST /' + b'e' * 100_000 + b' HTTP/1.1\r\nHost: x\r\n\r\n'
        assert exchange(reghook.port, long_path)[0] == 414
        # A 60 KB bearer token is just a wrong token.
        answer = exchange(reghook.port, http_bytes('t' * 60_000, envelope(event())))
        assert answer[0] == 401 and error_of(answer) == 'invalid token'
        # 500 headers, 25 KB: a normal request.
        legal_ev = event(tag='many-headers')
        legal = b''.join(b'X-Legal-%d: %s\r\n' % (i, b'v' * 30) for i in range(500))
        answer = exchange(reghook.port, http_bytes(token, envelope(legal_ev), legal))
        assert (answer[0], json.loads(answer[2])) == (200, counts(accepted=1))
        wait_until(lambda: len(good.sent) >= 5, timeout=30, msg='some good posts')
    good.sent.append(legal_ev['id'])
    good.check(pg)
    assert reghook.running()


def test_refused_tokens_do_not_flood_the_log(reghook_factory, pg):
    """A client looping on a wrong token (pipelined on one connection) gets
    its 401s, but the log has one line for them per 10 s, the next one
    saying how many it did not log."""
    reghook = reghook_factory({'log_level': 'info'})
    register(reghook, 'team-a')
    wrong = http_bytes('nope', envelope(event()))
    sock = socket.create_connection(('127.0.0.1', reghook.port), timeout=30)
    try:
        sock.sendall(wrong * 500)
        data = b''
        while data.count(b'HTTP/1.1 401') < 500:
            piece = sock.recv(65536)
            assert piece, data[-200:]
            data += piece
    finally:
        sock.close()
    refused = [line for line in reghook.log().splitlines() if 'token refused' in line]
    assert len(refused) == 1, refused[:3]
    time.sleep(10)
    assert exchange(reghook.port, http_bytes(None, envelope(event())))[0] == 401
    wait_until(lambda: 'POST /events with a missing token refused' in reghook.log(), timeout=5,
               msg='the next line')
    [line] = [line for line in reghook.log().splitlines() if 'missing token refused' in line]
    # Which client, what mends it, and how many lines were held back.
    assert 'refused, from 127.0.0.1:' in line and 'Authorization: [Bearer TOKEN]' in line and \
        line.endswith('(and 499 more such line(s) since the last one)'), line
    assert 'wrong token refused, from 127.0.0.1:' in refused[0] and \
        "'reghook registry rotate NAME'" in refused[0], refused[0]


ROUNDS = 48  # four quarters of 12


def test_rss_returns_to_its_level(reghook_factory, pg):
    """Many rounds of every bad input above, from several clients at once,
    against the build without sanitizers: the daemon's RSS afterwards is
    measured after one warm-up round and after each quarter of the rounds,
    and must not grow in every quarter (rss_grows_in_every_quarter). The
    figures are printed."""
    plain = os.environ.get('REGHOOK_PLAIN_BIN')
    if not plain:
        pytest.skip('REGHOOK_PLAIN_BIN not set (tests/run sets it)')
    daemon = reghook_factory({'log_level': 'info'}, bin=plain)
    token = register(daemon, 'team-a')
    pid = daemon.proc.pid

    inputs = [http_bytes(token, body) for _, body, _ in bad_envelopes()]
    inputs += [http_bytes(token, padded(1024 * 1024 + 1)[1]),
               http_bytes(token, b'{"events":[' + b','.join([b'{}'] * 100_000) + b']}'),
               http_bytes(token, envelope(event()),
                          b''.join(b'X-F-%d: %s\r\n' % (i, b'v' * 40) for i in range(5000))),
               http_bytes('t' * 60_000, envelope(event()))]

    def one_round(offset):
        """The status of each answer, one per input."""
        return [exchange(daemon.port, inputs[(i + offset) % len(inputs)])[0]
                for i in range(len(inputs))]

    # What each client thread of each round ended with: its statuses, or
    # the exception that ended it (a thread's exception is only a warning).
    outcomes = []
    lock = threading.Lock()

    def client(r, k):
        try:
            outcome = one_round(k)
        except Exception as e:
            outcome = e
        with lock:
            outcomes.append((r, k, outcome))

    with GoodClient(daemon, token) as good:
        warm_up = one_round(0)
        assert len(warm_up) == len(inputs) and set(warm_up) <= {400, 401, 413, 431}, warm_up
        rss = [read_rss_kib(pid)[0]]
        started = time.monotonic()
        for r in range(ROUNDS):
            threads = [threading.Thread(target=client, args=(r, k)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if (r + 1) % (ROUNDS // 4) == 0:
                rss.append(read_rss_kib(pid)[0])
        peak = read_rss_kib(pid)[1]
    requests = ROUNDS * 4 * len(inputs)
    print(f'bad-input RSS: {rss[0]} KiB after the warm-up round, then '
          f'{", ".join(str(k) for k in rss[1:])} KiB after each quarter of {requests} more '
          f'bad requests in {time.monotonic() - started:.0f} s (peak {peak} KiB); '
          f'{len(good.sent)} good posts served meanwhile')
    assert len(outcomes) == ROUNDS * 4
    failed = [(r, k, repr(o)) for r, k, o in outcomes if isinstance(o, Exception)]
    assert failed == [], f'{len(failed)} client threads failed, first: {failed[:3]}'
    wrong = [(r, k, o) for r, k, o in outcomes
             if len(o) != len(inputs) or not set(o) <= {400, 401, 413, 431}]
    assert wrong == [], f'{len(wrong)} rounds answered otherwise, first: {wrong[:3]}'
    good.check(pg)
    assert daemon.running()
    assert len(rss) == 5 and not rss_grows_in_every_quarter(rss), rss


def test_trickled_bodies_hold_about_what_they_count(reghook_factory, pg):
    """Bodies sent a byte per TCP segment (no token needed: the body comes
    before the token is read) held a block of the daemon's memory per
    segment, hundreds of times the bytes the 256 MiB budget of bodies
    counts: 400 such bodies of 2,500 bytes took 640 MB. Their bytes are
    copied into the body now. The build without sanitizers, whose memory
    is the allocator's alone."""
    daemon = reghook_factory(bin=os.environ.get('REGHOOK_PLAIN_BIN') or None)
    before, _ = read_rss_kib(daemon.proc.pid)
    head = (b'POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
            b'Content-Length: 1000000\r\n\r\n')
    socks = []
    try:
        for _ in range(200):
            s = socket.create_connection(('127.0.0.1', daemon.port), timeout=30)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(head)
            socks.append(s)
        for _ in range(1000):
            for s in socks:
                s.send(b'x')
            time.sleep(0.0005)
        time.sleep(0.5)  # what was sent is read
        after, _ = read_rss_kib(daemon.proc.pid)
        # 200 KB of body counted: before, 130 MB and more were held.
        assert after - before < 40_000, (before, after)
        assert daemon.get('/healthz')[0] == 200
    finally:
        for s in socks:
            s.close()
