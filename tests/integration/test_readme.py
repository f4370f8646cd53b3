"""README.md's examples, run as written: the registry's `notifications:`
snippet is exactly what `reghook registry add` prints, and the Portainer
webhook command is accepted as it stands and delivers what it promises."""

import hashlib
import os
import pathlib
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import uuid

import pytest

from harness import (child_env, free_port, http_request, register, sanitizer_report, tail,
                     wait_until)
from test_delivery import event, post

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / 'README.md'


def section(title):
    """The text of the README section whose heading is title."""
    text = README.read_text()
    start = re.search(rf'^#+ {re.escape(title)}\n', text, re.M)
    assert start, f'no section {title!r} in README.md'
    rest = text[start.end():]
    end = re.search(r'^#+ ', rest, re.M)
    return rest[:end.start()] if end else rest


def code_blocks(text, lang):
    return re.findall(rf'^```{lang}\n(.*?)^```', text, re.M | re.S)


def test_registry_snippet_is_what_registry_add_prints(reghook_factory):
    daemon = reghook_factory({'public_url': 'http://127.0.0.1:8080'})
    out = daemon.run_cli('registry', 'add', 'main').stdout
    token = next(w for w in out.split() if w.startswith('rgh_'))
    printed = out[out.index('notifications:\n'):]
    documented = code_blocks(section('Attaching a registry'), 'yaml')[0]
    assert documented.replace('rgh_...', token) == printed


def test_portainer_example_redeploys_with_the_pushed_tag(reghook, pg, endpoint_factory):
    portainer = endpoint_factory()
    hook_id = str(uuid.uuid4())
    block = code_blocks(section('Portainer: redeploy a service with the pushed tag'), 'sh')[0]
    commands = [shlex.split(line, comments=True)
                for line in block.replace('\\\n', ' ').splitlines()]
    add = next(c for c in commands if c[:3] == ['reghook', 'webhook', 'add'])
    url = add[4]
    assert url == 'https://portainer:9443/api/webhooks/<id>?tag={tag}'
    # The same command, to a loopback stand-in for Portainer.
    add[4] = url.replace('https://portainer:9443', portainer.url('').rstrip('/')) \
                .replace('<id>', hook_id)
    token = register(reghook, 'team-a')
    out = reghook.run_cli(*add[1:]).stdout
    webhook_id = out.split()[1]
    assert ['reghook', 'webhook', 'enable', '1'] in commands
    reghook.run_cli('webhook', 'enable', webhook_id)

    post(reghook, token, event(repository='team-a/app', tag='latest'),
         event(repository='team-a/other', tag='v2'),
         event(repository='team-a/app', tag='v1.4.2'))
    # Deliveries are created with the events: only the v* push of app.
    assert pg.psql(f'SELECT count(*) FROM reghook.deliveries WHERE webhook_id = {webhook_id}'
                   ).strip() == '1'
    [request] = portainer.wait_for(1, timeout=30)
    assert request.method == 'POST'
    assert request.path == f'/api/webhooks/{hook_id}'
    assert request.query == 'tag=v1.4.2'
    wait_until(lambda: pg.psql(
        f"SELECT status FROM reghook.deliveries WHERE webhook_id = {webhook_id}"
    ).strip() == 'succeeded', timeout=30, msg='delivery succeeded')


# --------------------------------------------------------------------------
# The first hour: `make run` in a checkout that postgres cannot reach, then
# the second terminal's commands exactly as the README and make run print them.


