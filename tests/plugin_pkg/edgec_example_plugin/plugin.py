"""Registers the `onnx-reference` backend: the artifact is the ONNX file, the runtime is
`onnx.reference.ReferenceEvaluator` (pure Python), a runtime edgec itself never uses."""
from __future__ import annotations

from pathlib import Path

from edgec.core.backend import Backend, Requirements, Runner, TensorSpec
from edgec.core.hookspecs import hookimpl


class ReferenceEvaluatorRunner(Runner):
    def __init__(self, path: Path, manifest):
        from onnx.reference import ReferenceEvaluator

        self.session = ReferenceEvaluator(str(path))
        self.inputs = [TensorSpec.from_json(s) for s in manifest["inputs"]]
        self.outputs = [TensorSpec.from_json(s) for s in manifest["outputs"]]

    def run(self, feeds):
        return dict(zip([o.name for o in self.outputs], self.session.run(None, dict(feeds))))


class OnnxReferenceBackend(Backend):
    name = "onnx-reference"
    description = "ONNX reference evaluator (example third-party plugin)"
    requirements = Requirements(precisions=("fp32",))

    def toolchain(self):
        import onnx

        return {"onnx.reference": onnx.__version__}

    def lower(self, ctx):
        import onnx

        onnx.save(ctx.model, str(ctx.out_dir / "model.onnx"))
        return ["model.onnx"]

    def load(self, artifact_dir, manifest, threads=None, **options):
        return ReferenceEvaluatorRunner(Path(artifact_dir) / "model.onnx", manifest)


@hookimpl
def edgec_backends():
    return [OnnxReferenceBackend()]


@hookimpl
def edgec_preprocess_presets():
    return {"example-half": "scale=1/2"}
