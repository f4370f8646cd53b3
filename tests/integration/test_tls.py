"""TLS on the receiver (tls_cert_file, tls_key_file, tls_client_ca_file).

Every certificate is made by the test with the openssl command line, in
its temporary directory: a CA, a server certificate for 127.0.0.1 and
localhost, an expired one, a second CA that nobody trusts, client
certificates. The real registry posts over HTTPS trusting the test CA
(Go reads SSL_CERT_FILE), a skopeo push is delivered end to end, and
everything the plain receiver promises (bad-input answers, limits,
deadlines, group commit) holds inside TLS. A certificate renewed and
reloaded with SIGHUP while clients post fails no request; open
connections keep theirs, new ones get the new one; a bad one on reload is
refused and the running one kept. Last, on the build without sanitizers,
10,000 handshakes (whole, cut off, or plain HTTP) leave the RSS flat.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid

import pytest

from harness import (add_webhook, free_port, http_request, register, run_reghook,
                     wait_until)
from test_badinput import GoodClient, envelope, read_rss_kib, rss_grows_in_every_quarter
from test_http_strict import (answers, bad_http_requests, daemon_with_descriptors,
                              registry_gets_in_past)
from test_receiver import V1, counts, event, events, post_together


# --- certificates --------------------------------------------------------------


def openssl(*args, cwd=None):
    proc = subprocess.run(['openssl', *args], capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f'openssl {" ".join(args)} failed: {proc.stderr.strip()}')
    return proc.stdout


class Cert:
    """A certificate and its key, as PEM files; serial as Python's ssl
    module shows it (upper-case hex)."""

    def __init__(self, cert, key):
        self.cert, self.key = cert, key
        self.serial = openssl('x509', '-in', cert, '-noout', '-serial').strip().split('=')[1]


class TestCA:
    """A certificate authority of the test's own (EC P-256 keys, made
    fast), issuing with `openssl ca` so that validity dates can be chosen,
    the past included."""

    __test__ = False  # not a test class, for pytest

    CONFIG = """[ca]
default_ca = this
[this]
database = {dir}/index.txt
new_certs_dir = {dir}/issued
serial = {dir}/serial
certificate = {dir}/ca.pem
private_key = {dir}/ca.key
default_md = sha256
policy = anything
unique_subject = no
[anything]
commonName = supplied
"""

    def __init__(self, directory, name):
        self.dir = os.path.join(str(directory), name)
        os.makedirs(os.path.join(self.dir, 'issued'))
        open(os.path.join(self.dir, 'index.txt'), 'w').close()
        with open(os.path.join(self.dir, 'serial'), 'w') as f:
            f.write(uuid.uuid4().hex[:16].upper() + '\n')
        self.config = os.path.join(self.dir, 'ca.cnf')
        with open(self.config, 'w') as f:
            f.write(self.CONFIG.format(dir=self.dir))
        self.cert = os.path.join(self.dir, 'ca.pem')
        self.key = os.path.join(self.dir, 'ca.key')
        openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                '-keyout', self.key, '-out', self.cert, '-days', '3650', '-subj', f'/CN={name}',
                '-addext', 'basicConstraints=critical,CA:TRUE',
                '-addext', 'keyUsage=critical,keyCertSign,cRLSign')

    def issue(self, name, usage='serverAuth', start=None, end=None):
        """A new key and a certificate for it: a server's for 127.0.0.1 and
        localhost, or with usage='clientAuth' a client's; start and end
        (YYYYMMDDHHMMSSZ) set its validity, else 30 days from now."""
        key = os.path.join(self.dir, f'{name}.key')
        csr = os.path.join(self.dir, f'{name}.csr')
        cert = os.path.join(self.dir, f'{name}.pem')
        ext = os.path.join(self.dir, f'{name}.ext')
        openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                '-keyout', key, '-out', csr, '-subj', f'/CN={name}')
        with open(ext, 'w') as f:
            f.write(f'basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n')
            if usage == 'serverAuth':
                f.write('subjectAltName=IP:127.0.0.1,DNS:localhost\n')
        dates = ['-startdate', start, '-enddate', end] if start else ['-days', '30']
        openssl('ca', '-batch', '-config', self.config, '-in', csr, '-out', cert, '-notext',
                '-extfile', ext, *dates)
        return Cert(cert, key)


class Pki:
    """The test's CA with a server certificate and a client certificate,
    and a second CA that nobody trusts, with certificates of its own."""

    def __init__(self, directory):
        self.dir = str(directory)
        self.ca = TestCA(directory, 'test-ca')
        self.other = TestCA(directory, 'other-ca')
        self.server = self.ca.issue('server')
        self.client = self.ca.issue('client', usage='clientAuth')
        self.live = os.path.join(self.dir, 'live')
        os.makedirs(self.live)

    def serve(self, cert, client_ca=None):
        """Configuration serving cert from live/cert.pem and live/key.pem,
        the files that install() replaces for a renewal."""
        self.install(cert)
        config = {'tls_cert_file': os.path.join(self.live, 'cert.pem'),
                  'tls_key_file': os.path.join(self.live, 'key.pem')}
        if client_ca:
            config['tls_client_ca_file'] = client_ca
        return config

    def install(self, cert):
        """Replaces the live files as a renewal tool does: each written
        aside, then renamed over the old one."""
        for src, name in ((cert.key, 'key.pem'), (cert.cert, 'cert.pem')):
            shutil.copy(src, os.path.join(self.live, name + '.new'))
            os.replace(os.path.join(self.live, name + '.new'), os.path.join(self.live, name))

    def break_cert(self):
        """The live certificate replaced by something that is not one."""
        with open(os.path.join(self.live, 'cert.pem.new'), 'w') as f:
            f.write('<html>404 Not Found</html>\n')
        os.replace(os.path.join(self.live, 'cert.pem.new'), os.path.join(self.live, 'cert.pem'))


@pytest.fixture
def pki(tmp_path):
    os.chmod(tmp_path, 0o755)
    return Pki(tmp_path)


def client_context(ca=None, cert=None, version=None):
    """A client's TLS context: verifying against ca (None: verifying
    nothing), presenting cert (a Cert) if given, limited to version (an
    ssl.TLSVersion) if given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        ctx.load_verify_locations(ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert.cert, cert.key)
    if version:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def tls_connect(port, ctx, timeout=30):
    sock = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    try:
        return ctx.wrap_socket(sock, server_hostname='127.0.0.1')
    except BaseException:
        sock.close()
        raise


