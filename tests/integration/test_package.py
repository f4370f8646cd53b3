"""The Debian package, as an operator installs and runs it.

test_package_install_run_purge builds the package with `make deb`, lints it,
installs it with dpkg -i on this machine, checks what it put where, runs the
installed /usr/bin/reghook as the package's user against a test database
(migrate, then serve with the packaged configuration file), checks the
systemd unit and the man page, and removes then purges it. It needs root
(the CI runs as root) and is skipped when a reghook package is already
installed, so that it never replaces or purges a real installation. The
package is purged, and the user it made deleted, even when the test fails.

The other tests check that the example configuration and the man page list
every configuration key with the default `reghook --help` prints.
"""

import grp
import os
import pathlib
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import time

import pytest

from harness import child_env, free_port, http_request, run_reghook, stop_process, tail, wait_until

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE_CONF = ROOT / 'packaging' / 'reghook.conf'
MAN_PAGE = ROOT / 'packaging' / 'reghook.8'

INSTALLED = {
    'binary': '/usr/bin/reghook',
    'conf': '/etc/reghook/reghook.conf',
    'unit': '/lib/systemd/system/reghook.service',
    'man': '/usr/share/man/man8/reghook.8.gz',
    'schema': '/usr/share/reghook/schema',
    'doc': '/usr/share/doc/reghook',
}


def makefile_version():
    text = (ROOT / 'Makefile').read_text()
    return re.search(r'^VERSION\s*:=\s*(\S+)', text, re.M).group(1)


def help_defaults():
    """{key: default or None} from `reghook --help`'s configuration table."""
    out = run_reghook(['--help']).stdout
    keys = {}
    for line in out.splitlines():
        m = re.match(r'^  --([a-z_]+)\s+(.*)$', line)
        if m:
            d = re.search(r'\(default (.+?)\)( \[restart to change\])?$', m.group(2))
            keys[m.group(1)] = d.group(1) if d else None
    assert 'database_url' in keys and 'listen' in keys, out
    return keys


def test_example_config_lists_every_key():
    """Every key, commented out with its default: uncommenting a line
    changes nothing but that key, and no key is missing or unknown."""
    keys = help_defaults()
    shown = {}
    for line in EXAMPLE_CONF.read_text().splitlines():
        m = re.match(r'^#([a-z_]+) =(?: (.*))?$', line)
        if m:
            shown[m.group(1)] = m.group(2)
    assert set(shown) == set(keys)
    for key, default in keys.items():
        if key == 'database_url':
            assert shown[key].startswith('postgresql://'), shown[key]
        else:
            assert shown[key] == default, key
    # The file as shipped (all comments) is a valid configuration.
    uncommented = [l for l in EXAMPLE_CONF.read_text().splitlines()
                   if l.strip() and not l.startswith('#')]
    assert uncommented == []


def test_man_page_lists_every_key():
    """reghook(8) documents each key with the default the program has."""
    text = MAN_PAGE.read_text()
    for key, default in help_defaults().items():
        troff_key = key
        if default is None:
            assert re.search(rf'^\.B {troff_key}$', text, re.M), key
        else:
            assert f'.BR {troff_key} " ({default})"' in text, key


# --------------------------------------------------------------------------
# The package on this machine


def dpkg(*args, check=True):
    """Runs dpkg, waiting while another apt or dpkg holds its lock."""
    deadline = time.monotonic() + 300
    while True:
        proc = subprocess.run(['dpkg', *args], capture_output=True, text=True,
                              env={**child_env(), 'DEBIAN_FRONTEND': 'noninteractive'},
                              timeout=300)
        if proc.returncode == 0 or 'lock' not in proc.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    if check and proc.returncode != 0:
        raise AssertionError(f'dpkg {" ".join(args)} exited {proc.returncode}:\n'
                             f'{proc.stdout}{proc.stderr}')
    return proc


