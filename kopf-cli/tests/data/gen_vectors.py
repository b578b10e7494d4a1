#!/usr/bin/env python3
"""
Generate golden vectors from the pip-installed Python Kopf (1.44/1.45).

Every vector is produced by calling Kopf's own (internal) functions, so that the
Rust re-implementation in kopf-cli can be checked against the original byte for byte.
Run:  python3 kopf-cli/tests/data/gen_vectors.py  (writes kopf_vectors.json next to it).

Conventions of the output (consumed by kopf-cli/tests/compat_*.rs):
- Python tuples become JSON lists; sets become sorted lists.
- Diffs are lists of [op, [path...], old, new]; their order inside a diff follows
  Python's frozenset iteration order (hash-randomised), so tests compare them as multisets.
"""
import asyncio
import copy
import datetime
import json
import logging
import os
import sys

import kopf
from kopf._cogs.configs import conventions, diffbase, progress
from kopf._cogs.structs import bodies, dicts, diffs, patches, references, finalizers
from kopf._core.actions import progression
from kopf._core.intents import causes, registries, filters

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'kopf_vectors.json')
LOGGER = logging.getLogger('gen')


def dump_diff(d):
    return [[str(op), list(field), old, new] for op, field, old, new in d]


# ---------------------------------------------------------------------------------------------
# Annotation keys (conventions.py).
# ---------------------------------------------------------------------------------------------

def gen_keys():
    ids = [
        'x', 'create_fn', 'create_fn/spec.field', 'main.<locals>.create_fn',
        'parent/child/grandchild', 'update-OJOYLA', 'touch-dummy', 'last-handled-configuration',
        'x' * 40, 'x' * 53, 'x' * 54, 'x' * 55, 'x' * 62, 'x' * 63, 'x' * 64, 'x' * 65, 'x' * 100,
        'a-very-long-handler-identifier-that-exceeds-the-limits-of-k8s-names/spec.field',
        'module.<locals>.a_rather_long_function_name_for_a_handler/spec.deeply.nested.field',
        'fn/' + 'sub' * 30, '<lambda>', 'lambda:/path/to/file.py:12',
        'ünïcödé-handler-ß', 'ünïcödé-' * 10, '日本語のハンドラ' * 5,
        'id with spaces', 'a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/0/1/2/3/4/5/6/7',
        'trailing.dots...', '-leading-dash', 'endswith=' * 9,
    ]
    # NB: a 4-byte blake2b digest is 8 base64 chars ending with "==" and a data char from
    # {A, Q, g, w}, so Kopf's rstrip('=-.') only ever strips the padding.
    prefixes = ['kopf.zalando.org', 'my-operator.example.com', 'p',
                'lengthy-operator-name-to-hit-63-chars.example.com', 'x' * 60, 'kopf.dev']
    out = []
    for prefix in prefixes:
        conv = conventions.StorageKeyFormingConvention(prefix=prefix, v1=True)
        conv_nov1 = conventions.StorageKeyFormingConvention(prefix=prefix, v1=False)
        for key in ids:
            out.append({
                'prefix': prefix,
                'key': key,
                'safe': conv.make_safe_key(key),
                'suffix': conv.make_suffix(key),
                'v1': conv.make_v1_key(key),
                'v2': conv.make_v2_key(key),
                'keys': list(conv.make_keys(key)),
                'keys_no_v1': list(conv_nov1.make_keys(key)),
            })
    return out


def gen_marked_keys():
    bodies_ = [
        {'kind': 'ReplicaSet', 'metadata': {'ownerReferences': [{'kind': 'Deployment', 'name': 'd'}]}},
        {'kind': 'ReplicaSet', 'metadata': {'ownerReferences': [{'kind': 'StatefulSet', 'name': 'd'},
                                                                {'kind': 'Deployment', 'name': 'e'}]}},
        {'kind': 'ReplicaSet', 'metadata': {'ownerReferences': [{'kind': 'Other', 'name': 'd'}]}},
        {'kind': 'ReplicaSet', 'metadata': {}},
        {'kind': 'Pod', 'metadata': {'ownerReferences': [{'kind': 'Deployment', 'name': 'd'}]}},
        {'kind': 'KopfExample', 'metadata': {}},
    ]
    out = []
    conv = conventions.StorageKeyFormingConvention(prefix='kopf.zalando.org', v1=True)
    for body in bodies_:
        for key in ['create_fn', 'last-handled-configuration', 'x' * 60, 'x' * 70]:
            out.append({'body': body, 'key': key,
                        'keys': list(conv.make_keys(key, body=bodies.Body(body)))})
    return out


def gen_marked_prefixes():
    conv = conventions.StorageKeyMarkingConvention()
    cases = [
        [],
        ['kopf.zalando.org/create_fn'],
        ['my-op.example.com/kopf-managed', 'my-op.example.com/create_fn', 'other.com/x'],
        ['sub.kopf.zalando.org/x', 'notkopf.zalando.org/x', 'kopf.zalando.org.evil/x'],
        ['nokey', 'a/kopf-managed', 'b/c/kopf-managed', 'c/d/e'],
        ['kopf-managed', '/kopf-managed', 'x/', 'kopf.zalando.org/'],
    ]
    return [{'keys': keys, 'prefixes': sorted(conv._detect_marked_prefixes(keys))} for keys in cases]


# ---------------------------------------------------------------------------------------------
# JSON text as Python writes it (separators=(',', ':'), ensure_ascii=True, float repr).
# ---------------------------------------------------------------------------------------------

def gen_json_text():
    values = [
        None, True, False, 0, -1, 12345678901234567890, 1.0, 0.1, -0.0, 1e16, 1e15, 123456789012345.6,
        1e-4, 1e-5, 1.5e-7, 2.5e+300, 1e22, 3.14159, 100.0, 0.5, 9007199254740993.0,
        'plain', 'quote " backslash \\ slash /', 'ctl \n \r \t \b \f \x00 \x1f \x7f',
        'ünïcödé', '日本', 'emoji 😀 astral', '\u2028\u2029',
        [], {}, [1, [2, [3]]], {'b': 1, 'a': {'d': [], 'c': None}},
        {'started': '2026-11-21T23:59:12.501810+00:00', 'retries': 1, 'success': True},
    ]
    return [{'value': v, 'text': json.dumps(v, separators=(',', ':')),
             'text_sorted': json.dumps(v, separators=(',', ':'), sort_keys=True)} for v in values]


# ---------------------------------------------------------------------------------------------
# Progress records (progress.py, progression.py).
# ---------------------------------------------------------------------------------------------

