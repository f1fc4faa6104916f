"""Entry point `edgec.backends: tvm` — registered the same way a third-party plugin is."""
from edgec.core.hookspecs import hookimpl


@hookimpl
def edgec_backends():
    from edgec.backends.tvm.backend import TvmBackend

    return [TvmBackend()]
