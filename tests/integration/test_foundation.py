"""The ground every feature stands on: command line, configuration,
migrations, readiness and the HTTP skeleton, each used as an operator would."""

import concurrent.futures
import json
import os
import resource
import signal
import subprocess
import threading
import time

from harness import child_env, http_request, run_reghook, sanitizer_report, wait_until


def run_with_env(args, env):
    """Runs the CLI with REGHOOK_* variables (which run_reghook strips)."""
    proc = subprocess.run([os.environ['REGHOOK_BIN'], *args], capture_output=True, text=True,
                          env={**child_env(), **env}, timeout=60)
    assert not sanitizer_report(proc.stderr), proc.stderr
    return proc


def test_help_lists_commands_and_every_config_key():
    out = run_reghook(['--help']).stdout
    for word in ('serve', 'migrate', 'registry', 'namespace', 'webhook'):
        assert f'  {word}' in out
    for key in ('database_url', 'listen', 'public_url', 'registry_url', 'max_in_flight',
                'max_in_flight_per_webhook', 'request_timeout', 'connect_timeout',
                'max_attempts', 'retry_schedule', 'allow_private_targets', 'max_request_body',
                'response_body_limit', 'history_retention', 'log_level', 'client_timeout'):
        assert f'--{key}' in out, key
    serve = run_reghook(['serve', '--help']).stdout
    assert serve.startswith('usage: reghook serve')
    assert '--request_timeout' in serve
    webhook = run_reghook(['webhook', '--help']).stdout
    for flag in ('--name', '--url', '--method', '--content-type', '--header', '--username',
                 '--password', '--secret', '--actions', '--repository', '--tag', '--format',
                 '--template', '--timeout', '--max-attempts'):
        assert f'  {flag} ' in webhook, flag


def test_bad_usage_exits_2_with_one_line():
    for args in (['frobnicate'], [], ['serve', 'extra-argument'], ['namespace', 'add'],
                 ['registry', 'add', 'x', '--namespaces']):
        proc = run_reghook(args, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)