TIMES = [
    '2026-11-21T23:59:12.501810+00:00',
    '2026-11-21T23:59:12+00:00',
    '2026-11-21T23:59:12.5Z',
    '2026-11-21T23:59:12.123456789Z',
    '2021-02-15T22:02:03.350703',
    '2021-02-15T22:02:03',
    '2021-02-15 22:02:03.000001',
    '2026-11-21T23:59:12.501810+02:00',
    '2026-11-21T23:59:12.501810-05:30',
    '2026-11-21T23:59:12.501810+0200',
    '2026-11-21T23:59:12.501810+02',
    '2026-11-21T23:59:12,25Z',
    '2026-11-21T2359',
    '2026-11-21T23',
    '2026-11-21',
    '20261121T235912Z',
    '2026-1-2T03:04:05Z',
    '2026',
    '2026-11',
    'garbage',
    '2026-13-01T00:00:00Z',
    '2026-11-21T23:59:12.501810+00:00 ',
    '',
]


def gen_timestamps():
    out = []
    for text in TIMES:
        try:
            dt = progression.parse_iso8601(text)
        except Exception as e:
            out.append({'text': text, 'error': type(e).__name__})
        else:
            out.append({'text': text, 'iso': progression.format_iso8601(dt), 'naive': dt.tzinfo is None})
    return out


RECORDS = [
    {},
    {'started': '2026-11-21T23:59:12.501810+00:00'},
    {'started': '2026-11-21T23:59:12.501810+00:00', 'stopped': '2026-11-21T23:59:12.503028+00:00',
     'purpose': 'create', 'retries': 1, 'success': True, 'failure': False},
    {'started': '2026-11-21T23:59:12.501823+00:00', 'delayed': '2026-11-21T23:59:42.504873+00:00',
     'purpose': 'create', 'retries': 1, 'success': False, 'failure': False, 'message': 'not yet'},
    {'started': '2026-11-21T23:59:12.501823+00:00', 'purpose': 'create', 'retries': 0,
     'success': False, 'failure': False},
    {'started': '2026-11-21T23:59:12.5Z', 'retries': 2},
    {'started': '2021-02-15T22:02:03.350703', 'delayed': '2021-02-15T22:02:33.350703', 'retries': 3},
    {'started': '2026-11-21T23:59:12.501810+00:00', 'purpose': None, 'retries': None,
     'success': None, 'failure': None, 'message': None, 'subrefs': None, 'stopped': None, 'delayed': None},
    {'started': '2026-11-21T23:59:12.501810+00:00', 'purpose': '', 'retries': 0, 'success': False,
     'failure': False},
    {'started': '2026-11-21T23:59:12.501810+00:00', 'unknown': 'field', 'retries': 1,
     'success': False, 'failure': False},
    {'started': '2026-11-21T23:59:12.501810+00:00', 'delayed': '2026-11-21T23:59:42.504873+00:00',
     'purpose': 'create', 'retries': 1, 'success': False, 'failure': False, 'message': 'None',
     'subrefs': ['create_parent/item-i2', 'create_parent/item-i1']},
    {'started': '2026-11-21T23:59:12.501810+00:00', 'delayed': '2026-11-21T23:59:42.504873+00:00',
     'purpose': 'create', 'retries': 1, 'success': False, 'failure': False, 'message': 'None',
     'subrefs': ['create_parent/item-i1', 'create_parent/item-i2']},
    {'started': '2026-11-21T23:59:12.501810+00:00', 'stopped': '2026-11-21T23:59:12.503028+00:00',
     'purpose': 'delete', 'retries': 1, 'success': False, 'failure': True,
     'message': 'bad "spec" with ünïcödé\nand newline'},
    {'started': '2026-11-21T23:59:12.501810+00:00', 'retries': 1, 'success': 1, 'failure': 0},
    {'started': '2026-11-21T23:59:12.501810+00:00', 'retries': 2.0, 'success': 'yes'},
    {'started': '2026-11-21T23:59:12.501810+00:00', 'subrefs': []},
    {'started': '2026-11-21T23:59:12.501810+02:00', 'retries': 1},
    {'retries': 1, 'purpose': 'update'},
]


async def gen_records():
    out = []
    for record in RECORDS:
        state = progression.HandlerState.from_storage(record, basetime=progression._get_basetime())
        if 'started' not in record:
            started = None  # "now" -- not comparable, skipped in tests
        else:
            started = progression.format_iso8601(state.started)
        full = state.for_storage()
        if started is None:
            full['started'] = None
        pure = {k: v for k, v in full.items() if v is not None}
        out.append({
            'record': record,
            'state': {
                'started': started,
                'stopped': progression.format_iso8601(state.stopped),
                'delayed': progression.format_iso8601(state.delayed),
                'purpose': state.purpose,
                'retries': state.retries,
                'success': state.success,
                'failure': state.failure,
                'message': state.message,
                'subrefs': list(state.subrefs),
                'finished': state.finished,
            },
            'for_storage': full,
            'as_in_storage': pure,
            'changed': (pure != record) if started is not None else None,
            'text': json.dumps({k: v for k, v in full.items() if v is not None}, separators=(',', ':')),
            'text_verbose': json.dumps(full, separators=(',', ':')),
        })
    return out


