"""Operations: GET /metrics (checked strictly against the Prometheus text
format by a parser of its own, and seen to move after a real registry push
and real deliveries), SIGHUP reloads (what changes, what needs a restart, a
bad file, a delivery in flight across a reload) and the service manager's
notify protocol over a real unix datagram socket."""

import http.client
import json
import math
import os
import re
import signal
import socket
import subprocess
import time
import uuid

import pytest

from harness import Reghook, Response, add_webhook, child_env, register, wait_until
from test_delivery import attempts, event, post, rows

CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

# --- a strict parser of the text exposition format, version 0.0.4 --------------

NAME = r'[a-zA-Z_:][a-zA-Z0-9_:]*'
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*'
SAMPLE = re.compile(rf'^({NAME})(?:\{{(.*)\}})? (\S+)$')
LABEL_PAIR = re.compile(rf'({LABEL})="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def parse_value(text):
    if text in ('+Inf', '-Inf', 'NaN'):
        return float(text.replace('Inf', 'inf').replace('NaN', 'nan'))
    assert re.fullmatch(r'-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?', text), f'bad value {text!r}'
    return float(text)


def parse_labels(text):
    labels = {}
    pos = 0
    while pos < len(text):
        m = LABEL_PAIR.match(text, pos)
        assert m, f'bad labels at {text[pos:]!r}'
        name, raw = m.group(1), m.group(2)
        assert name not in labels, f'label {name} twice'
        assert not name.startswith('__'), name
        labels[name] = re.sub(r'\\(.)', lambda e: '\n' if e.group(1) == 'n' else e.group(1), raw)
        pos = m.end()
        if m.group(3) == '':
            assert pos == len(text)
    return labels


def parse_metrics(text):
    """{family: {'type', 'help', 'samples': [(name, labels, value)]}}, checking
    the format: every sample belongs to the family declared just above it
    with HELP then TYPE, names and labels valid, no series twice, counters
    end in _total, histogram buckets are cumulative, ordered and end in
    +Inf equal to _count, with a _sum."""
    assert text.endswith('\n'), 'the last line must end with a newline'
    families = {}
    current = None
    seen = set()
    for line in text[:-1].split('\n'):
        assert line, 'empty line'
        if line.startswith('# HELP '):
            name, _, help_text = line[7:].partition(' ')
            assert re.fullmatch(NAME, name), name
            assert name not in families, f'{name} declared twice'
            assert not re.search(r'\\[^\\n]', help_text), f'bad escape in HELP of {name}'
            families[name] = {'help': help_text, 'type': None, 'samples': []}
            current = name
            continue
        if line.startswith('# TYPE '):
            name, _, kind = line[7:].partition(' ')
            assert name == current and families[name]['type'] is None, f'TYPE {name} misplaced'
            assert kind in ('counter', 'gauge', 'histogram'), kind
            families[name]['type'] = kind
            if kind == 'counter':
                assert name.endswith('_total'), f'counter {name} must end in _total'
            continue
        assert not line.startswith('#'), f'unexpected comment {line!r}'
        m = SAMPLE.match(line)
        assert m, f'bad sample line {line!r}'
        name, labels, value = m.group(1), parse_labels(m.group(2) or ''), parse_value(m.group(3))
        assert current and families[current]['type'], f'{name} before its HELP and TYPE'
        kind = families[current]['type']
        allowed = ([current + s for s in ('_bucket', '_sum', '_count')] if kind == 'histogram'
                   else [current])
        assert name in allowed, f'sample {name} under family {current}'
        key = (name, tuple(sorted(labels.items())))
        assert key not in seen, f'series {key} twice'
        seen.add(key)
        if kind == 'counter':
            assert value >= 0, line
        families[current]['samples'].append((name, labels, value))
    for name, fam in families.items():
        assert fam['type'], f'{name} has no TYPE'
        if fam['type'] == 'histogram':
            check_histogram(name, fam['samples'])
    return families


def check_histogram(name, samples):
    groups = {}
    for sname, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != 'le'))
        g = groups.setdefault(rest, {'buckets': [], 'sum': None, 'count': None})
        if sname.endswith('_bucket'):
            assert 'le' in labels, f'{sname} without le'
            g['buckets'].append((parse_value(labels['le']), value))
        elif sname.endswith('_sum'):
            g['sum'] = value
        else:
            g['count'] = value
    assert groups, f'histogram {name} has no series'
    for rest, g in groups.items():
        bounds = [b for b, _ in g['buckets']]
        counts = [c for _, c in g['buckets']]
        assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), bounds
        assert bounds and math.isinf(bounds[-1]), f'{name}{rest}: no +Inf bucket'
        assert counts == sorted(counts), f'{name}{rest}: buckets not cumulative: {counts}'
        assert g['count'] is not None and g['sum'] is not None, f'{name}{rest}: _sum or _count'
        assert counts[-1] == g['count'], f'{name}{rest}: +Inf {counts[-1]} != count {g["count"]}'