def test_every_command_without_a_database_exits_2_naming_database_url():
    for args in (['serve'], ['migrate'], ['registry', 'list'], ['namespace', 'list'],
                 ['webhook', 'list'], ['deliveries'], ['retrigger', '--webhook', '1', '--failed']):
        proc = run_reghook(args, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and 'database_url: not set' in lines[0], (args, proc.stderr)


def test_bad_config_value_names_the_key(tmp_path):
    cases = [
        (['serve', '--database-url', 'x', '--request-timeout', 'soon'], {}, 'request_timeout'),
        (['serve', '--database-url', 'x', '--max_attempts=0'], {}, 'max_attempts'),
        (['serve', '--database-url', 'x', '--listen', 'nowhere'], {}, 'listen'),
        # Forms that bound but made URLs no one can use of the default public_url.
        (['serve', '--database-url', 'x', '--listen', '127.0.0.1:+80'], {},
         'listen: port is not a number from 1 to 65535'),
        (['serve', '--database-url', 'x', '--listen', '127.0.0.1: 80'], {}, 'listen: port'),
        (['serve', '--database-url', 'x', '--listen', '127.0.0.1:0'], {}, 'listen: port'),
        (['serve', '--database-url', 'x', '--listen', '::1:8080'], {},
         'listen: an IPv6 address goes in brackets'),
        # An empty host listened on every interface unasked, and named no one.
        (['serve', '--database-url', 'x', '--listen', '[]:8080'], {},
         'listen: not an IPv6 address in the brackets'),
        (['serve', '--database-url', 'x', '--listen', ':8080'], {}, 'listen: not HOST:PORT'),
        (['serve', '--database-url', 'x', '--listen', '[::1x]:8080'], {},
         'listen: not an IPv6 address in the brackets'),
        (['serve', '--database-url', 'x', '--listen', 'a/b:8080'], {},
         'listen: the host is not an address or a host name'),
        (['serve', '--database-url', 'x', '--public-url', 'http://u:p@hooks.example'], {},
         'public_url: a base URL holds no user name or password'),
        (['serve', '--database-url', 'x', '--public-url', 'http://hooks.example:99999'], {},
         'public_url: the port is not a number from 1 to 65535'),
        (['serve', '--database-url', 'x', '--public-url', 'http://hooks.example:abc/'], {},
         'public_url: the port is not a number'),
        (['serve', '--database-url', 'x', '--public-url', 'http://[::1'], {},
         "public_url: '[' without ']' in the host"),
        (['serve', '--database-url', 'x', '--public-url', 'https://hooks.example.com # prod'],
         {}, 'public_url: a base URL holds no whitespace'),
        (['serve', '--database-url', 'x', '--public-url', 'https://'], {},
         'public_url: no host after the scheme'),
        (['serve', '--database-url', 'x'], {'REGHOOK_REGISTRY_URL': 'https://r.example/?x=1'},
         'registry_url: a base URL holds no'),
        (['serve', '--database-url', 'x', '--retry-schedule', '1s,,2s'], {}, 'retry_schedule'),
        # Each step at most 30 days: beyond, the database's intervals overflow.
        (['serve', '--database-url', 'x', '--retry-schedule', '0,31d'], {},
         'retry_schedule: not a comma-separated list of up to 32 durations of at most 30d'),
        (['serve', '--database-url', 'x', '--retry-schedule', '0,9999999999999d'], {},
         'retry_schedule'),
        (['serve', '--database-url', 'x'], {'REGHOOK_MAX_REQUEST_BODY': 'huge'},
         'max_request_body'),
        (['serve', '--database-url', 'x'], {'REGHOOK_LOG_LEVEL': 'loud'}, 'log_level'),
        # The name goes into every lease: text the database takes, whole.
        (['serve', '--database-url', 'x'], {'REGHOOK_INSTANCE_NAME': 'h\udce9llo'},
         'instance_name: not printable UTF-8 text'),
        (['serve', '--database-url', 'x', '--instance-name', 'one\ttwo'], {},
         'instance_name: not printable UTF-8 text'),
        (['serve', '--database-url', 'x', '--instance-name', 'a' * 126 + '\u00e9'], {},
         'instance_name: longer than 127 bytes'),
        (['serve', '--database-url', 'x', '--client-timeout', '0'], {}, 'client_timeout'),
        (['serve', '--database-url', 'x', '--client-timeout', 'forever'], {}, 'client_timeout'),
        (['serve', '--database-url', 'x'], {'REGHOOK_CLIENT_TIMEOUT': '2h'}, 'client_timeout'),
        (['serve', '--database-url', 'x', '--allow-private-targets', 'maybe'], {},
         'allow_private_targets'),
        # Values libpq refuses only as it connects, before any host: serve tried
        # again forever, never ready, as if the database were away.
        (['serve', '--database-url', 'postgresql://u:pw@127.0.0.1:1/db?sslmode=bogus'], {},
         "database_url: sslmode: 'bogus' is not one of disable|allow|prefer|require|"),
        (['serve', '--database-url', 'host=127.0.0.1 port=99999'], {},
         "database_url: port: '99999' is not a port from 1 to 65535"),
        (['serve', '--database-url', 'host=a,b port=5432,x'], {}, "database_url: port: '5432,x'"),
        (['serve', '--database-url', 'postgresql://h/db?connect_timeout=soon'], {},
         "database_url: connect_timeout: 'soon' is not a whole number"),
        (['serve'], {'REGHOOK_DATABASE_URL': 'postgresql://h/db?target_session_attrs=primry'},
         "database_url: target_session_attrs: 'primry' is not one of"),
        (['serve', '--database-url', 'postgresql://postgres@127.0.0.1/x?tcp_user_timeout=soon'],
         {}, "database_url: tcp_user_timeout: 'soon' is not a whole number"),
        # Taken by libpq for a database name, and said nowhere.
        (['serve', '--database-url', ' postgresql://h/db'], {},
         'database_url: not a URL libpq reads: it begins with postgresql:// or postgres://'),
        (['serve', '--database-url', 'Postgresql://h/db'], {}, 'database_url: not a URL'),
        (['serve', '--database-url', 'mysql://h/db'], {}, 'database_url: not a URL'),
    ]
    for args, env, key in cases:
        proc = run_with_env(args, env)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and key in lines[0], (args, proc.stderr)

    conf = tmp_path / 'reghook.conf'
    conf.write_text('# a comment\nlisten = 127.0.0.1:1\nno_such_key = 1\n')
    proc = run_reghook(['serve', '--config', str(conf)], check=False)
    assert proc.returncode == 2
    assert 'no_such_key' in proc.stderr and ':3:' in proc.stderr

    conf.write_text('connect_timeout = forever\n')
    proc = run_reghook(['migrate', '--config', str(conf)], check=False)
    assert proc.returncode == 2 and 'connect_timeout' in proc.stderr

    proc = run_reghook(['serve', '--config', str(tmp_path / 'missing.conf')], check=False)
    assert proc.returncode == 2 and 'missing.conf' in proc.stderr


def test_config_errors_are_json_lines_when_log_format_is_json(tmp_path):
    """A collector that reads JSON lines gets the reason serve would not start,
    whichever source asks for json and whichever holds the fault; a bad
    log_format itself, or none asked for, gives the plain line."""
    conf = tmp_path / 'reghook.conf'
    conf.write_text('log_format = json\nlisten = 127.0.0.1:1\nno_such_key = 1\n')
    json_conf = tmp_path / 'json.conf'
    json_conf.write_text('log_format = json\n')
    garbled = tmp_path / 'garbled.conf'
    garbled.write_text('log_format = json\ngarbage\n')
    plain_conf = tmp_path / 'plain.conf'
    plain_conf.write_text('log_format = xml\nno_such_key = 1\n')
    json_cases = [
        (['serve', '--config', str(conf)], {}, 'no_such_key: unknown configuration key'),
        (['serve', '--database-url', 'x', '--log-format', 'json', '--listen', 'nowhere'], {},
         'listen: not HOST:PORT'),
        (['serve', '--database-url', 'x', '--request-timeout', 'soon'],
         {'REGHOOK_LOG_FORMAT': 'json'}, 'request_timeout'),
        (['serve', '--database-url', 'x', '--log_format=json'], {'REGHOOK_LOG_LEVEL': 'loud'},
         'log_level'),
        (['serve', '--log-format', 'json'], {}, 'database_url: not set'),
        (['serve', '--database-url', "host='x"], {'REGHOOK_LOG_FORMAT': 'json'},
         'database_url: libpq cannot read it'),
        # A line no key can be read from, the file asking for json before it.
        (['serve', '--config', str(garbled)], {}, ":2: expected 'key = value'"),
        # The config file asks for json, a flag is the fault.
        (['serve', '--config', str(json_conf), '--database-url', 'x', '--max-attempts', '0'], {},
         'max_attempts'),
    ]
    for args, env, key in json_cases:
        proc = run_with_env(args, env)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, (args, proc.stderr)
        line = json.loads(lines[0])
        assert line['level'] == 'error' and key in line['msg'], (args, line)
        assert line['msg'].startswith('configuration: '), (args, line)
    plain_cases = [
        (['serve', '--config', str(plain_conf)], {}, "log_format: not one of text, json: 'xml'"),
        (['serve', '--config', str(conf), '--log-format', 'text'], {}, 'no_such_key'),
        (['serve', '--database-url', 'x', '--listen', 'nowhere'], {'REGHOOK_LOG_FORMAT': 'text'},
         'listen: not HOST:PORT'),
        (['serve', '--config', str(tmp_path / 'missing.conf'), '--log-format', 'json'], {},
         'missing.conf'),
    ]
    # A FIFO given as the file was read once: the error is said in plain
    # text, not waited on for a second writer.
    fifo = tmp_path / 'fifo.conf'
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=('log_format = json\nbad = 1\n',))
    writer.start()
    plain_cases.append((['serve', '--config', str(fifo)], {}, 'bad: unknown configuration key'))
    for args, env, key in plain_cases:
        proc = run_with_env(args, env)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('reghook: configuration: '), \
            (args, proc.stderr)
        assert key in lines[0], (args, proc.stderr)
    writer.join()


