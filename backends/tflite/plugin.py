"""Entry point of the TFLite backend; kept free of LiteRT imports so listing backends stays cheap."""
from edgec.core.hookspecs import hookimpl


@hookimpl
def edgec_backends():
    from edgec.backends.tflite.backend import TFLiteBackend

    return [TFLiteBackend()]
