"""The payload formats end to end: a real `skopeo` push and delete through
the real registry, delivered to real endpoints in each format (SPEC
"Other formats"), checked on the bytes received: CloudEvents read by the
CloudEvents SDK for JavaScript, chat messages against each service's
shape and limits, templates rendered; signatures over every format; the
format in history; and bad --format / --template input through the CLI
and through SQL."""

import base64
import hashlib
import hmac
import json
import time
import urllib.parse

import psycopg2
import pytest

from harness import (DEFAULT_REGISTRY_URL, PsqlError, add_webhook, register, registry_event,
                     wait_until)
from test_delivery import post

FORMATS = ('dockerhub', 'registry', 'cloudevents', 'cloudevents-structured', 'slack',
           'discord', 'teams', 'template')

TEMPLATE = json.dumps({
    'text': 'pushed {{repository}}:{{tag}} by {{ actor }}',
    'size': '{{size}}', 'id': '{{event_id}}', 'at': '{{pushed_at}}', 'when': '{{timestamp}}',
    'kind': '{{media_type}}', 'delivery': '{{delivery_id}}', 'link': '{{repo_url}}',
    'digest': '{{digest}}', 'literal': 'LITERAL',
    'nested': [{'tag': '{{tag}}'}, 1, True, None]}).replace(
        'LITERAL', '{\\u007b not a variable }}')  # JSON's escape: a "{{" that opens nothing


def rows(pg, sql):
    return json.loads(pg.psql(f"SELECT coalesce(json_agg(t), '[]') FROM ({sql}) t"))


def message(req):
    """An HTTP request as the SDK fixture takes it."""
    return {'headers': {k.lower(): v for k, v in req.headers}, 'body': req.body.decode()}


def ce_attr(event, name, binary):
    value = event['attributes'][name]
    return urllib.parse.unquote(value, errors='strict') if binary else value


def add_formats(daemon, endpoint, *options):
    """One webhook per format (actions push and delete), each at /<format>."""
    ids = {}
    for fmt in FORMATS:
        extra = ('--template', TEMPLATE) if fmt == 'template' else ()
        ids[fmt] = add_webhook(daemon, 'team-a', endpoint.url(f'/{fmt}'), '--format', fmt,
                               '--actions', 'push,delete', *extra, *options)
    return ids


def by_path(reqs):
    out = {}
    for r in reqs:
        out.setdefault(r.path.strip('/'), []).append(r)
    return out


def check_chat(fmt, body, repository, tag, actor='alice'):
    text = json.dumps(body)
    assert '/callback/' not in text and 'rgh_' not in text
    if fmt == 'slack':
        assert set(body) == {'text', 'blocks'}
        assert f'{repository}:{tag}' in body['text'] and actor in body['text']
        assert body['blocks'] and all(b['type'] in ('section', 'context') for b in body['blocks'])
    elif fmt == 'discord':
        assert set(body) >= {'content', 'embeds'}
        assert len(body['content']) <= 2000 and len(body['embeds']) <= 10
        assert f'{repository}:{tag}' in text and actor in text
    else:
        assert body['type'] == 'message'
        [att] = body['attachments']
        assert att['contentType'] == 'application/vnd.microsoft.card.adaptive'
        assert att['content']['type'] == 'AdaptiveCard'
        assert f'{repository}:{tag}' in text and actor in text