def gen_progress_storage():
    """Fetch / store / purge / touch with the default SmartProgressStorage and a custom prefix."""
    storages = {
        'smart': lambda: progress.SmartProgressStorage(),
        'custom': lambda: progress.SmartProgressStorage(prefix='my-op.example.com'),
        'nov1': lambda: progress.SmartProgressStorage(v1=False),
    }
    long_id = 'a-very-long-handler-identifier-that-exceeds-the-limits-of-k8s-names/spec.field'
    rec_a = '{"started":"2026-11-21T23:59:12.501810+00:00","retries":1}'
    rec_b = '{"started":"2026-11-21T23:59:12.501810+00:00","retries":2}'
    v2 = 'kopf.zalando.org/a-very-long-handler-identifier-that-exceeds-the-limits-o-O4HHuw'
    v1 = 'kopf.zalando.org/a-very-long-handler-identifier-that-exc-0pVtJw'
    base_bodies = [
        {'metadata': {}},
        {'metadata': {'annotations': {'kopf.zalando.org/create_fn': rec_a}}},
        {'metadata': {'annotations': {'my-op.example.com/create_fn': rec_a,
                                      'my-op.example.com/kopf-managed': 'yes'}}},
        {'metadata': {'annotations': {v2: rec_a, v1: rec_b}}},
        {'metadata': {'annotations': {v1: rec_b}}},
        {'metadata': {}, 'status': {'kopf': {'progress': {'create_fn': {'started': '2020-01-01T00:00:00', 'retries': 5}}}}},
        {'metadata': {'annotations': {'kopf.zalando.org/create_fn': rec_a}},
         'status': {'kopf': {'progress': {'create_fn': {'retries': 5}}}}},
        {'metadata': {}, 'status': {'kopf': {'progress': {long_id: {'retries': 7}}}}},
        {'metadata': {'annotations': {'kopf.zalando.org/touch-dummy': '2026-01-01T00:00:00+00:00'}},
         'status': {'kopf': {'dummy': '2026-01-01T00:00:00+00:00'}}},
        {'kind': 'ReplicaSet', 'metadata': {'ownerReferences': [{'kind': 'Deployment', 'name': 'x'}],
                                            'annotations': {'kopf.zalando.org/create_fn-ofDRS': rec_a,
                                                            'kopf.zalando.org/create_fn': rec_b}}},
        {'metadata': {'annotations': {'kopf.zalando.org/main._locals_.fn': rec_b}}},
    ]
    keys = ['create_fn', long_id, 'main.<locals>.fn', 'absent_fn']
    records = [
        {'started': '2026-11-21T23:59:12.501810+00:00', 'stopped': None, 'delayed': None,
         'purpose': 'create', 'retries': 1, 'success': True, 'failure': False, 'message': None,
         'subrefs': None},
        {'started': '2026-11-21T23:59:12.501810+00:00', 'stopped': None,
         'delayed': '2026-11-21T23:59:42.504873+00:00', 'purpose': None, 'retries': 1,
         'success': False, 'failure': False, 'message': 'ünïcödé "boom"', 'subrefs': ['b', 'a']},
    ]
    out = {'fetch': [], 'store': [], 'purge': [], 'touch': [], 'clear': []}
    for name, make in storages.items():
        for body in base_bodies:
            for key in keys:
                storage = make()
                out['fetch'].append({'storage': name, 'body': body, 'key': key,
                                     'record': storage.fetch(key=key, body=bodies.Body(body))})
                for pre in [{}, {'metadata': {'annotations': {
                        storage.storages[0].make_v2_key(key): 'pending',
                        storage.storages[0].make_v1_key(key): 'pending'}}}]:
                    patch = patches.Patch(copy.deepcopy(pre))
                    storage.purge(key=key, body=bodies.Body(body), patch=patch)
                    out['purge'].append({'storage': name, 'body': body, 'key': key, 'patch_before': pre,
                                         'patch': dict(patch)})
            for key in keys[:3]:
                for raw in records:
                    # Records come from HandlerState.for_storage() in Kopf's flow (sorted subrefs).
                    record = progression.HandlerState.from_storage(
                        raw, basetime=datetime.datetime.now(datetime.timezone.utc)).for_storage()
                    storage = make()
                    patch = patches.Patch()
                    storage.store(key=key, record=record, body=bodies.Body(body), patch=patch)
                    out['store'].append({'storage': name, 'body': body, 'key': key, 'record': record,
                                         'patch': dict(patch)})
            for value in [None, '2026-01-01T00:00:00+00:00', '2026-11-21T23:59:12.501810+00:00']:
                storage = make()
                patch = patches.Patch()
                storage.touch(body=bodies.Body(body), patch=patch, value=value)
                out['touch'].append({'storage': name, 'body': body, 'value': value, 'patch': dict(patch)})
            essence = copy.deepcopy({k: v for k, v in body.items() if k != 'kind'})
            essence.setdefault('spec', {'x': 1})
            out['clear'].append({'storage': name, 'essence': essence,
                                 'cleared': make().clear(essence=copy.deepcopy(essence))})
    return out


# ---------------------------------------------------------------------------------------------
# Diff-base essences (diffbase.py) + the progress storage's clear(), as the reactor does.
# ---------------------------------------------------------------------------------------------

LHC = 'kopf.zalando.org/last-handled-configuration'


def gen_essences():
    bodies_ = [
        {'apiVersion': 'kopf.dev/v1', 'kind': 'KopfExample',
         'metadata': {'name': 'kex1', 'namespace': 'default', 'uid': 'u1', 'resourceVersion': '1',
                      'labels': {'a': 'b'},
                      'annotations': {'x': 'y', LHC: '{"spec":{}}\n',
                                      'kopf.zalando.org/create_fn': '{}'},
                      'finalizers': ['kopf.zalando.org/KopfFinalizerMarker']},
         'spec': {'field': 'value', 'items': ['i1']},
         'status': {'create_fn': {'message': 'hello'}, 'phase': 'Running'}},
        {'metadata': {'name': 'n'}},
        {'metadata': {'name': 'n', 'labels': {}, 'annotations': {}}, 'status': {}},
        {'metadata': {'annotations': {
            'kubectl.kubernetes.io/last-applied-configuration': '{}',
            'other-op.example.com/kopf-managed': 'yes',
            'other-op.example.com/create_fn': '{}',
            'other-op.example.com/unrelated': 'z',
            'third.example.com/a': 'b',
            'sub.kopf.zalando.org/z': '1',
            'kopf.zalando.org': 'no-slash',
            'my-op.example.com/last-handled-configuration': '{}\n',
            'my-op.example.com/handler': '{}',
        }}, 'data': {'k': 'v'}, 'rules': [{'a': 1}]},
        {'kind': 'ReplicaSet',
         'metadata': {'ownerReferences': [{'kind': 'Deployment', 'name': 'd'}],
                      'annotations': {'kopf.zalando.org/last-handled-configuration-ofDRS': '{}',
                                      'deployment.kubernetes.io/revision': '1'}},
         'spec': {'replicas': 1}},
        {'spec': {'a': {'b': {'c': 1}}, 'z': None, 'n': 1.5}, 'status': {'phase': 'X', 'nested': {'f': [1]}},
         'metadata': {'labels': {'kopf.zalando.org/x': 'label-kept'}}},
        {'spec': 'scalar-spec', 'metadata': {'annotations': {'ü': 'ünïcödé'}}},
    ]
    configs = [
        {'extra_fields': [], 'ignored_fields': [], 'prefix': None},
        {'extra_fields': ['status.phase'], 'ignored_fields': [], 'prefix': None},
        {'extra_fields': ['status.phase', 'status.nested.f', 'metadata.name', 'spec.absent.x'],
         'ignored_fields': [], 'prefix': None},
        {'extra_fields': [], 'ignored_fields': ['spec.items', 'spec.a.b.c', 'metadata.labels.a', 'spec.absent'],
         'prefix': None},
        {'extra_fields': ['status'], 'ignored_fields': ['status.create_fn'], 'prefix': None},
        {'extra_fields': [], 'ignored_fields': [], 'prefix': 'my-op.example.com'},
    ]
    out = []
    for body in bodies_:
        for cfg in configs:
            prefix = cfg['prefix']
            if prefix:
                dstorage = diffbase.AnnotationsDiffBaseStorage(prefix=prefix, ignored_fields=cfg['ignored_fields'])
                pstorage = progress.SmartProgressStorage(prefix=prefix)
            else:
                dstorage = diffbase.AnnotationsDiffBaseStorage(ignored_fields=cfg['ignored_fields'])
                pstorage = progress.SmartProgressStorage()
            extra = [dicts.parse_field(f) for f in cfg['extra_fields']]
            try:
                built = dstorage.build(body=bodies.Body(copy.deepcopy(body)), extra_fields=extra)
            except TypeError as e:  # Kopf's quirk: extra fields through non-dicts crash the build.
                out.append({'body': body, **cfg, 'error': type(e).__name__})
                continue
            essence = pstorage.clear(essence=built)
            text = json.dumps(essence, separators=(',', ':')) + '\n'
            patch = patches.Patch()
            dstorage.store(body=bodies.Body(body), patch=patch, essence=essence)
            out.append({
                'body': body, **cfg,
                'built': built,
                'essence': essence,
                'text': text,
                'text_sorted': json.dumps(essence, separators=(',', ':'), sort_keys=True) + '\n',
                'store_patch': dict(patch),
                'fetched': dstorage.fetch(body=bodies.Body(body)) if all(
                    isinstance(v, str) for v in body.get('metadata', {}).get('annotations', {}).values()) else None,
            })
    return out