def package_status():
    proc = subprocess.run(['dpkg-query', '-W', '-f=${Status} ${Version}', 'reghook'],
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else 'not known'


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def build_deb():
    proc = subprocess.run(['make', '--no-print-directory', 'deb'], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f'make deb failed:\n{proc.stdout[-4000:]}{proc.stderr}'
    arch = subprocess.run(['dpkg', '--print-architecture'], capture_output=True,
                          text=True, check=True).stdout.strip()
    deb = ROOT / 'build' / 'deb' / f'reghook_{makefile_version()}_{arch}.deb'
    assert deb.is_file(), f'make deb did not leave {deb}'
    return deb


def as_reghook(argv, **kwargs):
    """Keyword arguments of subprocess that run argv as the package's user."""
    return dict(args=argv, user='reghook', group='reghook', extra_groups=[], cwd='/',
                env=child_env(), **kwargs)


@pytest.fixture
def installable():
    """Skips unless this test may install and purge the package here."""
    if os.geteuid() != 0:
        pytest.skip('installing a package needs root')
    if package_status() != 'not known' and 'not-installed' not in package_status():
        pytest.skip('a reghook package is installed on this machine; not touching it')
    if os.path.exists(INSTALLED['binary']):
        pytest.skip(f'{INSTALLED["binary"]} exists; not touching it')


@pytest.mark.long
def test_package_install_run_purge(installable, pg):
    deb = build_deb()
    version = makefile_version()

    lint = subprocess.run(['lintian', '--display-info', '--pedantic', str(deb)],
                          capture_output=True, text=True, timeout=300)
    tags = [l for l in lint.stdout.splitlines() if re.match(r'^[EWIPX]: ', l)]
    assert tags == [], 'lintian:\n' + lint.stdout

    user_before = user_exists('reghook')
    group_before = group_exists('reghook')
    logdir = tempfile.mkdtemp(prefix='reghook-pkg-')
    daemon = None
    try:
        dpkg('-i', str(deb))
        assert package_status() == f'install ok installed {version}'
        check_installed_files(version)

        # A second install (as an upgrade does) finds the user already there.
        dpkg('-i', str(deb))
        check_user()
        check_conf_permissions()

        check_unit()
        check_man_page()

        # migrate, as the package's user, with the packaged configuration,
        # on a database owned by an ordinary role (as README sets it up).
        pg.create_login_role('reghook_owner')
        pg.psql('ALTER ROLE reghook_owner CREATEROLE', dbname='postgres')
        pg.psql('CREATE DATABASE reghook_pkg OWNER reghook_owner', dbname='postgres')
        url = pg.url(user='reghook_owner', dbname='reghook_pkg')
        migrate = subprocess.run(**as_reghook(
            [INSTALLED['binary'], 'migrate', '--config', INSTALLED['conf'],
             '--database-url', url], capture_output=True, text=True, timeout=120))
        assert migrate.returncode == 0, migrate.stderr
        schema_files = sorted(f for f in os.listdir(INSTALLED['schema']) if f.endswith('.sql'))
        applied = pg.psql('SELECT version FROM reghook.schema_migrations ORDER BY 1',
                          dbname='reghook_pkg').split()
        assert [int(v) for v in applied] == [int(f[:3]) for f in schema_files]

        # serve, as the systemd unit starts it (with the flags a drop-in or
        # REGHOOK_* variables would give: the database and a free port).
        port = free_port()
        log_path = os.path.join(logdir, 'serve.log')
        with open(log_path, 'wb') as log:
            daemon = subprocess.Popen(**as_reghook(
                [INSTALLED['binary'], 'serve', '--config', INSTALLED['conf'],
                 '--database-url', url, '--listen', f'127.0.0.1:{port}'],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))

        def status(path):
            assert daemon.poll() is None, f'serve exited {daemon.returncode}:\n{tail(log_path)}'
            try:
                return http_request(port, 'GET', path, timeout=5)[0]
            except OSError:
                return None

        wait_until(lambda: status('/readyz') == 200, timeout=60, msg='/readyz 200')
        assert status('/healthz') == 200
        assert stop_process(daemon, 30), f'serve ignored SIGTERM:\n{tail(log_path)}'
        assert daemon.returncode == 0, tail(log_path)

        # Remove keeps the configuration; purge takes it too.
        dpkg('--remove', 'reghook')
        assert not os.path.exists(INSTALLED['binary'])
        assert os.path.exists(INSTALLED['conf'])
        assert 'config-files' in package_status()
    finally:
        if daemon is not None:
            stop_process(daemon, 30)
        shutil.rmtree(logdir, ignore_errors=True)
        purge = dpkg('--purge', 'reghook', check=False)
        # The package leaves its system user (see packaging/debian/postrm);
        # the test removes what it made, after checking that.
        user_after = user_exists('reghook')
        if not user_before and user_after:
            subprocess.run(['deluser', '--system', '--quiet', 'reghook'], capture_output=True)
        if not group_before and group_exists('reghook'):
            subprocess.run(['delgroup', '--system', '--quiet', 'reghook'], capture_output=True)

    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert package_status() == 'not known'
    for path in INSTALLED.values():
        assert not os.path.exists(path), f'{path} left after purge'
    assert not os.path.exists('/etc/reghook')
    assert not os.path.exists('/usr/share/reghook')
    assert user_after, 'the reghook user is kept on purge'


def check_installed_files(version):
    for path in INSTALLED.values():
        assert os.path.exists(path), path
    out = subprocess.run([INSTALLED['binary'], '--version'], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f'reghook {version}'
    conffiles = subprocess.run(['dpkg-query', '-W', '-f=${Conffiles}', 'reghook'],
                               capture_output=True, text=True, check=True).stdout
    assert INSTALLED['conf'] in conffiles.split()
    with open(INSTALLED['conf'], 'rb') as installed:
        assert installed.read() == EXAMPLE_CONF.read_bytes()
    repo_schema = sorted(str(p.relative_to(ROOT / 'schema')) for p in (ROOT / 'schema').rglob('*.sql'))
    installed = sorted(os.path.relpath(os.path.join(d, f), INSTALLED['schema'])
                       for d, _, files in os.walk(INSTALLED['schema']) for f in files)
    assert installed == repo_schema and 'functions/queue.sql' in installed
    for name in repo_schema:
        with open(os.path.join(INSTALLED['schema'], name), 'rb') as f:
            assert f.read() == (ROOT / 'schema' / name).read_bytes(), name
    check_user()
    check_conf_permissions()


def check_user():
    """A system user and group, no login shell, no home directory."""
    user = pwd.getpwnam('reghook')
    assert user.pw_uid < 1000 and user.pw_uid != 0
    assert grp.getgrgid(user.pw_gid).gr_name == 'reghook'
    assert user.pw_shell in ('/usr/sbin/nologin', '/bin/false')
    assert not os.path.exists(user.pw_dir), user.pw_dir


def check_conf_permissions():
    """The configuration holds the database password: root and group
    reghook read it, nobody else."""
    st = os.stat(INSTALLED['conf'])
    assert st.st_uid == 0
    assert grp.getgrgid(st.st_gid).gr_name == 'reghook'
    assert stat.S_IMODE(st.st_mode) == 0o640


def check_unit():
    proc = subprocess.run(['systemd-analyze', 'verify', INSTALLED['unit']],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout + proc.stderr == '', \
        proc.stdout + proc.stderr
    unit = open(INSTALLED['unit']).read()
    for line in ('Type=notify', 'User=reghook',
                 'ExecStart=/usr/bin/reghook serve --config /etc/reghook/reghook.conf',
                 'ExecReload=/bin/kill -HUP $MAINPID', 'ProtectSystem=strict',
                 'NoNewPrivileges=yes', 'CapabilityBoundingSet='):
        assert re.search(rf'^{re.escape(line)}$', unit, re.M), line


def check_man_page():
    """man formats the installed page without a single warning."""
    proc = subprocess.run(['man', '--warnings', '-l', INSTALLED['man']],
                          capture_output=True, text=True, timeout=120,
                          env={**child_env(), 'MANWIDTH': '80', 'LC_ALL': 'C.UTF-8'})
    assert proc.returncode == 0 and proc.stderr == '', proc.stderr
    assert 'reghook - webhook dispatcher' in proc.stdout
    where = subprocess.run(['man', '-w', 'reghook'], capture_output=True, text=True)
    assert where.stdout.strip() == INSTALLED['man'], where.stdout + where.stderr