class MakeRun:
    """packaging/run-local (what `make run` runs after building) in a copy of
    the checkout under a directory of mode 0700, as a clone under /root is.
    As root, its PostgreSQL goes to a directory of clusters given by
    REGHOOK_RUN_CLUSTERS (postgres's home by default)."""

    def __init__(self, reghook_bin):
        self.top = tempfile.mkdtemp(prefix='reghook-home-')  # mode 0700, like /root
        self.checkout = os.path.join(self.top, 'src', 'reghook')
        os.makedirs(os.path.join(self.checkout, 'packaging'))
        os.makedirs(os.path.join(self.checkout, 'build'))
        shutil.copy(ROOT / 'packaging' / 'run-local', os.path.join(self.checkout, 'packaging'))
        shutil.copy(reghook_bin, os.path.join(self.checkout, 'build', 'reghook'))
        self.clusters_parent = tempfile.mkdtemp(prefix='reghook-clusters-')
        os.chmod(self.clusters_parent, 0o755)
        self.port = free_port()
        self.env = {**child_env(), 'REGHOOK_LISTEN': f'127.0.0.1:{self.port}',
                    'REGHOOK_RUN_CLUSTERS': os.path.join(self.clusters_parent, 'clusters'),
                    # A failed attempt waits 10 minutes: only "retry now" brings it sooner.
                    'REGHOOK_RETRY_SCHEDULE': '0,10m'}
        self.out_path = os.path.join(self.top, 'make-run.out')
        self.proc = None

    def start(self):
        with open(self.out_path, 'w') as out:
            self.proc = subprocess.Popen(['packaging/run-local', 'build/reghook'],
                                         cwd=self.checkout, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self.ready_or_gone, timeout=90, msg='make run ready')
        assert self.proc.poll() is None, self.output()

    def ready_or_gone(self):
        if self.proc.poll() is not None:
            return True
        try:
            return http_request(self.port, 'GET', '/readyz', timeout=5)[0] == 200
        except OSError:
            return False

    def output(self):
        with open(self.out_path) as f:
            return f.read()

    def shell(self, line, check=True, cwd=None):
        """One line in a fresh bash, in the checkout unless cwd is given,
        as a second terminal runs it."""
        proc = subprocess.run(['bash', '-c', line], cwd=cwd or self.checkout,
                              capture_output=True, text=True, env=child_env(), timeout=120)
        if check:
            assert proc.returncode == 0, f'{line!r} exited {proc.returncode}:\n' \
                                         f'{proc.stdout}{proc.stderr}'
        return proc

    def stop(self):
        """Stops make run as Ctrl-C's TERM would; returns its exit status
        (reghook's), None when it had to be killed."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                return None
        return self.proc.returncode if self.proc is not None else None

    def cleanup(self):
        self.stop()
        subprocess.run(['packaging/run-local', '--remove-db'], cwd=self.checkout, env=self.env,
                       capture_output=True, timeout=120)
        shutil.rmtree(self.top, ignore_errors=True)
        shutil.rmtree(self.clusters_parent, ignore_errors=True)


@pytest.fixture
def make_run():
    run = MakeRun(os.environ['REGHOOK_BIN'])
    try:
        yield run
    finally:
        print(f'--- make run output:\n{tail(run.out_path)}')
        run.cleanup()


def readme_lines(block):
    """The command lines of a README sh block, comments dropped."""
    return [line.split('  #')[0].strip() for line in block.splitlines()
            if line.strip() and not line.startswith('#')]


@pytest.mark.long
def test_first_hour_from_make_run_to_a_delivered_webhook(make_run, registry_factory,
                                                         endpoint_factory):
    assert stat.S_IMODE(os.stat(make_run.top).st_mode) == 0o700
    make_run.start()
    out = make_run.output()
    # What make run says a second terminal runs: source var/env, reghook, psql.
    second = out[out.index('A second terminal reaches'):].splitlines()[2:5]
    source, namespace_add, psql = (line.split('  #')[0].strip() for line in second)
    assert source.startswith('. ') and source.endswith("/var/env'")
    assert namespace_add == 'reghook namespace add team-a'
    assert psql.startswith('psql ')
    assert 'allow_private_targets is on' in out
    # Its PostgreSQL's superuser needs no password: only its own user (and
    # root) may reach the socket.
    sockdir = os.path.join(make_run.checkout, 'var', 'cluster', 'run')
    assert stat.S_IMODE(os.stat(sockdir).st_mode) == 0o700
    # From another directory, as printed.
    assert make_run.shell(f"{source} && reghook registry list", cwd='/').stdout.startswith('id')
    rows = make_run.shell(f"{psql} -At -c 'SELECT name FROM reghook.registry_sources'",
                          cwd='/').stdout
    assert rows == 'local\n'

    # The README's second terminal, line by line, its endpoint on a free port.
    hook = endpoint_factory()
    first, deliveries, fix, viewer = (readme_lines(b)
                                      for b in code_blocks(section('The first hour'), 'sh'))
    assert first[0] == '. var/env'

    def run(line, check=True):
        line = line.replace('http://127.0.0.1:9000', hook.url('').rstrip('/'))
        return make_run.shell(f'. var/env && {line}', check=check)

    for line in first[1:]:
        res = run(line)
    assert res.stdout.splitlines()[-1].startswith('Delivered: HTTP 200 in ')
    [test_push] = hook.wait_for(1)
    assert test_push.path == '/hooks/registry'
    assert test_push.json()['push_data']['tag'] == 'test'

    # The registry configured with the snippet make run printed, then a push.
    token = next(w for w in out.split() if w.startswith('rgh_'))
    registry = registry_factory(f'http://127.0.0.1:{make_run.port}/events', token,
                                {'mediatypes': ['application/octet-stream'],
                                 'actions': ['pull', 'mount']})
    registry.push('team-a/app:1.0')
    pushed = hook.wait_for(2, timeout=60)[1]
    assert pushed.json()['repository']['repo_name'] == 'team-a/app'
    [line] = deliveries
    table = run(line).stdout
    assert 'team-a/app:1.0' in table and 'succeeded' in table

    # A wrong URL: the next push fails and waits for its next attempt (5 s
    # away at the earliest); the README's fix sends it now.
    make_run.shell(". var/env && reghook webhook set 1 --url "
                   f"http://127.0.0.1:{free_port()}/hooks/registry")
    registry.push('team-a/app:1.1')
    wait_until(lambda: 'connect' in run('reghook deliveries --webhook 1 --status pending').stdout,
               timeout=60, msg='the 1.1 delivery failed once and waits')
    set_url, retry = fix
    said = run(set_url).stdout
    assert '1 delivery waits for a next attempt' in said
    assert 'reghook retrigger --webhook 1 --waiting' in said
    assert run(retry).stdout == '1 delivery of webhook 1 waiting for a next attempt: tried now.\n'
    retried = hook.wait_for(3, timeout=20)[2]
    assert retried.json()['push_data']['tag'] == '1.1'

    # A teammate's history, as a viewer of team-a: what the README runs.
    for line in viewer:
        res = run(line)
    history = res.stdout
    assert ' team-a/app ' in history and ' 1.0 ' in history and ' 1.1 ' in history, history
    assert 'reghook-test' in history  # the test push is team-a's too
    other = run("reghook namespace add team-b && psql -U alice -At -c "
                "'SELECT count(*) FROM reghook.namespaces'").stdout
    assert other.splitlines()[-1] == '1', other  # team-a only

    # make clean-db removes the cluster and the files make run wrote.
    # reghook (the sanitizer build) stopped cleanly, with nothing to report.
    assert make_run.stop() == 0, make_run.output()
    assert not sanitizer_report(make_run.output()), make_run.output()
    assert "is not a setting of reghook's" not in make_run.output()
    cluster = os.path.realpath(os.path.join(make_run.checkout, 'var', 'cluster')) \
        if os.geteuid() == 0 else None
    subprocess.run(['packaging/run-local', '--remove-db'], cwd=make_run.checkout,
                   env=make_run.env, check=True, capture_output=True, timeout=120)
    assert not os.path.exists(os.path.join(make_run.checkout, 'var', 'reghook.conf'))
    if cluster:
        assert not os.path.exists(cluster)


def parent_of(pid):
    """A process's parent, or None once it is gone."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return int(f.read().rsplit(')', 1)[1].split()[1])
    except (OSError, ValueError):
        return None


