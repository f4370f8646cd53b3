"""The CloudEvents formats as a real consumer reads them: the output of
reghook's renderer (tests/tools/render, the C code that builds request
bodies and headers) for the registry's recorded events, handed to the
CloudEvents SDK for JavaScript (HTTP.toEvent and validation), in binary
and structured mode.

The SDK does not undo the HTTP binding's percent-encoding of header
values (3.1.3.2; neither do the Go and Java SDKs, cloudevents/spec#1397),
so for binary mode the attributes it hands back are decoded here as the
binding says a receiver must, then compared.
"""

import datetime
import json
import os
import pathlib
import subprocess
import urllib.parse

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PUSH_ID = '7e85b01a-1fb2-4e87-9fdb-3aba92e7461b'
DELETE_ID = 'f5884af7-4dd3-40a8-b54d-cd8f6db2f06a'
DIGEST = 'sha256:33d33c66ce742601e7b4219cce65aa7ecbd527d207a1e962c0f5bcb738284f43'


def render(fmt, sample, **fields):
    """What reghook sends in format fmt for tests/fixtures/samples/<sample>:
    {'headers': {...}, 'body': str}."""
    tool = pathlib.Path(os.environ['REGHOOK_BIN']).resolve().parent / 'tests' / 'tools' / 'render'
    args = [str(tool), fmt, sample] + [f'{k}={v}' for k, v in fields.items()]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def binding_decode(value):
    """A header value as the binding decodes it: one round of
    percent-decoding, invalid UTF-8 refused."""
    return urllib.parse.unquote(value, errors='strict')


def same_instant(a, b):
    def parse(t):
        return datetime.datetime.fromisoformat(t.replace('Z', '+00:00'))
    # The SDK keeps milliseconds; reghook sends up to microseconds.
    return abs(parse(a) - parse(b)) < datetime.timedelta(milliseconds=1)


CASES = [
    # sample, overrides, expected attributes (as sent, before any encoding), data checks
    ('03-push-manifest-tag.json', {},
     {'id': PUSH_ID, 'source': 'main', 'type': 'io.reghook.image.pushed',
      'subject': 'team-a/app:1.0', 'actor': 'alice'},
     {'tag': '1.0', 'size': 344, 'media_type': 'application/vnd.oci.image.manifest.v1+json'}),
    ('10-delete-digest.json', {'registry_url': 'https://registry.example.com/'},
     {'id': DELETE_ID, 'source': 'https://registry.example.com/team-a/app',
      'type': 'io.reghook.image.deleted', 'subject': f'team-a/app@{DIGEST}', 'actor': 'alice'},
     {'tag': None, 'size': None, 'digest': DIGEST, 'registry_url': 'https://registry.example.com'}),
    ('11-delete-tag.json', {'digest': DIGEST, 'actor': 'Zoë "ops" 100% 😀',
                            'source_name': 'eu west'},
     {'id': '7fffb226-e38a-4a47-a531-05cfc38e97db', 'source': 'eu%20west',
      'type': 'io.reghook.image.deleted', 'subject': 'team-a/app:latest',
      'actor': 'Zoë "ops" 100% 😀'},
     {'tag': 'latest', 'digest': DIGEST, 'actor': 'Zoë "ops" 100% 😀'}),
]


@pytest.mark.parametrize('sample,fields,attrs,data', CASES, ids=[c[0][:2] for c in CASES])
@pytest.mark.parametrize('mode', ['cloudevents', 'cloudevents-structured'])
def test_the_sdk_reads_both_modes(cloudevents_sdk, mode, sample, fields, attrs, data):
    message = render(mode, sample, **fields)
    binary = mode == 'cloudevents'
    assert message['headers']['content-type'] == (
        'application/json' if binary else 'application/cloudevents+json')
    if binary:
        for name, value in message['headers'].items():
            assert all(0x21 <= ord(c) <= 0x7e for c in value), (name, value)
        assert 'ce-datacontenttype' not in message['headers']
    else:
        assert not [h for h in message['headers'] if h.startswith('ce-')]

    event = cloudevents_sdk(message)
    got = event['attributes']
    assert got['specversion'] == '1.0'
    assert got['datacontenttype'] == 'application/json'
    for name, want in attrs.items():
        value = binding_decode(got[name]) if binary else got[name]
        assert value == want, name
    assert same_instant(got['time'], event['data']['timestamp'])
    assert set(got) == {'specversion', 'id', 'source', 'type', 'subject', 'time', 'actor',
                        'datacontenttype'}

    body = event['data']
    assert list(body) == ['action', 'namespace', 'repository', 'name', 'tag', 'digest',
                          'media_type', 'size', 'actor', 'timestamp', 'registry_url',
                          'event_id']
    assert body['event_id'] == attrs['id']
    assert body['repository'] == 'team-a/app' and body['namespace'] == 'team-a'
    for key, want in data.items():
        assert body[key] == want, key
    if binary:
        assert body == json.loads(message['body'])


def test_same_id_for_every_delivery_of_an_event(cloudevents_sdk):
    """ce-id is the registry's event id: two webhooks, two deliveries, one id."""
    ids = set()
    for mode in ('cloudevents', 'cloudevents-structured'):
        for source in ('main', 'backup'):
            ids.add(cloudevents_sdk(render(mode, '03-push-manifest-tag.json',
                                           source_name=source))['attributes']['id'])
    assert ids == {PUSH_ID}


def test_the_sdk_refuses_a_broken_message(cloudevents_sdk):
    """The checker can fail: without ce-id, or with a source that is no URI
    reference, the SDK refuses what reghook would never send."""
    message = render('cloudevents', '03-push-manifest-tag.json')
    del message['headers']['ce-id']
    with pytest.raises(AssertionError, match='refused'):
        cloudevents_sdk(message)
    structured = render('cloudevents-structured', '03-push-manifest-tag.json')
    body = json.loads(structured['body'])
    body['source'] = 'eu west'  # what reghook percent-encodes
    structured['body'] = json.dumps(body)
    with pytest.raises(AssertionError, match='refused'):
        cloudevents_sdk(structured)


def test_a_test_event_has_an_id_and_a_source(cloudevents_sdk):
    """A test push has no registry event: its id is the delivery's and its
    source "reghook"; it still reads as a valid CloudEvent."""
    message = render('cloudevents', '03-push-manifest-tag.json', event_id='', source_name='')
    got = cloudevents_sdk(message)['attributes']
    assert got['id'] == '0b9d1c5e-6f1a-4d5e-9a7b-3c2d1e0f4a5b'
    assert got['source'] == 'reghook'
