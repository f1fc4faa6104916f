"""Entry point of the OpenVINO backend; kept free of openvino imports so listing backends stays cheap."""
from edgec.core.hookspecs import hookimpl


@hookimpl
def edgec_backends():
    from edgec.backends.openvino.backend import OpenVINOBackend

    return [OpenVINOBackend()]