def test_a_config_file_read_short_of_memory_stops_the_start(tmp_path):
    """A line longer than the memory the process may have (a 256 MiB comment
    under a 100 MiB address-space limit) is an error naming the file, not
    the end of the file, which left the lines after it unread (a bad value
    there passed, and the command ran). The build without sanitizers: ASan
    reserves terabytes of address space."""
    conf = tmp_path / 'reghook.conf'
    with open(conf, 'w') as f:
        f.write('database_url = postgresql://nobody@127.0.0.1:1/none\n#')
        for _ in range(256):
            f.write('x' * (1 << 20))
        f.write('\nlog_level = bogus\n')

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (100 << 20, 100 << 20))

    proc = subprocess.run([os.environ['REGHOOK_PLAIN_BIN'], 'migrate', '--config', str(conf)],
                          capture_output=True, text=True, env=child_env(), timeout=60,
                          preexec_fn=limited)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f'reghook: configuration: config: cannot read {conf}: ' \
                          'Cannot allocate memory\n', proc.stderr


def test_database_urls_libpq_takes_are_taken():
    """The start-up check of database_url refuses only what libpq refuses:
    these forms libpq takes (blanks and a sign around numbers, one port per
    host, a default port left empty, a socket directory), so each tries to
    connect (to nothing here: exit 1, "cannot connect"), not exit 2."""
    for url in ('host=127.0.0.1 port=+1', "host=127.0.0.1 port=' 1 '",
                "host=127.0.0.1,127.0.0.2 port='1, 1'", 'host=127.0.0.1,127.0.0.2 port=1,',
                "host=127.0.0.1 port=1 connect_timeout='5 '", 'postgresql://127.0.0.1:1/x?'
                'connect_timeout=%205%20&keepalives=+1&tcp_user_timeout=-1',
                'postgresql://%2Fnonexistent/x', 'host=/nonexistent dbname=x sslmode=disable'):
        proc = run_with_env(['namespace', 'list', '--database-url', url], {})
        assert proc.returncode == 1 and 'cannot connect' in proc.stderr, (url, proc.stderr)


