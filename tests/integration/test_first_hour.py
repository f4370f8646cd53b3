"""What a user meets in the first hour with reghook, one point each (the
whole path, with the README's own command lines, is in test_readme.py):
a command's own option wins over the configuration key of the same name,
errors say why, `CMD --help` shows the command's options, `webhook test`
waits and tells the outcome, waiting deliveries can be tried now (CLI and
SQL), callbacks show in the history, and the tests need nothing beside
the checkout."""

import base64
import json
import os
import pathlib
import subprocess
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from harness import (add_webhook, child_env, free_port, register, run_reghook,
                     sanitizer_report, wait_until)
from test_delivery import (delivered_callback_path, event, post, rows, wait_attempts,
                           wait_status)

ROOT = pathlib.Path(__file__).resolve().parents[2]

# A failed attempt waits ten minutes: only "retry now" brings the next one sooner.
SLOW_RETRY = {'retry_schedule': '0,10m'}


def webhook(pg, webhook_id):
    return rows(pg, f'SELECT timeout_ms, max_attempts FROM reghook.webhooks '
                    f'WHERE id = {int(webhook_id)}')[0]


# --- 5: a command's option is never taken for the configuration key ----------


def test_underscore_spelling_of_a_webhook_option_sets_the_webhook(reghook, pg):
    register(reghook, 'team-a')
    hook_id = add_webhook(reghook, 'team-a', 'http://127.0.0.1:9/', '--max_attempts', '3',
                          enable=False)
    assert webhook(pg, hook_id)['max_attempts'] == 3
    reghook.run_cli('webhook', 'set', hook_id, '--max_attempts=5')
    assert webhook(pg, hook_id)['max_attempts'] == 5
    reghook.run_cli('webhook', 'set', hook_id, '--content_type', 'text/plain')
    assert rows(pg, f'SELECT content_type FROM reghook.webhooks WHERE id = {hook_id}') == [
        {'content_type': 'text/plain'}]
    # Not a value the configuration key would take either: refused as the webhook's.
    res = reghook.run_cli('webhook', 'set', hook_id, '--max_attempts', '0', check=False)
    assert res.returncode == 2 and '--max-attempts' in res.stderr
    # Other commands' options too.
    res = reghook.run_cli('deliveries', '--webhook', hook_id, '--status', 'pending')
    assert res.returncode == 0


# --- 8: errors say why -------------------------------------------------------


def test_timeout_errors_say_why(reghook, pg):
    register(reghook, 'team-a')
    hook_id = add_webhook(reghook, 'team-a', 'http://127.0.0.1:9/', enable=False)
    cases = {
        '99d': "--timeout: '99d' is too long; the most is 24h",
        '30': "--timeout: '30' needs a unit: 30s or 30ms",
        '0s': "--timeout: '0s' is zero; the most is 24h",
        'soon': "--timeout: 'soon' is not a duration such as 500ms, 10s, 2m",
        '': "--timeout: '' is not a duration",
    }
    for value, message in cases.items():
        for args in (['webhook', 'set', hook_id, '--timeout', value],
                     ['webhook', 'add', 'team-a', 'http://127.0.0.1:9/', '--timeout', value]):
            res = reghook.run_cli(*args, check=False)
            assert res.returncode == 2, (args, res.stderr)
            assert res.stderr.startswith(f'reghook webhook: {message}'), (args, res.stderr)
    assert webhook(pg, hook_id)['timeout_ms'] is None
    reghook.run_cli('webhook', 'set', hook_id, '--timeout', '24h')
    assert webhook(pg, hook_id)['timeout_ms'] == 86400000
    reghook.run_cli('webhook', 'set', hook_id, '--timeout', '30s')
    assert webhook(pg, hook_id)['timeout_ms'] == 30000
    # Back to the configuration's request_timeout and max_attempts.
    reghook.run_cli('webhook', 'set', hook_id, '--max-attempts', '3')
    assert webhook(pg, hook_id)['max_attempts'] == 3
    reghook.run_cli('webhook', 'set', hook_id, '--timeout', 'default', '--max-attempts=default')
    assert webhook(pg, hook_id)['timeout_ms'] is None
    assert webhook(pg, hook_id)['max_attempts'] is None


def test_bad_access_and_reserved_headers_are_bad_usage(reghook, pg):
    """Exit status 2 with one line, nothing asked of the database, for an
    access level that does not exist and for a header a webhook may not
    have (the SQL refuses both too: a SQL user gets the same rule)."""
    register(reghook, 'team-a')
    hook_id = add_webhook(reghook, 'team-a', 'http://127.0.0.1:9/', enable=False)
    res = reghook.run_cli('namespace', 'grant', 'team-a', 'alice', 'admin', check=False)
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.startswith(
        "reghook namespace: access must be owner, contributor or viewer, not 'admin'"), res.stderr
    for header in ('Host: x', 'content-LENGTH: 0', 'X-Reghook-Event: push',
                   'Proxy-Authorization: x', 'ce-id: 1', ' Host: x', 'Host : x'):
        name = header.split(':')[0].strip()
        for args in (['webhook', 'set', hook_id, '--header', header],
                     ['webhook', 'add', 'team-a', 'http://127.0.0.1:9/', '--header', header]):
            res = reghook.run_cli(*args, check=False)
            assert res.returncode == 2, (args, res.stderr)
            assert res.stderr.startswith(f"reghook webhook: --header: '{name}' frames the "
                                         'request or is set by reghook'), res.stderr
    assert pg.psql('SELECT count(*) FROM reghook.webhook_headers').strip() == '0'
    assert pg.psql('SELECT count(*) FROM reghook.webhooks').strip() == '1'
    reghook.run_cli('webhook', 'set', hook_id, '--header', 'ce-myextension: fine')


