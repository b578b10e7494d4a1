"""A Python Kopf operator for the peering interop tests (tests/tests/peering_e2e.rs).

Like examples/06-peering: every created KopfExample is recorded as a line
`NAMESPACE/NAME IDENTITY` in the file named by KOPF_EXAMPLE_SIDE_EFFECTS, where IDENTITY
is POD_ID (which Kopf also uses as its peering identity).
"""

import os

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.peering.lifetime = int(os.environ.get("KOPF_PEERING_LIFETIME", "60"))
    settings.posting.enabled = False


@kopf.on.create("kopfexamples")
def create_fn(namespace, name, logger, **_):
    identity = os.environ.get("POD_ID", "-")
    logger.info(f"Handling {namespace}/{name} as {identity}")
    path = os.environ.get("KOPF_EXAMPLE_SIDE_EFFECTS")
    if path:
        with open(path, "a") as f:
            f.write(f"{namespace}/{name} {identity}\n")
    return {"message": f"handled by {identity}"}
