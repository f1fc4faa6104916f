"""Train the bundled default model: a small Fashion-MNIST CNN, exported to ONNX.

Not needed at run time; this documents how examples/fashion_mnist/{model.onnx,calib.npz,val.npz} were made
so anyone can reproduce them. Needs torch (CPU) and Debian's `dataset-fashion-mnist` (MIT-licensed data):

    apt-get install dataset-fashion-mnist
    python -m venv /tmp/trainenv && /tmp/trainenv/bin/pip install torch numpy onnx
    /tmp/trainenv/bin/python examples/fashion_mnist/train.py

The network uses Conv+BatchNorm+ReLU blocks (so the optimizer's BN folding and the quantizer's
per-channel weights have something real to do), 1x28x28 input scaled to [0, 1] (`--preprocess unit`).
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch import nn

DATA = Path("/usr/share/datasets/fashion-mnist")
HERE = Path(__file__).resolve().parent


def idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


class Net(nn.Module):
    def __init__(self):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.features = nn.Sequential(block(1, 16), block(16, 16), nn.MaxPool2d(2),
                                      block(16, 32), block(32, 32), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * 7 * 7, 64), nn.ReLU(),
                                  nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.features(x))


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    xtr = idx(DATA / "train-images-idx3-ubyte.gz")
    ytr = idx(DATA / "train-labels-idx1-ubyte.gz").astype(np.int64)
    xte = idx(DATA / "t10k-images-idx3-ubyte.gz")
    yte = idx(DATA / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    X = torch.from_numpy(xtr[:, None].astype(np.float32) / 255)
    Y = torch.from_numpy(ytr)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 4e-3, total_steps=4 * (len(X) // 128))
    for epoch in range(4):
        net.train()
        perm = torch.randperm(len(X))
        for i in range(len(X) // 128):
            idxs = perm[i * 128:(i + 1) * 128]
            loss = nn.functional.cross_entropy(net(X[idxs]), Y[idxs])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            pred = net(torch.from_numpy(xte[:, None].astype(np.float32) / 255)).argmax(1).numpy()
        print(f"epoch {epoch}: test accuracy {np.mean(pred == yte):.4f}")
    torch.onnx.export(net, torch.zeros(1, 1, 28, 28), str(HERE / "model.onnx"), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                      opset_version=17, dynamo=False)
    # Raw uint8 images + labels: calibration from the training set, validation from the test set.
    rng = np.random.default_rng(0)
    ci = rng.choice(len(xtr), 256, replace=False)
    np.savez_compressed(HERE / "calib.npz", images=xtr[ci], labels=ytr[ci].astype(np.int16))
    np.savez_compressed(HERE / "val.npz", images=xte[:1000], labels=yte[:1000].astype(np.int16))
    print("wrote", HERE / "model.onnx")


if __name__ == "__main__":
    main()