def test_secrets_from_files_or_standard_input_stay_out_of_the_command_line(
        reghook, pg, endpoint_factory, tmp_path):
    """--password-file, --secret-file and --header-file (- for standard
    input) give what --password, --secret and --header would, without the
    value in the command line, which every local user reads (ps); the
    file's one line end is dropped. One option reads standard input."""
    token = register(reghook, 'team-a')
    hook = endpoint_factory()
    secret = 'whsec_' + base64.b64encode(b'k' * 32).decode()
    (tmp_path / 'password').write_text('pa ss:wörd\r\n')
    (tmp_path / 'headers').write_text('Authorization: Bearer t0ken\n\nX-Api-Key: k3y\n')
    (tmp_path / 'latin1').write_bytes(b'X-Lat: caf\xe9 {{tag}}\n')
    (tmp_path / 'latin1.json').write_bytes(b'{"t": "caf\xe9 {{tag}}"}\n')
    out = reghook.run_cli('webhook', 'add', 'team-a', hook.url('/h'),
                          '--password-file', tmp_path / 'password', '--secret-file', '-',
                          '--header-file', tmp_path / 'headers', input=secret + '\n').stdout
    hook_id = out.split()[1]
    reghook.run_cli('webhook', 'enable', hook_id)
    post(reghook, token, event())
    [req] = hook.wait_for(1)
    assert req.header('Authorization') == 'Bearer t0ken'
    assert req.header('X-Api-Key') == 'k3y'
    assert pg.psql(f'SELECT password = \'pa ss:wörd\' AND secret = \'{secret}\' FROM '
                   f'reghook.webhook_secrets WHERE webhook_id = {hook_id}').strip() == 't'
    reghook.run_cli('webhook', 'set', hook_id, '--password-file', '-', input='n3w\n')
    assert pg.psql(f'SELECT password FROM reghook.webhook_secrets WHERE webhook_id = {hook_id}'
                   ).strip() == 'n3w'
    for args, why in ((['--password', 'x', '--password-file', '-'],
                       '--password-file and --password: give one of the two'),
                      (['--password-file', '-', '--header-file', '-'],
                       '--header-file -: standard input is read for one option only'),
                      (['--secret-file', tmp_path / 'nowhere'], '--secret-file: '),
                      (['--password-file', tmp_path], f'--password-file: {tmp_path}: Is a directory'),
                      (['--format', 'template', '--template', tmp_path],
                       f'--template: {tmp_path}: Is a directory'),
                      (['--password-file'], '--password-file needs a value'),
                      (['--header-file', tmp_path / 'password'],
                       "--header: 'pa ss' is not a field name"),
                      (['--secret-file', tmp_path / 'password'], '--secret: not a signing key'),
                      # An empty file (a pipe that failed) would clear the secret.
                      (['--secret-file', '/dev/null'], '--secret-file: /dev/null is empty'),
                      # A byte that is not UTF-8 went in as U+FFFD: another password,
                      # another header, than the ones given.
                      (['--password', 'p\udce9ss'], '--password: not UTF-8 text (byte 2, 0xe9)'),
                      (['--password-file', tmp_path / 'latin1'], '--password: not UTF-8 text'),
                      (['--header', 'X-Lat: caf\udce9'], '--header: not UTF-8 text (byte 11, 0xe9)'),
                      (['--header-file', tmp_path / 'latin1'], '--header: not UTF-8 text'),
                      (['--username', '\udcff'], '--username: not UTF-8 text'),
                      (['--name', 'b\udcc3'], '--name: not UTF-8 text'),
                      (['--format', 'template', '--template', tmp_path / 'latin1.json'],
                       '--template: line 1, column 11: not JSON: invalid UTF-8')):
        res = reghook.run_cli('webhook', 'set', hook_id, *args, check=False, input='x\n')
        assert res.returncode == 2 and why in res.stderr, (args, res.stderr)
    res = reghook.run_cli('webhook', 'set', hook_id, '--format', 'template', '--template', '-',
                          '--header-file', '-', check=False, input='{"t": "{{tag}}"}')
    assert res.returncode == 2 and \
        '--header-file -: standard input is read for one option only' in res.stderr, res.stderr
    res = reghook.run_cli('webhook', 'set', hook_id, '--password-file', '-', check=False, input='')
    assert res.returncode == 2 and '--password-file: - is empty' in res.stderr, res.stderr
    assert pg.psql(f'SELECT password FROM reghook.webhook_secrets WHERE webhook_id = {hook_id}'
                   ).strip() == 'n3w'
    # As many headers as --header takes, and blanks around a name, a tab too.
    (tmp_path / 'many').write_text(''.join(f'X-H{i}\t: {"v" * 8000}\n' for i in range(9)))
    reghook.run_cli('webhook', 'set', hook_id, '--header-file', tmp_path / 'many')
    assert pg.psql(f'SELECT count(*), min(name), max(length(value)) FROM reghook.webhook_headers '
                   f'WHERE webhook_id = {hook_id}').strip() == '9|X-H0|8000'


def test_every_commands_text_must_be_utf8_and_says_which_byte_is_not(pg, tmp_path):
    """A name, description, role, URL or id that is not UTF-8 text (a
    Latin-1 terminal's 'café') is a usage error (exit status 2) that shows
    the argument and the byte, before anything reaches the database; the
    namespace and registry commands passed it on, and PostgreSQL's refusal
    named neither (exit status 1). The configuration file's path is a path,
    not text: any bytes."""
    url = pg.url()
    run_reghook(['migrate'], database_url=url)
    run_reghook(['namespace', 'add', 'team-a'], database_url=url)
    run_reghook(['registry', 'add', 'reg'], database_url=url)
    hook_id = run_reghook(['webhook', 'add', 'team-a', 'http://127.0.0.1:9/'],
                          database_url=url).stdout.split()[1]
    before = pg.psql('SELECT (SELECT count(*) FROM reghook.namespaces),'
                     ' (SELECT count(*) FROM reghook.registry_sources),'
                     ' (SELECT count(*) FROM reghook.webhooks),'
                     ' (SELECT count(*) FROM reghook.namespace_members),'
                     ' (SELECT string_agg(token_sha256::text, \',\') FROM reghook.registry_sources)')
    for args, shown in ((['namespace', 'add', 'caf\udce9'], "'caf?' is not UTF-8 text (byte 4, 0xe9)"),
                        (['namespace', 'add', 'team-b', '--description', 'caf\udce9 au lait'],
                         "'caf? au lait' is not UTF-8 text (byte 4, 0xe9)"),
                        (['namespace', 'grant', 'team-a', 'r\udcc3le', 'viewer'],
                         "'r?le' is not UTF-8 text (byte 2, 0xc3)"),
                        (['registry', 'add', 'r\udcff'], "'r?' is not UTF-8 text (byte 2, 0xff)"),
                        (['registry', 'add', 'reg-b', '--namespaces', 'team-a,t\udce9am'],
                         "'team-a,t?am' is not UTF-8 text (byte 9, 0xe9)"),
                        (['registry', 'rotate', 'reg\udce9'], "'reg?' is not UTF-8 text"),
                        (['webhook', 'add', 'team-\udce9', 'http://127.0.0.1:9/'],
                         "'team-?' is not UTF-8 text (byte 6, 0xe9)"),
                        (['webhook', 'add', 'team-a', 'http://127.0.0.1:9/caf\udce9'],
                         "'http://127.0.0.1:9/caf?' is not UTF-8 text (byte 23, 0xe9)"),
                        (['webhook', 'show', hook_id + '\udcff'], f"'{hook_id}?' is not UTF-8 text"),
                        (['webhook', 'list', '\udce9quipe'], "'?quipe' is not UTF-8 text (byte 1"),
                        (['deliveries', '--status', 'fa\udcefled'], "'fa?led' is not UTF-8 text"),
                        (['retrigger', '0190\udce9'], "'0190?' is not UTF-8 text")):
        res = run_reghook(args, database_url=url, check=False)
        assert res.returncode == 2, (args, res.returncode, res.stderr)
        assert f'reghook {args[0]}: argument {shown}' in res.stderr, (args, res.stderr)
        assert 'invalid byte sequence' not in res.stderr, (args, res.stderr)
    assert pg.psql('SELECT (SELECT count(*) FROM reghook.namespaces),'
                   ' (SELECT count(*) FROM reghook.registry_sources),'
                   ' (SELECT count(*) FROM reghook.webhooks),'
                   ' (SELECT count(*) FROM reghook.namespace_members),'
                   ' (SELECT string_agg(token_sha256::text, \',\') FROM reghook.registry_sources)'
                   ) == before
    # UTF-8 text goes through; a configuration file's path may be any bytes.
    run_reghook(['namespace', 'add', 'team-c', '--description', 'café crème'], database_url=url)
    config = tmp_path / 'caf\udce9.conf'
    config.write_text(f'database_url = {url}\n')
    out = run_reghook(['namespace', 'list', '--config', config]).stdout
    assert 'café crème' in out, out