def test_a_value_file_written_with_a_byte_order_mark(pg, tmp_path):
    """A secret saved by an editor that writes a byte order mark
    (REGHOOK_DATABASE_URL_FILE) is the value after it."""
    secret = tmp_path / 'database-url'
    secret.write_bytes(b'\xef\xbb\xbf' + pg.url().encode() + b'\r\n')
    proc = run_with_env(['migrate'], {'REGHOOK_DATABASE_URL_FILE': str(secret)})
    assert proc.returncode == 0 and 'schema current' in proc.stdout, proc.stderr
    # A directory where the file should be (a secret mounted wrong) says so,
    # not "read error".
    proc = run_with_env(['migrate'], {'REGHOOK_DATABASE_URL_FILE': str(tmp_path)})
    assert proc.returncode == 2 and \
        f'database_url: REGHOOK_DATABASE_URL_FILE: {tmp_path}: Is a directory' in proc.stderr, \
        proc.stderr


def test_config_file_env_and_flags_later_wins(pg, tmp_path):
    """database_url from the file, overridden by the environment, overridden by a flag."""
    bad = 'postgresql://nobody@127.0.0.1:1/none'
    conf = tmp_path / 'reghook.conf'
    conf.write_text(f'database_url = {bad}\n')
    assert run_reghook(['migrate', '--config', str(conf)], check=False).returncode == 1
    env = {'REGHOOK_DATABASE_URL': pg.url()}
    proc = run_with_env(['migrate', '--config', str(conf)], env)
    assert 'schema current' in proc.stdout, proc.stderr
    proc = run_with_env(['migrate', '--config', str(conf), '--database-url', bad], env)
    assert proc.returncode == 1
    conf.write_text(f'database_url = {bad}\n')
    assert 'schema current' in run_reghook(['migrate', '--config', str(conf)],
                                           database_url=pg.url()).stdout