# ---------------------------------------------------------------------------------------------
# Diffs (diffs.py).
# ---------------------------------------------------------------------------------------------

DIFF_PAIRS = [
    (None, None), (None, {}), ({}, None), ({}, {}), (1, 1), (1, 1.0), (1, 2), ('a', 'b'),
    (None, {'spec': {'x': 1}}), ({'spec': {'x': 1}}, None),
    ({'spec': {'x': 1}}, {'spec': {'x': 2}}),
    ({'spec': {'x': 1}}, {'spec': {'y': 1}}),
    ({'spec': {'x': 1}}, {'spec': {'x': None}}),
    ({'spec': {'x': None}}, {'spec': {'x': 1}}),
    ({'spec': {'x': [1, 2]}}, {'spec': {'x': [1, 2, 3]}}),
    ({'spec': {'x': [1, {'a': 1}]}}, {'spec': {'x': [1, {'a': 2}]}}),
    ({'spec': {'x': {'a': 1}}}, {'spec': {'x': 'scalar'}}),
    ({'spec': {'x': 'scalar'}}, {'spec': {'x': {'a': 1}}}),
    ({'spec': {'a': 1, 'b': {'c': 2, 'd': 3}}, 'metadata': {'labels': {'l': '1'}}},
     {'spec': {'a': 1, 'b': {'c': 20, 'e': 4}}, 'metadata': {'labels': {'l': '2', 'm': '3'}}}),
    ({'a': 1.5}, {'a': 1.5}), ({'a': 1}, {'a': 1.0}), ({'a': 0}, {'a': -0.0}),
    ({'a': True}, {'a': False}), ({'a': 'x'}, {'a': ['x']}),
    ([1], [1]), ([1], [2]), ('str', {'a': 1}),
]

REDUCE_PATHS = [[], ['spec'], ['spec', 'x'], ['spec', 'x', 'a'], ['spec', 'b'], ['spec', 'b', 'c'],
                ['metadata', 'labels', 'm'], ['nope'], ['spec', 'x', 'y', 'z']]


def gen_diffs():
    out = []
    for a, b in DIFF_PAIRS:
        d = diffs.diff(a, b)
        reduced = []
        for path in REDUCE_PATHS:
            reduced.append({'path': path, 'diff': dump_diff(diffs.reduce(d, tuple(path)))})
        out.append({'a': a, 'b': b, 'diff': dump_diff(d), 'reduced': reduced})
    return out


# ---------------------------------------------------------------------------------------------
# Cause detection (causes.py) and handler selection for changing causes (registries.py).
# ---------------------------------------------------------------------------------------------

FIN = 'kopf.zalando.org/KopfFinalizerMarker'


def make_cause(body, reason=None, old=None, new=None, diff=None, initial=False, event_type='MODIFIED'):
    resource = references.Resource('kopf.dev', 'v1', 'kopfexamples', kind='KopfExample',
                                   namespaced=True)
    if reason is None:
        return causes.detect_changing_cause(
            finalizer=FIN, raw_event={'type': event_type, 'object': body}, body=bodies.Body(body),
            old=old, new=new, diff=diff, initial=initial, resource=resource, logger=LOGGER,
            patch=patches.Patch(), memo=kopf.Memo(), indices={})
    return causes.ChangingCause(
        logger=LOGGER, indices={}, memo=kopf.Memo(), resource=resource, patch=patches.Patch(),
        body=bodies.Body(body), initial=initial, reason=reason,
        diff=diff if diff is not None else diffs.EMPTY, old=old, new=new)


def gen_causes():
    alive = {'metadata': {'name': 'x'}, 'spec': {'a': 1}}
    alive_fin = {'metadata': {'name': 'x', 'finalizers': [FIN]}, 'spec': {'a': 1}}
    deleting_fin = {'metadata': {'name': 'x', 'deletionTimestamp': '2026-01-01T00:00:00Z',
                                 'finalizers': ['other', FIN]}}
    deleting_nofin = {'metadata': {'name': 'x', 'deletionTimestamp': '2026-01-01T00:00:00Z',
                                   'finalizers': ['other']}}
    deleting_null = {'metadata': {'name': 'x', 'deletionTimestamp': None, 'finalizers': [FIN]}}
    ess1 = {'spec': {'a': 1}}
    ess2 = {'spec': {'a': 2}}
    out = []
    for event_type in ['ADDED', 'MODIFIED', 'DELETED', None]:
        for body in [alive, alive_fin, deleting_fin, deleting_nofin, deleting_null]:
            for old, new in [(None, ess1), (ess1, ess1), (ess1, ess2), (ess1, {'spec': {'a': 1.0}})]:
                for initial in [False, True]:
                    d = diffs.diff(old, new)
                    cause = make_cause(body, old=old, new=new, diff=d, initial=initial,
                                       event_type=event_type)
                    out.append({'event_type': event_type, 'body': body, 'finalizer': FIN,
                                'old': old, 'new': new, 'initial': initial,
                                'reason': cause.reason.value, 'cause_initial': cause.initial,
                                'deleted': cause.deleted})
    return out