def test_the_command_line_does_what_it_was_told_or_says_why_not(pg, tmp_path):
    """Arguments a user mistypes: each did something other than what was
    typed, or said something wrong, until a review of the command line
    found them."""
    url = pg.url()

    def cli(*args, code=0):
        # The database in the environment: after --, --database-url is an argument.
        res = subprocess.run([os.environ['REGHOOK_BIN'], *args], capture_output=True, text=True,
                             env={**child_env(), 'REGHOOK_DATABASE_URL': url}, timeout=60)
        assert not sanitizer_report(res.stderr), res.stderr
        assert res.returncode == code, (args, res.returncode, res.stdout, res.stderr)
        return res

    cli('migrate')
    # Options before the subcommand, and --, as every other command takes them.
    cli('namespace', '--description', 'Team A', 'add', 'team-a')
    assert 'Team A' in cli('namespace', '--', 'list').stdout
    # PostgreSQL keeps 63 bytes of a role name: the grant went to another
    # role than the one named, and said it had gone to the one named.
    pg.psql(f'CREATE ROLE "{"a" * 63}"')
    res = cli('namespace', 'grant', 'team-a', 'a' * 63 + 'EXTRA', 'viewer', code=2)
    assert 'ROLE: a role name is at most 63 bytes, not 68' in res.stderr, res.stderr
    assert pg.psql('SELECT count(*) FROM reghook.namespace_members').strip() == '0'
    # A role's name shown on the terminal holds no escape sequence.
    pg.psql('CREATE ROLE "ev\x1b[31mil"')
    out = cli('namespace', 'grant', 'team-a', 'ev\x1b[31mil', 'viewer').stdout
    assert '\x1b' not in out and 'ev?[31mil is now viewer' in out, out
    res = cli('x\x1b]0;TITLE\x07\x1b[31m', code=2)
    assert '\x1b' not in res.stderr and '\x07' not in res.stderr, res.stderr
    # --url with add replaced the URL given: the webhook went elsewhere.
    res = cli('webhook', 'add', 'team-a', 'http://127.0.0.1:9/first', '--url',
              'http://127.0.0.1:9/second', code=2)
    assert '--url goes with set: add takes the URL as its argument' in res.stderr, res.stderr
    assert pg.psql('SELECT count(*) FROM reghook.webhooks').strip() == '0'
    # A webhook option in another case went to the configuration's key of
    # that name, silently: it is the webhook's, as with '_' for '-'.
    hook_id = cli('webhook', 'add', 'team-a', 'http://127.0.0.1:9/h', '--Max_Attempts', '4'
                  ).stdout.split()[1]
    assert pg.psql(f'SELECT max_attempts FROM reghook.webhooks WHERE id = {hook_id}').strip() == '4'
    res = cli('webhook', 'set', hook_id, '--max-attempts', '3', '--MAX-ATTEMPTS', '5', code=2)
    assert 'given twice' in res.stderr, res.stderr
    # Digits only, as ids and --limit take them.
    for bad in (' 5', '+5', '5 ', '-0', '0x5'):
        res = cli('webhook', 'set', hook_id, '--max-attempts', bad, code=2)
        assert f"--max-attempts: '{bad}' is not a number from 1 to 100" in res.stderr, res.stderr
    for bad in (' 5s', '+5s', '5s '):
        res = cli('webhook', 'set', hook_id, '--timeout', bad, code=2)
        assert '--timeout' in res.stderr, res.stderr
    assert pg.psql(f'SELECT max_attempts FROM reghook.webhooks WHERE id = {hook_id}').strip() == '4'
    # An option given twice is said to be, and after -- an argument is an id.
    res = cli('retrigger', '--webhook', hook_id, '--failed', '--since', '1d', '--since', '2d', code=2)
    assert '--since given twice' in res.stderr, res.stderr
    res = cli('retrigger', '--waiting', '--waiting', '--webhook', hook_id, code=2)
    assert '--waiting given twice' in res.stderr, res.stderr
    res = cli('retrigger', '--', '--x', code=2)
    assert "'--x' is not a delivery id" in res.stderr, res.stderr
    # The configuration a FIFO (read once), the database out of reach: the
    # hint about make run's database opened it again and waited for ever.
    fifo = tmp_path / 'conf'
    os.mkfifo(fifo)

    def write_once():
        with open(fifo, 'w') as f:
            f.write('database_url = postgresql://nobody@127.0.0.1:1/x\n')

    with ThreadPoolExecutor(1) as pool:
        writer = pool.submit(write_once)
        try:
            res = subprocess.run([os.environ['REGHOOK_BIN'], 'namespace', 'list'],
                                 env={**child_env(), 'REGHOOK_CONFIG': str(fifo)},
                                 capture_output=True, text=True, timeout=30)
        finally:
            if not writer.done():  # the command never opened it: let the writer go
                with open(fifo) as f:
                    f.read()
        writer.result()
    assert res.returncode == 1 and 'cannot connect to the database' in res.stderr, res.stderr