def test_a_misspelt_environment_variable_is_named_not_ignored_silently(pg, tmp_path):
    """An unknown key in the file is refused; the environment is shared with
    whatever else runs there, so a REGHOOK_ variable reghook does not read
    gets a warning naming it (and the variable meant, when one is near),
    and the command goes on."""
    env = {'REGHOOK_DATABASE_URL': pg.url(), 'REGHOOK_DATABSE_URL': 'x',
           'REGHOOK_log_level': 'debug', 'REGHOOK_LISTEN_FIEL': '/x',
           'REGHOOK_OWN_THING': 'x', 'REGHOOK_LOG_LEVEL': 'info', 'REGHOOK_CONFIG_FILE': '/x'}
    proc = run_with_env(['migrate'], env)
    assert 'schema current' in proc.stdout, proc.stderr
    warned = sorted(line.split('] ', 1)[1] for line in proc.stderr.splitlines()
                    if ' warn ' in line)
    said = "is not a setting of reghook's: ignored"
    assert warned == [
        f'environment variable REGHOOK_CONFIG_FILE {said} (did you mean REGHOOK_CONFIG?)',
        f'environment variable REGHOOK_DATABSE_URL {said} (did you mean REGHOOK_DATABASE_URL?)',
        f'environment variable REGHOOK_LISTEN_FIEL {said} (did you mean REGHOOK_LISTEN_FILE?)',
        f'environment variable REGHOOK_OWN_THING {said}',
        f'environment variable REGHOOK_log_level {said} (did you mean REGHOOK_LOG_LEVEL?)',
    ], proc.stderr
    proc = run_with_env(['migrate'], {'REGHOOK_DATABASE_URL': pg.url()})
    assert 'schema current' in proc.stdout and proc.stderr == '', proc.stderr


def test_a_wildcard_listen_without_public_url_is_pointed_out(pg):
    """listen = 0.0.0.0:PORT with no public_url makes callback URLs and the
    registry snippet name 0.0.0.0: registry add says so beside the snippet
    (which it still prints), and serve warns at start."""
    run_reghook(['migrate'], database_url=pg.url())
    proc = run_reghook(['registry', 'add', 'r', '--listen', '0.0.0.0:8080'],
                       database_url=pg.url())
    assert 'url: http://0.0.0.0:8080/events' in proc.stdout
    assert 'Note: public_url is not set' in proc.stderr, proc.stderr
    for i, listen in enumerate(('0:8080', '[::0]:8080', '[::]:8080')):  # every spelling
        proc = run_reghook(['registry', 'add', f'w{i}', '--listen', listen],
                           database_url=pg.url())
        assert 'Note: public_url is not set' in proc.stderr, (listen, proc.stderr)
    proc = run_reghook(['registry', 'add', 's', '--listen', '0.0.0.0:8080', '--public-url',
                        'https://hooks.example.com'], database_url=pg.url())
    assert 'url: https://hooks.example.com/events' in proc.stdout and proc.stderr == ''
    # rotate prints the snippet again: the same note.
    proc = run_reghook(['registry', 'rotate', 'r', '--listen', '[::]:8080'],
                       database_url=pg.url())
    assert 'url: http://[::]:8080/events' in proc.stdout
    assert 'Note: public_url is not set' in proc.stderr, proc.stderr
    proc = run_reghook(['registry', 'rotate', 'r', '--listen', '[::]:8080', '--public-url',
                        'https://hooks.example.com'], database_url=pg.url())
    assert proc.stderr == '', proc.stderr


