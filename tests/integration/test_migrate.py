"""reghook migrate as an upgrade meets it: the numbered migrations of
schema/ and the files of schema/functions/ (functions, views, triggers,
policies, grants), applied again whenever one changed.

A database at every earlier schema level (migrations 001..N as released,
tests/fixtures/released-schema) upgrades to exactly the catalog of a fresh
one; migrating again changes nothing and runs no DDL; a broken function
file rolls the whole migrate back and says where; several migrates at once
apply the files once; a reghook older than its database leaves the newer
functions alone."""

import concurrent.futures
import difflib
import os
import pathlib
import re
import signal
import subprocess
import threading
import time

import pytest

from harness import (RegistrySender, add_webhook, child_env, register, registry_event,
                     sanitizer_report, wait_until)

ROOT = pathlib.Path(__file__).resolve().parents[2]
RELEASED_LEVELS = range(1, 11)
NUMBERED = len(list((ROOT / 'schema').glob('[0-9][0-9][0-9]_*.sql')))
APPLYING_FILES = 'applying schema/functions/'


def migrate(pg, dbname=None, bin=None):
    """`reghook migrate` on dbname (default the test's database), with bin
    (default $REGHOOK_BIN); the CompletedProcess, whatever its exit status."""
    argv = [bin or os.environ['REGHOOK_BIN'], 'migrate', '--database-url', pg.url(dbname=dbname)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=child_env(), timeout=120)
    assert not sanitizer_report(proc.stderr), proc.stderr
    return proc


def schema_dump(pg, dbname=None):
    """pg_dump --schema-only of dbname, and what it leaves out that reghook
    sets (the default privileges, CONNECT on the database), with the names
    that depend on the database's name made the same for every database:
    its group roles (reghook_admin_<name>, ...) and pg_dump's random
    \\restrict key."""
    dbname = dbname or pg.dbname
    proc = subprocess.run(['pg_dump', '--schema-only', '--no-sync', pg.url(dbname=dbname)],
                          capture_output=True, text=True, env=child_env(), timeout=120, check=True)
    extra = pg.psql("""
        SELECT 'default privileges: ' || defaclrole::regrole || ' ' || defaclnamespace || ' '
               || defaclobjtype::text || ' ' || defaclacl::text
        FROM pg_default_acl ORDER BY 1;
        SELECT 'database acl: ' || datacl::text FROM pg_database WHERE datname = current_database();""",
                    dbname=dbname)
    text = proc.stdout + extra
    text = re.sub(r'^\\(un)?restrict \S+$', r'\\\1restrict KEY', text, flags=re.M)
    return re.sub(r'\breghook_(admin|dispatcher|member)_' + re.escape(dbname) + r'\b',
                  r'reghook_\1_DB', text)


def assert_same(expected, actual, what):
    if expected != actual:
        diff = difflib.unified_diff(expected.splitlines(), actual.splitlines(), 'fresh', what,
                                    lineterm='', n=2)
        pytest.fail(f'{what} differs from a fresh database:\n' + '\n'.join(list(diff)[:80]),
                    pytrace=False)


def watch_ddl(pg, dbname=None):
    """An event trigger that records every DDL command run in dbname from now
    on (a superuser's); ddl_run() reads them."""
    pg.psql("""
        CREATE TABLE public.ddl_seen (tag text);
        CREATE FUNCTION public.ddl_seen() RETURNS event_trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO public.ddl_seen VALUES (tg_tag); END $$;
        CREATE EVENT TRIGGER ddl_seen ON ddl_command_start EXECUTE FUNCTION public.ddl_seen();""",
            dbname=dbname)


def ddl_run(pg, dbname=None):
    return pg.psql('SELECT tag FROM public.ddl_seen', dbname=dbname).splitlines()


def unwatch_ddl(pg, dbname=None):
    pg.psql('DROP EVENT TRIGGER ddl_seen; DROP FUNCTION public.ddl_seen(); DROP TABLE public.ddl_seen',
            dbname=dbname)


