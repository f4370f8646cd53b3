"""Containers: the image of `make image` and packaging/compose.yaml, run
with podman as an operator runs them.

The images are built once for the module: reghook's with `make image` (the
Debian package on a Debian base, packaging/container/build-image), under a
tag of this run's own that is removed at the end, and the stand-ins that
replace registry:2 and postgres:16 (no public registry is reachable here;
packaging/container/standins/). The bases are kept, tagged by a digest of
what they are made of, so a later run builds only reghook's thin layer.

- what the image holds: the package's binary, installed by dpkg, run as an
  unprivileged user, no compiler, no package caches, no documentation; a
  changed package gives an image with the changed binary;
- the image with podman against the test PostgreSQL, configured by
  REGHOOK_* variables and REGHOOK_DATABASE_URL_FILE: a skopeo push through
  the real registry reaches a test endpoint, and the health check works;
- SIGTERM (podman stop) while events arrive and deliveries are under way:
  reghook exits 0 within podman's grace period, what was in flight is
  finished and recorded, and after a start nothing acknowledged is lost;
- the compose file under podman-compose with the stand-ins: the token the
  setup creates reaches the registry through the shared volume only, and a
  push is delivered end to end.

Every podman command reads packaging/container/containers.conf
(CONTAINERS_CONF): runc and limits that fit the test machine. Containers,
volumes and networks get names of their own and are removed even when a
test fails. Only loopback addresses are targets: the single container uses
the host's network; in the compose network the test endpoint listens on
127.0.0.1 inside reghook's own network namespace. The tests are skipped,
saying why, only where podman cannot run containers (not root, or podman
itself failing)."""

import concurrent.futures
import ctypes
import hashlib
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import uuid

import pytest
import yaml

from harness import (Endpoint, RegistrySender, build_image, child_env, free_port, http_request,
                     wait_until)
from test_package import makefile_version
from test_readme import code_blocks, section
from test_reliability import check_delivered, make_events, query, wait_all_succeeded

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONTAINER_DIR = ROOT / 'packaging' / 'container'
COMPOSE_FILE = ROOT / 'packaging' / 'compose.yaml'
RUN_ID = uuid.uuid4().hex[:10]

# The stand-ins: build-base's arguments after NAME (see standins/README.md).
STANDINS = {
    'registry': ['extract', 'docker-registry,dash,coreutils', CONTAINER_DIR / 'standins/registry',
                 '--',
                 'ENTRYPOINT ["/entrypoint.sh"]', 'CMD ["/etc/docker/registry/config.yml"]',
                 'VOLUME /var/lib/registry', 'EXPOSE 5000'],
    'postgres': ['extract', 'postgresql-15,dash,coreutils', CONTAINER_DIR / 'standins/postgres',
                 '--',
                 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/lib/postgresql/15/bin:'
                 '/usr/sbin:/usr/bin:/sbin:/bin',
                 'ENV PGDATA=/var/lib/postgresql/data', 'USER 999:999',
                 'ENTRYPOINT ["docker-entrypoint.sh"]', 'CMD ["postgres"]',
                 'VOLUME /var/lib/postgresql/data', 'EXPOSE 5432', 'STOPSIGNAL SIGINT'],
}

# Building a base for the first time takes minutes (mmdebstrap); the
# module's first test carries that in its set-up.
pytestmark = pytest.mark.deadline(1500)


def podman_env(extra=None):
    env = child_env()
    env['CONTAINERS_CONF'] = str(CONTAINER_DIR / 'containers.conf')
    env.update(extra or {})
    return env