def postmaster_running(checkout):
    """Whether the checkout's private PostgreSQL runs (its postmaster.pid names a live process)."""
    pid_file = os.path.join(checkout, 'var', 'cluster', 'pg', 'postmaster.pid')
    try:
        with open(pid_file) as f:
            os.kill(int(f.readline()), 0)
        return True
    except (OSError, ValueError):
        return False


def root_cluster_of(run):
    """The directory of clusters make run keeps as root for this checkout."""
    name = re.sub(r'[^A-Za-z0-9._-]', '_', os.path.basename(run.checkout))[:40]
    digest = hashlib.sha256(run.checkout.encode()).hexdigest()[:12]
    return os.path.join(run.env['REGHOOK_RUN_CLUSTERS'], f'{name}-{digest}')


@pytest.mark.parametrize('link', ['checkout', 'pg.log', 'run', 'initdb.log'])
def test_make_run_as_root_writes_nothing_a_link_of_postgres_leads_to(link, tmp_path):
    """As root, the cluster lives in a directory postgres owns; a link
    postgres put there (any of its superusers can act as it) must not make
    root write, empty or chmod the file or directory it leads to."""
    assert os.geteuid() == 0, 'make run keeps its cluster in postgres\'s directory as root only'
    run = MakeRun(os.environ['REGHOOK_BIN'])
    victim = tmp_path / 'victim'
    if link == 'run':
        victim.mkdir(mode=0o755)
        os.chmod(victim, 0o755)
    else:
        victim.write_text('root\'s own\n')
        os.chmod(victim, 0o644)
    try:
        cluster = root_cluster_of(run)
        subprocess.run(['install', '-d', '-m', '0700', '-o', 'postgres', '-g', 'postgres',
                        os.path.dirname(cluster)], check=True)
        subprocess.run(['runuser', '-u', 'postgres', '--', 'sh', '-c',
                        'mkdir -m 0700 "$1" && ln -s "$2" "$1/$3"', 'sh', cluster, str(victim),
                        link], check=True)
        with open(run.out_path, 'w') as out:
            run.proc = subprocess.Popen(['packaging/run-local', 'build/reghook'],
                                        cwd=run.checkout, env=run.env, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        # Refused, or (a link make run no longer writes through) served.
        wait_until(run.ready_or_gone, timeout=90, msg='make run ready or gone')
        run.stop()
        st = os.lstat(victim)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755 if link == 'run' else 0o644), \
            run.output()
        if link != 'run':
            assert victim.read_text() == 'root\'s own\n', run.output()
    finally:
        run.cleanup()