def gen_handler_selection():
    """Which changing handlers a cause selects (reason/initial/deleted rules, no filters)."""
    registry = kopf.OperatorRegistry()
    sel = ('kopf.dev', 'v1', 'kopfexamples')

    def fn(**_): pass

    kopf.on.resume(*sel, registry=registry, id='resume')(fn)
    kopf.on.resume(*sel, registry=registry, id='resume_deleted', deleted=True)(fn)
    kopf.on.create(*sel, registry=registry, id='create')(fn)
    kopf.on.update(*sel, registry=registry, id='update')(fn)
    kopf.on.delete(*sel, registry=registry, id='delete')(fn)
    kopf.on.delete(*sel, registry=registry, id='delete_optional', optional=True)(fn)
    kopf.on.field(*sel, registry=registry, id='field', field='spec.a')(fn)
    kopf.on.update(*sel, registry=registry, id='update_field', field='spec.a')(fn)
    kopf.on.create(*sel, registry=registry, id='create_field', field='spec.a')(fn)
    handlers = list(registry._changing.get_all_handlers())
    specs = [{'id': h.id, 'kind': k} for h, k in zip(handlers, [
        'resume', 'resume', 'create', 'update', 'delete', 'delete', 'field', 'update', 'create'])]
    for spec, h in zip(specs, handlers):
        spec['deleted'] = h.deleted
        spec['optional'] = (not h.requires_finalizer) if spec['kind'] == 'delete' else None
        spec['field'] = '.'.join(h.field) if h.field else None
        spec['requires_finalizer'] = bool(h.requires_finalizer)
    alive = {'metadata': {'name': 'x'}, 'spec': {'a': 1}}
    deleting = {'metadata': {'name': 'x', 'deletionTimestamp': '2026-01-01T00:00:00Z', 'finalizers': [FIN]},
                'spec': {'a': 1}}
    out = []
    for reason in [causes.Reason.CREATE, causes.Reason.UPDATE, causes.Reason.DELETE, causes.Reason.RESUME]:
        for body in [alive, deleting]:
            for initial in [False, True]:
                for old, new in [({'spec': {'a': 1}}, {'spec': {'a': 1}}), ({'spec': {'a': 0}}, {'spec': {'a': 1}}),
                                 (None, {'spec': {'a': 1}}), ({'spec': {'b': 0}}, {'spec': {'b': 1}})]:
                    d = diffs.diff(old, new)
                    cause = make_cause(body, reason=reason, old=old, new=new, diff=d, initial=initial)
                    selected = [h.id for h in registry._changing.iter_handlers(cause)]
                    requires = registry._changing.requires_finalizer(cause)
                    out.append({'reason': reason.value, 'body': body, 'initial': initial, 'old': old,
                                'new': new, 'selected': selected, 'requires_finalizer': requires})
    return {'handlers': specs, 'cases': out}


# ---------------------------------------------------------------------------------------------
# Filters (registries.match / prematch).
# ---------------------------------------------------------------------------------------------

def _filter_value(v):
    if v is kopf.PRESENT:
        return 'present'
    if v is kopf.ABSENT:
        return 'absent'
    return {'equals': v}


def gen_filters():
    sel = ('kopf.dev', 'v1', 'kopfexamples')
    handler_specs = [
        {},
        {'labels': {'a': 'b'}},
        {'labels': {'a': kopf.PRESENT}},
        {'labels': {'a': kopf.ABSENT}},
        {'labels': {'a': 'b', 'c': kopf.ABSENT}},
        {'annotations': {'x': 'y'}},
        {'annotations': {'x': kopf.PRESENT, 'z': kopf.ABSENT}},
        {'field': 'spec.a'},
        {'field': 'spec.a', 'value': 1},
        {'field': 'spec.a', 'value': 1.0},
        {'field': 'spec.a', 'value': 2},
        {'field': 'spec.a', 'value': kopf.PRESENT},
        {'field': 'spec.a', 'value': kopf.ABSENT},
        {'field': 'spec.a', 'value': None},
        {'field': 'spec.nested.deep'},
        {'field': 'spec.nested.deep', 'value': {'k': 'v'}},
        {'field': 'spec.a', 'old': 0},
        {'field': 'spec.a', 'new': 1},
        {'field': 'spec.a', 'old': kopf.ABSENT, 'new': kopf.PRESENT},
        {'field': 'spec.a', 'old': kopf.PRESENT, 'new': kopf.ABSENT},
        {'field': 'spec.a', 'old': 0, 'new': 1},
        {'field': 'status.phase', 'value': 'Running'},
    ]
    bodies_ = [
        {'metadata': {'labels': {'a': 'b'}, 'annotations': {'x': 'y'}}, 'spec': {'a': 1}},
        {'metadata': {'labels': {'a': 'c', 'c': 'd'}}, 'spec': {'a': 2, 'nested': {'deep': {'k': 'v'}}}},
        {'metadata': {}, 'spec': {}},
        {'metadata': {'annotations': {'z': ''}}, 'spec': 'not-a-dict', 'status': {'phase': 'Running'}},
        {'spec': {'a': None}},
    ]
    essences = [None, {'spec': {'a': 0}}, {'spec': {'a': 1}}, {'spec': {}},
                {'spec': {'nested': {'deep': {'k': 'v'}}}}, {'status': {'phase': 'Running'}}]
    out = []
    kinds = ['update', 'field', 'create', 'event', 'daemon']
    for spec in handler_specs:
        for kind in kinds:
            if kind in ('create', 'event', 'daemon') and ('old' in spec or 'new' in spec):
                continue
            if kind == 'field' and 'field' not in spec:
                continue
            registry = kopf.OperatorRegistry()
            kwargs = dict(spec)

            def fn(**_): pass

            if kind == 'update':
                kopf.on.update(*sel, registry=registry, **kwargs)(fn)
                handler = registry._changing.get_all_handlers()[0]
            elif kind == 'field':
                kopf.on.field(*sel, registry=registry, **kwargs)(fn)
                handler = registry._changing.get_all_handlers()[0]
            elif kind == 'create':
                kopf.on.create(*sel, registry=registry, **kwargs)(fn)
                handler = registry._changing.get_all_handlers()[0]
            elif kind == 'event':
                kwargs.pop('old', None); kwargs.pop('new', None)
                kopf.on.event(*sel, registry=registry, **kwargs)(fn)
                handler = registry._watching.get_all_handlers()[0]
            else:
                kopf.daemon(*sel, registry=registry, **kwargs)(fn)
                handler = registry._spawning.get_all_handlers()[0]
            abi = {}
            for k in ('labels', 'annotations'):
                if k in spec:
                    abi[k] = {key: _filter_value(v) for key, v in spec[k].items()}
            if 'field' in spec:
                abi['field'] = spec['field']
            for k in ('value', 'old', 'new'):
                if k in spec and spec[k] is not None:
                    abi[k] = _filter_value(spec[k])
            for body in bodies_:
                if kind in ('event', 'daemon'):
                    resource = references.Resource('kopf.dev', 'v1', 'kopfexamples')
                    if kind == 'event':
                        cause = causes.WatchingCause(
                            logger=LOGGER, indices={}, memo=kopf.Memo(), resource=resource,
                            patch=patches.Patch(), body=bodies.Body(body), type='MODIFIED',
                            event={'type': 'MODIFIED', 'object': body})
                    else:
                        cause = causes.SpawningCause(
                            logger=LOGGER, indices={}, memo=kopf.Memo(), resource=resource,
                            patch=patches.Patch(), body=bodies.Body(body), reset=False)
                    out.append({'kind': kind, 'filters': abi, 'body': body, 'old': None, 'new': None,
                                'changing': False,
                                'match': registries.match(handler, cause),
                                'prematch': registries.prematch(handler, cause)})
                    continue
                for old in essences:
                    for new in essences[1:]:
                        d = diffs.diff(old, new)
                        cause = make_cause(body, reason=causes.Reason.UPDATE, old=old, new=new, diff=d)
                        out.append({'kind': kind, 'filters': abi, 'body': body, 'old': old, 'new': new,
                                    'changing': True,
                                    'match': registries.match(handler, cause),
                                    'prematch': registries.prematch(handler, cause)})
    return out


