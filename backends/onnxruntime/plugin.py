"""Entry point `edgec.backends: onnxruntime` — registered the same way a third-party plugin is."""
from edgec.core.hookspecs import hookimpl


@hookimpl
def edgec_backends():
    from edgec.backends.onnxruntime.backend import OnnxRuntimeBackend

    return [OnnxRuntimeBackend()]