def test_a_tag_glob_that_matches_nothing_is_refused_on_the_cli(reghook, pg):
    """--tag '' read as "no filter" stored a glob no tag matches: the
    webhook then got nothing, silently."""
    register(reghook, 'team-a')
    hook_id = add_webhook(reghook, 'team-a', 'http://127.0.0.1:9/', enable=False)
    for args in (['webhook', 'add', 'team-a', 'http://127.0.0.1:9/b', '--tag', ''],
                 ['webhook', 'set', hook_id, '--tag', ''],
                 ['webhook', 'set', hook_id, '--tag', 'release/*']):
        res = reghook.run_cli(*args, check=False)
        assert res.returncode != 0 and 'tag: ' in res.stderr, (args, res.stderr)
    assert pg.psql('SELECT count(*) || tag_glob FROM reghook.webhooks GROUP BY tag_glob'
                   ).strip() == '1*'


def test_listen_error_says_why(reghook, pg):
    """A second daemon on the same address stops at once, saying why."""
    res = run_reghook(['serve', '--listen', f'127.0.0.1:{reghook.port}'], database_url=pg.url(),
                      check=False, timeout=60)
    assert res.returncode != 0
    assert f'cannot listen on 127.0.0.1:{reghook.port}: Address already in use' in res.stderr, \
        res.stderr


def test_configuration_out_of_range_names_the_bounds():
    res = run_reghook(['serve', '--database-url', 'x', '--request-timeout', '99d'], check=False)
    assert res.returncode == 2
    assert res.stderr.strip() == \
        "reghook: configuration: request_timeout: out of range: from 1ms to 1d: '99d'"


def test_a_database_url_libpq_cannot_read_is_refused_without_its_password():
    """libpq's message for a connection string it cannot parse quotes the
    text at fault, the password here: reghook refuses such a database_url
    at start (exit 2, every command and serve) with a message of its own,
    rather than log and show libpq's at every try."""
    for url in ('postgresql://app:Pa%zzS3cretPW@127.0.0.1:1/reghook',
                'host=/nowhere user=app password=Pa S3cretPW',
                "host=/nowhere password='S3cretPW"):
        for args in (['namespace', 'list'], ['serve'], ['migrate']):
            res = run_reghook([*args, '--database-url', url], check=False, timeout=20)
            assert res.returncode == 2, (url, args, res.stderr)
            assert 'S3cretPW' not in res.stdout + res.stderr, (url, args, res.stderr)
            assert res.stderr.startswith('reghook: configuration: database_url: libpq cannot '
                                         'read it: check its quoting and percent-encoding'), \
                res.stderr
    # A database name, and a URL with its '%' encoded, are read (and then not reached).
    for url in ('reghook_nowhere', 'postgresql://app:Pa%25zz@127.0.0.1:1/reghook'):
        res = run_reghook(['namespace', 'list', '--database-url', url], check=False)
        assert res.returncode == 1 and 'cannot connect to the database' in res.stderr, res.stderr


def test_bad_private_networks_name_the_item_and_why():
    for value, why in (('10.0.0.5/8', "in '10.0.0.5/8': bits are set past the prefix length"),
                       ('10.0.0.0/8, 10.1.0.0/33', "in '10.1.0.0/33': an IPv4 prefix is at most"),
                       ('10.0.0.0/8,', 'an empty item'),
                       ('intranet.example', "in 'intranet.example': not an IPv4 or IPv6"),
                       ('fe80::1%eth0', "in 'fe80::1%eth0': not an IPv4 or IPv6"),
                       (','.join(f'10.{i}.0.0/16' for i in range(33)), 'more networks than')):
        res = run_reghook(['serve', '--database-url', 'x', '--allow_private_networks', value],
                          check=False)
        assert res.returncode == 2, (value, res.stderr)
        assert res.stderr.startswith(
            f'reghook: configuration: allow_private_networks: {why}'), (value, res.stderr)


# --- 9: CMD --help -----------------------------------------------------------


def test_command_help_shows_its_options_and_points_to_the_configuration():
    for cmd, options in {'webhook': ['--max-attempts', '--timeout', '--url', '--header'],
                         'deliveries': ['--webhook', '--status', '--since', '--limit'],
                         'retrigger': ['--failed', '--waiting', '--since'],
                         'namespace': ['--private', '--description'],
                         'registry': ['--namespaces']}.items():
        out = run_reghook([cmd, '--help']).stdout
        assert all(o in out for o in options), (cmd, out)
        # serve's configuration is not repeated: no key of it appears.
        assert '--max_in_flight' not in out and '--history_retention' not in out, (cmd, out)
        assert "'reghook --help' lists every key" in out, (cmd, out)
    serve = run_reghook(['serve', '--help']).stdout
    assert '--max_in_flight' in serve and '--history_retention' in serve
    assert '--history_retention' in run_reghook(['--help']).stdout


def test_dash_h_as_an_option_value_is_the_value(reghook, pg):
    """-h after an option that takes a value is that value (a password, a
    name, a glob), not a request for help; after a flag, or alone, it asks
    for help and nothing is done. --help asks for help anywhere."""
    register(reghook, 'team-a')
    hook_id = add_webhook(reghook, 'team-a', 'http://127.0.0.1:9/', enable=False)
    reghook.run_cli('webhook', 'set', hook_id, '--password', '-h', '--name', '-h',
                    '--username', 'u')
    assert pg.psql(f'SELECT s.password, w.name FROM reghook.webhooks w JOIN '
                   f'reghook.webhook_secrets s ON s.webhook_id = w.id WHERE w.id = {hook_id}'
                   ).strip() == '-h|-h'
    # Through the configuration's keys too: --log_level takes -h (and refuses it).
    res = reghook.run_cli('namespace', 'list', '--log_level', '-h', check=False)
    assert res.returncode == 2 and 'log_level' in res.stderr and 'usage:' not in res.stdout, res
    asks = [['namespace', 'add', 'team-b', '--private', '-h'],
            ['namespace', 'add', 'team-b', '-h'],
            ['deliveries', '--json', '-h'],
            ['retrigger', '--failed', '-h', '--webhook', hook_id],
            ['retrigger', '--waiting', '-h'],
            ['webhook', 'set', hook_id, '--password', '--help'],
            ['webhook', 'set', hook_id, '--password=x', '-h']]
    for args in asks:
        res = reghook.run_cli(*args)
        assert res.stdout.startswith(f'usage: reghook {args[0]}'), (args, res.stdout)
    assert pg.psql("SELECT count(*) FROM reghook.namespaces WHERE name = 'team-b'").strip() == '0'
    assert pg.psql(f'SELECT password FROM reghook.webhook_secrets WHERE webhook_id = {hook_id}'
                   ).strip() == '-h'


# --- 2: webhook test waits and tells ----------------------------------------