def run(argv, env=None, timeout=300, check=True):
    """Runs a command (podman, podman-compose, make) in the checkout; raises
    AssertionError with its output when check and it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, env=env or podman_env(),
                          timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(map(str, argv))} exited {proc.returncode}:\n'
                             f'{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}')
    return proc


def podman(*args, **kw):
    return run(['podman', *args], **kw)


def timed(what, fn):
    t0 = time.monotonic()
    value = fn()
    print(f'{what}: {time.monotonic() - t0:.1f} s')
    return value


@pytest.fixture(scope='module')
def podman_ready():
    """Skips the module where this machine cannot run containers."""
    if os.geteuid() != 0:
        pytest.skip('containers: podman runs as root here (rootful), and mmdebstrap too')
    for tool in ('podman', 'podman-compose', 'mmdebstrap', 'runc', 'skopeo'):
        if not shutil.which(tool):
            pytest.skip(f'containers: {tool} is not installed (packaging/install-deps)')
    proc = podman('info', check=False, timeout=60)
    if proc.returncode != 0:
        pytest.skip(f'containers: podman cannot run here: {proc.stderr.strip()[-500:]}')


def build_standins():
    """{'registry': image, 'postgres': image}, built with build-base (at
    once when they exist)."""
    out = {}
    for name, args in STANDINS.items():
        out[name] = timed(f'stand-in {name}', lambda: run(
            [CONTAINER_DIR / 'build-base', f'localhost/reghook-test-{name}', *map(str, args)],
            env=podman_env(), timeout=1200).stdout.strip().splitlines()[-1])
    return out


@pytest.fixture(scope='module')
def standins_building(podman_ready):
    """The stand-ins' build, started on a thread of its own before reghook's
    image is built: building a base mostly waits (downloads, dpkg, the
    storage), so the two overlap."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(build_standins)


@pytest.fixture(scope='module')
def image(podman_ready, standins_building):
    """reghook's image, built by `make image` under a tag of this run; the
    .deb it was made from. Untagged at the end (the base stays cached)."""
    tag = f'localhost/reghook-test:{RUN_ID}'
    try:
        timed('make image', lambda: run(['make', '--no-print-directory', 'image',
                                         f'IMAGE_TAGS={tag}'], timeout=1200))
        version = makefile_version()
        arch = run(['dpkg', '--print-architecture']).stdout.strip()
        yield {'tag': tag, 'deb': ROOT / 'build' / 'deb' / f'reghook_{version}_{arch}.deb',
               'version': version}
    finally:
        podman('rmi', tag, check=False)


@pytest.fixture(scope='module')
def standins(standins_building):
    """{'registry': image, 'postgres': image}: the stand-ins, once built."""
    return timed('waiting for the stand-ins', standins_building.result)


# --- the image on its own -----------------------------------------------------------


def image_file_sha256(tag, path):
    out = podman('run', '--rm', '--entrypoint', 'sha256sum', tag, path).stdout
    return out.split()[0]


def deb_file_sha256(deb, path):
    with tempfile.TemporaryDirectory() as d:
        run(['dpkg-deb', '--extract', str(deb), d])
        return hashlib.sha256(pathlib.Path(d, path.lstrip('/')).read_bytes()).hexdigest()