def reghook_to(stdout, args, database_url, env_extra=None):
    """Runs a CLI command with stdout on a given file (None: closed)."""
    argv = [os.environ['REGHOOK_BIN'], *args, '--database-url', database_url]
    proc = subprocess.run(argv, stdout=stdout if stdout is not None else None,
                          stderr=subprocess.PIPE, text=True, env=child_env(), timeout=60,
                          pass_fds=(), close_fds=True,
                          preexec_fn=(lambda: os.close(1)) if stdout is None else None)
    assert not sanitizer_report(proc.stderr), proc.stderr
    return proc


def test_output_that_cannot_be_written_is_no_success(pg):
    """stdout on a full disk: every command exited 0, and registry add and
    rotate lost the token shown only once (the source made, the old token
    revoked). Now the command fails, and the token's transaction is rolled
    back. With stdout closed, what was printed went into the database
    connection (the descriptor libpq got)."""
    run_reghook(['migrate'], database_url=pg.url())
    run_reghook(['namespace', 'add', 'team-a'], database_url=pg.url())
    with open('/dev/full', 'w') as full:
        proc = reghook_to(full, ['registry', 'add', 'lost'], pg.url())
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.count('reghook: writing the output') == 1, proc.stderr
        assert 'reghook: writing the output: No space left on device' in proc.stderr
        assert 'the token could not be shown, so no registry source was created' in proc.stderr
        assert 'lost' not in run_reghook(['registry', 'list'], database_url=pg.url()).stdout
        run_reghook(['registry', 'add', 'kept'], database_url=pg.url())
        before = pg.psql("SELECT token_sha256 FROM reghook.registry_sources WHERE name = 'kept'")
        proc = reghook_to(full, ['registry', 'rotate', 'kept'], pg.url())
        assert proc.returncode == 1 and 'the old token stays the registry' in proc.stderr
        assert pg.psql("SELECT token_sha256 FROM reghook.registry_sources "
                       "WHERE name = 'kept'") == before
        proc = reghook_to(full, ['namespace', 'list'], pg.url())
        assert proc.returncode == 1 and 'writing the output' in proc.stderr
    proc = reghook_to(None, ['namespace', 'list'], pg.url())  # stdout closed: lost, said so
    assert proc.returncode == 1 and proc.stderr == \
        'reghook: standard output is closed: the output was lost\n', proc.stderr
    for args in (['deliveries', '--json'], ['webhook', 'list'], ['--version']):
        proc = reghook_to(None, args, pg.url())
        assert proc.returncode == 1 and 'the output was lost' in proc.stderr, (args, proc.stderr)
    proc = reghook_to(None, ['registry', 'add', 'closed'], pg.url())  # a token no one sees
    assert proc.returncode == 1 and 'standard output is closed' in proc.stderr, proc.stderr
    assert 'server closed' not in proc.stderr, proc.stderr
    assert 'closed' not in run_reghook(['registry', 'list'], database_url=pg.url()).stdout


def test_cli_statements_end_at_db_timeout_and_since_needs_a_unit(pg):
    """A row a person keeps locked held a script's command for ever
    (--db-timeout was taken and ignored); and --since 20261201 was 20,261,201
    seconds, where PostgreSQL reads a date."""
    run_reghook(['migrate'], database_url=pg.url())
    run_reghook(['namespace', 'add', 'team-a'], database_url=pg.url())
    webhook_id = run_reghook(['webhook', 'add', 'team-a', 'https://x.example/'],
                             database_url=pg.url()).stdout.split()[1]
    holder = pg.connect()
    holder.autocommit = False
    holder.cursor().execute(f'SELECT * FROM reghook.webhooks WHERE id = {webhook_id} FOR UPDATE')
    start = time.monotonic()
    proc = run_reghook(['webhook', 'set', webhook_id, '--name', 'x', '--db-timeout', '2s'],
                       database_url=pg.url(), check=False, timeout=30)
    assert proc.returncode == 1 and 'statement timeout' in proc.stderr, proc.stderr
    assert time.monotonic() - start < 20
    holder.rollback()
    holder.close()
    for since in ('20261201', '86400'):
        proc = run_reghook(['deliveries', '--since', since], database_url=pg.url(), check=False)
        assert proc.returncode == 2 and 'give an age with its unit' in proc.stderr, proc.stderr
    # An age is an age, even one too long to count back: said as such.
    for since in ('106751991d', '9223372036854775807ms'):
        proc = run_reghook(['deliveries', '--since', since], database_url=pg.url(), check=False)
        assert proc.returncode == 2 and \
            f"--since '{since}': an age too long to count back from now" in proc.stderr, \
            proc.stderr
    proc = run_reghook(['deliveries', '--since', 'yesterdy'], database_url=pg.url(), check=False)
    assert proc.returncode == 2 and 'is neither an age' in proc.stderr, proc.stderr
    run_reghook(['deliveries', '--since', '2026-12-01'], database_url=pg.url())


