"""README.md's examples, run as written: the registry's `notifications:`
snippet is exactly what `reghook registry add` prints, and the Portainer
webhook command is accepted as it stands and delivers what it promises."""

import pathlib
import re
import shlex
import uuid

from harness import register, wait_until
from test_delivery import event, post

README = pathlib.Path(__file__).resolve().parents[2] / 'README.md'


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
