"""A small, deterministic Kopf operator used to check the kopf-testing API emulator.

It is run by tests/tests/emulator_python_kopf.rs with Python Kopf (an independent, real
operator framework) against the emulator:

    python3 -m kopf run --standalone --namespace default lifecycle_operator.py --verbose

The delete handler writes a marker file named by the environment variable
``KOPF_EMULATOR_DELETE_MARKER`` (one line per deleted object: ``namespace/name``) and posts
a k8s Event with reason ``DeleteFnRan``.
"""
import os

import kopf


@kopf.on.create('kopfexamples')
def create_fn(**_):
    return {'created': True}


@kopf.on.update('kopfexamples')
def update_fn(**_):
    return {'updated': True}


@kopf.on.field('kopfexamples', field='spec.field')
def field_fn(old, new, **_):
    return {'old': old, 'new': new}


@kopf.on.delete('kopfexamples')
def delete_fn(body, name, namespace, logger, **_):
    marker = os.environ.get('KOPF_EMULATOR_DELETE_MARKER')
    if marker:
        with open(marker, 'a', encoding='utf-8') as f:
            f.write(f'{namespace}/{name}\n')
    kopf.info(body, reason='DeleteFnRan', message=f'deleted {namespace}/{name}')
    logger.info('delete_fn ran for %s/%s', namespace, name)