@pytest.mark.long
def test_image_holds_the_package_and_nothing_to_build_with(image):
    tag = image['tag']
    config = json.loads(podman('image', 'inspect', tag).stdout)[0]['Config']
    assert config['User'] == '990:990'
    assert config['Entrypoint'] == ['/usr/bin/reghook'] and config['Cmd'] == ['serve']
    assert '8080/tcp' in config['ExposedPorts']
    assert config.get('StopSignal') == 'SIGTERM'
    assert 'REGHOOK_CONFIG=/etc/reghook/reghook.conf' in config['Env']

    # The binary is the package's, installed by dpkg.
    assert image_file_sha256(tag, '/usr/bin/reghook') == \
        deb_file_sha256(image['deb'], '/usr/bin/reghook')
    status = podman('run', '--rm', '--entrypoint', 'dpkg-query', tag, '--show',
                    '--showformat=${Status} ${Version}', 'reghook').stdout
    assert status == f'install ok installed {image["version"]}'

    ids = podman('run', '--rm', '--network', 'none', '--entrypoint', '/bin/sh', tag, '-c',
                 'id -u; id -g').stdout.split()
    assert ids == ['990', '990']
    # The CA certificates libcurl verifies HTTPS endpoints with (without
    # them every https:// webhook failed with a TLS error).
    podman('run', '--rm', '--network', 'none', '--entrypoint', '/bin/sh', tag, '-c',
           'test -s /etc/ssl/certs/ca-certificates.crt')

    # The file system as the image holds it (podman adds resolv.conf and
    # the like to a container, not to the image).
    root = pathlib.Path(podman('image', 'mount', tag).stdout.strip())
    try:
        tools = [t for t in ('cc', 'gcc', 'c++', 'clang', 'make', 'ld', 'as', 'apt', 'apt-get',
                             'dpkg-deb', 'dpkg')
                 if (root / 'usr/bin' / t).exists()]
        # dpkg stays, so that the package is installed and can be listed.
        assert tools == ['dpkg-deb', 'dpkg'], tools
        caches = [str(p) for d in ('var/cache/apt', 'var/lib/apt', 'var/log/apt')
                  for p in (root / d).rglob('*')]
        assert caches == [], caches
        docs = [str(p.relative_to(root)) for p in (root / 'usr/share/doc').rglob('*')
                if p.is_file() and p.name != 'copyright']
        assert docs == [], docs
        for d in ('usr/share/man', 'usr/share/info', 'usr/share/locale'):
            assert not (root / d).exists(), d
        assert (root / 'usr/share/doc/reghook/copyright').is_file()
        # Nothing of the build machine's: the base has none of these, and
        # the RUN of the thin layer leaves them empty (its mount points).
        for f in ('etc/resolv.conf', 'etc/hostname', 'etc/hosts'):
            assert not (root / f).exists() or (root / f).stat().st_size == 0, f
        # The package's configuration with only the listen address set.
        conf = (root / 'etc/reghook/reghook.conf').read_text().splitlines()
        assert [l for l in conf if l.strip() and not l.startswith('#')] == \
            ['listen = 0.0.0.0:8080']
    finally:
        podman('image', 'unmount', tag, check=False)

    size = json.loads(podman('image', 'inspect', tag).stdout)[0]['Size']
    print(f'image size: {size / 1e6:.1f} MB')
    assert size < 100e6, f'{size} bytes: what grew?'


def test_a_changed_package_is_a_new_image(image, tmp_path):
    """build-image with another package installs that package, though the
    layer cache holds a build of the first (whose mounted file it does not
    compare)."""
    tree = tmp_path / 'pkg'
    run(['dpkg-deb', '--raw-extract', str(image['deb']), str(tree)])
    with open(tree / 'usr/bin/reghook', 'ab') as f:
        f.write(b'changed')
    changed = tmp_path / 'reghook-changed.deb'
    run(['dpkg-deb', '--build', '--root-owner-group', str(tree), str(changed)])
    tag = f'localhost/reghook-test:{RUN_ID}-changed'
    try:
        run([CONTAINER_DIR / 'build-image', changed, tag])
        assert image_file_sha256(tag, '/usr/bin/reghook') == \
            deb_file_sha256(changed, '/usr/bin/reghook') != \
            deb_file_sha256(image['deb'], '/usr/bin/reghook')
    finally:
        podman('rmi', tag, check=False)


def answers(port, path, status=200):
    """Whether GET path on 127.0.0.1:port answers status now (False while
    nothing listens there)."""
    try:
        return http_request(port, 'GET', path, timeout=2)[0] == status
    except OSError:
        return False


def container_name(what):
    return f'reghook-test-{what}-{RUN_ID}-{uuid.uuid4().hex[:6]}'


