"""Entry point of the Qualcomm backends `qnn` and `snpe`; free of onnxruntime-qnn and SDK imports so that
listing backends stays cheap and works where neither is installed."""
from edgec.core.hookspecs import hookimpl


@hookimpl
def edgec_backends():
    from edgec.backends.snpe.qnn_backend import QnnBackend
    from edgec.backends.snpe.snpe_backend import SnpeBackend

    return [QnnBackend(), SnpeBackend()]