def test_migrating_again_changes_nothing(pg):
    first = migrate(pg)
    assert first.returncode == 0, first.stderr
    assert APPLYING_FILES + 'authz.sql' in first.stderr
    files = pg.psql('SELECT file FROM reghook.schema_functions ORDER BY 1').split()
    assert files == sorted(p.name for p in (ROOT / 'schema' / 'functions').glob('*.sql'))
    before = schema_dump(pg)

    watch_ddl(pg)
    pg.psql('CREATE TEMP TABLE seen_works (x int)')  # the watch sees DDL
    assert ddl_run(pg) == ['CREATE TABLE']
    pg.psql('TRUNCATE public.ddl_seen')
    again = migrate(pg)
    assert again.returncode == 0, again.stderr
    assert '(0 migration(s) applied)' in again.stdout
    assert 'applying' not in again.stderr
    assert ddl_run(pg) == []
    unwatch_ddl(pg)
    assert_same(before, schema_dump(pg), 'migrated twice')

    # One file that differs from what was applied (an upgrade that changed
    # queue.sql, say) has every file applied again, in order; the result is
    # the same catalog.
    pg.psql("UPDATE reghook.schema_functions SET sha256 = repeat('0', 64) WHERE file = 'queue.sql'")
    changed = migrate(pg)
    assert changed.returncode == 0, changed.stderr
    applied = re.findall(APPLYING_FILES + r'(\S+)', changed.stderr)
    assert applied == re.findall(r'\b([a-z_]+\.sql)\b', (ROOT / 'Makefile').read_text()
                                 .split('FUNCTION_SQL   :=')[1].split('ifneq')[0])
    assert 'queue.sql ' + '0' * 64 not in pg.psql("SELECT file || ' ' || sha256 FROM reghook.schema_functions")
    assert_same(before, schema_dump(pg), 'with its functions applied again')


@pytest.mark.long
def test_every_earlier_schema_level_upgrades_to_a_fresh_database(pg):
    """Migrations 001..N as released, for every N, each with what those
    migrations let an admin make (a namespace, a registry, a webhook whose
    URL holds credentials, a member): after `reghook migrate` the catalog
    is a fresh database's, and the data came along."""
    assert migrate(pg).returncode == 0
    fresh = schema_dump(pg)
    for level in RELEASED_LEVELS:
        db = f'{pg.dbname}_level{level}'
        pg.create_db(db)
        pg.apply_released_migrations(level, dbname=db)
        if level >= 2:
            pg.psql("SELECT reghook.namespace_add('team-a'); SELECT reghook.registry_add('main', NULL);",
                    dbname=db)
        if level >= 4:
            pg.psql("SELECT reghook.webhook_add('team-a', 'https://ci:p%40ss@hooks.example/x')", dbname=db)
        if level >= 6:
            pg.create_login_role(f'viewer_{level}')
            pg.psql(f"SELECT reghook.namespace_grant('team-a', 'viewer_{level}', 'viewer')", dbname=db)
        proc = migrate(pg, db)
        assert proc.returncode == 0, (level, proc.stderr)
        assert f'({NUMBERED - level} migration(s) applied)' in proc.stdout, (level, proc.stdout)
        assert_same(fresh, schema_dump(pg, db), f'a database of migrations 001-{level:03d}, migrated')
        if level >= 4:
            assert pg.psql('SELECT w.url, w.username, s.password FROM reghook.webhooks w '
                           'JOIN reghook.webhook_secrets s ON s.webhook_id = w.id', dbname=db).strip() \
                == 'https://hooks.example/x|ci|p@ss', level
        if level >= 6:
            assert pg.psql(f"SELECT reghook.access_level(1, 'viewer_{level}')", dbname=db).strip() == '1'


