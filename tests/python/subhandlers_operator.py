"""The Python Kopf twin of the ``fixture-subhandlers`` Rust plugin: the same handler and
sub-handler ids, results and call records.

Used by tests/tests/subhandlers.rs to hand an object over to kopf (Rust) while a
sub-handler is pending:

    python3 -m kopf run --standalone --namespace default subhandlers_operator.py

``create_fn`` registers ``item-<item>`` per ``spec.items`` entry: ``flaky*`` items raise a
``TemporaryError`` (delay ``spec.delay``, default 1 s) on their first attempt, ``fatal*``
items a ``PermanentError``, ``nested*`` items register sub-handlers in turn (``step-a``
returning ``{"step": "a"}``, ``step-flaky`` failing once as a ``flaky`` item, then
``{"step": "flaky"}``; ``nested*fatal`` also ``step-fatal``, a ``PermanentError``), and all
return ``{"item": item}``. Every call appends
``<handler id> <namespace/name> <uid> <reason>`` to the file named by
``KOPF_SUBHANDLERS_RECORD`` (with fsync).

Before that, ``create_fn`` runs ``spec.fns`` with ``await kopf.execute(fns={...})``
(``fn-<x>``; ``flaky*`` fail once, the others return ``{"fn": x}``), then
``await kopf.execute(fns=[named_step])``, and records ``create_fn#after-fns``.
"""
import functools
import os

import kopf


def record(handler_id, namespace, name, uid, reason):
    path = os.environ.get('KOPF_SUBHANDLERS_RECORD')
    if not path:
        return
    with open(path, 'a', encoding='utf-8') as f:
        f.write(f'{handler_id} {namespace}/{name} {uid} {reason}\n')
        f.flush()
        os.fsync(f.fileno())


def named_step(namespace, name, uid, reason, **_):
    record('create_fn/named_step', namespace, name, uid, reason)
    return {'named': True}


async def execute_fns(spec, namespace, name, uid, reason, delay):
    names = spec.get('fns', [])
    if not names:
        return

    def run_fn(fn_name, retry=0, **_):
        record(f'create_fn/fn-{fn_name}', namespace, name, uid, reason)
        if fn_name.startswith('flaky') and retry == 0:
            raise kopf.TemporaryError(f'{fn_name} is not ready', delay=delay)
        return {'fn': fn_name}

    await kopf.execute(fns={f'fn-{n}': functools.partial(run_fn, n) for n in names})
    await kopf.execute(fns=[named_step])
    record('create_fn#after-fns', namespace, name, uid, reason)


@kopf.on.create('kopfexamples')
async def create_fn(spec, namespace, name, uid, reason, **_):
    record('create_fn', namespace, name, uid, reason)
    delay = spec.get('delay', 1.0)
    await execute_fns(spec, namespace, name, uid, reason, delay)
    for item in spec.get('items', []):

        def child(item=item, retry=0, **kwargs):
            record(f'create_fn/item-{item}', namespace, name, uid, reason)
            if item.startswith('fatal'):
                raise kopf.PermanentError(f'{item} is fatal')
            if item.startswith('flaky') and retry == 0:
                raise kopf.TemporaryError(f'{item} is not ready', delay=delay)
            if item.startswith('nested'):
                prefix = f'create_fn/item-{item}'

                def step_a(**kwargs):
                    record(f'{prefix}/step-a', namespace, name, uid, reason)
                    return {'step': 'a'}

                def step_flaky(retry=0, **kwargs):
                    record(f'{prefix}/step-flaky', namespace, name, uid, reason)
                    if retry == 0:
                        raise kopf.TemporaryError('flaky-step is not ready', delay=delay)
                    return {'step': 'flaky'}

                def step_fatal(**kwargs):
                    record(f'{prefix}/step-fatal', namespace, name, uid, reason)
                    raise kopf.PermanentError('step-fatal is fatal')

                kopf.register(fn=step_a, id='step-a')
                kopf.register(fn=step_flaky, id='step-flaky')
                if item.endswith('fatal'):
                    kopf.register(fn=step_fatal, id='step-fatal')
            return {'item': item}

        kopf.register(fn=child, id=f'item-{item}')
    return {'parent': True}