def test_every_format_from_a_real_push_and_delete(reghook, pg, registry_factory,
                                                  endpoint_factory, cloudevents_sdk):
    token = register(reghook, 'team-a')
    hook = endpoint_factory()
    key = b'format-signing-key-0123456789abc'
    secret = 'whsec_' + base64.b64encode(key).decode()
    ids = add_formats(reghook, hook, '--secret', secret)
    registry = registry_factory(reghook.url('/events'), token)

    digest = registry.push('team-a/app:1.0')
    pushes = by_path(hook.wait_for(len(FORMATS), timeout=60))
    assert set(pushes) == set(FORMATS)
    event_id = None
    for fmt, [req] in pushes.items():
        # Signed whatever the format: over the exact body received.
        signed = f'{req.header("webhook-id")}.{req.header("webhook-timestamp")}.'.encode() + req.body
        mac = hmac.new(key, signed, hashlib.sha256).digest()
        assert req.header('webhook-signature') == 'v1,' + base64.b64encode(mac).decode(), fmt
        assert req.header('X-Reghook-Event') == 'push'
        body = req.json()
        if fmt in ('cloudevents', 'cloudevents-structured'):
            binary = fmt == 'cloudevents'
            assert req.header('Content-Type') == (
                'application/json' if binary else 'application/cloudevents+json')
            ev = cloudevents_sdk(message(req))
            assert ce_attr(ev, 'type', binary) == 'io.reghook.image.pushed'
            assert ce_attr(ev, 'subject', binary) == 'team-a/app:1.0'
            assert ce_attr(ev, 'actor', binary) == 'alice'
            assert ev['data']['digest'] == digest and ev['data']['tag'] == '1.0'
            assert ev['data']['size'] > 0 and ev['data']['media_type']
            event_id = event_id or ce_attr(ev, 'id', binary)
            assert ce_attr(ev, 'id', binary) == event_id == ev['data']['event_id']
        elif fmt in ('slack', 'discord', 'teams'):
            check_chat(fmt, body, 'team-a/app', '1.0')
        elif fmt == 'template':
            assert body['text'] == 'pushed team-a/app:1.0 by alice'
            assert type(body['size']) is int and body['size'] > 0
            assert body['id'] == event_id or event_id is None
            assert type(body['at']) is int and abs(body['at'] - time.time()) < 300
            assert body['digest'] == digest and body['link'].endswith('/team-a/app')
            assert body['literal'] == '{{ not a variable }}'
            assert body['nested'] == [{'tag': '1.0'}, 1, True, None]
            assert body['delivery'] == req.header('X-Reghook-Delivery')
        elif fmt == 'registry':
            assert body['action'] == 'push' and body['target']['digest'] == digest
        else:
            assert body['push_data']['images'] == [digest]
    assert pushes['template'][0].json()['id'] == event_id

    registry.delete(f'team-a/app@{digest}')
    got = by_path(hook.wait_for(len(FORMATS) * 3, timeout=60)[len(FORMATS):])
    for fmt in ('cloudevents', 'cloudevents-structured'):
        binary = fmt == 'cloudevents'
        for req in got[fmt]:
            ev = cloudevents_sdk(message(req))
            assert ce_attr(ev, 'type', binary) == 'io.reghook.image.deleted'
            assert ev['data']['digest'] == digest
    for fmt in ('slack', 'discord', 'teams'):
        assert all('delete' in json.dumps(r.json()).lower() for r in got[fmt]), fmt

    # History records the format of each attempt.
    history = rows(pg, 'SELECT webhook_id, format FROM reghook.delivery_history '
                       'WHERE attempt IS NOT NULL')
    assert {(str(h['webhook_id']), h['format']) for h in history} == {
        (ids[f], f) for f in FORMATS}
    health = rows(pg, 'SELECT webhook_id, format FROM reghook.webhook_health')
    assert {(str(h['webhook_id']), h['format']) for h in health} == {
        (ids[f], f) for f in FORMATS}
    sent = rows(pg, f"SELECT request_headers FROM reghook.delivery_attempts "
                    f"WHERE webhook_id = {ids['cloudevents']}")
    assert all(any(n == 'ce-id' for n, _ in s['request_headers']) for s in sent)


def test_the_same_ce_id_on_retrigger_and_for_two_webhooks(reghook, pg, registry_factory,
                                                           endpoint_factory, cloudevents_sdk):
    token = register(reghook, 'team-a')
    hook = endpoint_factory()
    first = add_webhook(reghook, 'team-a', hook.url('/a'), '--format', 'cloudevents')
    add_webhook(reghook, 'team-a', hook.url('/b'), '--format', 'cloudevents')
    registry = registry_factory(reghook.url('/events'), token)
    registry.push('team-a/app:2.0')
    reqs = hook.wait_for(2, timeout=60)
    wait_until(lambda: rows(pg, f"SELECT 1 FROM reghook.deliveries WHERE webhook_id = {first} "
                                f"AND status = 'succeeded'"), 15)
    delivery = rows(pg, f'SELECT id::text FROM reghook.deliveries WHERE webhook_id = {first}')
    reghook.run_cli('retrigger', delivery[0]['id'])
    reqs = hook.wait_for(3, timeout=30)
    ids = {cloudevents_sdk(message(r))['attributes']['id'] for r in reqs}
    assert len(ids) == 1
    assert len({r.header('X-Reghook-Delivery') for r in reqs}) == 2