def test_webhook_test_waits_for_its_attempt_and_prints_the_outcome(reghook_factory, pg,
                                                                  endpoint_factory):
    hook = endpoint_factory()
    daemon = reghook_factory(SLOW_RETRY)
    register(daemon, 'team-a')
    ok = add_webhook(daemon, 'team-a', hook.url('/ok'))
    res = daemon.run_cli('webhook', 'test', ok)
    assert res.stdout.splitlines()[-1].startswith('Delivered: HTTP 200 in ')
    # The request was received before the command returned.
    assert [r.path for r in hook.requests] == ['/ok']

    hook.respond(503, b'maintenance')
    res = daemon.run_cli('webhook', 'test', ok, check=False)
    assert res.returncode == 1
    assert 'Failed: HTTP 503 after ' in res.stdout
    assert f"'reghook deliveries --webhook {ok}'" in res.stdout


def test_webhook_test_and_set_say_what_follows_a_failure(reghook_factory, pg, endpoint_factory):
    """What `webhook test` says after a failure matches what happens next:
    retried, not retried (attempts used up), not retried because a 410
    disabled the webhook; a transport failure's time is said once. After a
    410, `webhook set --url` says that enabling sends the deliveries that
    wait (the retriggers it would suggest refuse a disabled webhook)."""
    hook = endpoint_factory()
    daemon = reghook_factory(SLOW_RETRY)
    token = register(daemon, 'team-a')
    webhook_id = add_webhook(daemon, 'team-a', hook.url('/a'))

    hook.respond(500, b'down')
    res = daemon.run_cli('webhook', 'test', webhook_id, check=False)
    assert 'It is retried on the retry schedule' in res.stdout, res.stdout
    daemon.run_cli('webhook', 'set', webhook_id, '--max-attempts', '1')
    res = daemon.run_cli('webhook', 'test', webhook_id, check=False)
    assert res.stdout.splitlines()[-1] == 'It is not retried: the test push failed for good.', \
        res.stdout
    daemon.run_cli('webhook', 'set', webhook_id, '--max-attempts', '8')

    # Two deliveries wait for their retry; then a 410 disables the webhook.
    for tag in ('1', '2'):
        post(daemon, token, event(tag=tag))
    wait_until(lambda: pg.psql("SELECT count(*) FROM reghook.deliveries WHERE NOT is_test "
                               "AND status = 'pending' AND attempts = 1").strip() == '2',
               msg='two deliveries waiting')
    hook.respond(410, b'gone')
    res = daemon.run_cli('webhook', 'test', webhook_id, check=False)
    assert res.returncode == 1
    assert res.stdout.splitlines()[-3:] == [
        'Failed: HTTP 410 after ' + res.stdout.split('Failed: HTTP 410 after ')[1].split('\n')[0],
        'It is not retried: the test push failed for good.',
        'The webhook is disabled (endpoint answered 410 Gone).'], res.stdout

    hook.respond(200, b'ok')
    res = daemon.run_cli('webhook', 'set', webhook_id, '--url', hook.url('/b'))
    # The two deliveries and the first test push wait; two test pushes failed.
    assert res.stdout.splitlines()[1:] == [
        f"Webhook {webhook_id} is disabled (endpoint answered 410 Gone): once 'reghook "
        f"webhook enable {webhook_id}' has enabled it, 'reghook retrigger --webhook "
        f"{webhook_id} --waiting' tries its 3 waiting deliveries now and 'reghook retrigger "
        f"--webhook {webhook_id} --failed' queues its 2 failed deliveries again."], res.stdout
    daemon.run_cli('webhook', 'enable', webhook_id)
    daemon.run_cli('retrigger', '--webhook', webhook_id, '--waiting')
    wait_until(lambda: sum(r.path == '/b' for r in hook.requests) == 3, msg='sent to /b')

    # A reason a person gave is shown without its control characters.
    pg.psql(f"SELECT reghook.webhook_disable({webhook_id}, E'moved\\x1b]0;owned\\x07 away')")
    res = daemon.run_cli('webhook', 'set', webhook_id, '--url', hook.url('/c'))
    assert f"Webhook {webhook_id} is disabled (moved?]0;owned? away)" in res.stdout, res.stdout
    assert '\x1b' not in res.stdout

    closed = add_webhook(daemon, 'team-a', f'http://127.0.0.1:{free_port()}/')
    daemon.run_cli('webhook', 'set', closed, '--max-attempts', '1')
    res = daemon.run_cli('webhook', 'test', closed, check=False)
    failed = next(line for line in res.stdout.splitlines() if line.startswith('Failed: '))
    assert failed.startswith('Failed: connect: ') and failed.count(' ms') <= 1, res.stdout


def test_webhook_test_says_when_its_webhook_is_removed_meanwhile(reghook_factory, pg):
    daemon = reghook_factory()
    register(daemon, 'team-a')
    webhook_id = add_webhook(daemon, 'team-a', 'http://127.0.0.1:9/hook')
    daemon.stop()  # nothing attempts the test push
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(daemon.run_cli, 'webhook', 'test', webhook_id, check=False)
        wait_until(lambda: pg.psql('SELECT count(*) FROM reghook.deliveries').strip() == '1',
                   msg='the test push queued')
        daemon.run_cli('webhook', 'remove', webhook_id)
        res = waiting.result(timeout=30)
    assert res.returncode == 1
    assert res.stderr.splitlines()[-1] == \
        f'reghook: the test push is gone: webhook {webhook_id} was removed meanwhile', res.stderr


def test_webhook_test_says_that_a_local_target_is_blocked(reghook_factory, pg):
    daemon = reghook_factory({'allow_private_targets': False})
    register(daemon, 'team-a')
    local = add_webhook(daemon, 'team-a', 'http://127.0.0.1:9/hook')
    res = daemon.run_cli('webhook', 'test', local, check=False)
    assert res.returncode == 1
    assert 'Failed: blocked: ' in res.stdout
    assert 'its network in allow_private_networks (or allow_private_targets = true' in res.stdout


@pytest.mark.long
def test_webhook_test_without_a_running_serve_says_so(reghook_factory, pg):
    daemon = reghook_factory()
    register(daemon, 'team-a')
    hook_id = add_webhook(daemon, 'team-a', 'http://127.0.0.1:9/')
    daemon.stop()
    daemon.run_cli('webhook', 'set', hook_id, '--timeout', '1ms')
    res = daemon.run_cli('webhook', 'test', hook_id, check=False)
    assert res.returncode == 1
    assert "is 'reghook serve' running" in res.stderr, res.stderr
    assert rows(pg, 'SELECT status FROM reghook.deliveries') == [{'status': 'pending'}]


