"""The group roles of a reghook database belong to that database alone:
several reghook databases on one PostgreSQL cluster, the role names derived
from the database's name, roles bound to another database refused, an
upgrade that keeps everyone's access, and which roles may call which
function of schema reghook (nobody but them, never PUBLIC)."""

import hashlib
import os
import re
import subprocess

import psycopg2
import pytest

from harness import Postgres, child_env, run_reghook
from test_readme import section

SECRET = 'whsec_c2VjcmV0LW5ldmVyLXNob3duLTEyMzQ1Njc4'
KINDS = ('admin', 'dispatcher', 'member')


def migrate(db, dbname=None):
    return run_reghook(['migrate'], database_url=db.url(dbname=dbname))


def role_name(db, kind, dbname=None):
    return db.psql(f"SELECT reghook.role_name('{kind}')", dbname=dbname).strip()


def cli(db, dbname, *args):
    return run_reghook(list(args), database_url=db.url(dbname=dbname)).stdout


def one_webhook(db, dbname):
    """Namespace team-a with a webhook that has a signing secret; its id."""
    cli(db, dbname, 'namespace', 'add', 'team-a')
    cli(db, dbname, 'registry', 'add', 'main')
    return cli(db, dbname, 'webhook', 'add', 'team-a', 'https://hooks.example/', '--secret', SECRET).split()[1]


def query(db, user, dbname, sql):
    """Rows of sql run as user on dbname, or the psycopg2 error it raised."""
    try:
        conn = psycopg2.connect(db.url(user, dbname))
    except psycopg2.Error as e:
        return e
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    except psycopg2.Error as e:
        return e
    finally:
        conn.close()


def denied(result):
    return isinstance(result, psycopg2.Error) and 'permission denied' in str(result)


# --- several reghook databases on one cluster ----------------------------------------


def test_a_grant_in_one_database_gives_nothing_in_another(pg):
    a, b = pg.dbname, f'{pg.dbname}_b'
    pg.create_db(b)
    migrate(pg)
    one_webhook(pg, a)
    # A role granted the shared role of 006, as an older reghook made them, before b exists.
    pg.create_login_role('legacy')
    pg.psql('GRANT reghook_dispatcher, reghook_admin TO legacy')
    migrate(pg, b)
    hook_b = one_webhook(pg, b)

    for kind in KINDS:
        assert role_name(pg, kind, a) == f'reghook_{kind}_{a}'
        assert role_name(pg, kind, b) == f'reghook_{kind}_{b}'
    for kind in ('admin', 'dispatcher'):
        pg.create_login_role(f'{kind}_a')
        pg.psql(f'GRANT "{role_name(pg, kind, a)}" TO {kind}_a')
    pg.create_login_role('member_a')
    cli(pg, a, 'namespace', 'grant', 'team-a', 'member_a', 'owner')

    # In a, each does its job.
    assert query(pg, 'dispatcher_a', a, 'SELECT secret FROM reghook.webhook_secrets') == [(SECRET,)]
    assert query(pg, 'admin_a', a, "SELECT reghook.namespace_add('team-z')") == [(2,)]
    assert query(pg, 'member_a', a, 'SELECT name FROM reghook.namespaces') == [('team-a',)]

    # In b none of them (nor the role of the old shared names) connects ...
    for user in ('dispatcher_a', 'admin_a', 'member_a', 'legacy'):
        result = query(pg, user, b, 'SELECT 1')
        assert denied(result) and 'for database' in str(result), (user, result)
    # ... and let in by an operator, reads nothing and manages nothing.
    pg.psql(f'GRANT CONNECT ON DATABASE "{b}" TO PUBLIC')
    for user in ('dispatcher_a', 'admin_a', 'member_a', 'legacy'):
        for sql in ('SELECT secret FROM reghook.webhook_secrets', 'SELECT id FROM reghook.webhooks',
                    'SELECT count(*) FROM reghook.delivery_history',
                    "SELECT reghook.namespace_add('team-z')", f'SELECT reghook.webhook_disable({hook_b})',
                    f'SELECT reghook.test_webhook({hook_b})', "SELECT reghook.registry_add('x', NULL)"):
            assert denied(query(pg, user, b, sql)), (user, sql)
    assert pg.psql('SELECT enabled FROM reghook.webhooks', dbname=b).strip() == 'f'
    assert pg.psql('SELECT count(*) FROM reghook.namespaces', dbname=b).strip() == '1'


