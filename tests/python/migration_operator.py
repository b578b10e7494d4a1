"""The Python Kopf twin of the ``fixture-lifecycle-multi`` Rust plugin: the same handler
ids, the same results, the same side-effect records.

Used by tests/tests/reactor_migration.rs to hand objects over between Python Kopf and
kopf (Rust) partway through their handling, in both directions:

    python3 -m kopf run --standalone --namespace default migration_operator.py

Each handler, on success, appends ``<handler id> <namespace/name> <uid> <reason>`` to the
file named by ``KOPF_LIFECYCLE_RECORD`` (with fsync). ``create_gated`` raises a
``TemporaryError`` (delay 1 s) while ``KOPF_LIFECYCLE_GATE`` names a missing file.
With ``KOPF_LIFECYCLE_STORAGE=status``, progress and the diff-base are kept in ``status``
(``StatusProgressStorage``, ``StatusDiffBaseStorage``).
"""
import os

import kopf


def record(handler_id, namespace, name, uid, reason):
    path = os.environ.get('KOPF_LIFECYCLE_RECORD')
    if not path:
        return
    with open(path, 'a', encoding='utf-8') as f:
        f.write(f'{handler_id} {namespace}/{name} {uid} {reason}\n')
        f.flush()
        os.fsync(f.fileno())


@kopf.on.startup()
def storage(settings, **_):
    if os.environ.get('KOPF_LIFECYCLE_STORAGE') == 'status':
        settings.persistence.progress_storage = kopf.StatusProgressStorage()
        settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage()


@kopf.on.create('kopfexamples')
def create_fn(namespace, name, uid, reason, **_):
    record('create_fn', namespace, name, uid, reason)
    return {'created': True}


@kopf.on.update('kopfexamples')
def update_fn(namespace, name, uid, reason, **_):
    record('update_fn', namespace, name, uid, reason)
    return {'updated': True}


@kopf.on.field('kopfexamples', field='spec.field')
def field_fn(old, new, namespace, name, uid, reason, **_):
    record('field_fn/spec.field', namespace, name, uid, reason)
    return {'old': old, 'new': new}


@kopf.on.delete('kopfexamples')
def delete_fn(namespace, name, uid, reason, **_):
    record('delete_fn', namespace, name, uid, reason)
    return {'deleted': True}


@kopf.on.create('kopfexamples')
def create_gated(namespace, name, uid, reason, **_):
    gate = os.environ.get('KOPF_LIFECYCLE_GATE')
    if gate and not os.path.exists(gate):
        raise kopf.TemporaryError('the gate is closed', delay=1)
    record('create_gated', namespace, name, uid, reason)
    return {'gated': True}


@kopf.on.create('kopfexamples')
def create_more(namespace, name, uid, reason, **_):
    record('create_more', namespace, name, uid, reason)
    return {'more': True}