class Container:
    """One `podman run -d` of reghook's image on the host's network, against
    the test database; its database URL comes from a file mounted as a
    secret would be (REGHOOK_DATABASE_URL_FILE), everything else from
    REGHOOK_* variables. remove() (in a finally) takes it away."""

    def __init__(self, tag, database_url, workdir):
        self.name = container_name('serve')
        self.port = free_port()
        self.secret = workdir / 'database_url'
        self.secret.write_text(database_url + '\n')
        self.secret.chmod(0o644)
        self.env = {
            'REGHOOK_DATABASE_URL_FILE': '/run/secrets/database_url',
            'REGHOOK_LISTEN': f'127.0.0.1:{self.port}',
            'REGHOOK_PUBLIC_URL': f'http://127.0.0.1:{self.port}',
            'REGHOOK_ALLOW_PRIVATE_TARGETS': 'true',
            'REGHOOK_RETRY_SCHEDULE': '0,1s,1s,1s',
        }
        self.tag = tag

    def start(self):
        args = ['run', '--detach', '--name', self.name, '--network', 'host',
                '--volume', f'{self.secret}:/run/secrets/database_url:ro']
        for key, value in self.env.items():
            args += ['--env', f'{key}={value}']
        podman(*args, self.tag)

    def wait_ready(self, timeout=60):
        def ready():
            state = self.state()
            if not state['Running']:
                raise AssertionError(f'{self.name} ended ({state["Status"]}, exit '
                                     f'{state["ExitCode"]}); log:\n{self.logs()}')
            return answers(self.port, '/readyz')
        wait_until(ready, timeout=timeout, interval=0.2, msg=f'{self.name} to be ready')

    def cli(self, *args):
        """`reghook ARGS` in the container, with its environment."""
        return podman('exec', self.name, 'reghook', *args).stdout

    def register(self):
        """Namespace team-a and a registry source; returns its token."""
        self.cli('namespace', 'add', 'team-a')
        out = self.cli('registry', 'add', 'main')
        return next(w for w in out.split() if w.startswith('rgh_'))

    def add_webhook(self, url, *options):
        """An enabled webhook of team-a; returns its id."""
        webhook = self.cli('webhook', 'add', 'team-a', url, *options).split()[1]
        self.cli('webhook', 'enable', webhook)
        return int(webhook)

    def logs(self):
        proc = podman('logs', self.name, check=False)
        return proc.stdout + proc.stderr

    def state(self):
        return json.loads(podman('inspect', self.name).stdout)[0]['State']

    def remove(self):
        print(f'--- {self.name}, end of its log:\n{self.logs()[-4000:]}')
        podman('rm', '--force', '--time', '2', self.name, check=False)


@pytest.fixture
def container(image, pg, tmp_path):
    """A ready Container: reghook's image serving pg's database."""
    c = Container(image['tag'], pg.url(), tmp_path)
    try:
        c.start()
        c.wait_ready()
        yield c
    finally:
        c.remove()


def test_image_serves_a_push_through_the_registry(image, container, registry_factory,
                                                  endpoint_factory):
    c = container
    # The CLI in the container reads the same variables and secret file.
    token = c.register()
    endpoint = endpoint_factory()
    c.add_webhook(endpoint.url('/hooks/ci'))

    registry = registry_factory(events_url=f'http://127.0.0.1:{c.port}/events', token=token,
                                ignore={'mediatypes': ['application/octet-stream']})
    digest = registry.push('team-a/app:1.0')
    got = endpoint.wait_for(1, timeout=30)
    body = got[0].json()
    assert got[0].method == 'POST' and got[0].path == '/hooks/ci'
    assert got[0].header('User-Agent') == f'reghook/{image["version"]}'
    assert body['push_data']['tag'] == '1.0' and body['push_data']['images'] == [digest]
    assert body['repository']['repo_name'] == 'team-a/app'
    assert body['callback_url'].startswith(f'http://127.0.0.1:{c.port}/callback/')
    # Logged once the event's commit is confirmed, which can come after its delivery.
    wait_until(lambda: 'event accepted: push team-a/app:1.0' in c.logs(), 10,
               msg='the event logged as accepted')

    # The health check of the compose file: 0 while ready, else not.
    assert podman('exec', c.name, 'reghook-healthcheck', str(c.port), check=False).returncode == 0
    assert podman('exec', c.name, 'reghook-healthcheck', str(free_port()),
                  check=False).returncode != 0