# ---------------------------------------------------------------------------------------------
# Resource selectors (references.py) and namespace patterns.
# ---------------------------------------------------------------------------------------------

def R(group, version, plural, kind, singular=None, shortcuts=(), categories=(), namespaced=True,
      preferred=True, verbs=('list', 'watch', 'patch', 'get'), subresources=()):
    return references.Resource(group=group, version=version, plural=plural, kind=kind,
                               singular=singular or kind.lower(), shortcuts=frozenset(shortcuts),
                               categories=frozenset(categories), namespaced=namespaced,
                               preferred=preferred, verbs=frozenset(verbs),
                               subresources=frozenset(subresources))


RESOURCES = [
    R('', 'v1', 'pods', 'Pod', shortcuts=['po'], categories=['all'], subresources=['status', 'log']),
    R('', 'v1', 'events', 'Event', shortcuts=['ev']),
    R('', 'v1', 'namespaces', 'Namespace', shortcuts=['ns'], namespaced=False),
    R('', 'v1', 'configmaps', 'ConfigMap', shortcuts=['cm']),
    R('metrics.k8s.io', 'v1beta1', 'pods', 'PodMetrics'),
    R('events.k8s.io', 'v1', 'events', 'Event', shortcuts=['ev']),
    R('events.k8s.io', 'v1beta1', 'events', 'Event', shortcuts=['ev'], preferred=False),
    R('apps', 'v1', 'deployments', 'Deployment', shortcuts=['deploy'], categories=['all']),
    R('apps', 'v1', 'replicasets', 'ReplicaSet', shortcuts=['rs'], categories=['all']),
    R('kopf.dev', 'v1', 'kopfexamples', 'KopfExample', shortcuts=['kex', 'kexes'], categories=['kopf'],
      subresources=['status']),
    R('kopf.dev', 'v1beta1', 'kopfexamples', 'KopfExample', shortcuts=['kex', 'kexes'], preferred=False),
    R('zalando.org', 'v1', 'kopfexamples', 'KopfExample', shortcuts=['kex']),
    R('kopf.dev', 'v1', 'kopfpeerings', 'KopfPeering'),
    R('kopf.dev', 'v1', 'clusterkopfpeerings', 'ClusterKopfPeering', namespaced=False),
    R('batch', 'v1', 'jobs', 'Job', categories=['all']),
    R('example.com', 'v2alpha1', 'widgets', 'Widget', shortcuts=['wd'], preferred=False),
    R('example.com', 'v1', 'widgets', 'Widget', shortcuts=['wd']),
    R('other.com', 'v1', 'things', 'Thing', shortcuts=['th'], verbs=['list']),
]


def res_name(r):
    return f'{r.group}/{r.version}/{r.plural}'


def gen_selectors():
    # (python positional args, python kwargs): converted into the ABI ResourceSelector.
    forms = [
        (('kopf.dev', 'v1', 'kopfexamples'), {}),
        (('kopf.dev/v1', 'kopfexamples'), {}),
        (('kopf.dev', 'kopfexamples'), {}),
        (('kopfexamples.kopf.dev',), {}),
        (('kopfexamples.v1beta1.kopf.dev',), {}),
        (('kopfexamples.v1.kopf.dev',), {}),
        (('kopfexamples',), {}),
        (('kex',), {}),
        (('KopfExample',), {}),
        (('kopfexample',), {}),
        (('pods',), {}),
        (('v1', 'pods'), {}),
        (('', 'v1', 'pods'), {}),
        (('metrics.k8s.io', 'pods'), {}),
        (('pods.metrics.k8s.io',), {}),
        (('events',), {}),
        (('ev',), {}),
        (('deployments.apps',), {}),
        (('apps/v1', 'deployments'), {}),
        (('apps', 'v1', 'deployments'), {}),
        ((kopf.EVERYTHING,), {}),
        ((), {'group': 'kopf.dev', 'any_name': kopf.EVERYTHING}),
        ((), {'group': 'events.k8s.io', 'version': 'v1beta1', 'any_name': kopf.EVERYTHING}),
        ((), {'version': 'v1beta1', 'any_name': kopf.EVERYTHING}),
        ((), {'category': 'all'}),
        ((), {'category': 'kopf'}),
        ((), {'kind': 'KopfExample'}),
        ((), {'kind': 'KopfExample', 'group': 'kopf.dev'}),
        ((), {'kind': 'KopfExample', 'version': 'v1beta1'}),
        ((), {'plural': 'kopfexamples', 'group': 'zalando.org'}),
        ((), {'singular': 'pod'}),
        ((), {'shortcut': 'kex'}),
        ((), {'shortcut': 'po'}),
        ((), {'plural': 'widgets'}),
        ((), {'plural': 'widgets', 'version': 'v2alpha1'}),
        ((), {'plural': 'nothing'}),
        ((), {'group': 'example.com', 'plural': 'widgets'}),
        ((), {'any_name': 'things'}),
        (('example.com', 'v2alpha1', 'widgets'), {}),
    ]
    out = []
    for args, kwargs in forms:
        s = references.Selector(*args, **kwargs)
        abi = {}
        for f in ('group', 'version', 'plural', 'kind', 'singular', 'shortcut', 'category'):
            v = getattr(s, f)
            if v is not None:
                abi[f] = v
        if s.any_name is kopf.EVERYTHING:
            abi['everything'] = True
        elif s.any_name is not None:
            abi['any_name'] = s.any_name
        selected = s.select(RESOURCES)
        out.append({
            'args': [a if isinstance(a, str) else 'EVERYTHING' for a in args],
            'kwargs': {k: (v if isinstance(v, str) else 'EVERYTHING') for k, v in kwargs.items()},
            'selector': abi,
            'is_specific': s.is_specific,
            'checks': sorted(res_name(r) for r in RESOURCES if s.check(r)),
            'selected': sorted(res_name(r) for r in selected),
            'ambiguous': bool(s.is_specific and len(selected) > 1),
        })
    resources = [{
        'group': r.group, 'version': r.version, 'plural': r.plural, 'kind': r.kind,
        'singular': r.singular, 'shortcuts': sorted(r.shortcuts), 'categories': sorted(r.categories),
        'namespaced': r.namespaced, 'preferred': r.preferred, 'verbs': sorted(r.verbs),
        'subresources': sorted(r.subresources),
    } for r in RESOURCES]
    return {'resources': resources, 'cases': out}