def test_webhook_test_bad_input(reghook, pg):
    register(reghook, 'team-a')
    for args in (['webhook', 'test'], ['webhook', 'test', 'x'], ['webhook', 'test', '1', '2'],
                 ['webhook', 'test', '1', '--timeout', '5s'], ['webhook', 'test', '1', '--bogus']):
        res = reghook.run_cli(*args, check=False)
        assert res.returncode == 2 and res.stderr.startswith('reghook webhook: '), (args,
                                                                                   res.stderr)
    res = reghook.run_cli('webhook', 'test', '999', check=False)
    assert res.returncode == 1 and 'webhook 999 does not exist' in res.stderr


# --- 3: fix the URL, then try the waiting deliveries now --------------------


def failing_then_fixed(daemon, pg, hook):
    """A webhook whose URL points nowhere, with one delivery that failed its
    first attempt and waits ten minutes for the next. Returns (id, delivery)."""
    token = register(daemon, 'team-a')
    hook_id = add_webhook(daemon, 'team-a', 'http://127.0.0.1:9/nowhere')
    post(daemon, token, event(tag='v1'))
    wait_attempts(pg, hook_id, 1)
    [d] = wait_status(pg, hook_id, 'pending')
    return hook_id, d['id']


def test_webhook_set_url_offers_retry_now_and_retrigger_waiting_sends_them(reghook_factory,
                                                                          pg, endpoint_factory):
    hook = endpoint_factory()
    daemon = reghook_factory(SLOW_RETRY)
    hook_id, delivery = failing_then_fixed(daemon, pg, hook)
    # Nothing is failed: retrigger --failed finds nothing, as the issue says.
    res = daemon.run_cli('retrigger', '--webhook', hook_id, '--failed')
    assert res.stdout.startswith('0 failed deliveries')

    out = daemon.run_cli('webhook', 'set', hook_id, '--url', hook.url('/fixed')).stdout
    assert out == (f'Webhook {hook_id} changed.\n'
                   f"1 delivery waits for a next attempt: 'reghook retrigger --webhook {hook_id} "
                   "--waiting' tries it now.\n")
    out = daemon.run_cli('retrigger', '--webhook', hook_id, '--waiting').stdout
    assert out == f'1 delivery of webhook {hook_id} waiting for a next attempt: tried now.\n'
    [req] = hook.wait_for(1, timeout=20)
    assert req.path == '/fixed' and req.header('X-Reghook-Delivery') == delivery
    [d] = wait_status(pg, hook_id, 'succeeded')
    assert d['attempts'] == 2
    # Nothing waits any more; a set without --url offers nothing.
    out = daemon.run_cli('retrigger', '--webhook', hook_id, '--waiting').stdout
    assert out.startswith('0 deliveries of webhook')
    assert daemon.run_cli('webhook', 'set', hook_id, '--name', 'x').stdout == \
        f'Webhook {hook_id} changed.\n'


def test_retrigger_of_a_waiting_delivery_tries_it_now(reghook_factory, pg, endpoint_factory):
    hook = endpoint_factory()
    daemon = reghook_factory(SLOW_RETRY)
    hook_id, delivery = failing_then_fixed(daemon, pg, hook)
    daemon.run_cli('webhook', 'set', hook_id, '--url', hook.url('/one'))
    assert daemon.run_cli('retrigger', delivery).stdout == f'Delivery {delivery} queued again.\n'
    hook.wait_for(1, timeout=20)
    [d] = wait_status(pg, hook_id, 'succeeded')
    # Within its round: the same attempts, the round not restarted.
    assert rows(pg, f"SELECT attempts, round_start, retriggered_by FROM reghook.deliveries "
                    f"WHERE id = '{delivery}'") == [
        {'attempts': 2, 'round_start': 0, 'retriggered_by': 'postgres'}]


def test_retry_waiting_in_sql_for_contributors_only(reghook_factory, pg, endpoint_factory):
    hook = endpoint_factory()
    daemon = reghook_factory(SLOW_RETRY)
    hook_id, delivery = failing_then_fixed(daemon, pg, hook)
    pg.psql(f"SELECT reghook.webhook_set({hook_id}, "
            f"jsonb_build_object('url', '{hook.url('/sql')}'))")
    for role, access in (('viewer_a', 'viewer'), ('contrib_a', 'contributor')):
        pg.create_login_role(role)
        daemon.run_cli('namespace', 'grant', 'team-a', role, access)
    outsider = pg.create_login_role('outsider')
    for who in ('viewer_a', outsider):
        with pytest.raises(psycopg2.Error):
            pg.connect(user=who).cursor().execute('SELECT reghook.retry_waiting(%s)',
                                                  (int(hook_id),))
    assert hook.requests == []
    cur = pg.connect(user='contrib_a').cursor()
    cur.execute('SELECT reghook.retry_waiting(%s)', (int(hook_id),))
    assert cur.fetchone() == (1,)
    assert hook.wait_for(1, timeout=20)[0].path == '/sql'
    wait_status(pg, hook_id, 'succeeded')


def test_retrigger_waiting_bad_input(reghook_factory, pg):
    daemon = reghook_factory()
    register(daemon, 'team-a')
    hook_id = add_webhook(daemon, 'team-a', 'http://127.0.0.1:9/', enable=False)
    for args in (['retrigger', '--waiting'], ['retrigger', '--webhook', hook_id],
                 ['retrigger', '--webhook', hook_id, '--waiting', '--failed'],
                 ['retrigger', '--webhook', hook_id, '--waiting', '--since', '1d'],
                 ['retrigger', '--webhook', 'x', '--waiting'],
                 ['retrigger', '--webhook', hook_id, '--waiting', 'extra'],
                 ['retrigger', '--waiting=yes', '--webhook', hook_id]):
        res = daemon.run_cli(*args, check=False)
        assert res.returncode == 2 and res.stderr.startswith('reghook retrigger: '), (args,
                                                                                     res.stderr)
    res = daemon.run_cli('retrigger', '--webhook', hook_id, '--waiting', check=False)
    assert res.returncode == 1 and 'enable it first' in res.stderr
    res = daemon.run_cli('retrigger', '--webhook', '999999', '--waiting', check=False)
    assert res.returncode == 1 and 'webhook 999999 does not exist' in res.stderr


# --- 10: callbacks in the history --------------------------------------------