def refused_by_a_server_of_another_user(make_run):
    """The socket directory make run's configuration names may be made again
    by another user once it is gone (/tmp without XDG_RUNTIME_DIR, after a
    reboot): a server of theirs there must get no connection from the
    commands of var/env, nor from the psql line make run printed. make run
    is stopped."""
    out = make_run.output()
    second = out[out.index('A second terminal reaches'):].splitlines()[2:5]
    source, _, psql = (line.split('  #')[0].strip() for line in second)
    # Another user's PostgreSQL, with a reghook superuser and database, on
    # the very socket path: the stand-in for a directory made again in /tmp.
    cluster = root_cluster_of(make_run)
    sockdir = os.path.join(cluster, 'run')
    os.rename(sockdir, sockdir + '.mine')
    data = pathlib.Path(tempfile.mkdtemp(prefix='reghook-theirs-'))
    as_nobody = ['runuser', '-u', 'nobody', '--']
    bindir = subprocess.run(['pg_config', '--bindir'], capture_output=True, text=True,
                            check=True).stdout.strip()
    try:
        nobody = pwd.getpwnam('nobody')
        for path in (os.path.dirname(cluster), cluster):
            os.chmod(path, 0o711)
        os.mkdir(sockdir, 0o700)
        os.chown(sockdir, nobody.pw_uid, nobody.pw_gid)
        os.chown(data, nobody.pw_uid, nobody.pw_gid)
        subprocess.run(as_nobody + [f'{bindir}/initdb', '-D', str(data / 'pg'), '-U', 'reghook',
                                    '--auth=trust'], check=True, capture_output=True, cwd='/')
        subprocess.run(as_nobody + [f'{bindir}/pg_ctl', 'start', '-w', '-D', str(data / 'pg'),
                                    '-l', str(data / 'log'), '-o',
                                    f"-c listen_addresses='' -p 5432 -k {sockdir}"],
                       check=True, capture_output=True, cwd='/')
        theirs = ['env', f'PGHOST={sockdir}', 'PGPORT=5432', 'PGUSER=reghook']
        subprocess.run(theirs + ['psql', '-X', '-d', 'postgres', '-c', 'CREATE DATABASE reghook'],
                       check=True, capture_output=True)
        for line in (f'{source} && reghook namespace list', f'{source} && psql -c "SELECT 1"',
                     f"{psql} -c 'SELECT 1'"):
            res = make_run.shell(line, check=False, cwd='/')
            assert res.returncode != 0 and 'requirepeer' in res.stderr, (line, res)
    finally:
        subprocess.run(as_nobody + [f'{bindir}/pg_ctl', 'stop', '-m', 'immediate', '-D',
                                    str(data / 'pg')], capture_output=True, cwd='/')
        shutil.rmtree(sockdir, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
        os.rename(sockdir + '.mine', sockdir)


@pytest.mark.long
def test_make_run_twice_a_taken_address_and_a_server_left_running(make_run):
    """A second make run of the checkout, or one whose address another
    holds, stops before it prints a registry token that would lead
    nowhere; the settings given to make run reach the commands through
    var/env; a PostgreSQL left running by a make run that was killed is
    taken over, and stopped with reghook; once it is stopped, a server of
    another user on its socket's path gets none of its commands. All under
    a Turkish locale, where [a-z] leaves out i and i upper-cases to İ: the
    settings with an i in their name (listen) were left out of var/env."""
    locales = tempfile.mkdtemp(prefix='reghook-locales-')
    try:
        subprocess.run(['localedef', '-i', 'tr_TR', '-f', 'UTF-8',
                        os.path.join(locales, 'tr_TR.UTF-8')], check=True, capture_output=True)
        # glibc's newlocale() loses the list it makes of LOCPATH, and
        # libp11-kit (libcurl's TLS stack) calls it as it is loaded.
        supp = os.path.join(locales, 'lsan.supp')
        with open(supp, 'w') as f:
            f.write('leak:__argz_add_sep\n')
        make_run.env.update(LOCPATH=locales, LC_ALL='tr_TR.UTF-8',
                            LSAN_OPTIONS=f'suppressions={supp}')
        make_run_twice(make_run)
    finally:
        shutil.rmtree(locales, ignore_errors=True)


def make_run_twice(make_run):
    make_run.start()
    again = subprocess.run(['packaging/run-local', 'build/reghook'], cwd=make_run.checkout,
                           env=make_run.env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1, again
    assert again.stderr.startswith(
        f'run-local: make run is already running for this checkout (pid {make_run.proc.pid})'), \
        again.stderr
    assert 'rgh_' not in again.stdout + again.stderr
    with open(os.path.join(make_run.checkout, 'var', 'env')) as f:
        env = f.read()
    assert f'export REGHOOK_LISTEN=127.0.0.1:{make_run.port}\n' in env, env
    assert "export REGHOOK_RETRY_SCHEDULE=0\\,10m\n" in env, env
    said = make_run.shell('. var/env && reghook registry add other').stdout
    assert f'url: http://127.0.0.1:{make_run.port}/events' in said, said

    other = MakeRun(os.environ['REGHOOK_BIN'])
    try:
        other.env['REGHOOK_LISTEN'] = make_run.env['REGHOOK_LISTEN']
        taken = subprocess.run(['packaging/run-local', 'build/reghook'], cwd=other.checkout,
                               env=other.env, capture_output=True, text=True, timeout=60)
        assert taken.returncode == 1, taken
        assert taken.stderr.startswith(f'run-local: 127.0.0.1:{make_run.port} is already taken'
                                       ), taken.stderr
        assert 'REGHOOK_LISTEN=127.0.0.1:8081 make run' in taken.stderr
        assert 'rgh_' not in taken.stdout and not os.path.exists(
            os.path.join(other.checkout, 'var', 'reghook.conf'))
    finally:
        other.cleanup()

    # make run killed outright: its reghook (in a session of its own) and its
    # PostgreSQL live on; the next make run stops the one and takes the other over.
    [serve] = [p for p in map(int, filter(str.isdigit, os.listdir('/proc')))
               if parent_of(p) == make_run.proc.pid]
    os.killpg(make_run.proc.pid, signal.SIGKILL)
    make_run.proc.wait()
    assert parent_of(serve) is not None and postmaster_running(make_run.checkout)
    # The checkout's file in the cluster as a make run before this one (as
    # root) left it: replaced by postgres, not refused.
    checkout_file = os.path.join(root_cluster_of(make_run), 'checkout')
    os.chown(checkout_file, 0, 0)
    os.chmod(checkout_file, 0o644)
    make_run.start()  # ready at once: the old reghook still answers, until stopped
    wait_until(lambda: 'A second terminal reaches' in make_run.output(), timeout=90,
               msg='the new make run set up')
    wait_until(make_run.ready_or_gone, timeout=90, msg='the new reghook ready')
    said = make_run.output()
    assert f'stopping the reghook (pid {serve}) an earlier make run left running' in said, said
    assert 'taking over the PostgreSQL left running' in said
    assert parent_of(serve) is None
    assert os.stat(checkout_file).st_uid == pwd.getpwnam('postgres').pw_uid
    assert make_run.stop() == 0, make_run.output()
    assert not postmaster_running(make_run.checkout), make_run.output()
    # The second terminal's commands, make run stopped, say what to look at.
    res = make_run.shell('. var/env && reghook namespace list', check=False)
    assert res.returncode == 1 and res.stderr.splitlines()[-1].startswith(
        'hint: the database of make run (REGHOOK_CONFIG='), res.stderr
    refused_by_a_server_of_another_user(make_run)