def test_role_names_follow_the_database_name(pg_own):
    """The database named reghook keeps the names of 006; another gets its
    name appended, a long one its md5; each role is bound to its database."""
    long_name = 'reghook-' + 'x' * 55
    for name in ('other', long_name):
        pg_own.create_db(name)
    for name in ('reghook', 'other', long_name):
        migrate(pg_own, name)
    suffix = {'reghook': '', 'other': '_other', long_name: '_' + hashlib.md5(long_name.encode()).hexdigest()}
    for name in suffix:
        oid = pg_own.psql(f"SELECT oid FROM pg_database WHERE datname = '{name}'", dbname=name).strip()
        for kind in KINDS:
            role = role_name(pg_own, kind, name)
            assert role == f'reghook_{kind}{suffix[name]}' and len(role.encode()) <= 63
            comment = pg_own.psql(f"SELECT shobj_description('\"{role}\"'::regrole, 'pg_authid')",
                                  dbname=name).strip()
            assert comment.startswith(f'reghook: the {kind} role of database ') and comment.endswith(f'(database oid {oid})')
    # The names a migration made are the names used: a member of reghook_member is a member here.
    pg_own.create_login_role('ann')
    cli(pg_own, 'other', 'namespace', 'add', 'team-a')
    cli(pg_own, 'other', 'namespace', 'grant', 'team-a', 'ann', 'viewer')
    assert pg_own.psql("SELECT pg_has_role('ann', 'reghook_member_other', 'MEMBER'), "
                       "pg_has_role('ann', 'reghook_member', 'MEMBER')", dbname='other').strip() == 't|f'
    with pytest.raises(Exception, match='kind must be admin, dispatcher or member'):
        role_name(pg_own, 'owner', 'other')


def test_roles_bound_to_another_database_are_refused(pg):
    """A database renamed keeps its roles; a new database under its old name
    may not take them while the renamed one exists, and may once it is gone."""
    old, renamed = pg.dbname, f'{pg.dbname}_renamed'
    migrate(pg)
    one_webhook(pg, old)
    pg.psql(f'ALTER DATABASE "{old}" RENAME TO "{renamed}"', dbname='postgres')
    pg.create_db(old)
    res = run_reghook(['migrate'], database_url=pg.url(), check=False)
    assert res.returncode == 1
    assert f'role reghook_admin_{old} is the admin role of another reghook database, {renamed}' in res.stderr
    # Nothing of the migrate stays: the database is as it was.
    assert pg.psql("SELECT to_regnamespace('reghook') IS NULL").strip() == 't'
    # The renamed database keeps working with its roles.
    assert role_name(pg, 'dispatcher', renamed) == f'reghook_dispatcher_{old}'
    pg.create_login_role('disp')
    pg.psql(f'GRANT reghook_dispatcher_{old} TO disp')
    assert query(pg, 'disp', renamed, 'SELECT secret FROM reghook.webhook_secrets') == [(SECRET,)]
    pg.psql(f'DROP DATABASE "{renamed}"', dbname='postgres')
    migrate(pg)
    assert role_name(pg, 'dispatcher') == f'reghook_dispatcher_{old}'


def pg_tool(server, tool, *args, check=True):
    """A PostgreSQL client program (pg_dump, pg_restore, ...) against server."""
    proc = subprocess.run([os.path.join(server.bindir, tool), *args], capture_output=True,
                          text=True, env=child_env(), timeout=120)
    assert proc.returncode == 0 or not check, proc.stderr
    return proc


def restored(dump, globals_sql=None):
    """A new cluster holding dump in a database named reghook, restored as
    an operator does (createdb, pg_restore without -C), with the roles of
    globals_sql (pg_dumpall --globals-only) restored first, or none."""
    target = Postgres()
    target.start()
    try:
        if globals_sql:
            # The cluster's own superuser is already there: its line fails, the rest go on.
            subprocess.run([os.path.join(target.bindir, 'psql'), '-X', '-q', '-d',
                            target.url(dbname='postgres'), '-f', globals_sql],
                           capture_output=True, env=child_env(), timeout=120)
        target.psql('DROP DATABASE reghook', dbname='postgres')
        target.psql("CREATE DATABASE reghook TEMPLATE template0 ENCODING 'UTF8'", dbname='postgres')
        pg_tool(target, 'pg_restore', '-d', target.url(), dump, check=False)
        return target
    except BaseException:
        target.destroy()
        raise