def test_callbacks_show_in_delivery_history_and_deliveries(reghook, pg, endpoint_factory):
    hook_id, path = delivered_callback_path(reghook, endpoint_factory)
    wait_status(pg, hook_id, 'succeeded')
    report = {'state': 'failure', 'description': 'tests failed', 'context': 'ci/test',
              'target_url': 'https://ci.example/run/7'}
    assert reghook.post(path, json.dumps(report).encode(),
                        {'Content-Type': 'application/json'})[0] == 200

    [h] = rows(pg, 'SELECT callback_state, callback_description, callback_context, '
                   'callback_target_url, callback_at IS NOT NULL AS at '
                   'FROM reghook.delivery_history')
    assert h == {'callback_state': 'failure', 'callback_description': 'tests failed',
                 'callback_context': 'ci/test', 'callback_target_url': 'https://ci.example/run/7',
                 'at': True}
    # A member reads them as well.
    pg.create_login_role('viewer_a')
    reghook.run_cli('namespace', 'grant', 'team-a', 'viewer_a', 'viewer')
    cur = pg.connect(user='viewer_a').cursor()
    cur.execute('SELECT callback_state FROM reghook.delivery_history')
    assert cur.fetchall() == [('failure',)]

    table = reghook.run_cli('deliveries').stdout.splitlines()
    assert table[0].split()[-1] == 'callback'
    assert table[1].endswith('failure: tests failed')
    [j] = json.loads(reghook.run_cli('deliveries', '--json').stdout)
    assert j['callback_state'] == 'failure' and j['callback_context'] == 'ci/test'


def test_the_cli_prints_no_control_characters(reghook, pg, endpoint_factory):
    """Text an endpoint (a callback's description) or a contributor (a
    webhook's name) chose reaches the terminal of whoever lists them with
    its control characters made '?': no cursor moves, no window title."""
    hook_id, path = delivered_callback_path(reghook, endpoint_factory)
    wait_status(pg, hook_id, 'succeeded')
    report = {'state': 'failure', 'description': 'tests \x1b]0;owned\x07failed\x1b[2J\u009b1m',
              'context': 'ci/test'}
    assert reghook.post(path, json.dumps(report).encode(),
                        {'Content-Type': 'application/json'})[0] == 200
    reghook.run_cli('webhook', 'set', hook_id, '--name', 'hook\x1b[1A\rname')
    listed = {' '.join(args): reghook.run_cli(*args).stdout
              for args in (['deliveries'], ['webhook', 'list'], ['webhook', 'show', hook_id])}
    for what, out in listed.items():
        assert not any(ord(ch) < 0x20 and ch != '\n' or 0x7f <= ord(ch) <= 0x9f for ch in out), \
            (what, out)
    assert 'failure: tests ?]0;owned?failed?[2J?1m' in listed['deliveries']
    assert 'hook?[1A?name' in listed['webhook list']
    assert 'hook?[1A?name' in listed[f'webhook show {hook_id}']
    # Read with SQL, the text is as it was sent.
    assert pg.psql('SELECT callback_description FROM reghook.deliveries').strip() == \
        report['description']


def test_command_line_slips_are_named(reghook, pg, tmp_path):
    """Mistakes a person makes typing a command, each named for what it is:
    an option given twice (said to be unknown), "--" before an argument that
    starts with '-' (a role named -ci could not be granted: "--" counted as
    an argument), control characters of what was typed (written to the
    terminal as they were), duplicate actions (stored twice), an empty name
    (a blank in every list) and a line break in a user name (a check
    constraint's name for a message)."""
    register(reghook, 'team-a')
    hook_id = add_webhook(reghook, 'team-a', 'http://127.0.0.1:9/', enable=False)
    for args, why in ((['webhook', 'set', hook_id, '--name', 'a', '--name', 'b'],
                       'webhook: --name given twice'),
                      (['webhook', 'set', hook_id, '--timeout=1s', '--timeout', '2s'],
                       'webhook: --timeout given twice'),
                      # A key of the configuration too: the second was taken for it.
                      (['webhook', 'set', hook_id, '--max-attempts', '3', '--max-attempts', '5'],
                       'webhook: --max-attempts given twice'),
                      (['webhook', 'set', hook_id, '--password-file', '-', '--password-file',
                        '-'], 'webhook: --password-file given twice'),
                      (['namespace', 'add', 'x', '--private', '--private'],
                       'namespace: --private given twice'),
                      (['registry', 'add', 'r', '--namespaces', 'a', '--namespaces=b'],
                       'registry: --namespaces given twice'),
                      (['deliveries', '--json', '--json'], 'deliveries: --json given twice'),
                      (['namespace', 'add', 'x', '--\x1b[31mred'],
                       "namespace: unknown option '--?[31mred'"),
                      (['webhook', 'set', hook_id, '--name', ' '],
                       '--name: empty; leave it out for the URL\'s host')):
        res = reghook.run_cli(*args, check=False)
        assert res.returncode == 2 and why in res.stderr, (args, res.stderr)
        assert '\x1b' not in res.stderr, res.stderr
    res = reghook.run_cli('webhook', 'set', hook_id, '--username', 'a\r\nX-Injected: 1',
                          check=False)
    assert res.returncode == 1 and 'username: a control character' in res.stderr, res.stderr
    res = reghook.run_cli('webhook', 'set', hook_id, '--url', 'http://a%0d%0aX:1@127.0.0.1:9/',
                          check=False)
    assert res.returncode == 1 and 'username: a control character' in res.stderr, res.stderr
    # push,push is push; in SQL a list with an action twice is refused.
    reghook.run_cli('webhook', 'set', hook_id, '--actions', 'push,push')
    assert pg.psql(f'SELECT actions FROM reghook.webhooks WHERE id = {hook_id}').strip() == \
        '{push}'
    with pytest.raises(Exception, match='actions: push, delete, or both, each once'):
        pg.psql(f"""SELECT reghook.webhook_set({hook_id}, '{{"actions": ["delete", "delete"]}}')""")
    # After "--", an argument that starts with '-' is no option.
    role = pg.create_login_role('-ci')
    try:
        # (run_cli would put --database-url after the "--")
        res = subprocess.run([os.environ['REGHOOK_BIN'], 'namespace', 'grant', '--database-url',
                              pg.url(), 'team-a', '--', role, 'viewer'], capture_output=True,
                             text=True, env=child_env(), timeout=60)
        assert res.returncode == 0, res.stderr
        assert pg.psql("SELECT count(*) FROM pg_auth_members m JOIN pg_roles r "
                       "ON r.oid = m.member WHERE r.rolname = '-ci'").strip() == '1'
    finally:
        pg.psql('DROP ROLE "-ci"', dbname='postgres')
    # A namespace mistyped is said, not listed as one without webhooks.
    res = reghook.run_cli('webhook', 'list', 'team-b', check=False)
    assert res.returncode == 1 and res.stdout == '' and \
        'namespace "team-b" does not exist, or is not yours' in res.stderr, res
    assert 'http://127.0.0.1:9/' in reghook.run_cli('webhook', 'list', 'team-a').stdout
    # A database without the schema (database_url naming another one): what to do.
    pg.psql('CREATE DATABASE other', dbname='postgres')
    try:
        res = reghook.run_cli('webhook', 'list', check=False,
                              database_url=pg.url(dbname='other'))
        assert res.returncode == 1 and 'relation "reghook.webhooks" does not exist' in \
            res.stderr and "hint: is database_url reghook's database, and its schema " \
            "current? 'reghook migrate' brings it current" in res.stderr, res.stderr
    finally:
        pg.psql('DROP DATABASE other', dbname='postgres')
    # A config file's key is quoted without its control characters.
    conf = tmp_path / 'reghook.conf'
    conf.write_text('\x1b[31mred = 1\n')
    res = run_reghook(['serve', '--config', str(conf)], check=False)
    assert res.returncode == 2 and ':1: ?[31mred: unknown configuration key' in res.stderr, \
        res.stderr