def test_image_refuses_a_bad_database_url_file(image, pg, tmp_path):
    """A secret file that cannot be used stops reghook at start with one
    line naming the variable, exit status 2; both the variable and the file
    set is refused too."""
    secret = tmp_path / 'database_url'
    secret.write_bytes(b'postgresql://x@127.0.0.1/\0db\n')
    secret.chmod(0o644)
    cases = [
        (['--env', 'REGHOOK_DATABASE_URL_FILE=/run/secrets/missing'],
         'database_url: REGHOOK_DATABASE_URL_FILE: cannot read /run/secrets/missing'),
        (['--volume', f'{secret}:/run/secrets/db:ro',
          '--env', 'REGHOOK_DATABASE_URL_FILE=/run/secrets/db'],
         'database_url: REGHOOK_DATABASE_URL_FILE: /run/secrets/db: NUL byte in the file'),
        (['--volume', f'{secret}:/run/secrets/db:ro',
          '--env', 'REGHOOK_DATABASE_URL_FILE=/run/secrets/db',
          '--env', f'REGHOOK_DATABASE_URL={pg.url()}'],
         'database_url: both REGHOOK_DATABASE_URL and REGHOOK_DATABASE_URL_FILE are set'),
    ]
    for args, want in cases:
        name = container_name('bad')
        try:
            proc = podman('run', '--name', name, '--network', 'none', *args, image['tag'],
                          check=False)
            assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
            assert want in proc.stderr, (want, proc.stderr)
        finally:
            podman('rm', '--force', name, check=False)


def test_sigterm_finishes_what_is_in_flight_and_loses_nothing(container, pg, endpoint_factory):
    """podman stop (SIGTERM, then SIGKILL after podman's 10 s) while a
    registry posts events and deliveries wait on a slow endpoint: reghook
    exits 0 by itself, every request it had sent is answered and recorded
    before it exits, and once started again every event the registry was
    answered 200 for is stored once and delivered once."""
    c = container
    token = c.register()
    # On loopback: the container shares the host's network.
    endpoint = endpoint_factory()
    endpoint.respond(200, b'ok', delay=1.0)
    webhook = c.add_webhook(endpoint.url('/slow'), '--actions', 'push,delete')
    sent = make_events(60)
    sender = RegistrySender(c.port, token, sent, queues=4, pause=0.1, backoff=0.2).start()
    try:
        endpoint.wait_for(3, timeout=30)
        t0 = time.monotonic()
        podman('stop', c.name, timeout=60)
        stopped_in = time.monotonic() - t0
        state = c.state()
        assert state['ExitCode'] == 0, (state, c.logs()[-3000:])
        assert 'SIGTERM received: stopping' in c.logs()
        # Stopped: every request the endpoint got was finished and recorded,
        # and nothing is left claimed.
        received = {r.header('X-Reghook-Delivery') for r in endpoint.requests}
        rows = query(pg, 'SELECT id::text, status FROM reghook.deliveries')
        recorded = {r['id'] for r in rows if r['status'] == 'succeeded'}
        assert received and received <= recorded, (received - recorded)
        assert not [r for r in rows if r['status'] == 'in_flight'], rows
        acked_at_stop = len(sender.acked)

        podman('start', c.name)
        c.wait_ready()
        sender.join(timeout=120)
    finally:
        sender.stop()
    wait_all_succeeded(pg, len(sent), timeout=120)
    figures = check_delivered(pg, sent, lambda ev: [webhook], {webhook: endpoint})
    assert figures['more_than_once'] == 0, figures
    print(f'\nSIGTERM in the container: podman stop took {stopped_in:.1f} s; '
          f'{acked_at_stop} of {len(sent)} events acknowledged before it, all after; '
          f'answers {dict(sender.statuses)}; {figures}')


# --- the compose file -------------------------------------------------------------


CLONE_NEWNET = 0x40000000


def endpoint_in_netns(pid):
    """A harness.Endpoint listening on 127.0.0.1 inside the network
    namespace of process pid (a container's): created on a thread that
    joined that namespace, so that its socket belongs there."""
    libc = ctypes.CDLL(None, use_errno=True)
    box = {}

    def make():
        try:
            with open(f'/proc/{pid}/ns/net') as ns:
                if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), 'setns')
            box['endpoint'] = Endpoint()
        except BaseException as e:  # reported on the test's thread
            box['error'] = e

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if 'error' in box:
        raise box['error']
    return box['endpoint']


