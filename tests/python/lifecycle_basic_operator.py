"""The Python Kopf twin of the ``fixture-lifecycle-basic`` Rust plugin: create, update,
delete and a ``spec.field`` handler, each returning a dict, with the same handler ids.

Run by the reactor benchmark (``cargo run --release -p kopf-e2e --bin reactor_bench``)
side by side with kopf on the same emulator:

    python3 -m kopf run --standalone --namespace default lifecycle_basic_operator.py
"""
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
def delete_fn(**_):
    return {'deleted': True}