def test_retrigger_failed_says_delivery_for_one(reghook_factory, pg, endpoint_factory):
    daemon = reghook_factory({'retry_schedule': '0', 'max_attempts': 1})
    token = register(daemon, 'team-a')
    hook = endpoint_factory()
    hook.respond(500)
    hook_id = add_webhook(daemon, 'team-a', hook.url('/'))
    post(daemon, token, event())
    wait_status(pg, hook_id, 'failed')
    hook.respond(200)
    out = daemon.run_cli('retrigger', '--webhook', hook_id, '--failed').stdout
    assert out == f'1 failed delivery of webhook {hook_id} queued again.\n'


# --- 12: the tests carry their fixtures -------------------------------------


def test_registry_samples_are_in_the_checkout(samples_dir):
    assert samples_dir == ROOT / 'tests' / 'fixtures' / 'samples'
    names = sorted(p.name for p in samples_dir.glob('*.json'))
    assert len(names) == 12
    # The same envelopes seed the envelope fuzzer.
    corpus = ROOT / 'tests' / 'fuzz' / 'corpus' / 'envelope'
    for name in names:
        assert (samples_dir / name).read_bytes() == (corpus / name).read_bytes(), name
    for path in (ROOT / 'tests' / 'run', ROOT / 'tests' / 'integration' / 'conftest.py',
                 ROOT / 'tests' / 'unit' / 'test_envelope.c'):
        text = path.read_text()
        assert '../shared' not in text and "'shared'" not in text, path
        assert 'REGHOOK_SAMPLES' not in text, path


# --- 1: the CLI in a make run checkout, without var/env ---------------------


def test_without_a_database_in_a_make_run_checkout_the_cli_says_to_source_var_env(tmp_path):
    res = run_reghook(['namespace', 'add', 'team-a'], check=False, cwd=tmp_path)
    assert res.returncode == 2 and 'var/env' not in res.stderr
    (tmp_path / 'var').mkdir()
    (tmp_path / 'var' / 'reghook.conf').write_text('database_url = host=/nowhere\n')
    (tmp_path / 'var' / 'env').write_text('export REGHOOK_CONFIG=...\n')
    res = run_reghook(['namespace', 'add', 'team-a'], check=False, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().endswith(
        "database_url: not set (use --database-url, REGHOOK_DATABASE_URL or the config file; "
        "for make run's database, first '. var/env' in this shell)")


def fake_tools(bin_dir, calls):
    """Stand-ins for dpkg-query (nothing installed), apt-get, systemctl and
    update-rc.d that record their arguments in calls."""
    bin_dir.mkdir()
    for tool in ('dpkg-query', 'apt-get', 'systemctl', 'update-rc.d'):
        path = bin_dir / tool
        path.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n'
                        f'[ "{tool}" = apt-get ] && [ "$1" = install ] && '
                        f'[ -x "$INSTALL_DEPS_POLICY_RC" ] && '
                        f'echo "policy $("$INSTALL_DEPS_POLICY_RC"; echo $?)" >> {calls}\n'
                        f'[ "{tool}" = apt-get ] && [ "$1" = install ] && '
                        '[ -n "$FAIL_INSTALL" ] && exit 100\n'
                        'exit 0\n')
        path.chmod(0o755)


def test_make_run_installs_no_test_server_and_the_tests_servers_stay_off(tmp_path):
    """make run installs what building and serving need, not nginx, the
    registry or PgBouncer (whose Debian packages serve port 80 and an open
    registry on port 5000 on every address); make test's install keeps every
    service from starting while it installs (policy-rc.d says 101) and
    disables the test servers' services after. Run with stand-ins for the
    package tools, as root is needed to install."""
    if os.geteuid() != 0:
        pytest.skip('install-deps installs as root only')
    calls = tmp_path / 'calls'
    fake_tools(tmp_path / 'bin', calls)
    env = {**child_env(), 'PATH': f"{tmp_path / 'bin'}:{os.environ['PATH']}",
           'INSTALL_DEPS_POLICY_RC': str(tmp_path / 'policy-rc.d')}
    script = str(ROOT / 'packaging' / 'install-deps')

    def run(*args, extra=None):
        calls.write_text('')
        proc = subprocess.run([script, *args], env={**env, **(extra or {})},
                              capture_output=True, text=True, timeout=60)
        return proc, calls.read_text().splitlines()

    proc, lines = run('run')
    assert proc.returncode == 0, proc.stderr
    [install] = [line for line in lines if line.startswith('apt-get install')]
    wanted = set(install.split()[4:])
    assert {'build-essential', 'libpq-dev', 'postgresql', 'ca-certificates'} <= wanted, wanted
    assert not wanted & {'nginx-light', 'docker-registry', 'pgbouncer', 'podman'}, wanted
    assert 'policy 101' in lines and not (tmp_path / 'policy-rc.d').exists()

    proc, lines = run()
    assert proc.returncode == 0, proc.stderr
    [install] = [line for line in lines if line.startswith('apt-get install')]
    assert {'nginx-light', 'docker-registry', 'pgbouncer'} <= set(install.split())
    assert 'policy 101' in lines and not (tmp_path / 'policy-rc.d').exists()
    disabled = ' '.join(line for line in lines if 'disable' in line)
    for svc in ('nginx', 'docker-registry', 'pgbouncer'):
        assert svc in disabled, lines
    # An install that stops midway (the packages it configured enabled their
    # services) still leaves them disabled, and no policy-rc.d behind.
    proc, lines = run(extra={'FAIL_INSTALL': '1'})
    assert proc.returncode != 0
    disabled = ' '.join(line for line in lines if 'disable' in line)
    for svc in ('nginx', 'docker-registry', 'pgbouncer'):
        assert svc in disabled, lines
    assert not (tmp_path / 'policy-rc.d').exists()
    assert subprocess.run([script, 'bogus'], env=env, capture_output=True,
                          timeout=60).returncode == 2
