"""Entry point `edgec.backends: tensorrt`; kept free of TensorRT imports so listing backends stays cheap."""
from edgec.core.hookspecs import hookimpl


@hookimpl
def edgec_backends():
    from edgec.backends.tensorrt.backend import TensorRTBackend

    return [TensorRTBackend()]