def test_a_broken_function_file_rolls_the_whole_migrate_back(pg, tmp_path):
    """A reghook whose history.sql has a syntax error (a copy of the binary
    with one word of its embedded text changed) fails on a database it would
    upgrade and on a new one, names the file and the line, and leaves each
    database as it was."""
    broken = tmp_path / 'reghook'
    binary = pathlib.Path(os.environ['REGHOOK_BIN']).read_bytes()
    good = b'CREATE OR REPLACE VIEW reghook.webhook_health'
    assert binary.count(good) == 1
    broken.write_bytes(binary.replace(good, good.replace(b'VIEW', b'VIEX')))
    broken.chmod(0o755)
    text = (ROOT / 'schema' / 'functions' / 'history.sql').read_text()
    line = text[:text.index(good.decode())].count('\n') + 1

    old = f'{pg.dbname}_old'
    pg.create_db(old)
    pg.apply_released_migrations(10, dbname=old)
    pg.psql("SELECT reghook.namespace_add('team-a')", dbname=old)
    before = schema_dump(pg, old)
    for dbname in (old, pg.dbname):
        proc = migrate(pg, dbname, bin=str(broken))
        assert proc.returncode == 1
        assert f'schema/functions/history.sql, line {line}: syntax error at or near "VIEX"' in proc.stderr
    assert_same(before, schema_dump(pg, old), 'the database of 001-010 after the failed migrate')
    assert pg.psql('SELECT max(version) FROM reghook.schema_migrations', dbname=old).strip() == '10'
    assert pg.psql("SELECT to_regnamespace('reghook') IS NULL").strip() == 't'
    # The right binary then migrates both.
    for dbname in (old, pg.dbname):
        assert migrate(pg, dbname).returncode == 0


def test_concurrent_migrates_apply_the_functions_once(pg):
    """Daemons starting together against a database to upgrade: one applies
    the migrations and the files, the others wait for it and find nothing
    left to do."""
    pg.apply_released_migrations(10)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda _: migrate(pg), range(4)))
    assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]
    newer = len(list((ROOT / 'schema').glob('[0-9][0-9][0-9]_*.sql'))) - 10
    assert sorted(p.stdout.split('(')[1].split()[0] for p in procs) == ['0', '0', '0', str(newer)]
    assert [APPLYING_FILES + 'authz.sql' in p.stderr for p in procs].count(True) == 1
    # And four at once on a new database: each makes the schema if it is
    # missing, and the later ones, which waited for the first, find it made.
    fresh = f'{pg.dbname}_fresh'
    pg.create_db(fresh)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda _: migrate(pg, fresh), range(4)))
    assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]
    assert sorted(p.stdout.split('(')[1].split()[0] for p in procs) == ['0', '0', '0',
                                                                         str(NUMBERED)]
    assert_same(schema_dump(pg, fresh), schema_dump(pg), 'the database migrated by four at once')


def test_no_member_session_holds_up_a_migration(pg):
    """A member's session (any role that may connect) cannot hold a start
    up: the advisory lock migrations once took, and a read of
    schema_migrations in an open transaction, are no obstacle. A lock a
    member holds on a table that a migration changes makes the migration
    fail after 2 s, to be tried again, instead of waiting for the member
    with every other statement on that table queued behind it."""
    assert migrate(pg).returncode == 0
    member = pg.create_login_role(f'{pg.dbname}_m')
    pg.psql(f"""GRANT "{pg.psql("SELECT reghook.role_name('member')").strip()}" TO "{member}";
                GRANT CONNECT ON DATABASE "{pg.dbname}" TO "{member}";""")
    conn = pg.connect(user=member)
    conn.autocommit = False
    cur = conn.cursor()
    cur.execute('SELECT pg_advisory_lock(7165716866)')
    cur.execute('SELECT count(*) FROM reghook.schema_migrations')
    started = time.monotonic()
    proc = migrate(pg)
    assert proc.returncode == 0 and time.monotonic() - started < 10, proc.stderr
    # An upgrade (here: the files of schema/functions/ to apply again) while
    # the member's transaction holds what it read.
    cur.execute('SELECT count(*) FROM reghook.webhooks')
    pg.psql("UPDATE reghook.schema_functions SET sha256 = repeat('0', 64) WHERE file = 'queue.sql'")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        upgrade = pool.submit(migrate, pg)
        time.sleep(0.5)
        # Meanwhile another session reads the webhooks, waiting at most
        # for the migration's 2 s, not for the member.
        pg.psql('SELECT count(*) FROM reghook.webhooks')
        read_after = time.monotonic() - started
        proc = upgrade.result()
    assert proc.returncode != 0 and 'lock timeout' in proc.stderr, proc.stderr
    assert read_after < 10, read_after
    conn.rollback()
    proc = migrate(pg)
    assert proc.returncode == 0 and APPLYING_FILES + 'authz.sql' in proc.stderr, proc.stderr
    conn.close()


