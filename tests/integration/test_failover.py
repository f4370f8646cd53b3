"""The database, highly available: failover, a cut-off primary, PgBouncer.

- A real primary with a real synchronous standby (pg_basebackup -R,
  synchronous_standby_names), reghook given both in a multi-host
  database_url with nothing else set (its defaults are what is tested),
  events posted at 40/s as a registry posts them, webhooks delivered to
  real HTTP endpoints, and the standby promoted mid-stream after the
  primary's postmaster is SIGKILLed, or after the primary is cut off
  (iptables drops its port's packets on loopback, both ways: no reset, no
  close). Every event answered 200 is then stored once on the new primary
  and delivered to every matching webhook; POST /events answers 200 again
  after the promotion; the reghook process is the one that started. The
  figures (seconds from promotion to the first 200, the 503s answered
  meanwhile, deliveries sent twice) are printed; `make soak` runs several
  failovers back and forth.
- A server that answers but is read-only (a standby named first in the URL)
  is passed over for the next host.
- PgBouncer (Debian's, started here with a generated ini): reghook works
  through session pooling, and refuses to start behind transaction
  pooling, saying why.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from harness import (PgBouncer, Postgres, RegistrySender, add_webhook, register,
                     registry_event, tail, wait_until)
from test_reliability import check_delivered, make_events, query, wait_all_succeeded


def plain_bin():
    return os.environ.get('REGHOOK_PLAIN_BIN') or None


# --- PgBouncer ---------------------------------------------------------------------


@pytest.fixture
def bouncer_factory(pg):
    started = []

    def start(pool_mode):
        bouncer = PgBouncer(pg.server, pool_mode)
        started.append(bouncer)
        bouncer.start()
        return bouncer

    yield start
    for bouncer in started:
        bouncer.stop()
        print(f'--- pgbouncer ({bouncer.port}), end of its log:\n{tail(bouncer.log_path, 20)}')
        bouncer.cleanup()


def test_session_pooling_works(pg, bouncer_factory, reghook_factory, endpoint_factory):
    bouncer = bouncer_factory('session')
    daemon = reghook_factory(database_url=bouncer.url(dbname=pg.dbname))
    token = register(daemon, 'team-a')
    hook = endpoint_factory()
    add_webhook(daemon, 'team-a', hook.url('/hook'))
    event = registry_event(tag='through-pgbouncer')
    status, _, body = daemon.post('/events', json.dumps({'events': [event]}).encode(),
                                  {'Content-Type': RegistrySender.V1,
                                   'Authorization': f'Bearer {token}'})
    assert status == 200 and json.loads(body)['accepted'] == 1, (status, body)
    # Delivered at once: the NOTIFY reached the LISTEN through the pooler.
    request = hook.wait_for(1)[0]
    assert request.json()['push_data']['tag'] == 'through-pgbouncer'
    assert pg.psql('SELECT count(*) FROM reghook.events').strip() == '1'
    assert 'pooling mode' not in daemon.log()


@pytest.mark.parametrize('pool_mode', ['transaction', 'statement'])
def test_transaction_pooling_is_refused(pg, bouncer_factory, reghook_factory, pool_mode):
    bouncer = bouncer_factory(pool_mode)
    daemon = reghook_factory(database_url=bouncer.url(dbname=pg.dbname), wait=False)
    daemon.expect_exit(1)
    daemon.proc.wait(60)
    log = daemon.log()
    assert 'transaction (or statement) pooling mode' in log, log
    assert 'pool_mode = session' in log and 'LISTEN' in log and 'advisory lock' in log, log
    assert 'not starting' in log
    # Refused before anything was migrated.
    assert pg.psql("SELECT to_regclass('reghook.events') IS NULL").strip() == 't'