def test_migrate_is_idempotent(pg):
    first = run_reghook(['migrate'], database_url=pg.url())
    versions = pg.psql('SELECT count(*) FROM reghook.schema_migrations').strip()
    assert int(versions) >= 1
    assert f'({versions} migration(s) applied)' in first.stdout
    second = run_reghook(['migrate'], database_url=pg.url())
    assert '(0 migration(s) applied)' in second.stdout
    assert pg.psql('SELECT count(*) FROM reghook.schema_migrations').strip() == versions


def test_migrate_concurrently_applies_each_once(pg):
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        procs = list(pool.map(lambda _: run_reghook(['migrate'], database_url=pg.url(),
                                                    check=False), range(6)))
    assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]
    applied = [int(p.stdout.split('(')[1].split()[0]) for p in procs]
    versions = int(pg.psql('SELECT count(*) FROM reghook.schema_migrations').strip())
    # Every migration was applied by exactly one of the six.
    assert sum(applied) == versions
    assert pg.psql('SELECT count(DISTINCT version) FROM reghook.schema_migrations').strip() \
        == str(versions)


def test_migrate_reports_unreachable_database():
    proc = run_reghook(['migrate'], database_url='postgresql://nobody@127.0.0.1:1/none',
                       check=False)
    assert proc.returncode == 1
    assert 'database' in proc.stderr


def test_every_table_and_column_is_documented(reghook, pg):
    missing = pg.psql("""
        SELECT c.relname || coalesce('.' || a.attname, '')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE n.nspname = 'reghook' AND c.relkind = 'r'
          AND (a.attname IS NULL AND obj_description(c.oid, 'pg_class') IS NULL
               OR a.attname IS NOT NULL AND col_description(c.oid, a.attnum) IS NULL)
    """).split()
    assert missing == []


def test_health_ready_and_unknown_routes(reghook):
    status, _, body = reghook.get('/healthz')
    assert status == 200
    status, _, _ = reghook.get('/readyz')
    assert status == 200
    status, _, body = reghook.get('/nope')
    assert status == 404 and b'not found' in body
    status, headers, _ = reghook.request('DELETE', '/healthz')
    assert status == 405
    assert 'GET' in headers.get('allow', '')
    status, _, _ = reghook.get('/events')
    assert status == 405


def test_readyz_follows_the_database_without_restart(pg_own, reghook_factory):
    daemon = reghook_factory()
    pid = daemon.proc.pid
    assert daemon.get('/readyz')[0] == 200

    pg_own.stop()
    wait_until(lambda: daemon.get('/readyz')[0] == 503, timeout=15, msg='readyz 503')
    assert daemon.get('/healthz')[0] == 200

    pg_own.start()
    wait_until(lambda: daemon.get('/readyz')[0] == 200, timeout=30, msg='readyz 200 again')
    assert daemon.proc.pid == pid and daemon.running()