def test_a_database_moved_to_another_cluster_keeps_its_roles_to_itself(pg_own, tmp_path):
    """Moved with pg_dumpall --globals-only and pg_dump: its roles still named
    the old cluster's database oid, so a new database given its name after a
    rename took them (its dispatcher role then the moved one's, secrets and
    all) where migration 008 refuses that. Moved without the roles: no
    grants, no policies, CONNECT PUBLIC's, and `reghook migrate` said the
    schema was current. Both are mended by `reghook migrate`."""
    migrate(pg_own)
    one_webhook(pg_own, 'reghook')
    pg_own.create_login_role('ann')
    cli(pg_own, 'reghook', 'namespace', 'grant', 'team-a', 'ann', 'viewer')
    dump, globals_sql = str(tmp_path / 'reghook.dump'), str(tmp_path / 'globals.sql')
    pg_tool(pg_own, 'pg_dump', '-Fc', '-f', dump, pg_own.url())
    with open(globals_sql, 'w') as f:
        f.write(pg_tool(pg_own, 'pg_dumpall', '--globals-only', '-d', pg_own.url()).stdout)

    # With the roles: the first migrate binds them to the database here.
    target = restored(dump, globals_sql)
    try:
        res = migrate(target)
        assert 'as after a restore from another cluster' in res.stderr, res.stderr
        oid = target.psql("SELECT oid FROM pg_database WHERE datname = 'reghook'").strip()
        for kind in KINDS:
            assert target.psql(f"SELECT shobj_description('reghook_{kind}'::regrole, 'pg_authid')"
                               ).strip() == f'reghook: the {kind} role of database reghook (database oid {oid})'
        assert 'as after a restore' not in migrate(target).stderr  # once
        target.psql('ALTER DATABASE reghook RENAME TO reghook_old', dbname='postgres')
        target.create_db('reghook')
        res = run_reghook(['migrate'], database_url=target.url(), check=False)
        assert res.returncode == 1, res
        assert 'role reghook_admin is the admin role of another reghook database, reghook_old' \
            in res.stderr and '(Each reghook database needs group roles of its own' in res.stderr, res.stderr
        # The renamed one is described by its new name at its next migrate.
        migrate(target, 'reghook_old')
        assert target.psql("SELECT shobj_description('reghook_admin'::regrole, 'pg_authid')",
                           dbname='reghook_old').strip().startswith(
            'reghook: the admin role of database reghook_old (database oid ')
    finally:
        target.destroy()

    # Without the roles: pg_restore could make no grant and no policy.
    target = restored(dump)
    try:
        assert target.psql("SELECT count(*) FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid "
                           "WHERE c.relnamespace = 'reghook'::regnamespace").strip() == '0'
        for user in ('ann', 'disp'):
            target.create_login_role(user)
        target.psql('GRANT CONNECT ON DATABASE reghook TO disp')
        # A role the schema gives nothing is told who can mend it.
        res = run_reghook(['migrate'], database_url=target.url('disp'), check=False)
        assert res.returncode == 1 and 'role disp may not use schema reghook, which postgres owns' \
            in res.stderr and 'Run reghook migrate once as its owner' in res.stderr, res.stderr
        res = migrate(target)
        assert 'role reghook_dispatcher (the dispatcher role of this database) did not exist' \
            in res.stderr, res.stderr
        assert target.psql("SELECT has_database_privilege('public', 'reghook', 'CONNECT'), "
                           "count(*) > 0 FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid "
                           "WHERE c.relnamespace = 'reghook'::regnamespace").strip() == 'f|t'
        # The viewer is a member again, and sees what it saw; the dispatcher's
        # login, made a member by the operator, reads the secrets.
        assert query(target, 'ann', 'reghook', 'SELECT url FROM reghook.webhooks') == \
            [('https://hooks.example/',)]
        assert denied(query(target, 'ann', 'reghook', 'SELECT secret FROM reghook.webhook_secrets'))
        target.psql('GRANT reghook_dispatcher TO disp')
        assert query(target, 'disp', 'reghook', 'SELECT secret FROM reghook.webhook_secrets') == [(SECRET,)]
        assert 'did not exist' not in migrate(target).stderr
    finally:
        target.destroy()