def gen_namespaces():
    patterns = ['default', 'def*', '*', '!kube-*', 'myapp-*, !*-pr-*, *pr-123', '!*-pr-*, *pr-123',
                'a?c', 'ns-[0-9]', 'ns-[!0-9]', 'x,y', ' x , y ', '!!x', '', '!', 'a\\b', '*, !kube-system',
                'kube-*,!kube-system', 'foo,!foo,foo']
    names = ['default', 'defx', 'kube-system', 'kube-public', 'myapp-test', 'myapp-pr-123', 'myapp-pr-456',
             'otherapp-pr-123', 'abc', 'ac', 'ns-1', 'ns-a', 'x', 'y', '!x', 'a\\b', 'ab', '', 'foo']
    out = []
    for p in patterns:
        for n in names:
            out.append({'pattern': p, 'name': n, 'match': references.match_namespace(n, p)})
    specific = sorted(references.select_specific_namespaces(patterns))
    return {'cases': out, 'patterns': patterns, 'specific': specific}


# ---------------------------------------------------------------------------------------------
# Finalizers as JSON-patch (finalizers.py + patches.Patch.as_json_patch).
# ---------------------------------------------------------------------------------------------

def gen_finalizers():
    lists = [None, [], [FIN], ['other'], ['other', FIN], [FIN, 'other'], ['a', FIN, 'b'],
             [FIN, FIN], ['a', FIN, 'b', FIN, 'c'], ['a', 'b', 'c']]
    out = []
    for lst in lists:
        body = {'metadata': {'name': 'x', 'resourceVersion': '42'}}
        if lst is not None:
            body['metadata']['finalizers'] = lst
        for op in ['add', 'remove']:
            fn = (lambda b: finalizers.block_deletion(b, FIN)) if op == 'add' else \
                (lambda b: finalizers.allow_deletion(b, FIN))
            patch = patches.Patch(fns=[fn])
            ops = patch.as_json_patch(body)
            out.append({'body': body, 'op': op, 'finalizer': FIN, 'ops': ops,
                        'blocked': finalizers.is_deletion_blocked(bodies.Body(body), FIN)})
    return out


def gen_deliver_results():
    cases = [
        ({}, {'h1': {'a': 1}}),
        ({'status': {'h1': {'b': 2}}}, {'h1': {'a': 1}}),
        ({'status': {'h1': {'a': 0, 'b': {'c': 1}}}}, {'h1': {'b': {'d': 2}}}),
        ({}, {'h1': 42, 'h2': 'text', 'h3': [1, 2], 'create_fn/spec.field': {'x': None}}),
        ({'status': {'h1': {'b': 2}}}, {'h1': 'scalar-replaces'}),
    ]
    out = []
    from kopf._core.actions import execution
    for patch_before, results in cases:
        patch = patches.Patch(copy.deepcopy(patch_before))
        outcomes = {k: execution.Outcome(final=True, result=v) for k, v in results.items()}
        progression.deliver_results(outcomes=outcomes, patch=patch)
        out.append({'patch_before': patch_before, 'results': results, 'patch': dict(patch)})
    return out


# ---------------------------------------------------------------------------------------------
# Progress lifecycles: Kopf's State API over several cycles (as process_changing_cause does).
# ---------------------------------------------------------------------------------------------

BASETIME = datetime.datetime(2026, 11, 21, 23, 59, 12, tzinfo=datetime.timezone.utc)


class _FrozenLoop(asyncio.SelectorEventLoop):
    t = 0.0

    def time(self):
        return self.t


class _H:
    def __init__(self, id):
        self.id = id


def _apply_merge(body, patch):
    for key, val in patch.items():
        if val is None:
            body.pop(key, None)
        elif isinstance(val, dict) and isinstance(body.get(key), dict):
            _apply_merge(body[key], val)
        elif isinstance(val, dict):
            body[key] = {}
            _apply_merge(body[key], val)
        else:
            body[key] = copy.deepcopy(val)
    return body


LIFECYCLES = [
    # Two create handlers, one per cycle; the second fails temporarily once.
    {'name': 'two-creates', 'body': {'metadata': {'name': 'x'}, 'spec': {'a': 1}},
     'owned': ['create_fn', 'create_retry', 'delete_fn'], 'cycles': [
        {'t': 0.5, 'reason': 'create', 'selected': ['create_fn', 'create_retry'],
         'outcomes': {'create_fn': {'final': True}}},
        {'t': 1.25, 'reason': 'create', 'selected': ['create_fn', 'create_retry'],
         'outcomes': {'create_retry': {'final': False, 'delay': 30, 'error': 'not yet'}}},
        {'t': 31.5, 'reason': 'create', 'selected': ['create_fn', 'create_retry'],
         'outcomes': {'create_retry': {'final': True}}},
    ]},
    # A permanent failure and an ignored-error success in one cycle.
    {'name': 'failure', 'body': {'metadata': {'name': 'x'}},
     'owned': ['a', 'b'], 'cycles': [
        {'t': 2.0, 'reason': 'update', 'selected': ['a', 'b'],
         'outcomes': {'a': {'final': True, 'error': 'bad "spec" ü'}, 'b': {'final': True}}},
    ]},
    # Sub-handlers: the parent is retried until the children finish; subrefs are purged.
    {'name': 'subhandlers', 'body': {'metadata': {'name': 'x'}},
     'owned': ['create_parent'], 'cycles': [
        {'t': 1.0, 'reason': 'create', 'selected': ['create_parent'],
         'outcomes': {'create_parent': {'final': False, 'delay': 0, 'error': 'None',
                                        'subrefs': ['create_parent/item-i2', 'create_parent/item-i1']}}},
        {'t': 2.0, 'reason': 'create', 'selected': ['create_parent', 'create_parent/item-i1'],
         'outcomes': {'create_parent/item-i1': {'final': True}}},
        {'t': 3.0, 'reason': 'create', 'selected': ['create_parent'],
         'outcomes': {'create_parent': {'final': True, 'subrefs': ['create_parent/item-i1']}}},
    ]},
    # An update supersedes an unfinished creation (extras are purged and re-purposed).
    {'name': 'superseded', 'body': {'metadata': {'name': 'x', 'annotations': {
        'kopf.zalando.org/create_fn': '{"started":"2026-11-21T23:59:00.000000+00:00","purpose":"create","retries":1,"success":false,"failure":false,"delayed":"2026-11-22T00:30:00.000000+00:00"}',
        'kopf.zalando.org/both_fn': '{"started":"2026-11-21T23:59:00.000000+00:00","purpose":"create","retries":0,"success":false,"failure":false}',
    }}, 'status': {'kopf': {'progress': {'create_fn': {'started': '2026-11-21T23:59:00.000000+00:00', 'retries': 1}}}}},
     'owned': ['create_fn', 'both_fn', 'update_fn'], 'cycles': [
        {'t': 5.0, 'reason': 'update', 'selected': ['both_fn', 'update_fn'],
         'outcomes': {'update_fn': {'final': True}}},
        {'t': 6.0, 'reason': 'update', 'selected': ['both_fn', 'update_fn'],
         'outcomes': {'both_fn': {'final': True}}},
    ]},
    # Legacy records: naive timestamps, V1-only keys, status-only records, no purpose.
    {'name': 'legacy', 'body': {'metadata': {'name': 'x', 'annotations': {
        'kopf.zalando.org/a-very-long-handler-identifier-that-exc-0pVtJw': '{"started":"2021-02-15T22:02:03.350703","retries":2,"success":false,"failure":false}',
    }}, 'status': {'kopf': {'progress': {'old_fn': {'started': '2021-02-15T22:02:03.350703', 'retries': 1, 'success': False}}}}},
     'owned': ['a-very-long-handler-identifier-that-exceeds-the-limits-of-k8s-names/spec.field', 'old_fn'],
     'cycles': [
        {'t': 1.0, 'reason': 'update',
         'selected': ['a-very-long-handler-identifier-that-exceeds-the-limits-of-k8s-names/spec.field', 'old_fn'],
         'outcomes': {'old_fn': {'final': True}}},
        {'t': 2.0, 'reason': 'update',
         'selected': ['a-very-long-handler-identifier-that-exceeds-the-limits-of-k8s-names/spec.field', 'old_fn'],
         'outcomes': {'a-very-long-handler-identifier-that-exceeds-the-limits-of-k8s-names/spec.field': {'final': True}}},
    ]},
]