def test_readyz_waits_until_the_receiver_can_store_events(pg, reghook_factory):
    """Ready means a receiver connection has run ingest(): while a table it
    writes is locked, the daemon answers 503, past ingest()'s 5 s lock
    timeout, which it logs; once the lock is gone it becomes ready by
    itself, its failed warm-up tried again."""
    run_reghook(['migrate'], database_url=pg.url())
    held = pg.connect()
    held.autocommit = False
    held.cursor().execute('LOCK TABLE reghook.events IN ACCESS EXCLUSIVE MODE')
    try:
        daemon = reghook_factory(wait=False)
        wait_until(lambda: 'ingest() failed' in daemon.log(), timeout=20,
                   msg='the warm-up failing on the lock')
        answers = set()
        for _ in range(5):
            status, _, body = http_request(daemon.port, 'GET', '/readyz', timeout=5)
            answers.add((status, body))
            time.sleep(0.2)
        assert answers == {(503, b'{"error":"receiver cannot store events yet"}\n')}, answers
        assert 'lock timeout' in daemon.log()
    finally:
        held.rollback()
    daemon.wait_ready(timeout=30)


def test_readyz_answers_within_a_second_while_the_database_hangs(pg, reghook_factory):
    """A readiness query held up (here by a lock on the table it reads; a
    stopped server does the same) is answered 503 within half a second, not
    after db_timeout (10 s), past a probe's own timeout (Kubernetes': 1 s):
    each probe that comes while it is out waits half a second at most
    (probes one after another, with a 1 s timeout, each get their 503), none
    adds a query behind it, and once the database answers the daemon is
    ready at the next probe."""
    daemon = reghook_factory()
    assert daemon.get('/readyz')[0] == 200
    held = pg.connect()
    held.autocommit = False
    held.cursor().execute('LOCK TABLE reghook.schema_migrations IN ACCESS EXCLUSIVE MODE')
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            probes = [pool.submit(http_request, daemon.port, 'GET', '/readyz', timeout=4)
                      for _ in range(8)]
            answers = {(p.result()[0], p.result()[2]) for p in probes}
        later = [http_request(daemon.port, 'GET', '/readyz', timeout=1) for _ in range(6)]
        answers |= {(status, body) for status, _, body in later}
        assert answers == {
            (503, b'{"error":"database did not answer the readiness query within 0.5 s"}\n')
        }, answers
        # One readiness query out, not one per probe.
        waiting = pg.connect().cursor()
        waiting.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                        "'%reghook.schema_migrations%' AND wait_event_type = 'Lock'")
        assert waiting.fetchone()[0] == 1
    finally:
        held.rollback()
    wait_until(lambda: daemon.get('/readyz')[0] == 200, timeout=5, msg='ready again')
    assert daemon.running()


def test_serve_starts_before_its_database(pg_own, reghook_factory):
    """A daemon started while PostgreSQL is down is not ready, then migrates
    and becomes ready by itself once the database comes up."""
    pg_own.stop()
    daemon = reghook_factory(wait=False)
    wait_until(lambda: _status(daemon, '/healthz') == 200, timeout=15, msg='healthz')
    assert daemon.get('/readyz')[0] == 503
    pg_own.start()
    daemon.wait_ready(timeout=30)
    assert int(pg_own.psql('SELECT count(*) FROM reghook.schema_migrations')) >= 1


def test_sigint_stops_cleanly(reghook_factory):
    daemon = reghook_factory()
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.proc.wait(15) == 0
    assert 'stopped' in daemon.log()


def _status(daemon, path):
    try:
        return http_request(daemon.port, 'GET', path, timeout=2)[0]
    except OSError:
        return None


def test_tables_line_up_with_names_beyond_ascii(pg):
    """Columns were padded in bytes: a row whose name held 'ö' or 'ı' (two
    bytes each) had its later columns shifted left."""
    run_reghook(['migrate'], database_url=pg.url())
    run_reghook(['namespace', 'add', 'team-a'], database_url=pg.url())
    for name, url in (('Größe ı', 'https://a.example/'), ('plain', 'https://b.example/')):
        run_reghook(['webhook', 'add', 'team-a', url, '--name', name], database_url=pg.url())
    lines = run_reghook(['webhook', 'list'], database_url=pg.url()).stdout.splitlines()
    starts = {line.index('https://') for line in lines[1:]}
    assert len(lines) == 3 and len(starts) == 1, lines