def test_webhook_test_sends_the_webhooks_format(reghook, pg, endpoint_factory, cloudevents_sdk):
    reghook.run_cli('namespace', 'add', 'team-a')
    hook = endpoint_factory()
    ce = add_webhook(reghook, 'team-a', hook.url('/ce'), '--format', 'cloudevents-structured',
                     enable=False)
    slack = add_webhook(reghook, 'team-a', hook.url('/slack'), '--format', 'slack',
                        enable=False)
    registry = add_webhook(reghook, 'team-a', hook.url('/registry'), '--format', 'registry',
                           enable=False)
    for webhook_id in (ce, slack, registry):
        proc = reghook.run_cli('webhook', 'test', webhook_id, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    got = by_path(hook.wait_for(3))
    # An event made like a registry's, not the dockerhub body with its callback_url.
    reg = got['registry'][0].json()
    assert reg['action'] == 'push' and reg['target']['repository'] == 'team-a/reghook-test' \
        and reg['target']['tag'] == 'test' and reg['actor'] == {'name': 'postgres'} \
        and reg['id'] == got['registry'][0].header('X-Reghook-Delivery'), reg
    assert 'callback' not in got['registry'][0].body.decode()
    ev = cloudevents_sdk(message(got['ce'][0]))
    assert ev['attributes']['subject'] == 'team-a/reghook-test:test'
    assert ev['attributes']['source'] == f'{DEFAULT_REGISTRY_URL}/team-a/reghook-test'
    assert ev['attributes']['id'] == got['ce'][0].header('X-Reghook-Delivery')
    check_chat('slack', got['slack'][0].json(), 'team-a/reghook-test', 'test', 'postgres')


def test_show_prints_format_and_template(reghook, tmp_path):
    reghook.run_cli('namespace', 'add', 'team-a')
    path = tmp_path / 'mattermost.json'
    path.write_text('{\n  "text": "{{repository}}:{{tag}} pushed"\n}\n')
    webhook_id = add_webhook(reghook, 'team-a', 'https://chat.example.com/hooks/x',
                             '--format', 'template', '--template', str(path), enable=False)
    reghook.run_cli('webhook', 'set', webhook_id, '--header', 'X-One: 1', '--header', 'X-Two: 2')
    out = reghook.run_cli('webhook', 'show', webhook_id).stdout.splitlines()
    assert 'format             template' in out
    # A value of several lines goes on as many, under the first.
    at = out.index('template           {')
    assert out[at + 1:at + 3] == [' ' * 19 + '  "text": "{{repository}}:{{tag}} pushed"',
                                  ' ' * 19 + '}'], out
    at = out.index('headers            X-One: 1')
    assert out[at + 1] == ' ' * 19 + 'X-Two: 2', out
    reghook.run_cli('webhook', 'set', webhook_id, '--format', 'teams')
    assert 'format             teams' in reghook.run_cli('webhook', 'show', webhook_id).stdout


def test_a_template_the_renderer_refuses_fails_the_delivery_once(reghook_factory, pg,
                                                                endpoint_factory):
    """A template reghook's check refuses (a "{{" in a key) that is in the
    table all the same (written before webhook_set() refused it too, or by
    an admin's UPDATE) fails its delivery with reghook's message, without
    retries."""
    daemon = reghook_factory({'retry_schedule': '0,1s,1s'})
    daemon.run_cli('namespace', 'add', 'team-a')
    hook = endpoint_factory()
    webhook_id = add_webhook(daemon, 'team-a', hook.url('/'), enable=False)
    pg.psql(f"""UPDATE reghook.webhooks SET format = 'template',
        template = '{{"{{{{tag}}}}": 1}}' WHERE id = {webhook_id}""")
    daemon.run_cli('webhook', 'test', webhook_id, check=False)
    wait_until(lambda: rows(pg, f"SELECT 1 FROM reghook.deliveries WHERE webhook_id = {webhook_id}"
                                f" AND status = 'failed'"), 15)
    [attempt] = rows(pg, f'SELECT error_message, format FROM reghook.delivery_attempts '
                         f'WHERE webhook_id = {webhook_id}')
    assert attempt['error_message'].startswith('template: line 1, column ')
    assert attempt['format'] == 'template'
    assert hook.requests == []


# --- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize('args,needle', [
    (('--format', 'mattermost'), "--format: 'mattermost' is not one of dockerhub, registry"),
    (('--format', 'template'), '--format template needs --template'),
    (('--format', 'template', '--template', '{"a": "{{tagg}}"}'),
     '--template: line 1, column'),
    (('--format', 'template', '--template', '{"a": '), '--template: line 1, column'),
    (('--format', 'template', '--template', '/nonexistent/t.json'), 'No such file'),
    (('--format', 'template', '--template', '{"a": "' + 'x' * 16400 + '"}'),
     'over the limit of 16384 bytes'),
])
def test_bad_format_and_template_on_the_cli(reghook, pg, args, needle):
    reghook.run_cli('namespace', 'add', 'team-a')
    proc = reghook.run_cli('webhook', 'add', 'team-a', 'https://x.example/', *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr, proc.stderr
    assert rows(pg, 'SELECT id FROM reghook.webhooks') == []


def test_unknown_variable_names_line_and_column(reghook, tmp_path):
    reghook.run_cli('namespace', 'add', 'team-a')
    path = tmp_path / 't.json'
    path.write_text('{\n  "ok": "{{tag}}",\n  "bad": "x {{tagg}}"\n}\n')
    proc = reghook.run_cli('webhook', 'add', 'team-a', 'https://x.example/', '--format',
                           'template', '--template', str(path), check=False)
    assert proc.returncode == 2
    assert 'line 3, column' in proc.stderr and 'tagg' in proc.stderr, proc.stderr


BAD_FORMATS_THROUGH_SQL = [
    ({'format': 'mattermost'}, 'format: one of dockerhub, registry, cloudevents,'),
    ({'format': 'template'}, 'format template needs a template'),
    ({'format': 'template', 'template': '{"a": '}, 'template: the template is not JSON'),
    ({'format': 'template', 'template': '{"a": "{{tagg}}"}'}, 'unknown variable {{tagg}}'),
    ({'format': 'template', 'template': '{"a": "{{tag"}'}, '{{ without its variable name'),
    ({'format': 'template', 'template': '{"a": "' + 'x' * 16400 + '"}'},
     'over the limit of 16384'),
    ({'template': {'a': 1}}, 'template must be given as a string'),
    # What jsonb lets by and the dispatcher's strict reading refuses.
    ({'format': 'template', 'template': '{"a": 1, "a": 2}'}, 'duplicate key "a"'),
    ({'format': 'template', 'template': '{"b": [{"{{tag}}": 1}]}'}, 'a variable in the key'),
    ({'format': 'template', 'template': '{"{{tag}}\\u00e9" : 1}'}, 'a variable in the key'),
    ({'format': 'template', 'template': '[' * 33 + ']' * 33}, 'nested deeper than 32'),
    ({'format': 'template', 'template': '{"a": "\\u0000"}'}, 'the template is not JSON'),
    ({'format': 'template', 'template': '{"a": [1, 1e131071]}'}, 'number 1e131071 out of range'),
    ({'format': 'template', 'template': '{"a": -1.5E-21}'}, 'out of range'),
    ({'format': 'template', 'template': '{"a": ' + '9' * 41 + '}'}, 'out of range'),
]


def refusals_through_sql(pg, webhook_id, cases, check=None):
    """Calls webhook_set(webhook_id, changes) for each (changes, needle) of
    cases, one after another on the same webhook (a fresh database for each
    took the suite minutes): each must fail with needle in its message, and
    check(changes, message), when given, must hold and leave the webhook as
    it was. Returns what went wrong, one line a case."""
    state = (f'SELECT row_to_json(w)::text FROM reghook.webhooks w WHERE id = {webhook_id} '
             f'UNION ALL SELECT count(*)::text FROM reghook.webhook_headers')
    before = pg.psql(state)
    problems = []
    for changes, needle in cases:
        case = json.dumps(changes)[:120]
        text = json.dumps(changes).replace("'", "''")
        try:
            pg.psql(f"SELECT reghook.webhook_set({webhook_id}, '{text}')")
        except PsqlError as err:
            # What the server said, not the statement psql's error repeats.
            message = str(err).split('\nSQL: ', 1)[0]
        else:
            problems.append(f'{case}: accepted')
            break  # the webhook changed: the cases after it would say nothing
        if needle not in message:
            problems.append(f'{case}: {needle!r} not in {message[:600]!r}')
        if check:
            problems += [f'{case}: {p}' for p in check(changes, message)]
        if pg.psql(state) != before:
            problems.append(f'{case}: the webhook or its headers changed')
            break
    return problems


def test_bad_format_and_template_through_sql(reghook, pg):
    reghook.run_cli('namespace', 'add', 'team-a')
    webhook_id = add_webhook(reghook, 'team-a', 'https://x.example/', enable=False)
    problems = refusals_through_sql(pg, webhook_id, BAD_FORMATS_THROUGH_SQL)
    assert not problems, '\n'.join(problems)
    assert rows(pg, f'SELECT format, template FROM reghook.webhooks WHERE id = {webhook_id}') == [
        {'format': 'dockerhub', 'template': None}]


def test_the_sql_check_and_the_dispatchers_agree_on_depth(reghook, pg, endpoint_factory):
    """32 levels are a template both take: stored, and delivered."""
    reghook.run_cli('namespace', 'add', 'team-a')
    hook = endpoint_factory()
    webhook_id = add_webhook(reghook, 'team-a', hook.url('/'))
    deep = '[' * 31 + '{"t": "{{tag}}"}' + ']' * 31
    text = json.dumps({'format': 'template', 'template': deep}).replace("'", "''")
    pg.psql(f"SELECT reghook.webhook_set({webhook_id}, '{text}')")
    reghook.run_cli('webhook', 'test', webhook_id)
    [req] = hook.wait_for(1)
    body = req.json()
    for _ in range(31):
        [body] = body
    assert body == {'t': 'test'}


def test_a_body_or_url_past_the_limits_fails_at_once_and_sends_nothing(reghook_factory, pg,
                                                                       endpoint_factory):
    """What a webhook may expand to is bounded whatever its fields: a
    template of 16 KiB of {{actor}}, with an actor of 1,024 control
    characters (each escaped to six bytes), renders 9 MB; a URL template of
    8 KiB of {repository} expands past 100 KB. Each delivery fails at once,
    saying why, with no request and no retry; the history records the URL
    template, not its expansion."""
    daemon = reghook_factory({'retry_schedule': '0,1s,1s'})
    token = register(daemon, 'team-a')
    hook = endpoint_factory()
    template = '["' + '{{actor}}' * 1800 + '"]'
    body_id = add_webhook(daemon, 'team-a', hook.url('/body'), '--format', 'template',
                          '--template', template)
    url_template = hook.url('/u/') + '{repository}' * 600
    url_id = add_webhook(daemon, 'team-a', url_template)
    ev = registry_event(repository='team-a/' + 'x' * 200)
    ev['actor'] = {'name': '\x01' * 1024}
    post(daemon, token, ev)
    for webhook_id in (body_id, url_id):
        wait_until(lambda: rows(pg, f"SELECT 1 FROM reghook.deliveries WHERE webhook_id = "
                                    f"{webhook_id} AND status = 'failed'"), 15)
    [body] = rows(pg, f'SELECT error_message, url FROM reghook.delivery_attempts '
                      f'WHERE webhook_id = {body_id}')
    assert body['error_message'].startswith('the body is ') and \
        body['error_message'].endswith(' bytes in format template, over the limit of 1048576'), body
    [url] = rows(pg, f'SELECT error_message, url FROM reghook.delivery_attempts '
                     f'WHERE webhook_id = {url_id}')
    assert url['error_message'].startswith('the URL is ') and \
        url['error_message'].endswith(' bytes once expanded, over the limit of 16384'), url
    assert url['url'] == url_template
    assert hook.requests == []
    assert daemon.running()


FIELDS_PAST_THEIR_LIMITS = [
    ({'content_type': 'x' * 256}, 'content_type is 256 bytes, over the limit of 255'),
    ({'url': 'https://x.example/' + 'a' * 8180}, 'url is 8198 bytes, over the limit of 8192'),
    ({'name': 'n' * 201}, 'name is 201 bytes'),
    ({'username': 'u' * 257}, 'username is 257 bytes'),
    ({'password': 'p' * 1025}, 'password is 1025 bytes'),
    ({'repository': '*' * 1025}, 'repository is 1025 bytes'),
    ({'tag': '*' * 1025}, 'tag is 1025 bytes'),
    # Globs that can match nothing, and values that are no text.
    ({'tag': ''}, 'tag: an empty glob matches no tag; * matches every one'),
    ({'tag': 'release/*'}, "tag: a tag holds no '/', so this glob matches none"),
    ({'repository': ['app']}, 'repository: a JSON string, not array'),
    ({'name': 5}, 'name: a JSON string, not number'),
    ({'password': {'a': 1}}, 'password: a JSON string, not object'),
    ({'url': 'https://x.example/a b'}, 'url: whitespace or a control character'),
    ({'url': 'https://x.example/a\nb'}, 'url: whitespace or a control character'),
    ({'headers': ['X-A: 1'] * 65}, '65 headers, over the limit of 64'),
    ({'headers': ['X-A: ' + 'v' * 8193]}, 'header "X-A": a name over 256 bytes or a value'),
    ({'headers': ['X-A: 1', None]}, 'header 2 of the list is not "Name: value"'),
    ({'headers': ['Bearer s3cr3t-token']}, 'header 1 of the list is not "Name: value"'),
    ({'headers': ['X-A: 1', 'Bearer token: x']}, 'header "Bearer token": not a field name'),
    # Framing, and what reghook sets itself: a Content-Length of 0 desynchronised
    # the connection another namespace's deliveries shared.
    ({'headers': ['X-A: 1', 'content-length: 0']}, 'header "content-length": reghook sets it'),
    ({'headers': ['Transfer-Encoding: chunked']}, 'header "Transfer-Encoding": reghook sets'),
    ({'headers': ['HOST: evil.example']}, 'header "HOST": reghook sets it'),
    ({'headers': ['Connection: close']}, 'reghook sets it itself, or it frames the request'),
    ({'headers': ['Proxy-Authorization: x']}, 'header "Proxy-Authorization"'),
    ({'headers': ['Content-Type: text/plain']}, 'header "Content-Type"'),
    ({'headers': ['X-Reghook-Delivery: 1']}, 'header "X-Reghook-Delivery"'),
    ({'headers': ['webhook-signature: v1,x']}, 'header "webhook-signature"'),
    ({'headers': ['ce-source: x']}, 'header "ce-source"'),
    ({'headers': ['X-A: a\x0bb']}, 'header "X-A": a control character in its value'),
    ({'headers': ['X-A: a\x7f']}, 'a control character in its value'),
    ({'content_type': 'application/json\x01'}, 'content_type: a control character'),
    # Whoever pushes a tag must not choose the host or the port.
    ({'url': 'http://127.0.0.1:{tag}/x'}, 'url: a variable in the host or port'),
    ({'url': 'https://{tag}.example/x'}, 'url: a variable in the host or port'),
    ({'url': 'https://{namespace}{repository}.example/'}, 'url: a variable in the host'),
    # What no HTTP client can send: accepted before, and retried for hours.
    ({'url': 'http://127.0.0.1:65536/x'}, 'url: the port is not a number from 1 to 65535'),
    ({'url': 'http://127.0.0.1:0/x'}, 'url: the port is not a number from 1 to 65535'),
    ({'url': 'http://127.0.0.1:+80/x'}, 'url: the host is not a host name'),
    ({'url': 'http://::1:8080/x'}, 'url: the host is not a host name'),
    ({'url': 'http://[::1:8080/x'}, 'url: the host is not a host name'),
    ({'url': 'http://[]:80/'}, 'url: the host is not a host name'),
    ({'url': 'http://[1:2]/x'}, 'url: the host is not a host name'),
    ({'url': 'http://[::1::2]/x'}, 'url: the host is not a host name'),
    ({'url': 'http://b\u00fccher.example/'}, 'url: the host holds a character that is not ASCII'),
    ({'url': 'https://x.example/p\u00fc'}, 'url: a character that cannot be in a URL'),
    ({'url': 'https://x.example/a|b'}, 'url: a character that cannot be in a URL'),
    ({'url': 'https://u:%FF@x.example/'}, 'url: the user name or password is not UTF-8 text'),
    ({'url': 'https://u:%00@x.example/'}, 'url: the user name or password is not UTF-8 text'),
    ({'url': 'https://a%3Ab:p@x.example/'}, "username: a user name cannot hold ':'"),
    ({'username': 'a:b'}, "username: a user name cannot hold ':'"),
    ({'actions': ['push'] * 1000 + ['delete']}, 'actions: push, delete, or both'),
    # Each field's type and values named (an array function, a cast or a
    # table's check named nothing, or only itself).
    ({'actions': ['delete', 'delete']}, 'actions: push, delete, or both, each once'),
    ({'actions': 'push'}, 'actions: push, delete, or both, each once (a JSON array of strings)'),
    ({'actions': None}, 'actions: push, delete, or both, each once (a JSON array of strings)'),
    ({'actions': []}, 'actions: push, delete, or both'),
    ({'actions': ['pull']}, 'actions: push, delete, or both'),
    ({'headers': None}, 'headers: a JSON array of "Name: value" strings ([] clears them)'),
    ({'headers': {'X-A': 'b'}}, 'headers: a JSON array of "Name: value" strings'),
    ({'timeout_ms': 'abc'}, "timeout_ms: a whole number from 1 to 86400000, or null for the "
                            "configuration's request_timeout"),
    ({'timeout_ms': 1.5}, 'timeout_ms: a whole number from 1 to 86400000'),
    ({'timeout_ms': 1e12}, 'timeout_ms: a whole number from 1 to 86400000'),
    ({'timeout_ms': -5}, 'timeout_ms: a whole number from 1 to 86400000'),
    ({'max_attempts': True}, "max_attempts: a whole number from 1 to 100, or null for the "
                             "configuration's max_attempts"),
    ({'max_attempts': 0}, 'max_attempts: a whole number from 1 to 100'),
    ({'format': 'TEMPLATE'}, 'format: one of dockerhub, registry, cloudevents,'),
    ({'method': ['GET']}, 'method: one of GET, POST, PUT, PATCH, DELETE'),
    ({'method': 'post '}, 'method: one of GET, POST, PUT, PATCH, DELETE'),
    # A signing key is a JSON string: true or 1234 were stored as whsec_true, whsec_1234.
    ({'secret': True}, 'secret: a JSON string, not boolean'),
    ({'secret': 1234}, 'secret: a JSON string, not number'),
    # Credentials in a URL past their limits: refused before they are decoded
    # (which took minutes on such a value, the webhook's row held meanwhile).
    ({'url': 'https://u:' + 'a' * 400000 + '@x.example/'},
     'url: the user name or password is over its limit'),
    ({'url': 'https://' + '%41' * 1100 + ':p@x.example/'},
     'url: the user name or password is over its limit'),
    # Secrets the table's check let by and the signer cannot decode.
    ({'secret': 'whsec_QUJD='}, 'secret: not a signing key'),
    ({'secret': 'whsec_QUJDRA='}, 'secret: not a signing key'),
    ({'secret': 'whsec_A'}, 'secret: not a signing key'),
    ({'secret': 'whsec_'}, 'secret: not a signing key'),
    # The table's own checks named a constraint or a column, not the field,
    # and their detail repeated the row (a password in a URL missing its //).
    *(({field: None}, f'{field}: a JSON string, not null')
      for field in ('url', 'name', 'content_type', 'repository', 'tag')),
    *(({'url': url}, 'url: not an http:// or https:// URL with a host')
      for url in ('ftp://x.example/', '', 'x', 'javascript:alert(1)', 'http:/u:hunter2@h/',
                  'https://', 'https:///path')),
    *(({'url': url}, 'url: a { or } that is not one of {namespace} {name}')
      for url in ('https://x.example/{nope}', 'https://x.example/{digest', 'https://x.example/}',
                  'https://x.example/{{tag}}', 'https://x.example/?q={Tag}')),
]


def test_webhook_fields_past_their_limits_are_refused_through_sql(reghook, pg):
    reghook.run_cli('namespace', 'add', 'team-a')
    webhook_id = add_webhook(reghook, 'team-a', 'https://x.example/', enable=False)

    def quotes_no_header_value(changes, error):
        # A header's value may be a token: no message quotes it (psql's error
        # repeats the statement after the message, and its context).
        said = error.split('ERROR:', 1)[-1].split('CONTEXT:')[0]
        for header in changes.get('headers') or []:
            value = (header or '').partition(':')[2].strip() or header
            if value and len(value) > 3 and 'headers, over' not in error and value[:8] in said:
                yield f'the message quotes a header value: {said[:300]!r}'

    problems = refusals_through_sql(pg, webhook_id, FIELDS_PAST_THEIR_LIMITS, quotes_no_header_value)
    assert not problems, '\n'.join(problems)
    assert rows(pg, 'SELECT * FROM reghook.webhook_headers') == []
    # webhook_add() alike, each refusal a bad argument (22023), naming the field.
    conn = pg.connect()
    conn.autocommit = True
    for url, changes, needle in (('ftp://x.example/', {}, 'url: not an http:// or https://'),
                                 ('x', {}, 'url: not an http:// or https://'),
                                 ('https://x.example/{digest', {}, 'url: a { or }'),
                                 ('https://x.example/', {'tag': None}, 'tag: a JSON string, not null'),
                                 ('https://x.example/', {'name': None}, 'name: a JSON string, not null'),
                                 # The url argument replaced by one among the changes,
                                 # its credentials with it.
                                 ('https://u:pw@x.example/', {'url': 'https://y.example/'},
                                  "url: give it as webhook_add's url argument")):
        with pytest.raises(psycopg2.Error) as refused:
            conn.cursor().execute('SELECT reghook.webhook_add(%s, %s, %s)',
                                  ('team-a', url, json.dumps(changes)))
        assert refused.value.pgcode == '22023' and needle in refused.value.pgerror, \
            (url, changes, refused.value.pgcode, refused.value.pgerror)
    conn.close()
    assert pg.psql('SELECT count(*) FROM reghook.webhooks').strip() == '1'


def test_numbers_through_sql_as_numbers_or_strings_of_digits(reghook, pg):
    """timeout_ms and max_attempts as JSON numbers (3e4 is 30000) or, as the
    cast before their checks took them, strings of digits."""
    reghook.run_cli('namespace', 'add', 'team-a')
    webhook_id = add_webhook(reghook, 'team-a', 'https://x.example/', enable=False)
    for changes, stored in (('{"timeout_ms": 3e4, "max_attempts": 5}', '30000|5'),
                            ('{"timeout_ms": "1500", "max_attempts": "7"}', '1500|7'),
                            ('{"timeout_ms": null, "max_attempts": null}', '|')):
        pg.psql(f"SELECT reghook.webhook_set({webhook_id}, '{changes}')")
        assert pg.psql(f'SELECT timeout_ms, max_attempts FROM reghook.webhooks '
                       f'WHERE id = {webhook_id}').strip() == stored, changes


def test_a_bare_signing_key_through_sql_is_kept_with_its_prefix(reghook, pg, endpoint_factory):
    """As --secret takes it: base64 alone, padded or not, signs."""
    reghook.run_cli('namespace', 'add', 'team-a')
    hook = endpoint_factory()
    webhook_id = add_webhook(reghook, 'team-a', hook.url('/'))
    pg.psql(f"""SELECT reghook.webhook_set({webhook_id}, '{{"secret": "QUJDRA"}}')""")
    assert rows(pg, f'SELECT secret FROM reghook.webhook_secrets WHERE webhook_id = {webhook_id}'
                ) == [{'secret': 'whsec_QUJDRA'}]
    reghook.run_cli('webhook', 'test', webhook_id)
    [req] = hook.wait_for(1)
    assert req.header('Webhook-Signature', '').startswith('v1,')


def test_webhook_add_normalises_the_scheme_and_names_an_ipv6_host(reghook, pg):
    """HTTPS:// is https:// (RFC 3986), through the CLI and SQL alike; the
    default name of a webhook is its URL's host, an IPv6 one whole."""
    reghook.run_cli('namespace', 'add', 'team-a')
    cli_id = add_webhook(reghook, 'team-a', 'HTTPS://x.example/hook', enable=False)
    [sql_id] = pg.psql("SELECT reghook.webhook_add('team-a', 'Http://[2001:db8::1]:8443/h')"
                       ).split()
    got = rows(pg, f'SELECT id, name, url FROM reghook.webhooks WHERE id IN ({cli_id}, {sql_id}) '
                   f'ORDER BY id')
    assert [(g['name'], g['url']) for g in got] == [
        ('x.example', 'https://x.example/hook'),
        ('[2001:db8::1]', 'http://[2001:db8::1]:8443/h')], got
    [long_id] = pg.psql("SELECT reghook.webhook_add('team-a', 'https://' || repeat('h', 300) "
                        "|| '.example/')").split()
    assert rows(pg, f'SELECT octet_length(name) AS n FROM reghook.webhooks WHERE id = {long_id}'
                ) == [{'n': 200}]
    with pytest.raises(Exception) as err:
        pg.psql("SELECT reghook.webhook_add('team-a', 'https://x.example/' || repeat('a', 9000))")
    assert 'url is 9018 bytes, over the limit of 8192' in str(err.value)
    with pytest.raises(Exception) as err:
        pg.psql("SELECT reghook.webhook_disable(%s, repeat('r', 1025))" % cli_id)
    assert 'reason is 1025 bytes, over the limit of 1024' in str(err.value)


def test_a_literal_brace_pair_in_a_key_is_taken_by_sql_as_by_the_cli(reghook, pg):
    """README's way to write a literal {{: the JSON escape "{\u007b", in a
    key too; the CLI takes it, and so does webhook_set()."""
    reghook.run_cli('namespace', 'add', 'team-a')
    template = '{"{\\u007btag}}": "{{tag}}", "k": "{\\u007b}}"}'
    webhook_id = add_webhook(reghook, 'team-a', 'https://x.example/', '--format', 'template',
                             '--template', template, enable=False)
    text = json.dumps({'template': template}).replace("'", "''")
    pg.psql(f"SELECT reghook.webhook_set({webhook_id}, '{text}')")
    assert rows(pg, f'SELECT template FROM reghook.webhooks WHERE id = {webhook_id}') == [
        {'template': template}]


def test_a_good_template_through_sql_is_kept(reghook, pg):
    reghook.run_cli('namespace', 'add', 'team-a')
    webhook_id = add_webhook(reghook, 'team-a', 'https://x.example/', enable=False)
    text = json.dumps({'format': 'template', 'template': TEMPLATE}).replace("'", "''")
    pg.psql(f"SELECT reghook.webhook_set({webhook_id}, '{text}')")
    assert rows(pg, f'SELECT format, template FROM reghook.webhooks WHERE id = {webhook_id}') == [
        {'format': 'template', 'template': TEMPLATE}]