def test_a_binding_the_owner_may_not_write_does_not_reapply_the_files_at_every_start(pg_own):
    """A role's description can be written only with CREATEROLE: an owner
    without it is not sent to apply the function files again (taking every
    table's lock) at each start, only to fail to bind the role again."""
    migrate(pg_own)
    pg_own.psql("COMMENT ON ROLE reghook_admin IS 'reghook: the admin role of database x (database oid 999999)'")
    pg_own.create_login_role('deputy')
    pg_own.psql('ALTER ROLE deputy NOCREATEROLE; GRANT postgres TO deputy; '
                'GRANT CONNECT ON DATABASE reghook TO deputy')
    need = 'SELECT reghook.group_roles_need_care()'
    assert query(pg_own, 'deputy', 'reghook', need) == [(False,)]
    assert 'applying schema/functions' not in run_reghook(
        ['migrate'], database_url=pg_own.url('deputy')).stderr
    assert query(pg_own, 'postgres', 'reghook', need) == [(True,)]
    assert 'as after a restore from another cluster' in migrate(pg_own).stderr
    assert query(pg_own, 'postgres', 'reghook', need) == [(False,)]


def test_an_upgraded_database_moves_its_grants_and_members_to_its_own_roles(pg):
    """A database of migrations 001-007 (their roles shared by the cluster),
    with an admin, a dispatcher and a viewer: after `reghook migrate` all
    three keep their access through the database's own roles, and the old
    roles hold nothing in it."""
    pg.apply_released_migrations(7)
    pg.psql(f"""SELECT reghook.namespace_add('team-a');
        SELECT reghook.webhook_add('team-a', 'https://hooks.example/', '{{"secret": "{SECRET}"}}');""")
    for user in ('old_admin', 'old_dispatcher', 'old_viewer', 'newcomer'):
        pg.create_login_role(user)
    pg.psql("""GRANT reghook_admin TO old_admin; GRANT reghook_dispatcher TO old_dispatcher;
               SELECT reghook.namespace_grant('team-a', 'old_viewer', 'viewer');""")

    res = migrate(pg)
    assert 'old_dispatcher is now a member of reghook_dispatcher_' in res.stderr
    assert query(pg, 'old_admin', None, "SELECT reghook.namespace_add('team-b')") == [(2,)]
    assert query(pg, 'old_dispatcher', None, 'SELECT secret FROM reghook.webhook_secrets') == [(SECRET,)]
    assert query(pg, 'old_viewer', None, 'SELECT url FROM reghook.webhooks') == [('https://hooks.example/',)]
    # A role granted an old shared role now (for another database) gets nothing here.
    pg.psql('GRANT reghook_admin, reghook_dispatcher, reghook_member TO newcomer', dbname='postgres')
    pg.psql(f'GRANT CONNECT ON DATABASE "{pg.dbname}" TO newcomer')
    for sql in ('SELECT secret FROM reghook.webhook_secrets', 'SELECT url FROM reghook.webhooks',
                "SELECT reghook.namespace_add('team-c')"):
        assert denied(query(pg, 'newcomer', None, sql)), sql
    left = pg.psql("""
        SELECT count(*) FROM (
            SELECT a.grantee FROM pg_class c, aclexplode(c.relacl) a
            UNION ALL SELECT a.grantee FROM pg_attribute t, aclexplode(t.attacl) a
            UNION ALL SELECT a.grantee FROM pg_proc p, aclexplode(p.proacl) a
            UNION ALL SELECT a.grantee FROM pg_namespace n, aclexplode(n.nspacl) a
            UNION ALL SELECT unnest(polroles) FROM pg_policy) g
        WHERE g.grantee IN (SELECT oid FROM pg_roles WHERE rolname LIKE 'reghook\\_%' AND rolname NOT LIKE '%test%')""")
    assert left.strip() == '0'


# --- who may call which function ---------------------------------------------------