def scrape(daemon):
    status, headers, body = daemon.get('/metrics')
    assert status == 200, body
    assert headers['content-type'] == CONTENT_TYPE
    return parse_metrics(body.decode('utf-8'))


def find(families, name, **labels):
    """The value of one series, or None when it is not exported; for a
    histogram, name it with its suffix."""
    family = name
    for suffix in ('_bucket', '_sum', '_count'):
        if name.endswith(suffix) and name[:-len(suffix)] in families:
            family = name[:-len(suffix)]
    assert family in families, f'no metric family {family}'
    for sname, slabels, v in families[family]['samples']:
        if sname == name and slabels == labels:
            return v
    return None


def value(families, name, **labels):
    """The value of one series, which must be exported: an absent series is
    not a 0 (a counter that is never written out would pass as one)."""
    v = find(families, name, **labels)
    assert v is not None, f'series {name}{labels} is not exported'
    return v


def wait_metric(daemon, name, at_least, timeout=30, **labels):
    """Waits until the series is exported with a value of at least at_least."""
    def reached():
        v = find(scrape(daemon), name, **labels)
        return v is not None and v >= at_least
    return wait_until(reached, timeout=timeout, interval=0.2, msg=f'{name}{labels} >= {at_least}')


# --- the parser itself refuses what it must ------------------------------------


@pytest.mark.parametrize('text', [
    'x 1\n',                                                     # no HELP/TYPE
    '# HELP x h\n# TYPE x counter\nx_total 1\n',                   # counter not _total
    '# HELP a_total h\n# TYPE a_total counter\na_total{b="1} 1\n',  # broken label
    '# HELP h h\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\n'
    'h_sum 1\nh_count 1\n',                                        # not cumulative
    '# HELP h h\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',  # no +Inf
    '# HELP g h\n# TYPE g gauge\ng 1\ng 2\n',                     # series twice
    '# HELP g h\n# TYPE g gauge\ng one\n',                        # not a number
])
def test_the_format_checker_refuses_bad_text(text):
    with pytest.raises(AssertionError):
        parse_metrics(text)


def test_an_absent_series_is_not_zero():
    families = parse_metrics('# HELP a_total h\n# TYPE a_total counter\n'
                             'a_total{outcome="seen"} 0\n')
    assert value(families, 'a_total', outcome='seen') == 0
    with pytest.raises(AssertionError, match='not exported'):
        value(families, 'a_total', outcome='never')
    with pytest.raises(AssertionError, match='no metric family'):
        value(families, 'b_total')


# --- GET /metrics ----------------------------------------------------------------


def test_metrics_format_and_families(reghook):
    status, headers, body = reghook.request('HEAD', '/metrics')
    assert status == 200 and headers['content-type'] == CONTENT_TYPE
    families = scrape(reghook)
    expected = {
        'reghook_events_total': 'counter', 'reghook_deliveries_total': 'counter',
        'reghook_delivery_attempts_total': 'counter',
        'reghook_delivery_duration_seconds': 'histogram',
        'reghook_deliveries_in_flight': 'gauge', 'reghook_deliveries_pending': 'gauge',
        'reghook_deliveries_due': 'gauge', 'reghook_http_requests_total': 'counter',
        'reghook_database_up': 'gauge', 'reghook_config_reloads_total': 'counter',
        'reghook_build_info': 'gauge', 'reghook_events_queued': 'gauge',
        'reghook_events_storing': 'gauge',
    }
    for name, kind in expected.items():
        assert families[name]['type'] == kind, name
    for outcome in ('accepted', 'duplicate', 'ignored', 'rejected', 'unrouted'):
        assert value(families, 'reghook_events_total', outcome=outcome) == 0
    assert value(families, 'reghook_database_up') == 1
    assert value(families, 'reghook_deliveries_in_flight') == 0
    assert value(families, 'reghook_events_queued') == 0
    assert value(families, 'reghook_events_storing') == 0
    assert families['reghook_build_info']['samples'][0][1]['version']
    # The readiness probes of wait_ready were counted; an unknown path is "other".
    assert value(families, 'reghook_http_requests_total', route='/readyz', method='GET',
                 code='200') >= 1
    assert reghook.get('/no/such/path')[0] == 404
    families = scrape(reghook)
    assert value(families, 'reghook_http_requests_total', route='other', method='GET',
                 code='404') == 1
    assert value(families, 'reghook_http_requests_total', route='/metrics', method='GET',
                 code='200') >= 1