def gen_lifecycles():
    from kopf._core.actions import execution
    loop = _FrozenLoop()
    original_basetime = progression._get_basetime
    progression._get_basetime = lambda: BASETIME
    out = []
    try:
        for scenario in LIFECYCLES:
            body = copy.deepcopy(scenario['body'])
            steps = []
            for cycle in scenario['cycles']:
                async def run():
                    storage = progress.SmartProgressStorage()
                    owned = [_H(i) for i in scenario['owned']]
                    selected = [_H(i) for i in cycle['selected']]
                    state = progression.State.from_storage(body=bodies.Body(body), storage=storage, handlers=owned)
                    state = state.with_purpose(cycle['reason']).with_handlers(selected)
                    extras = {p: c._asdict() for p, c in state.extras.items()}
                    for _ in list(state.extras):
                        state = state.with_purpose(purpose=cycle['reason'], handlers=selected)
                    patch = patches.Patch()
                    if state.extras:
                        state.purge(body=bodies.Body(body), patch=patch, storage=storage, handlers=owned)
                    outcomes = {
                        hid: execution.Outcome(final=o['final'], delay=o.get('delay'),
                                               exception=Exception(o['error']) if 'error' in o else None,
                                               subrefs=o.get('subrefs', []))
                        for hid, o in cycle['outcomes'].items()
                    }
                    state = state.with_outcomes(outcomes)
                    state.store(body=bodies.Body(body), patch=patch, storage=storage)
                    done = state.done
                    if done:
                        state.purge(body=bodies.Body(body), patch=patch, storage=storage, handlers=owned)
                    return {'extras': extras, 'patch': dict(patch), 'done': done,
                            'delays': list(state.delays), 'counts': state.counts._asdict()}
                _FrozenLoop.t = cycle['t']
                result = loop.run_until_complete(run())
                steps.append({'body': copy.deepcopy(body), **cycle, **result})
                body = _apply_merge(body, copy.deepcopy(result['patch']))
            out.append({'name': scenario['name'], 'basetime': BASETIME.isoformat(timespec='microseconds'),
                        'owned': scenario['owned'], 'steps': steps})
    finally:
        progression._get_basetime = original_basetime
        loop.close()
    return out


def gen_inconsistencies():
    from kopf._core.actions import application
    cases = [
        ({'spec': {'a': 1}}, {'spec': {'a': 1, 'b': 2}, 'metadata': {'name': 'x'}}),
        ({'spec': {'a': 1}}, {'spec': {'a': 2}}),
        ({'status': {'x': {'y': 1}}}, {'spec': {}}),
        ({'metadata': {'annotations': {}, 'labels': {}, 'finalizers': []}}, {'metadata': {'name': 'x'}}),
        ({'metadata': {'annotations': {'a': None}}}, {'metadata': {'annotations': {'b': 'c'}}}),
        ({'metadata': {'annotations': {'a': 'x'}}}, {'metadata': {}}),
        ({'spec': {'list': []}}, {'spec': {}}),
        ({'status': {'x': 1}}, None),
    ]
    out = []
    for patch, body in cases:
        d = diffs.diff(patch, body, scope=diffs.DiffScope.LEFT)
        d = [item for item in d if item.old or item.new or item.field not in application.KNOWN_INCONSISTENCIES]
        out.append({'patch': patch, 'body': body, 'inconsistencies': dump_diff(d)})
    return out


async def _in_loop(fn):
    return fn()  # Kopf's HandlerState needs a running loop for its "now".


def main():
    # Kopf's diffs iterate frozensets: pin the string hashing for a reproducible output file.
    if os.environ.get('PYTHONHASHSEED') != '0':
        os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, 'PYTHONHASHSEED': '0'})
    vectors = {
        'kopf_version': kopf.__version__ if hasattr(kopf, '__version__') else None,
        'keys': gen_keys(),
        'marked_keys': gen_marked_keys(),
        'marked_prefixes': gen_marked_prefixes(),
        'json_text': gen_json_text(),
        'timestamps': gen_timestamps(),
        'records': asyncio.run(gen_records()),
        'progress_storage': asyncio.run(_in_loop(gen_progress_storage)),
        'essences': gen_essences(),
        'diffs': gen_diffs(),
        'causes': gen_causes(),
        'handler_selection': gen_handler_selection(),
        'filters': gen_filters(),
        'selectors': gen_selectors(),
        'namespaces': gen_namespaces(),
        'finalizers': gen_finalizers(),
        'deliver_results': gen_deliver_results(),
        'lifecycles': gen_lifecycles(),
        'inconsistencies': gen_inconsistencies(),
    }
    with open(OUT, 'w', encoding='utf-8') as f:
        json.dump(vectors, f, ensure_ascii=False)
        f.write('\n')
    counts = {k: (len(v) if isinstance(v, list) else
                  {kk: len(vv) for kk, vv in v.items() if isinstance(vv, list)} if isinstance(v, dict) else v)
              for k, v in vectors.items()}
    print(json.dumps(counts), file=sys.stderr)


if __name__ == '__main__':
    main()