@pytest.mark.long
def test_an_older_reghook_leaves_a_newer_databases_functions(pg):
    """A database that a later reghook migrated (a migration this binary
    does not know, functions that differ): this one, still running during a
    rolling upgrade, changes none of it."""
    assert migrate(pg).returncode == 0
    pg.psql("""INSERT INTO reghook.schema_migrations VALUES (999, 'from_the_future');
               UPDATE reghook.schema_functions SET sha256 = repeat('f', 64) WHERE file = 'queue.sql';""")
    before = schema_dump(pg)
    watch_ddl(pg)
    proc = migrate(pg)
    assert proc.returncode == 0, proc.stderr
    assert 'the database has migrations newer than this reghook' in proc.stderr
    assert 'applying' not in proc.stderr and ddl_run(pg) == []
    unwatch_ddl(pg)
    assert_same(before, schema_dump(pg), 'a newer database after an older migrate')


def test_a_database_not_in_utf8_is_refused_new_and_warned_about_old(pg):
    """Registry events are UTF-8 text: a new database in another encoding
    (Debian's first cluster, made in the C locale, is SQL_ASCII) is
    refused with what to do; one reghook already runs on is migrated, with
    a warning of what it costs."""
    for encoding in ('LATIN1', 'SQL_ASCII'):
        name = f'{pg.dbname}_{encoding.lower()}'
        pg.psql(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING '{encoding}' "
                "LC_COLLATE 'C' LC_CTYPE 'C'", dbname='postgres')
        proc = migrate(pg, dbname=name)
        assert proc.returncode == 1, proc.stderr
        assert (f"this database's encoding is {encoding}: registry events are UTF-8 text"
                in proc.stderr), proc.stderr
        assert 'createdb -E UTF8 -T template0' in proc.stderr
        assert pg.psql("SELECT count(*) FROM pg_namespace WHERE nspname = 'reghook'",
                       dbname=name).strip() == '0'
    pg.apply_released_migrations(3, dbname=name)  # reghook ran on it before this check
    proc = migrate(pg, dbname=name)
    assert proc.returncode == 0, proc.stderr
    assert "this database's encoding is SQL_ASCII: events holding characters" in proc.stderr
    assert int(pg.psql('SELECT count(*) FROM reghook.schema_migrations', dbname=name)) == NUMBERED


def test_serve_tries_a_failed_migration_again(pg, reghook_factory):
    """A migration that fails at start (here an event trigger refuses every
    DDL command, as a lock or a deadlock with an instance still running the
    old schema would make it fail for a while) is tried again, after 1 s,
    then 2 s, ..., and the daemon becomes ready once it succeeds, with no
    restart; until then it is not ready."""
    pg.psql("""CREATE FUNCTION public.test_no_ddl() RETURNS event_trigger LANGUAGE plpgsql AS
               $$BEGIN RAISE 'test: no DDL now'; END$$;
               CREATE EVENT TRIGGER test_no_ddl ON ddl_command_start
               EXECUTE FUNCTION public.test_no_ddl()""")
    daemon = reghook_factory(wait=False)
    wait_until(lambda: daemon.log().count('schema migration failed') >= 2, timeout=15,
               msg='two failed migrations')
    log = daemon.log()
    assert 'test: no DDL now; trying again in 1 s' in log, log
    assert 'trying again in 2 s' in log, log
    assert daemon.get('/readyz')[0] != 200
    assert pg.psql("SELECT count(*) FROM pg_namespace WHERE nspname = 'reghook'").strip() == '0'
    pg.psql('DROP EVENT TRIGGER test_no_ddl')
    daemon.wait_ready(timeout=15)
    assert int(pg.psql('SELECT count(*) FROM reghook.schema_migrations')) == NUMBERED