def served_serial(port, ca):
    """The serial of the certificate a new connection is served."""
    with tls_connect(port, client_context(ca)) as t:
        return t.getpeercert()['serialNumber']


def verified_serial(port, ca):
    """served_serial(), or None while the certificate served does not verify."""
    try:
        return served_serial(port, ca)
    except ssl.SSLCertVerificationError:
        return None


def tls_raw(port, ctx, data, timeout=30):
    """Sends data inside TLS on a new connection; returns every answer
    until the server closes."""
    with tls_connect(port, ctx, timeout) as t:
        try:
            t.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        got = b''
        while True:
            try:
                piece = t.recv(65536)
            except (ConnectionResetError, ssl.SSLEOFError):
                break
            if not piece:
                break
            got += piece
        return answers(got)


def client_hello():
    """The bytes of a TLS ClientHello, as a client's first flight."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context().wrap_bio(incoming, outgoing, server_hostname='localhost')
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def log_lines(daemon, pattern):
    return [line for line in daemon.log().splitlines() if re.search(pattern, line)]


def post_headers(token):
    return {'Content-Type': V1, 'Authorization': f'Bearer {token}'}


def sighup(daemon):
    daemon.proc.send_signal(signal.SIGHUP)


# --- the registry, end to end ---------------------------------------------------


def test_registry_posts_over_https_and_a_push_is_delivered(reghook_factory, pg, pki,
                                                            registry_factory, endpoint_factory):
    """public_url unset: it defaults to https://<listen>, which the
    registry snippet and callback_url show; the real registry trusts the
    test CA and posts a skopeo push, delivered to the endpoint, whose
    callback comes back over HTTPS."""
    daemon = reghook_factory({**pki.serve(pki.server), 'public_url': ''},
                             ssl_context=client_context(pki.ca.cert))
    base = f'https://127.0.0.1:{daemon.port}'
    daemon.run_cli('namespace', 'add', 'team-a')
    out = daemon.run_cli('registry', 'add', 'main', '--config', daemon.config_path).stdout
    assert f'      url: {base}/events\n' in out, out
    token = next(w for w in out.split() if w.startswith('rgh_'))
    hook = endpoint_factory()
    add_webhook(daemon, 'team-a', hook.url('/deploy'))

    registry = registry_factory(f'{base}/events', token, env={'SSL_CERT_FILE': pki.ca.cert})
    digest = registry.push('team-a/app:1.0')
    [delivered] = hook.wait_for(1, timeout=60)
    payload = delivered.json()
    assert payload['push_data']['images'] == [digest]
    callback = payload['callback_url']
    assert callback.startswith(f'{base}/callback/'), callback

    status, _, body = daemon.post(callback[len(base):], json.dumps({'state': 'success'}),
                                  {'Content-Type': 'application/json'})
    assert (status, json.loads(body)) == (200, {'status': 'recorded'})
    assert 'x509' not in registry.log() and 'tls:' not in registry.log()


def test_registry_add_snippet_follows_tls(reghook_factory):
    """Without a daemon: the snippet's URL is https:// when the
    configuration has TLS and no public_url, http:// without TLS, and
    public_url when it is set."""
    daemon = reghook_factory()
    listen = '127.0.0.1:8443'

    def snippet_url(*flags):
        out = daemon.run_cli('registry', 'add', f'r{uuid.uuid4().hex[:8]}', '--listen', listen,
                             '--public-url', '', *flags).stdout
        return re.search(r'^      url: (\S+)$', out, re.M).group(1)

    files = ['--tls-cert-file', '/etc/reghook/cert.pem', '--tls-key-file', '/etc/reghook/key.pem']
    assert snippet_url(*files) == f'https://{listen}/events'
    assert snippet_url() == f'http://{listen}/events'
    assert snippet_url(*files, '--public-url', 'https://hooks.example.com/') == \
        'https://hooks.example.com/events'


# --- what a client sees -------------------------------------------------------------


def test_tls_versions_and_a_client_trusting_another_ca(reghook_factory, pki):
    """TLS 1.2 and 1.3 are both served; a client that trusts another CA
    refuses the certificate, and reghook logs the handshake it broke off."""
    daemon = reghook_factory(pki.serve(pki.server), ssl_context=client_context(pki.ca.cert))
    for version, name in ((ssl.TLSVersion.TLSv1_2, 'TLSv1.2'), (ssl.TLSVersion.TLSv1_3, 'TLSv1.3')):
        with tls_connect(daemon.port, client_context(pki.ca.cert, version=version)) as t:
            assert t.version() == name
            assert t.getpeercert()['serialNumber'] == pki.server.serial
    with pytest.raises(ssl.SSLCertVerificationError, match='unable to get local issuer'):
        http_request(daemon.port, 'GET', '/healthz', context=client_context(pki.other.cert))
    wait_until(lambda: log_lines(daemon, r'info .*TLS handshake with 127\.0\.0\.1:\d+ failed: '
                                         r'tlsv1 alert unknown ca'),
               msg='the broken-off handshake in the log')
    assert daemon.get('/healthz')[0] == 200


def test_failed_handshakes_do_not_flood_the_log(reghook_factory, pki):
    """Anyone can fail a TLS handshake: 300 connections sending a record of
    garbage each are closed, but the log has one line for that reason per
    10 s, the next one saying how many it did not log (3,000 made 3,000
    lines before); a handshake failing for another reason meanwhile has a
    line of its own."""
    daemon = reghook_factory(pki.serve(pki.server), ssl_context=client_context(pki.ca.cert))
    garbage = b'\x16\x03\x01\x00\x05hello'

    def fail_one(data):
        with socket.create_connection(('127.0.0.1', daemon.port), timeout=10) as s:
            s.sendall(data)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass

    def handshake_lines():
        return log_lines(daemon, 'TLS handshake with')

    for _ in range(300):
        fail_one(garbage)
    wait_until(lambda: handshake_lines(), msg='the first failed handshake in the log')
    time.sleep(0.5)
    assert len(handshake_lines()) == 1, handshake_lines()[:3]
    # Another reason: a client trusting another CA breaks the handshake off.
    with pytest.raises(ssl.SSLCertVerificationError):
        http_request(daemon.port, 'GET', '/healthz', context=client_context(pki.other.cert))
    wait_until(lambda: len(handshake_lines()) == 2, msg='a line for the second reason')
    assert 'unknown ca' in handshake_lines()[-1]
    time.sleep(10)
    fail_one(garbage)
    wait_until(lambda: len(handshake_lines()) == 3, timeout=5, msg='the next line')
    assert handshake_lines()[-1].endswith(' (and 299 more failed since the last such line)'), \
        handshake_lines()[-1]
    assert daemon.get('/healthz')[0] == 200


def test_plain_http_to_the_tls_port(reghook_factory, pg, pki):
    """A client speaking plain HTTP to the TLS port gets a 400 in clear
    text saying so, and the connection closes; nothing it sent is stored."""
    daemon = reghook_factory(pki.serve(pki.server), ssl_context=client_context(pki.ca.cert))
    token = register(daemon, 'team-a')
    body = envelope(event())
    for data in (b'GET /healthz HTTP/1.1\r\nHost: reghook\r\n\r\n',
                 b'POST /events HTTP/1.1\r\nHost: reghook\r\nContent-Type: ' + V1.encode() +
                 b'\r\nAuthorization: Bearer ' + token.encode() +
                 b'\r\nContent-Length: %d\r\n\r\n' % len(body) + body):
        with socket.create_connection(('127.0.0.1', daemon.port), timeout=30) as s:
            s.sendall(data)
            got = b''
            while piece := s.recv(65536):
                got += piece
        [(status, headers, error)] = answers(got)
        assert status == 400
        assert headers['connection'] == 'close'
        assert error == {'error': 'this port speaks HTTPS only: use an https:// URL'}
    assert events(pg) == []
    assert daemon.get('/healthz')[0] == 200


@pytest.mark.parametrize('stall', ['first byte', 'whole hello'])
def test_handshakes_begun_and_left_cannot_keep_a_registry_out(reghook_factory, pg, pki, stall):
    """At the connection limit, connections that began a TLS handshake and
    stopped (a first byte 0x16, or a whole ClientHello; no certificate or
    token needed) kept every new client out until their client_timeout:
    they were not among those closed to make room. Now the one waiting on
    its client the longest is closed, and a registry's post over HTTPS is
    answered at once."""
    ctx = client_context(pki.ca.cert)
    daemon = daemon_with_descriptors(reghook_factory, 400,
                                     {**pki.serve(pki.server), 'max_in_flight': 16,
                                      'client_timeout': '60s', 'log_level': 'warn'},
                                     ssl_context=ctx)
    token = register(daemon, 'team-a')
    body = envelope(event(tag='past-handshakes'))

    def post():
        [(status, _, _)] = tls_raw(
            daemon.port, ctx,
            b'POST /events HTTP/1.1\r\nHost: reghook\r\nContent-Type: ' + V1.encode() +
            b'\r\nAuthorization: Bearer ' + token.encode() + b'\r\nConnection: close' +
            b'\r\nContent-Length: %d\r\n\r\n' % len(body) + body, timeout=10)
        return status
    registry_gets_in_past(daemon.port,
                          lambda: socket.create_connection(('127.0.0.1', daemon.port), timeout=10),
                          b'\x16' if stall == 'first byte' else client_hello(), post)
    assert daemon.get('/healthz')[0] == 200


def test_expired_certificate(reghook_factory, pki):
    """An expired certificate at start is served, with a warning naming the
    file: clients that verify refuse it, /healthz answers those that do
    not. A valid one installed and reloaded is served to new connections;
    an expired one on reload is refused and the valid one kept."""
    expired = pki.ca.issue('expired', start='20200101000000Z', end='20200201000000Z')
    config = pki.serve(expired)
    daemon = reghook_factory(config, ssl_context=client_context())
    [warning] = log_lines(daemon, 'TLS certificate')
    assert re.search(rf'warn .*TLS certificate {re.escape(config["tls_cert_file"])} has expired '
                     rf'\(subject /CN=expired, serial 0x{expired.serial}, valid from 2020-01-01 '
                     r'00:00:00 UTC until 2020-02-01 00:00:00 UTC\): clients that verify it '
                     'refuse to connect', warning), warning
    with pytest.raises(ssl.SSLCertVerificationError, match='certificate has expired'):
        served_serial(daemon.port, pki.ca.cert)
    assert daemon.get('/healthz')[0] == 200

    pki.install(pki.server)
    sighup(daemon)
    wait_until(lambda: verified_serial(daemon.port, pki.ca.cert) == pki.server.serial,
               msg='the valid certificate served')

    pki.install(expired)
    sighup(daemon)
    wait_until(lambda: log_lines(daemon, 'configuration reload failed'), msg='the refusal')
    [refused] = log_lines(daemon, 'configuration reload failed')
    assert f'reload failed: {config["tls_cert_file"]}: the certificate has expired' in refused
    assert refused.endswith('the running configuration is kept'), refused
    assert served_serial(daemon.port, pki.ca.cert) == pki.server.serial

    early = pki.ca.issue('early', start='20990101000000Z', end='21000101000000Z')
    pki.install(early)
    sighup(daemon)
    wait_until(lambda: len(log_lines(daemon, 'configuration reload failed')) == 2,
               msg='the second refusal')
    assert f'reload failed: {config["tls_cert_file"]}: the certificate is not valid yet ' \
        '(subject /CN=early' in log_lines(daemon, 'configuration reload failed')[1]
    assert served_serial(daemon.port, pki.ca.cert) == pki.server.serial


def test_bad_files_stop_the_start(pg, pki):
    """Each mistake stops `reghook serve` at once with one line naming the
    file and the reason: exit status 1 for files that do not load, 2 for
    keys that do not go together."""
    d = pki.dir
    garbage = os.path.join(d, 'garbage.pem')
    with open(garbage, 'w') as f:
        f.write('<html>404 Not Found</html>\n')
    broken = os.path.join(d, 'broken.pem')
    with open(pki.server.cert) as src, open(broken, 'w') as f:
        lines = src.read().splitlines()
        f.write('\n'.join(lines[:3] + ['!!!!not base64!!!!'] + lines[-1:]) + '\n')
    encrypted = os.path.join(d, 'encrypted.key')
    openssl('pkey', '-in', pki.server.key, '-aes256', '-passout', 'pass:secret', '-out',
            encrypted)
    cert, key = pki.server.cert, pki.server.key
    missing = os.path.join(d, 'missing.pem')
    cases = [
        ((missing, key, None), 1, f'{missing}: cannot read it: No such file or directory'),
        ((d, key, None), 1, f'{d}: cannot read it: not a regular file'),
        # A pipe would be empty when OpenSSL read it again after the check.
        ((cert, '/dev/stdin', None), 1, '/dev/stdin: cannot read it: not a regular file'),
        ((garbage, key, None), 1,
         f'{garbage}: no PEM certificate in it (no "-----BEGIN ...CERTIFICATE-----" line)'),
        ((broken, key, None), 1, f'{broken}: not a usable certificate: '),
        ((cert, garbage, None), 1,
         f'{garbage}: no PEM private key in it (no "-----BEGIN ...PRIVATE KEY-----" line)'),
        ((cert, cert, None), 1, f'{cert}: no PEM private key in it'),
        ((cert, pki.client.key, None), 1,
         f'{pki.client.key}: the private key does not match the certificate in {cert}'),
        ((cert, encrypted, None), 1,
         f'{encrypted}: the private key is encrypted; reghook needs it without a passphrase'),
        ((cert, key, garbage), 1, f'{garbage}: no PEM CA certificate in it'),
        ((cert, '', None), 2, 'tls_cert_file is set without tls_key_file: set both, or neither'),
        (('', key, None), 2, 'tls_key_file is set without tls_cert_file: set both, or neither'),
        (('', '', pki.ca.cert), 2, 'tls_client_ca_file needs tls_cert_file and tls_key_file'),
    ]
    for (cert_file, key_file, ca_file), status, reason in cases:
        args = ['serve', '--listen', f'127.0.0.1:{free_port()}', '--tls-cert-file', cert_file,
                '--tls-key-file', key_file]
        if ca_file:
            args += ['--tls-client-ca-file', ca_file]
        proc = run_reghook(args, pg.url(), check=False, timeout=60)
        assert proc.returncode == status, (args, proc.stderr)
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and reason in lines[0], (args, proc.stderr)
        if status == 1:
            assert re.search(r' error .*cannot serve HTTPS: ', lines[0]), lines


def test_client_certificates_when_required(reghook_factory, pg, pki):
    """With tls_client_ca_file, a client without a certificate, or with one
    from another CA, is refused in the handshake (and logged); one from the
    CA posts as usual, over TLS 1.2 and 1.3."""
    outsider = pki.other.issue('outsider', usage='clientAuth')
    daemon = reghook_factory(pki.serve(pki.server, client_ca=pki.ca.cert),
                             ssl_context=client_context(pki.ca.cert, pki.client))
    assert log_lines(daemon, r'info .*TLS certificate .* loaded: .*; client certificates '
                             r'required$')
    token = register(daemon, 'team-a')
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        for cert, why in ((None, 'peer did not return a certificate'),
                          (outsider, 'certificate verify failed')):
            before = len(log_lines(daemon, 'TLS handshake with'))
            with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
                http_request(daemon.port, 'GET', '/healthz',
                             context=client_context(pki.ca.cert, cert, version))
            # Each reason is logged once per 10 s (the next line counts the rest).
            if version == ssl.TLSVersion.TLSv1_2:
                wait_until(lambda: len(log_lines(daemon, 'TLS handshake with')) > before,
                           msg='the refused handshake in the log')
                assert why in log_lines(daemon, 'TLS handshake with')[-1]
        ev = event(tag=f'v{version.name}')
        status, _, body = http_request(daemon.port, 'POST', '/events', envelope(ev),
                                       post_headers(token),
                                       context=client_context(pki.ca.cert, pki.client, version))
        assert (status, json.loads(body)) == (200, counts(accepted=1))
    assert len(events(pg)) == 2


# --- the plain receiver's promises, inside TLS -----------------------------------------


def test_bad_input_limits_and_deadlines_inside_tls(reghook_factory, pg, pki):
    """Every bad request the HTTP layer refuses gets the same answer inside
    TLS; clients that connect and never finish a handshake, stop halfway
    through the ClientHello, or cut it off, hold back nobody (a client
    posts meanwhile) and are closed once client_timeout from the accept
    has passed; so is a connection idle after its handshake."""
    ctx = client_context(pki.ca.cert)
    daemon = reghook_factory({**pki.serve(pki.server), 'client_timeout': '3s'}, ssl_context=ctx)
    token = register(daemon, 'team-a')
    hello = client_hello()
    stalled = []
    try:
        with GoodClient(daemon, token) as good:
            for data, want in bad_http_requests(token):
                assert [a[0] for a in tls_raw(daemon.port, ctx, data)] == [want], data[:60]
            start = time.monotonic()
            for i in range(30):
                s = socket.create_connection(('127.0.0.1', daemon.port), timeout=30)
                if i % 3 == 1:
                    s.sendall(hello[:len(hello) // 2])
                elif i % 3 == 2:
                    s.sendall(hello)
                stalled.append(s)
            idle = tls_connect(daemon.port, ctx)
            stalled.append(idle)
            for _ in range(5):  # cut off halfway through the ClientHello
                with socket.create_connection(('127.0.0.1', daemon.port), timeout=30) as s:
                    s.sendall(hello[:20])
            served_before = len(good.sent)
            wait_until(lambda: len(good.sent) >= served_before + 5, timeout=30,
                       msg='posts served while the handshakes hang')
            for s in stalled:
                try:
                    rest = s.recv(65536)
                    while rest and not isinstance(s, ssl.SSLSocket):
                        rest = s.recv(65536)  # the ServerHello of a whole ClientHello
                except (ConnectionResetError, ssl.SSLEOFError):
                    rest = b''
                assert rest == b''
            elapsed = time.monotonic() - start
            print(f'stalled handshakes closed after {elapsed:.1f} s')
            assert elapsed >= 2.5  # not before client_timeout (3 s, some slack)
    finally:
        for s in stalled:
            s.close()
    good.check(pg)
    assert daemon.running()


def test_requests_arriving_together_share_one_commit_over_tls(reghook_factory, pg, pki):
    """Group commit holds over TLS: ten connections whose requests reach
    reghook at the same moment (it is stopped while they send, then
    continued) are stored in one transaction."""
    daemon = reghook_factory(pki.serve(pki.server), ssl_context=client_context(pki.ca.cert))
    token = register(daemon, 'team-a')
    conns = [http.client.HTTPSConnection('127.0.0.1', daemon.port, timeout=30,
                                         context=client_context(pki.ca.cert)) for _ in range(10)]
    for conn in conns:
        # The handshake and one request: reghook has finished its side of
        # the handshake (its last flight may come after the client's) before the stop.
        conn.request('GET', '/healthz')
        assert conn.getresponse().read() == b'{"status":"ok"}\n'
    post_together(daemon, pg, token, conns)


# --- renewal ----------------------------------------------------------------------------


class PostingClients:
    """Clients posting one new event at a time until stopped: `kept` of
    them on one kept-alive connection each (recording the certificate
    serial it was served, and whether it ever had to reconnect), and one
    that opens a new connection for every post (recording each serial)."""

    def __init__(self, port, token, ca, kept=3):
        self.port, self.token, self.ca = port, token, ca
        self.acked, self.failures = [], []
        self.kept_serials, self.reconnects = [], 0
        self.new_serials = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._kept) for _ in range(kept)]
        self._threads.append(threading.Thread(target=self._fresh))

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _post(self, conn):
        ev = event(tag=f't{uuid.uuid4().hex[:8]}')
        try:
            conn.request('POST', '/events', envelope(ev), post_headers(self.token))
            answer = conn.getresponse()
            body = answer.read()
            ok = answer.status == 200 and json.loads(body) == counts(accepted=1)
            outcome = (answer.status, body)
        except (OSError, http.client.HTTPException, ValueError) as e:
            ok, outcome = False, repr(e)
        with self._lock:
            (self.acked.append(ev['id']) if ok else self.failures.append(outcome))

    def _kept(self):
        conn = http.client.HTTPSConnection('127.0.0.1', self.port, timeout=30,
                                           context=client_context(self.ca))
        conn.connect()
        sock = conn.sock
        with self._lock:
            self.kept_serials.append(sock.getpeercert()['serialNumber'])
        while not self._stop.wait(0.02):
            self._post(conn)
            if conn.sock is not sock:
                with self._lock:
                    self.reconnects += 1
                sock = conn.sock
        conn.close()

    def _fresh(self):
        while not self._stop.wait(0.02):
            conn = http.client.HTTPSConnection('127.0.0.1', self.port, timeout=30,
                                               context=client_context(self.ca))
            try:
                conn.connect()
                serial = conn.sock.getpeercert()['serialNumber']
            except OSError as e:
                with self._lock:
                    self.failures.append(repr(e))
                continue
            self._post(conn)
            conn.close()
            with self._lock:
                self.new_serials.append(serial)

    def wait_for_new_serial(self, serial, timeout=30):
        wait_until(lambda: serial in self.new_serials, timeout=timeout,
                   msg=f'a new connection served serial {serial}')

    def posts(self):
        with self._lock:
            return len(self.acked)


def test_renewed_certificate_reloaded_while_clients_post(reghook_factory, pg, pki,
                                                         registry_factory, endpoint_factory):
    """A renewed certificate and key installed while clients and the real
    registry post, then SIGHUP: no request fails, connections kept alive
    since before go on without reconnecting, new connections get the new
    serial. A broken certificate installed and reloaded next is refused in
    one log line naming the file; the renewed one stays."""
    daemon = reghook_factory(pki.serve(pki.server), ssl_context=client_context(pki.ca.cert))
    token = register(daemon, 'team-a')
    hook = endpoint_factory()
    add_webhook(daemon, 'team-a', hook.url('/deploy'), '--tag', '?.0')  # the registry's pushes
    registry = registry_factory(daemon.url('/events'), token, env={'SSL_CERT_FILE': pki.ca.cert})
    renewed = pki.ca.issue('renewed')
    with PostingClients(daemon.port, token, pki.ca.cert) as clients:
        registry.push('team-a/app:1.0')
        wait_until(lambda: clients.posts() >= 30, timeout=60, msg='posts before the renewal')
        pki.install(renewed)
        sighup(daemon)
        clients.wait_for_new_serial(renewed.serial)
        registry.push('team-a/app:2.0')
        seen = clients.posts()
        wait_until(lambda: clients.posts() >= seen + 30, timeout=60, msg='posts after it')

        pki.break_cert()
        sighup(daemon)
        wait_until(lambda: log_lines(daemon, 'configuration reload failed'), msg='the refusal')
        seen = clients.posts()
        wait_until(lambda: clients.posts() >= seen + 30, timeout=60,
                   msg='posts after the refused reload')
        assert served_serial(daemon.port, pki.ca.cert) == renewed.serial
    assert clients.failures == []
    assert clients.reconnects == 0
    assert clients.kept_serials == [pki.server.serial] * 3
    # New connections: the old serial until the reload, the new one after it, never back.
    first = clients.new_serials.index(renewed.serial)
    assert set(clients.new_serials[:first]) == {pki.server.serial}
    assert set(clients.new_serials[first:]) == {renewed.serial}
    [refused] = log_lines(daemon, 'configuration reload failed')
    cert_file = os.path.join(pki.live, 'cert.pem')
    assert f'reload failed: {cert_file}: no PEM certificate in it' in refused, refused
    [renewal] = log_lines(daemon, f'TLS certificate {cert_file} loaded: subject /CN=renewed')
    assert f'serial 0x{renewed.serial}' in renewal
    assert sorted(r.json()['push_data']['tag'] for r in hook.wait_for(2, timeout=60)) == \
        ['1.0', '2.0']
    stored = {r['event_uuid'] for r in events(pg)}
    assert set(clients.acked) <= stored and len(stored) == len(clients.acked) + 2
    metrics = daemon.get('/metrics')[2].decode()
    assert 'reghook_config_reloads_total{result="success"} 1' in metrics
    assert 'reghook_config_reloads_total{result="failure"} 1' in metrics

    # A FIFO in the certificate's place: the reload is refused at once, not
    # held until something writes to it, and the daemon goes on serving.
    os.remove(cert_file)
    os.mkfifo(cert_file)
    sighup(daemon)
    wait_until(lambda: len(log_lines(daemon, 'configuration reload failed')) == 2,
               msg='the second refusal')
    assert f'{cert_file}: cannot read it: not a regular file' in \
        log_lines(daemon, 'configuration reload failed')[1]
    assert served_serial(daemon.port, pki.ca.cert) == renewed.serial


# --- memory -------------------------------------------------------------------------------

HANDSHAKES = 10_000


def test_rss_flat_over_10000_handshakes(reghook_factory, pg, pki):
    """10,000 connections to the build without sanitizers, after 2,000 to
    warm up, from 8 clients at once: whole handshakes with a request, whole
    handshakes closed without one, ClientHellos cut off halfway, plain
    HTTP. Each client waits for the daemon's end of each connection, so
    at most 8 are open at once: clients that only dropped half a hello and
    went on let them pile up in the accept queue while a loaded machine
    kept the daemon waiting, and the allocator's high-water mark climbed
    with each bigger pile (19.1, 19.2, 20.4, 22.9, 24.3 MiB in one CI run).
    The RSS is printed after the warm-up and after each quarter. A leak
    grows it in every quarter; the high-water mark may still jump once,
    and stays there. So at least one of the last three quarters must
    add less than 512 KiB. Tried with a block of 200 bytes left behind at
    each accept: 600 KiB a quarter, failed (blocks lost for good are
    LeakSanitizer's to find, in the sanitizer build's tests)."""
    plain = os.environ.get('REGHOOK_PLAIN_BIN')
    if not plain:
        pytest.skip('REGHOOK_PLAIN_BIN not set (tests/run sets it)')
    ctx = client_context(pki.ca.cert)
    daemon = reghook_factory({**pki.serve(pki.server), 'log_level': 'warn'}, bin=plain,
                             ssl_context=ctx)
    hello = client_hello()

    def one(i):
        kind = i % 4
        try:
            if kind == 0:
                got = tls_raw(daemon.port, ctx,
                              b'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
                return [a[0] for a in got] == [200]
            if kind == 1:
                with tls_connect(daemon.port, ctx) as t:
                    wait_for_close(t)
                return True
            with socket.create_connection(('127.0.0.1', daemon.port), timeout=30) as s:
                if kind == 2:
                    s.sendall(hello[:len(hello) // 2])
                    wait_for_close(s)
                    return True
                s.sendall(b'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n')
                got = b''
                while piece := s.recv(65536):
                    got += piece
                return got.startswith(b'HTTP/1.1 400 ')
        except Exception as e:  # collected and asserted on, never lost
            return repr(e)

    def wait_for_close(s):
        # End of input, then whatever comes back (session tickets, an
        # alert, nothing) read to the daemon's close.
        s.shutdown(socket.SHUT_WR)
        try:
            while s.recv(65536):
                pass
        except ConnectionResetError:
            pass

    def run(count):
        results = [[] for _ in range(8)]

        def client(k):
            results[k] = [one(i) for i in range(k, count, 8)]
        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [r for rs in results for r in rs]

    assert set(run(2000)) == {True}
    rss = [read_rss_kib(daemon.proc.pid)[0]]
    started = time.monotonic()
    outcomes = []
    for _ in range(4):
        outcomes += run(HANDSHAKES // 4)
        rss.append(read_rss_kib(daemon.proc.pid)[0])
    seconds = time.monotonic() - started
    peak = read_rss_kib(daemon.proc.pid)[1]
    print(f'TLS RSS: {rss[0]} KiB after 2,000 warm-up connections, then '
          f'{", ".join(str(r) for r in rss[1:])} KiB after each {HANDSHAKES // 4} more '
          f'({HANDSHAKES} in {seconds:.0f} s, peak {peak} KiB)')
    wrong = [o for o in outcomes if o is not True]
    assert wrong == [], f'{len(wrong)} connections went wrong, first: {wrong[:3]}'
    assert not rss_grows_in_every_quarter(rss), rss
    assert daemon.get('/healthz')[0] == 200
