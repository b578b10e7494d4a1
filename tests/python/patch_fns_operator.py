"""The Python Kopf twin of the ``fixture-patch-fns`` Rust plugin.

Used by tests/tests/patch_fns.rs to compare what Kopf sends for ``patch.fns``:

    python3 -m kopf run --standalone --namespace default patch_fns_operator.py

``create_fn`` appends one transformation: ``"added"`` appended to ``spec.items`` and
``status.appended`` set to the number of items. Each call of it appends a line to the
file named by ``KOPF_PATCH_FNS_RECORD`` (with fsync).
"""
import os

import kopf


def append_item(body):
    path = os.environ.get('KOPF_PATCH_FNS_RECORD')
    if path:
        with open(path, 'a', encoding='utf-8') as f:
            f.write('transform\n')
            f.flush()
            os.fsync(f.fileno())
    items = body.get('spec', {}).get('items')
    if isinstance(items, list):
        items.append('added')
        body.setdefault('status', {})['appended'] = len(items)


@kopf.on.create('kopfexamples')
def create_fn(patch, **_):
    patch.fns.append(append_item)