def test_a_stop_while_a_migration_waits_for_a_lock_ends_cleanly(pg, reghook_factory):
    """SIGTERM while the start's migration waits for a lock a session holds
    (an upgrade's function files, here): the process does not wait for it
    (the lock may be held for long), and ends with status 0 and nothing of
    the migration left behind; the ASan build's leak check used to find the
    migration's state, its connection freed before the migration ended."""
    assert migrate(pg).returncode == 0
    pg.psql("UPDATE reghook.schema_functions SET sha256 = repeat('0', 64) "
            "WHERE file = 'queue.sql'")
    holder = pg.connect()
    holder.autocommit = False
    holder.cursor().execute('SELECT count(*) FROM reghook.webhooks')
    daemon = reghook_factory(wait=False)
    # Its lock waits are short tries in a loop (migrate.c), for 2 s a run.
    wait_until(lambda: pg.psql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                               "AND query LIKE '%$lock$%' AND pid <> pg_backend_pid()"
                               ).strip() != '0', timeout=15, interval=0.02,
               msg='the migration waiting')
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.proc.wait(15)
    assert daemon.proc.returncode == 0, daemon.log()
    assert not sanitizer_report(daemon.log()), daemon.log()
    holder.rollback()


def test_a_migrate_killed_midway_leaves_no_statement_running(pg):
    """`reghook migrate` killed while a statement of its migration runs (a
    SIGKILL, or a Ctrl-C, which ends it at once): the server ends that
    statement within seconds, as it notices the client gone, instead of
    running it to its end with its locks held (a large table's index being
    built, say, and every ingest of that table queued behind it). Here the
    statement is made slow by an event trigger that sleeps 60 s."""
    pg.psql("""CREATE FUNCTION public.slow_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
               BEGIN PERFORM pg_sleep(60); END $$;
               CREATE EVENT TRIGGER slow_ddl ON ddl_command_start
                   EXECUTE FUNCTION public.slow_ddl();""")
    sleeping = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                "AND datname = current_database()")
    proc = subprocess.Popen([os.environ['REGHOOK_BIN'], 'migrate', '--database-url', pg.url()],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env())
    try:
        wait_until(lambda: pg.psql(sleeping).strip() == '1', timeout=15, interval=0.05,
                   msg='the migration in its slow statement')
        proc.kill()
        proc.wait(15)
        killed = time.monotonic()
        wait_until(lambda: pg.psql(sleeping).strip() == '0', timeout=40, interval=0.1,
                   msg='the statement ended by the server')
        ended = time.monotonic() - killed
        assert ended < 30, f'the statement ran on {ended:.1f} s after its client was killed'
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE wait_event = 'PgSleep' AND datname = current_database()")
        pg.psql('DROP EVENT TRIGGER slow_ddl; DROP FUNCTION public.slow_ddl()')
    # Nothing of it was left: the next migrate makes the schema.
    assert migrate(pg).returncode == 0


def steady_stream(reghook_factory, endpoint_factory):
    """A daemon storing a steady stream of 1,500 events, a webhook's
    deliveries among them: (daemon, its sender, once events flow, the events)."""
    daemon = reghook_factory({'log_level': 'warn'})
    token = register(daemon, 'team-a')
    add_webhook(daemon, 'team-a', endpoint_factory().url('/hook'))
    events = [registry_event(tag=f'v{i}') for i in range(1500)]
    sender = RegistrySender(daemon.port, token, events, queues=4, pause=0.005).start()
    try:
        wait_until(lambda: len(sender.acked) >= 50, timeout=30, msg='events flowing')
    except BaseException:
        sender.stop()
        raise
    return daemon, sender, events