def test_another_namespaces_delivery_held_by_someone_tells_a_member_nothing(pg):
    """retrigger() locked the delivery's row before asking whether the
    caller may see it: a member of team-a calling it with the id of a
    team-b delivery that someone held (its dispatcher, its people) waited
    for them, or had its lock time out, where an unknown id is refused at
    once. Now both are 'does not exist', at once. And a namespace given to
    one of PostgreSQL's predefined roles is refused as such (an internal
    error before, for pg_database_owner)."""
    migrate(pg)
    cli(pg, None, 'namespace', 'add', 'team-a')
    cli(pg, None, 'namespace', 'add', 'team-b')
    hook_b = cli(pg, None, 'webhook', 'add', 'team-b', 'https://b.example/').split()[1]
    member = pg.create_login_role(f'{pg.dbname}_ca')
    pg.psql(f'GRANT CONNECT ON DATABASE "{pg.dbname}" TO "{member}"')
    cli(pg, None, 'namespace', 'grant', 'team-a', member, 'contributor')
    delivery = pg.psql(f'SELECT reghook.test_webhook({hook_b})').strip()
    holder = pg.connect()
    holder.autocommit = False
    holder.cursor().execute('SELECT 1 FROM reghook.deliveries WHERE id = %s FOR UPDATE',
                            (delivery,))
    try:
        for target in (delivery, '00000000-0000-7000-8000-000000000000'):
            err = query(pg, member, None, "SET lock_timeout = '1s'; "
                                          f"SELECT reghook.retrigger('{target}')")
            assert isinstance(err, psycopg2.Error) and err.pgcode == 'P0002' and \
                f'delivery {target} does not exist' in str(err), err
    finally:
        holder.rollback()
        holder.close()
    for predefined in ('pg_database_owner', 'pg_read_all_data'):
        err = query(pg, 'postgres', None,
                    f"SELECT reghook.namespace_grant('team-a', '{predefined}', 'viewer')")
        assert isinstance(err, psycopg2.Error) and err.pgcode == '22023' and \
            f'role "{predefined}" is one of PostgreSQL\'s predefined roles' in str(err), err
    assert pg.psql("SELECT count(*) FROM reghook.namespace_members "
                   "WHERE role_name LIKE 'pg\\_%'").strip() == '0'
    # A role of one's own whose name starts with pg is no predefined role,
    # whatever the session's standard_conforming_strings.
    bouncer = pg.create_login_role(f'pgbouncer_{pg.dbname}')
    assert query(pg, 'postgres', None, "SET standard_conforming_strings = off; "
                 f"SELECT reghook.namespace_grant('team-a', '{bouncer}', 'viewer')") == [('',)]


def documented_functions():
    """README's table of the functions each group role may call."""
    table = {}
    for line in section('Who may call which function').splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) == 2 and cells[0].split(' ')[0] in ('member', 'dispatcher'):
            table[cells[0].split()[0]] = set(re.findall(r'`([a-z_]+)\(\)`', cells[1]))
    return table


def executable(pg, grantee):
    """Names of the functions of schema reghook that grantee may call."""
    return set(pg.psql(f"""
        SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'reghook' AND has_function_privilege({grantee}, p.oid, 'EXECUTE')""").split())


def test_no_function_is_public_and_members_call_only_the_documented_ones(pg):
    migrate(pg)
    documented = documented_functions()
    assert documented['member'] and documented['dispatcher']
    assert executable(pg, "'public'") == set()
    assert pg.psql("""SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                      WHERE n.nspname = 'reghook' AND (p.proacl IS NULL
                         OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))""").strip() == '0'
    for kind in ('member', 'dispatcher'):
        assert executable(pg, f"'{role_name(pg, kind)}'") == documented[kind], kind
    every = executable(pg, "current_user")
    assert executable(pg, f"'{role_name(pg, 'admin')}'") == every

    # A function made later by the schema owner is not PUBLIC's either.
    pg.psql('CREATE FUNCTION reghook.later() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$')
    assert executable(pg, "'public'") == set()
    # A member calls a helper of the management functions only through them.
    pg.create_login_role('viewer')
    cli(pg, pg.dbname, 'namespace', 'add', 'team-a')
    cli(pg, pg.dbname, 'namespace', 'grant', 'team-a', 'viewer', 'viewer')
    assert denied(query(pg, 'viewer', None, "SELECT reghook.url_credentials('https://u:p@h/')"))
    assert query(pg, 'viewer', None, "SELECT reghook.role_name('member')") == [(role_name(pg, 'member'),)]