class Compose:
    """packaging/compose.yaml brought up by podman-compose under a project
    name of its own, with the given images and free loopback ports."""

    def __init__(self, images):
        self.project = f'reghooktest{RUN_ID}{uuid.uuid4().hex[:4]}'
        self.registry_port = free_port()
        self.reghook_port = free_port()
        self.env = podman_env({
            'REGHOOK_IMAGE': images['reghook'],
            'REGISTRY_IMAGE': images['registry'],
            'POSTGRES_IMAGE': images['postgres'],
            'REGISTRY_PUBLISH': f'127.0.0.1:{self.registry_port}',
            'REGHOOK_PUBLISH': f'127.0.0.1:{self.reghook_port}',
            'REGHOOK_ALLOW_PRIVATE_TARGETS': 'true',
        })

    def compose(self, *args, check=True):
        return run(['podman-compose', '-p', self.project, '-f', str(COMPOSE_FILE), *args],
                   env=self.env, check=check)

    def container(self, service):
        return f'{self.project}_{service}_1'

    def state(self, service):
        return json.loads(podman('inspect', self.container(service)).stdout)[0]['State']

    def logs(self, service):
        proc = podman('logs', self.container(service), check=False)
        return proc.stdout + proc.stderr

    def exec(self, service, *argv, check=True):
        return podman('exec', self.container(service), *argv, check=check)

    def down(self):
        """Everything of the project goes, whatever state it is in."""
        for service in ('registry', 'reghook', 'reghook-setup', 'postgres'):
            print(f'--- {service}, end of its log:\n{self.logs(service)[-3000:]}')
        self.compose('down', '-v', check=False)
        label = f'label=io.podman.compose.project={self.project}'
        ids = podman('ps', '--all', '--quiet', '--filter', label, check=False).stdout.split()
        if ids:
            podman('rm', '--force', '--volumes', *ids, check=False)
        volumes = podman('volume', 'ls', '--quiet', '--filter', label,
                         check=False).stdout.split()
        if volumes:
            podman('volume', 'rm', '--force', *volumes, check=False)
        podman('network', 'rm', '--force', f'{self.project}_default', check=False)


def quick_start():
    """The README's three commands of "Run with containers", as argv lists."""
    block = code_blocks(section('Run with containers'), 'sh')[0]
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def test_readme_registry_fragment_is_the_compose_files():
    """What the README tells an operator to add to an existing registry
    service is what packaging/compose.yaml's registry has."""
    fragment = yaml.safe_load(code_blocks(section('Run with containers'), 'yaml')[0])
    ours = yaml.safe_load(COMPOSE_FILE.read_text())['services']['registry']
    for key, value in fragment['registry'].items():
        if isinstance(value, dict):
            assert value.items() <= ours[key].items(), key
        elif key in ('volumes', 'depends_on'):
            assert set(value) <= set(ours[key]), key
        else:
            assert value == ours[key], key