def test_metrics_move_after_a_registry_push(reghook, pg, registry_factory, endpoint_factory):
    token = register(reghook, 'team-a')
    good, failing = endpoint_factory(), endpoint_factory()
    failing.respond(503)
    add_webhook(reghook, 'team-a', good.url('/hook'))
    add_webhook(reghook, 'team-a', failing.url('/hook'))
    before = scrape(reghook)
    assert value(before, 'reghook_delivery_duration_seconds_count') == 0

    registry = registry_factory(reghook.url('/events'), token)
    registry.push('team-a/app:1.0')
    good.wait_for(1, timeout=30)
    failing.wait_for(1, timeout=30)

    wait_metric(reghook, 'reghook_deliveries_total', 1, outcome='succeeded')
    wait_metric(reghook, 'reghook_deliveries_total', 1, outcome='retried')
    # The tagged manifest is stored; the registry's blob pushes are ignored.
    # Its deliveries start as ingest() returns; the event counts as accepted,
    # and the registry is answered, once its commit lands: it may come after.
    wait_metric(reghook, 'reghook_events_total', 1, outcome='accepted')
    wait_metric(reghook, 'reghook_http_requests_total', 1, route='/events', method='POST',
                code='200')
    after = scrape(reghook)
    assert value(after, 'reghook_events_total', outcome='ignored') >= 1
    assert value(after, 'reghook_delivery_attempts_total', error='none') >= 1
    assert value(after, 'reghook_delivery_attempts_total', error='http') >= 1
    assert value(after, 'reghook_delivery_duration_seconds_count') >= 2
    assert value(after, 'reghook_delivery_duration_seconds_bucket', le='+Inf') >= 2


def test_events_by_outcome_and_queue_gauges(reghook_factory, pg, endpoint_factory):
    # The slow answers outlast no request timeout: nothing is retried meanwhile.
    daemon = reghook_factory({'max_in_flight_per_webhook': 1, 'request_timeout': '300s'})
    token = register(daemon, 'team-a', scope='team-a')
    daemon.run_cli('namespace', 'add', 'team-b')
    slow = endpoint_factory()
    slow.respond(200, delay=60)
    add_webhook(daemon, 'team-a', slow.url('/slow'))

    first = event()
    post(daemon, token, first, event(tag='2'), event(tag='3'))
    body = json.dumps({'events': [first, event(repository='other/app'),
                                  event(repository='team-b/app'),
                                  event(action='pull')]})
    status, _, out = daemon.post('/events', body.encode(), {
        'Content-Type': 'application/json', 'Authorization': f'Bearer {token}'})
    assert status == 200, out
    assert json.loads(out) == {'accepted': 0, 'duplicates': 1, 'ignored': 2, 'rejected': 1}

    families = scrape(daemon)
    assert value(families, 'reghook_events_total', outcome='accepted') == 3
    assert value(families, 'reghook_events_total', outcome='duplicate') == 1
    assert value(families, 'reghook_events_total', outcome='unrouted') == 1
    assert value(families, 'reghook_events_total', outcome='rejected') == 1
    assert value(families, 'reghook_events_total', outcome='ignored') == 1

    # One request runs (per-webhook limit 1); two wait in the database.
    slow.wait_for(1, timeout=30)
    wait_metric(daemon, 'reghook_deliveries_pending', 2)
    families = scrape(daemon)
    assert value(families, 'reghook_deliveries_due') == 2
    assert value(families, 'reghook_deliveries_in_flight') == 1
    assert value(families, 'reghook_queue_counted_timestamp_seconds') > 0
    # A delivery whose next attempt is later waits, but is not due.
    pg.psql("""UPDATE reghook.deliveries SET next_attempt_at = now() + interval '1 hour'
                WHERE id = (SELECT id FROM reghook.deliveries WHERE status = 'pending'
                            LIMIT 1)""")
    wait_until(lambda: find(scrape(daemon), 'reghook_deliveries_due') == 1, timeout=30,
               interval=0.2, msg='one delivery due')
    assert value(scrape(daemon), 'reghook_deliveries_pending') == 2
    slow.stop()  # answers the waiting request, so the daemon stops cleanly


# --- SIGHUP ----------------------------------------------------------------------


def reload(daemon, **changes):
    """Rewrites the config file with the changes, sends SIGHUP and waits
    until the daemon has logged the outcome; returns the log lines it wrote
    for this reload."""
    daemon.config.update(changes)
    daemon.write_config()
    return hup(daemon)


def hup(daemon):
    marks = ('configuration reloaded', 'configuration reload failed')
    count = lambda: sum(daemon.log().count(m) for m in marks)  # noqa: E731
    before, start = count(), len(daemon.log())
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: count() > before, timeout=30, msg='the reload to be logged')
    return daemon.log()[start:]