def test_functions_are_applied_again_while_events_arrive(reghook_factory, pg, endpoint_factory):
    """An upgrade that changes schema/functions/ runs while another instance
    stores a steady stream of events: each run gets through (before, every
    one deadlocked with ingest(): a trigger's lock on deliveries taken early,
    a policy's on namespaces asked for late), and every event is stored."""
    daemon, sender, events = steady_stream(reghook_factory, endpoint_factory)
    try:
        for run in range(3):
            pg.psql("UPDATE reghook.schema_functions SET sha256 = repeat('0', 64) "
                    "WHERE file = 'queue.sql'")
            res = daemon.run_cli('migrate', check=False)
            assert res.returncode == 0 and 'applying schema/functions/queue.sql' in res.stderr, \
                (run, res.stderr[-600:])
            assert not sender.done(), 'the stream ended before the upgrades did'
        sender.join(120)
    finally:
        sender.stop()
    assert int(pg.psql('SELECT count(*) FROM reghook.events')) == len(events)


def undo_migration_027(pg):
    """The schema as the release before migration 027 left it."""
    pg.psql('DROP INDEX reghook.deliveries_test_due; '
            'DELETE FROM reghook.schema_migrations WHERE version = 27')


def test_a_numbered_migration_gets_through_while_events_arrive(reghook_factory, pg,
                                                               endpoint_factory):
    """A numbered migration that locks a busy table (027 builds an index on
    deliveries) while another instance stores a steady stream of events:
    its lock, held while the lock for the function files waited for events,
    which an ingest() held while it waited for deliveries, was a cycle only
    the 2 s lock timeout broke, and every run failed (saying another
    transaction held a table), the events held up 2 s each time. A cycle
    now makes the run begin again at once with every table locked first."""
    daemon, sender, events = steady_stream(reghook_factory, endpoint_factory)
    try:
        for run in range(3):
            undo_migration_027(pg)
            res = daemon.run_cli('migrate', check=False)
            assert res.returncode == 0 and 'applying migration 027_' in res.stderr, \
                (run, res.stderr[-900:])
            assert not sender.done(), 'the stream ended before the upgrades did'
        sender.join(120)
    finally:
        sender.stop()
    assert int(pg.psql('SELECT count(*) FROM reghook.events')) == len(events)
    assert pg.psql("SELECT to_regclass('reghook.deliveries_test_due') IS NOT NULL").strip() == 't'


def test_a_role_that_may_not_migrate_is_told_who_may(pg):
    """serve's login as README's roles table has it (a member of the
    dispatcher role) meets a schema an older release left, after a package
    upgrade restarted it: the run failed, over and over, on the first
    statement it may not run (permission denied for function
    url_without_credentials), naming neither the cause nor the cure."""
    assert migrate(pg).returncode == 0
    role = pg.create_login_role(f'{pg.dbname}_serve')
    pg.psql(f"""GRANT "{pg.psql("SELECT reghook.role_name('dispatcher')").strip()}" TO "{role}";
                GRANT CONNECT ON DATABASE "{pg.dbname}" TO "{role}";""")
    undo_migration_027(pg)
    argv = [os.environ['REGHOOK_BIN'], 'migrate', '--database-url', pg.url(user=role)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=child_env(), timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert ('the schema is at migration 026 and this reghook needs 027: role '
            f'{role} may not change it; run reghook migrate once as the schema\'s owner '
            '(postgres)') in proc.stderr, proc.stderr
    assert migrate(pg).returncode == 0


def test_a_statement_timeout_of_the_database_does_not_end_a_migration(pg):
    """A migration may read or rewrite a large table for minutes, or wait a
    moment for a lock: a statement_timeout an operator gave the database or
    the role (for people's sessions) ended it, and the schema stayed behind.
    Here the function files are applied again while a table is held for 1 s
    (their lock waits for it), under a timeout of 200 ms."""
    assert migrate(pg).returncode == 0
    pg.psql('DELETE FROM reghook.schema_functions')  # applied again at the next run
    pg.psql(f'ALTER DATABASE "{pg.dbname}" SET statement_timeout = \'200ms\'', dbname='postgres')
    holder = pg.connect()
    cur = holder.cursor()
    cur.execute('BEGIN')
    cur.execute('LOCK TABLE reghook.namespaces IN ACCESS SHARE MODE')
    release = threading.Timer(1.0, cur.execute, ['COMMIT'])
    release.start()
    try:
        res = migrate(pg)
    finally:
        release.join()
    assert res.returncode == 0, res.stderr
    assert APPLYING_FILES + 'authz.sql' in res.stderr
