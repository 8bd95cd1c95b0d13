#!/usr/bin/env python3
"""Train and export edgefit's sample vision transformer, ``digits_vit.onnx``.

Usage::

    pip install torch==2.13.0 onnxscript scikit-learn   # build-time only, never an edgefit dependency
    python sample_models/build_transformer.py

Built with torch 2.13.0+cpu and onnxscript 0.7.2, exported by ``torch.onnx.export(..., dynamo=True,
opset_version=20)`` exactly as a user exports today: the file holds what that exporter writes (LayerNormalization,
Gelu with approximate="none", attention MatMuls whose second input is computed, Reshapes with allowzero=1), with
its weights inside the .onnx (no external data file). The script checks the versions it was written for and says
so when others are installed (the export may then differ in detail).

The model: a pre-norm vision transformer on scikit-learn's 8x8 digits -- 2x2 patches (a Conv 2x2 stride 2: 16
tokens of width 64) plus a learned position embedding, 3 encoder layers (LayerNorm, 4-head self-attention written
as 3-D MatMuls over (heads, tokens, 16), LayerNorm, MLP 64 -> 256 -> 64 with GELU), a final LayerNorm, the mean
over tokens and a linear classifier (10 logits, no softmax). Batch 1 (a microcontroller runs one image at a time),
input ``input`` 1x1x8x8, output ``logits`` 1x10. The attention is 3-D on purpose: STM32Cube.AI multiplies matrices
of up to 3 dimensions.

Training is deterministic: the same 80/20 split as digits_cnn (build.digits_split; the held-out images are
digits_eval.npz and the calibration images digits_calib.npz, which this model reads as they are), seeds fixed,
one thread, deterministic algorithms, shifts of up to one pixel as augmentation.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import math  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build import OUT_DIR, digits_split  # noqa: E402

BUILT_WITH = {"torch": "2.13.0+cpu", "onnxscript": "0.7.2"}
OPSET = 20
DIM, DEPTH, HEADS, MLP_DIM, PATCH, CLASSES = 64, 3, 4, 256, 2, 10
EPOCHS, BATCH, LR, WEIGHT_DECAY = 120, 64, 2e-3, 0.05
SEED = 0
README_BEGIN, README_END = "<!-- digits_vit: written by build_transformer.py -->", "<!-- end digits_vit -->"   # build.py keeps it


def build_model():
    import torch
    from torch import nn

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = nn.Linear(DIM, DIM), nn.Linear(DIM, DIM), nn.Linear(DIM, DIM)
            self.proj = nn.Linear(DIM, DIM)
            self.scale = (DIM // HEADS) ** -0.5

        def heads(self, x):   # (B, T, DIM) -> (B * HEADS, T, DIM / HEADS): 3-D MatMuls
            b, t, _ = x.shape
            return x.reshape(b, t, HEADS, DIM // HEADS).transpose(1, 2).reshape(b * HEADS, t, DIM // HEADS)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.heads(self.q(x) * self.scale), self.heads(self.k(x)), self.heads(self.v(x))
            mixed = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v
            return self.proj(mixed.reshape(b, HEADS, t, DIM // HEADS).transpose(1, 2).reshape(b, t, DIM))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.attn, self.norm2 = nn.LayerNorm(DIM), Attention(), nn.LayerNorm(DIM)
            self.mlp = nn.Sequential(nn.Linear(DIM, MLP_DIM), nn.GELU(), nn.Linear(MLP_DIM, DIM))

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class DigitsViT(nn.Module):
        def __init__(self):
            super().__init__()
            tokens = (8 // PATCH) ** 2
            self.patch = nn.Conv2d(1, DIM, PATCH, stride=PATCH)
            self.position = nn.Parameter(torch.randn(1, tokens, DIM) * 0.02)
            self.blocks = nn.Sequential(*[Block() for _ in range(DEPTH)])
            self.norm, self.head = nn.LayerNorm(DIM), nn.Linear(DIM, CLASSES)

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2) + self.position
            return self.head(self.norm(self.blocks(x)).mean(dim=1))

    return DigitsViT()


def shifted(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image moved by -1, 0 or 1 pixel in each direction, the border filled with 0 (background)."""
    out = np.zeros_like(x)
    for i, (dy, dx) in enumerate(rng.integers(-1, 2, size=(len(x), 2))):
        src = x[i, :, max(0, -dy):8 - max(0, dy), max(0, -dx):8 - max(0, dx)]
        out[i, :, max(0, dy):max(0, dy) + src.shape[1], max(0, dx):max(0, dx) + src.shape[2]] = src
    return out


def train(x_train: np.ndarray, y_train: np.ndarray):
    import torch

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    model = build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps = EPOCHS * math.ceil(len(x_train) / BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(SEED)
    labels = torch.from_numpy(y_train)
    model.train()
    for _ in range(EPOCHS):
        order = rng.permutation(len(x_train))
        images = torch.from_numpy(shifted(x_train, rng))
        for start in range(0, len(order), BATCH):
            idx = torch.from_numpy(order[start:start + BATCH])
            loss = torch.nn.functional.cross_entropy(model(images[idx]), labels[idx], label_smoothing=0.05)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def export(model) -> onnx.ModelProto:
    import torch

    with torch.no_grad():
        program = torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), dynamo=True, opset_version=OPSET,
                                    input_names=["input"], output_names=["logits"], verbose=False)
    proto = program.model_proto   # weights in memory: saved below inside the .onnx
    return proto