@pytest.mark.long
def test_compose_brings_up_registry_postgres_and_reghook(image, standins):
    compose = Compose({'reghook': image['tag'], **standins})
    make, up, namespace_add = quick_start()
    # make image ran as the image fixture; the rest as written, in a project
    # of the test's own.
    assert make == ['make', 'image']
    for argv in (up, namespace_add):
        assert argv[:5] == ['podman-compose', '-p', 'reghook', '-f', 'packaging/compose.yaml']
        argv[2] = compose.project
    endpoint = None
    try:
        timed('podman-compose up', lambda: run(up, env=compose.env))
        t0 = time.monotonic()

        wait_until(lambda: answers(compose.reghook_port, '/readyz'), timeout=120, interval=0.5,
                   msg='reghook of the compose file')
        wait_until(lambda: compose.state('reghook-setup')['Status'] == 'exited', timeout=120,
                   interval=0.5, msg='reghook-setup to finish')
        assert compose.state('reghook-setup')['ExitCode'] == 0, compose.logs('reghook-setup')
        assert 'registry source "registry" created' in compose.logs('reghook-setup')

        def registry_answers():
            return answers(compose.registry_port, '/v2/')
        wait_until(registry_answers, timeout=120, interval=0.5, msg='the registry')
        print(f'compose: all ready {time.monotonic() - t0:.1f} s after up')

        # The token was made at the first start and reached the registry
        # through the volume alone: not in the compose file, nor in any
        # container's configuration.
        assert 'rgh_' not in COMPOSE_FILE.read_text()
        for service in ('postgres', 'reghook-setup', 'reghook', 'registry'):
            assert 'rgh_' not in podman('inspect', compose.container(service)).stdout, service
        # Nor in a log: at info level the registry logs its endpoints' headers.
        for service in ('postgres', 'reghook-setup', 'reghook', 'registry'):
            assert 'rgh_' not in compose.logs(service), service
        endpoints = compose.exec('registry', 'cat',
                                 '/etc/docker/registry/reghook/endpoints.yml').stdout
        assert 'Authorization: [Bearer rgh_' in endpoints
        assert 'url: http://reghook:8080/events' in endpoints

        # Health checks as compose declares them (podman runs them on demand
        # here, as this machine has no systemd timers).
        for service in ('reghook', 'postgres'):
            assert podman('healthcheck', 'run', compose.container(service),
                          check=False).returncode == 0, service

        assert 'Namespace "team-a" added.' in run(namespace_add, env=compose.env).stdout
        endpoint = endpoint_in_netns(compose.state('reghook')['Pid'])
        out = compose.exec('reghook', 'reghook', 'webhook', 'add', 'team-a',
                           endpoint.url('/hooks/deploy')).stdout
        webhook = out.split()[1]
        compose.exec('reghook', 'reghook', 'webhook', 'enable', webhook)

        digest = push(compose.registry_port, 'team-a/app:1.0')
        got = endpoint.wait_for(1, timeout=60)
        body = got[0].json()
        assert body['push_data'] == {**body['push_data'], 'tag': '1.0', 'images': [digest]}
        assert body['repository']['repo_name'] == 'team-a/app'
        assert body['repository']['repo_url'] == \
            f'http://127.0.0.1:{compose.registry_port}/team-a/app'
        assert body['callback_url'].startswith('http://reghook:8080/callback/')

        # A second start of the setup finds the source and its endpoint and
        # changes nothing; the registry, restarted, still gets through.
        podman('start', '--attach', compose.container('reghook-setup'))
        assert compose.state('reghook-setup')['ExitCode'] == 0
        assert 'nothing to do' in compose.logs('reghook-setup')
        assert compose.exec('registry', 'cat', '/etc/docker/registry/reghook/endpoints.yml'
                            ).stdout == endpoints
        podman('restart', compose.container('registry'))
        wait_until(registry_answers, timeout=60, interval=0.5, msg='the registry again')
        digest2 = push(compose.registry_port, 'team-a/app:1.1')
        got = endpoint.wait_for(2, timeout=60)
        assert got[1].json()['push_data']['images'] == [digest2]
        sources = compose.exec('reghook', 'reghook', 'registry', 'list').stdout.splitlines()
        assert len(sources) == 2 and sources[1].split()[1] == 'registry', sources
    finally:
        if endpoint:
            endpoint.stop()
        timed('podman-compose down', compose.down)


def push(port, repo_tag):
    """skopeo copy of a new unique image to the registry at 127.0.0.1:port
    (no TLS, no credentials); returns the manifest digest."""
    workdir = tempfile.mkdtemp(prefix='reghook-push-')
    try:
        layout = build_image(workdir)
        digestfile = os.path.join(workdir, 'digest')
        run(['skopeo', '--insecure-policy', 'copy', '--quiet', '--dest-tls-verify=false',
             '--digestfile', digestfile, f'oci:{layout}:image',
             f'docker://127.0.0.1:{port}/{repo_tag}'], env=child_env(), timeout=120)
        return pathlib.Path(digestfile).read_text().strip()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