DB_CONNECTIONS = ('receiver', 'claim', 'record', 'control')


def test_database_failures_are_counted_by_connection_and_their_lines_held_back(reghook_factory,
                                                                              pg):
    daemon = reghook_factory()
    token = register(daemon, 'team-a')
    families = scrape(daemon)
    for connection in DB_CONNECTIONS:
        for kind in ('refused', 'lost'):
            assert value(families, 'reghook_database_errors_total', connection=connection,
                         kind=kind) == 0, (connection, kind)

    # The database refuses every event (a full disk, as its message says).
    pg.psql("""CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'
                     USING ERRCODE = '53100'; END $$;
               CREATE TRIGGER refuse BEFORE INSERT ON reghook.events
               FOR EACH ROW EXECUTE FUNCTION public.refuse()""")
    started = time.monotonic()
    for _ in range(20):
        status, _, out = daemon.post('/events', json.dumps({'events': [event()]}).encode(),
                                     {'Content-Type': 'application/json',
                                      'Authorization': f'Bearer {token}'})
        assert status == 503, out
    took = time.monotonic() - started
    families = scrape(daemon)
    assert value(families, 'reghook_database_errors_total', connection='receiver',
                 kind='refused') >= 20
    # One line per 10 s of refusals, not one per request (20 before).
    lines = [line for line in daemon.log().splitlines() if 'No space left on device' in line]
    assert 1 <= len(lines) <= 1 + int(took // 10), lines

    # Nothing of it is lost: once the database takes them, the registry's retries are stored.
    pg.psql('DROP TRIGGER refuse ON reghook.events')
    post(daemon, token, event())
    # An event the database refuses for itself is dropped (400), and each
    # such is said, whatever lines of failures were held back just before.
    pg.psql("""CREATE FUNCTION public.refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN IF NEW.repository = 'team-a/bad' THEN
                     RAISE EXCEPTION 'no bad repositories' USING ERRCODE = '23514'; END IF;
               RETURN NEW; END $$;
               CREATE TRIGGER refuse_bad BEFORE INSERT ON reghook.events
               FOR EACH ROW EXECUTE FUNCTION public.refuse_bad()""")
    status, _, out = daemon.post('/events', json.dumps(
        {'events': [event(repository='team-a/bad')]}).encode(),
        {'Content-Type': 'application/json', 'Authorization': f'Bearer {token}'})
    assert status == 400 and b'no bad repositories' in out, out
    assert 'refused by the database: no bad repositories' in daemon.log()
    pg.psql('DROP TRIGGER refuse_bad ON reghook.events')

    # The claims fail (the function gone: a botched manual upgrade), once a poll.
    claim = 'reghook.claim_deliveries(text, integer, integer, jsonb, integer)'
    pg.psql(f'ALTER FUNCTION {claim} RENAME TO claim_deliveries_away')
    started = time.monotonic()
    wait_metric(daemon, 'reghook_database_errors_total', 3, connection='claim', kind='refused')
    pg.psql('ALTER FUNCTION reghook.claim_deliveries_away(text, integer, integer, jsonb, '
            'integer) RENAME TO claim_deliveries')
    took = time.monotonic() - started
    lines = [line for line in daemon.log().splitlines() if 'claiming deliveries:' in line]
    assert 1 <= len(lines) <= 1 + int(took // 10), lines

    # Every connection lost at once: each counts it, and comes back.
    pg.psql("""SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE datname = current_database() AND pid <> pg_backend_pid()""")
    for connection in DB_CONNECTIONS:
        wait_metric(daemon, 'reghook_database_errors_total', 1, connection=connection,
                    kind='lost')
    daemon.wait_ready()
    post(daemon, token, event())
    families = scrape(daemon)
    for connection in ('record', 'control'):
        assert value(families, 'reghook_database_errors_total', connection=connection,
                     kind='refused') == 0, connection


def test_reload_log_level(reghook_factory, pg):
    daemon = reghook_factory({'log_level': 'info'})
    daemon.get('/quiet-before')
    log = reload(daemon, log_level='debug')
    assert 'configuration reloaded: log_level' in log
    daemon.get('/loud-after')
    wait_until(lambda: 'GET /loud-after' in daemon.log(), msg='a debug line')
    assert 'GET /quiet-before' not in daemon.log()
    families = scrape(daemon)
    assert value(families, 'reghook_config_reloads_total', result='success') == 1
    assert value(families, 'reghook_config_last_reload_successful') == 1
    # A reload that quietens the log still says what it changed.
    log = reload(daemon, log_level='warn')
    assert 'configuration reloaded: log_level' in log, log


def test_a_reload_reads_regular_files_only(reghook_factory, pg, tmp_path):
    """A config file (or a REGHOOK_<KEY>_FILE) that is a FIFO or a pipe at
    the reload is refused with the running configuration kept: a FIFO with
    no writer held the whole daemon (no /healthz, no events) until something
    wrote to it, and a pipe given at start (--config <(...)) read as empty,
    every key back to its default."""
    secret = tmp_path / 'body-limit'
    secret.write_text('2KiB\n')
    daemon = reghook_factory(env={'REGHOOK_MAX_REQUEST_BODY_FILE': str(secret)})
    assert daemon.post('/events', b'x' * 5000)[0] == 413
    for path in (daemon.config_path, str(secret)):
        with open(path) as f:
            kept = f.read()
        os.remove(path)
        os.mkfifo(path)
        try:
            log = hup(daemon)
            assert 'configuration reload failed: ' in log and \
                f'cannot read {path}: not a regular file, which is read once, at start: ' \
                'restart reghook to read it again' in log, log
            assert daemon.get('/healthz', timeout=5)[0] == 200
            assert daemon.post('/events', b'x' * 5000, timeout=5)[0] == 413
        finally:
            os.remove(path)
            with open(path, 'w') as f:
                f.write(kept)
    families = scrape(daemon)
    assert value(families, 'reghook_config_reloads_total', result='failure') == 2
    assert value(families, 'reghook_config_last_reload_successful') == 0
    assert 'configuration reloaded' in hup(daemon)


def test_reload_turning_private_targets_off_holds_for_kept_alive_connections(
        reghook_factory, pg, endpoint_factory):
    """A connection to a private target (loopback here), kept alive from
    before a reload that turned allow_private_targets off, serves no
    request started after it: the guard checks the address of the
    connection a request goes out on, reused from libcurl's cache or new."""
    daemon = reghook_factory({'retry_schedule': '0,1h'})
    token = register(daemon, 'team-a')
    hook = endpoint_factory()
    webhook_id = add_webhook(daemon, 'team-a', hook.url('/hook'))
    post(daemon, token, event(tag='before'))
    hook.wait_for(1)
    wait_until(lambda: len(attempts(pg, webhook_id)) == 1, msg='the first attempt')
    assert 'configuration reloaded: allow_private_targets' in \
        reload(daemon, allow_private_targets=False)
    post(daemon, token, event(tag='after'))
    wait_until(lambda: len(attempts(pg, webhook_id)) == 2, msg='the second attempt')
    first, second = attempts(pg, webhook_id)
    assert (first['response_status'], first['error_class']) == (200, None)
    assert (second['response_status'], second['error_class']) == (None, 'blocked'), second
    assert 'refused (allow_private_targets is off)' in second['error_message']
    assert len(hook.requests) == 1


def test_allow_private_networks_opens_only_the_networks_it_lists(reghook_factory, pg,
                                                                endpoint_factory):
    """With allow_private_targets off, allow_private_networks lets webhooks
    reach the networks it lists and no other private address (127.0.0.2/32
    here: 127.0.0.1 stays refused, as a metadata service would); a reload
    changes the list for the next requests."""
    daemon = reghook_factory({'allow_private_targets': False,
                              'allow_private_networks': '10.1.0.0/16, 127.0.0.2, fd00::/8',
                              'retry_schedule': '0,1h'})
    token = register(daemon, 'team-a')
    listed, other = endpoint_factory('127.0.0.2'), endpoint_factory('127.0.0.1')
    listed_id = add_webhook(daemon, 'team-a', listed.url('/hook'))
    other_id = add_webhook(daemon, 'team-a', other.url('/hook'))
    post(daemon, token, event(tag='1'))
    listed.wait_for(1)
    wait_until(lambda: len(attempts(pg, other_id)) == 1 and len(attempts(pg, listed_id)) == 1,
               msg='both first attempts')
    [refused] = attempts(pg, other_id)
    assert refused['error_class'] == 'blocked', refused
    assert refused['error_message'] == (
        'target address is loopback; refused (allow_private_targets is off, and '
        'allow_private_networks does not hold it)'), refused
    assert attempts(pg, listed_id)[0]['response_status'] == 200
    assert other.requests == []

    assert 'configuration reloaded: allow_private_networks' in \
        reload(daemon, allow_private_networks='127.0.0.0/8')
    post(daemon, token, event(tag='2'))
    other.wait_for(1)
    listed.wait_for(2)
    assert 'configuration reloaded: allow_private_networks' in \
        reload(daemon, allow_private_networks='')
    post(daemon, token, event(tag='3'))
    wait_until(lambda: len(attempts(pg, listed_id)) == 3, msg='the third attempt')
    assert attempts(pg, listed_id)[-1]['error_message'] == \
        'target address is loopback; refused (allow_private_targets is off)'
    assert len(listed.requests) == 2 and len(other.requests) == 1


def test_reload_max_in_flight(reghook_factory, pg, endpoint_factory):
    daemon = reghook_factory({'max_in_flight': 1, 'request_timeout': '300s'})
    token = register(daemon, 'team-a')
    slow = endpoint_factory()
    slow.respond(200, delay=60)
    for i in range(3):
        add_webhook(daemon, 'team-a', slow.url(f'/slow/{i}'))
    post(daemon, token, event())
    slow.wait_for(1, timeout=30)
    time.sleep(2)  # room for a wrong second request to show up
    assert len(slow.requests) == 1
    reload(daemon, max_in_flight=3)
    slow.wait_for(3, timeout=30)
    assert value(scrape(daemon), 'reghook_deliveries_in_flight') == 3
    slow.stop()


def test_reload_request_timeout_and_retry_schedule(reghook_factory, pg, endpoint_factory):
    daemon = reghook_factory({'retry_schedule': '0,1h', 'request_timeout': '30s'})
    token = register(daemon, 'team-a')
    target = endpoint_factory()
    target.respond(500)
    hook = add_webhook(daemon, 'team-a', target.url('/t'))
    post(daemon, token, event())
    first = wait_until(lambda: rows(pg, """
        SELECT extract(epoch FROM next_attempt_at - now())::float8 AS wait
        FROM reghook.deliveries WHERE status = 'pending' AND attempts = 1"""),
        timeout=30, msg='a retry scheduled')
    assert first[0]['wait'] > 40 * 60  # the hour of the old schedule (less 20% jitter)

    log = reload(daemon, retry_schedule='0,1s,1s', request_timeout='1s')
    assert 'request_timeout' in log and 'retry_schedule' in log
    # The new schedule: a failure now is retried within seconds, and the
    # new timeout cuts a slow answer.
    target.script([Response(200, delay=5), 500])
    target.respond(200)
    post(daemon, token, event(tag='2'))
    got = wait_until(lambda: [a for a in attempts(pg, hook) if a['attempt'] >= 2],
                     timeout=30, msg='the retry on the new schedule')
    first_try = [a for a in attempts(pg, hook) if a['attempt'] == 1][-1]
    assert first_try['error_class'] == 'timeout', first_try
    assert got[0]['response_status'] in (500, 200)


def test_delivery_in_flight_completes_across_a_reload(reghook_factory, pg, endpoint_factory):
    daemon = reghook_factory({'request_timeout': '30s'})
    token = register(daemon, 'team-a')
    slow = endpoint_factory()
    slow.respond(200, b'done', delay=4)
    hook = add_webhook(daemon, 'team-a', slow.url('/slow'))
    # A client connection held open across the reload.
    conn = http.client.HTTPConnection('127.0.0.1', daemon.port, timeout=30)
    try:
        conn.request('GET', '/healthz')
        assert conn.getresponse().read() and True
        post(daemon, token, event())
        slow.wait_for(1, timeout=30)
        # A timeout shorter than the answer's delay: the running request keeps its own.
        reload(daemon, request_timeout='1s')
        conn.request('GET', '/healthz')
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read()
    finally:
        conn.close()
    done = wait_until(lambda: [a for a in attempts(pg, hook) if a['response_status']],
                      timeout=30, msg='the attempt to be recorded')
    assert len(attempts(pg, hook)) == 1
    assert done[0]['response_status'] == 200 and done[0]['error_class'] is None
    assert rows(pg, 'SELECT status FROM reghook.deliveries') == [{'status': 'succeeded'}]


def test_a_bad_file_keeps_the_running_configuration(reghook_factory, pg):
    daemon = reghook_factory({'log_level': 'info'})
    with open(daemon.config_path, 'a') as f:
        f.write('log_level = debug\nmax_in_flight = lots\n')
    log = hup(daemon)
    assert 'configuration reload failed' in log and 'max_in_flight' in log
    assert daemon.get('/healthz')[0] == 200
    daemon.get('/still-quiet')
    families = scrape(daemon)
    assert value(families, 'reghook_config_reloads_total', result='failure') == 1
    assert value(families, 'reghook_config_last_reload_successful') == 0
    assert 'GET /still-quiet' not in daemon.log()
    # A good file again: reloads as usual.
    daemon.write_config()
    assert 'configuration reloaded' in hup(daemon)
    assert value(scrape(daemon), 'reghook_config_last_reload_successful') == 1


def test_keys_read_at_start_are_reported_and_kept(reghook_factory, pg):
    daemon = reghook_factory()
    old_port = daemon.port
    other = socket.socket()
    other.bind(('127.0.0.1', 0))
    new_port = other.getsockname()[1]
    other.close()
    log = reload(daemon, listen=f'127.0.0.1:{new_port}', db_connections=5,
                 max_events_per_envelope=7)
    assert 'listen changed' in log and 'restart' in log
    assert 'db_connections changed' in log
    assert 'configuration reloaded: max_events_per_envelope' in log
    assert daemon.get('/healthz')[0] == 200  # still on the old port
    assert daemon.port == old_port
    with pytest.raises(OSError):
        socket.create_connection(('127.0.0.1', new_port), timeout=2).close()


def test_flags_keep_winning_over_a_reloaded_file(pg):
    """A flag given at start wins over the file, at start and after a reload."""
    daemon = Reghook(pg.url(), {'log_level': 'debug'})
    try:
        with open(daemon.log_path, 'ab') as log:
            daemon.proc = subprocess.Popen(
                [daemon.bin, 'serve', '--config', daemon.config_path, '--log-level', 'info'],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=daemon.dir, env=child_env(), start_new_session=True)
        daemon.wait_ready()
        daemon.get('/not-logged-1')
        log = reload(daemon, log_level='debug', max_in_flight=9)
        assert 'configuration reloaded: max_in_flight' in log  # log_level did not change
        daemon.get('/not-logged-2')
        assert 'GET /not-logged' not in daemon.log()
    finally:
        daemon.stop()
        problems = daemon.problems()
        daemon.cleanup()
    assert not problems, problems


# --- the service manager's notify socket ----------------------------------------


def receive(sock, timeout=30):
    sock.settimeout(timeout)
    return sock.recv(4096).decode()


@pytest.mark.parametrize('abstract', [False, True], ids=['path', 'abstract'])
def test_notify_socket_start_reload_stop(reghook_factory, pg, tmp_path, abstract):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f'reghook-test-{uuid.uuid4().hex}'
        sock.bind('\0' + name)
        address = '@' + name
    else:
        address = str(tmp_path / 'notify.sock')
        sock.bind(address)
    try:
        daemon = reghook_factory(env={'NOTIFY_SOCKET': address})
        messages = []
        while not any('READY=1' in m for m in messages):
            messages.append(receive(sock))
        assert all(m.startswith('STATUS=') for m in messages[:-1]), messages
        ready = messages[-1].split('\n')
        assert ready[0] == 'READY=1' and ready[1].startswith('STATUS='), ready
        assert f'127.0.0.1:{daemon.port}' in ready[1]

        before = time.monotonic()
        daemon.proc.send_signal(signal.SIGHUP)
        reloading = receive(sock).split('\n')
        assert reloading[0] == 'RELOADING=1', reloading
        assert reloading[1].startswith('MONOTONIC_USEC=')
        usec = int(reloading[1].split('=', 1)[1])
        assert before * 1e6 <= usec <= time.monotonic() * 1e6
        again = receive(sock).split('\n')
        assert again[0] == 'READY=1' and 'configuration reloaded' in again[1], again

        daemon.stop()
        stopping = receive(sock).split('\n')
        assert stopping[0] == 'STOPPING=1', stopping
        assert daemon.proc.returncode == 0
    finally:
        sock.close()


def test_notify_ready_waits_for_the_database(reghook_factory, pg_own, tmp_path):
    """Started before its database, reghook reports that it waits, and is
    READY only once the database is there and migrated."""
    address = str(tmp_path / 'notify.sock')
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    try:
        pg_own.stop()
        daemon = reghook_factory(wait=False, env={'NOTIFY_SOCKET': address})
        messages = [receive(sock)]
        while not any(m.startswith('STATUS=waiting for the database') for m in messages):
            messages.append(receive(sock))
        assert not any('READY=1' in m for m in messages), messages
        pg_own.start()
        while 'READY=1' not in messages[-1]:
            messages.append(receive(sock, timeout=60))
        assert daemon.get('/readyz')[0] == 200
        # A reload while the database is away again says so, not that it serves.
        pg_own.stop()
        wait_until(lambda: daemon.get('/readyz')[0] == 503, timeout=15, msg='not ready')
        daemon.proc.send_signal(signal.SIGHUP)
        messages = [receive(sock)]
        while 'READY=1' not in messages[-1]:
            messages.append(receive(sock, timeout=15))
        assert 'STATUS=configuration reloaded; waiting for the database' in messages[-1], messages
        assert 'serving on' not in messages[-1], messages
        pg_own.start()
    finally:
        sock.close()


def test_a_host_name_that_is_not_utf8_names_the_instance_printably(reghook_factory, pg,
                                                                   endpoint_factory, tmp_path):
    """The default instance_name is host:pid. A host name in Latin-1 bytes
    made every lease and ingest() fail (invalid UTF-8) while /readyz said
    ready: no event stored, none delivered. Its bytes that are not UTF-8 are
    now '?'; a set instance_name must be printable UTF-8 (test_foundation)."""
    wrapper = tmp_path / 'reghook-on-a-latin1-host'
    # hostname(1) refuses such a name; the kernel takes it.
    wrapper.write_text("#!/bin/sh\n"
                       "exec unshare --uts /usr/bin/python3 -c 'import os, socket, sys; "
                       "socket.sethostname(b\"h\\xe9llo\"); os.execv(sys.argv[1], sys.argv[1:])' "
                       f"{os.environ['REGHOOK_BIN']} \"$@\"\n")
    wrapper.chmod(0o755)
    daemon = reghook_factory(bin=str(wrapper))
    token = register(daemon, 'team-a')
    hook = endpoint_factory()
    add_webhook(daemon, 'team-a', hook.url('/h'))
    post(daemon, token, event())  # stored: 200, the event accepted
    hook.wait_for(1, timeout=30)
    wait_until(lambda: rows(pg, 'SELECT instance FROM reghook.delivery_attempts'), timeout=30,
               msg='the attempt written')
    assert rows(pg, 'SELECT instance FROM reghook.delivery_attempts') == \
        [{'instance': f'h?llo:{daemon.proc.pid}'}]


def test_a_failed_load_of_the_registry_sources_is_tried_again(reghook_factory, pg):
    """A reload of the registry sources that failed (a lock a person held, the
    query cancelled) left the receiver refusing every event (503, 'database
    unavailable') until the table changed again or the connection came
    back, for good on a quiet system: it is tried again after 1 s."""
    daemon = reghook_factory()
    token = register(daemon, 'team-a')
    post(daemon, token, event())
    holder = pg.connect()
    cur = holder.cursor()
    cur.execute('BEGIN')
    cur.execute('LOCK TABLE reghook.registry_sources IN ACCESS EXCLUSIVE MODE')
    pg.psql('NOTIFY reghook_sources')  # what registry add, rotate and remove send
    waiting = ("FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
               "AND query LIKE '%FROM reghook.registry_sources%' AND pid <> pg_backend_pid()")
    wait_until(lambda: pg.psql(f'SELECT count(*) {waiting}').strip() == '1', timeout=10,
               msg='the reload waiting for the lock')
    pg.psql(f'SELECT pg_cancel_backend(pid) {waiting}')
    cur.execute('COMMIT')
    wait_until(lambda: 'loading registry sources: canceling statement' in daemon.log(),
               timeout=10, msg='the failed load logged')
    wait_until(lambda: daemon.get('/readyz')[0] == 200, timeout=10, msg='ready again')
    post(daemon, token, event())
    assert 'events are refused until they load, tried again in 1 s' in daemon.log()


def test_readyz_tries_a_failing_warm_up_again_at_most_once_a_second(reghook_factory, pg):
    """While a receiver connection could not run ingest() (a right revoked,
    a function missing), each GET /readyz started another try and logged its
    failure: one client asking in a loop wrote about 1,800 lines a second."""
    daemon = reghook_factory()
    pg.psql('ALTER FUNCTION reghook.ingest(jsonb, text, integer, integer, jsonb, integer) '
            'RENAME TO ingest_away')
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    wait_until(lambda: 'ingest() failed' in daemon.log(), timeout=15, msg='a warm-up failed')
    before = daemon.log().count('ingest() failed')
    start = time.monotonic()
    while time.monotonic() - start < 2:
        assert daemon.get('/readyz')[0] == 503
    tries = daemon.log().count('ingest() failed') - before
    # Two connections, at most one try each a second.
    assert tries <= 6, tries
    pg.psql('ALTER FUNCTION reghook.ingest_away(jsonb, text, integer, integer, jsonb, integer) '
            'RENAME TO ingest')
    wait_until(lambda: daemon.get('/readyz')[0] == 200, timeout=10, msg='ready again')


def test_readyz_says_the_database_refused_rather_than_was_not_reached(reghook_factory, pg):
    """A readiness query the database refused (a right revoked, a table
    gone) was answered 'database not reachable', sending an operator to
    look at the network."""
    daemon = reghook_factory()
    pg.psql('ALTER TABLE reghook.schema_migrations RENAME TO schema_migrations_away')
    try:
        status, _, body = daemon.get('/readyz')
        assert status == 503 and b'database refused the readiness query' in body, body
    finally:
        pg.psql('ALTER TABLE reghook.schema_migrations_away RENAME TO schema_migrations')
    assert daemon.get('/readyz')[0] == 200