def versions() -> dict[str, str]:
    import onnxscript
    import torch

    return {"torch": torch.__version__, "onnxscript": onnxscript.__version__}


def write_readme_section(text: str) -> None:
    """Replace (or append) this model's section of sample_models/README.md; build.py keeps it when it rewrites
    the rest."""
    path = OUT_DIR / "README.md"
    readme = path.read_text(encoding="utf-8")
    section = f"{README_BEGIN}\n{text.strip()}\n{README_END}\n"
    pattern = re.compile(re.escape(README_BEGIN) + ".*?" + re.escape(README_END) + "\n?", re.S)
    readme = pattern.sub(lambda _: section, readme) if pattern.search(readme) else readme.rstrip() + "\n\n" + section
    path.write_text(readme, encoding="utf-8")


README_SECTION = """\
**`digits_vit.onnx`**: a small vision transformer really trained at build time by
`python sample_models/build_transformer.py` (torch {torch}, onnxscript {onnxscript}; torch is a build-time tool
only) on the same digits split as `digits_cnn` (it reads `digits_eval.npz` and `digits_calib.npz` as they are), and
exported with torch's dynamo exporter (`torch.onnx.export(..., dynamo=True, opset_version={opset})`, IR version
{ir}) exactly as it writes models today: `LayerNormalization`, `Gelu` (approximate "none"), attention `MatMul`s
whose second input is computed at run time, `Reshape` with `allowzero=1`. Input `input` 1x1x8x8 (batch 1), output
`logits` 1x10 (no softmax). 2x2 patches (Conv 2x2 stride 2 -> 16 tokens of width {dim}) plus a learned position
embedding, {depth} pre-norm encoder layers (LayerNorm, {heads}-head self-attention as 3-D MatMuls, LayerNorm, MLP
{dim} -> {mlp} -> {dim} with GELU), a final LayerNorm, the mean over tokens and a linear head. {params:,} params
(all float32 initializers, inside the .onnx). Trained with AdamW (one-cycle learning rate up to {lr:g}, weight decay
{wd:g}, label smoothing 0.05), minibatch {batch}, {epochs} epochs, shifts of up to one pixel, seed {seed}, one
thread, deterministic algorithms. Measured test accuracy in onnxruntime: **{acc_pct:.2f}%** ({n_correct}/{n_test};
torch: {torch_pct:.2f}%), train accuracy {train_pct:.2f}%. Its ops ({ops}) are the reason for the `decompose` pass
(docs/decompose.md): microcontroller runtimes have no kernel for some of them.
"""


def main() -> None:
    import onnxruntime as ort
    import torch

    found = versions()
    if found != BUILT_WITH:
        print(f"note: built for {BUILT_WITH}, running with {found}: the exported graph may differ in detail")
    x_train, y_train, x_test, y_test = digits_split()
    started = time.perf_counter()
    model = train(x_train, y_train)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        torch_pred = model(torch.from_numpy(x_test)).argmax(1).numpy()
        train_pred = model(torch.from_numpy(x_train)).argmax(1).numpy()
    proto = export(model)
    proto.doc_string = ("Vision transformer trained on scikit-learn's 8x8 digits by edgefit "
                        "sample_models/build_transformer.py; see sample_models/README.md.")
    onnx.checker.check_model(proto, full_check=True)
    path = OUT_DIR / "digits_vit.onnx"
    onnx.save_model(proto, path)   # weights inside the file (about 0.6 MB of float32)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pred = np.array([session.run(None, {"input": x[None]})[0].argmax() for x in x_test])
    accuracy = float((pred == y_test).mean())
    # Learned weights: the float initializers, less the one-element attention scale (a setting, as edgefit's
    # analyze counts it).
    params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer
                 if t.data_type == onnx.TensorProto.FLOAT and np.prod(t.dims) > 1)
    ops = ", ".join(sorted({n.op_type for n in proto.graph.node}))
    print(f"digits_vit.onnx: {params:,} params, test accuracy {accuracy:.4f} ({int((pred == y_test).sum())}/"
          f"{len(y_test)}), torch {float((torch_pred == y_test).mean()):.4f}, trained in {seconds:.1f} s; ops {ops}")
    if accuracy < 0.95:
        raise SystemExit(f"digits_vit test accuracy {accuracy:.4f} < 0.95")
    write_readme_section(README_SECTION.format(
        torch=found["torch"], onnxscript=found["onnxscript"], opset=OPSET, ir=proto.ir_version, dim=DIM, depth=DEPTH,
        heads=HEADS, mlp=MLP_DIM, params=params, lr=LR, wd=WEIGHT_DECAY, batch=BATCH, epochs=EPOCHS, seed=SEED,
        acc_pct=100 * accuracy, n_correct=int((pred == y_test).sum()), n_test=len(y_test),
        torch_pct=100 * float((torch_pred == y_test).mean()), train_pct=100 * float((train_pred == y_train).mean()),
        ops=ops))


if __name__ == "__main__":
    main()
