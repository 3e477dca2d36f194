"""Train the digits CNN on scikit-learn's load_digits and ship it as edgeq's default demo model.

    python models/train_digits.py

Writes models/digits_cnn.onnx (float, BatchNorms kept for edgeq's folding pass), models/digits_calib.npz
(256 training images, key "input") and models/digits_test.npz (the whole held-out split: "input", "label").
Deterministic: fixed seeds, a stratified 75/25 split with random_state 0, one thread.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from edgeq.api.export import export_module  # noqa: E402
from models.digits_cnn import MEAN, STD, DigitsCNN  # noqa: E402

EPOCHS = 40
CALIB_SAMPLES = 256


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    x = ((digits.images.astype(np.float32) / 16.0 - MEAN) / STD)[:, None]
    return train_test_split(
        x, digits.target.astype(np.int64), test_size=0.25, stratify=digits.target, random_state=0
    )


def train() -> tuple[DigitsCNN, float]:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x_train, x_test, y_train, y_test = digits_split()
    model = DigitsCNN()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=EPOCHS * 22)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(0)
    for _ in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(xt), generator=generator).split(64):
            batch = xt[idx]
            shift = torch.randint(-1, 2, (2,), generator=generator)  # +-1 pixel translation
            batch = torch.roll(batch, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(batch), yt[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    return model, accuracy


def main() -> None:
    model, accuracy = train()
    x_train, x_test, _, y_test = digits_split()
    result = export_module(
        model,
        (torch.from_numpy(x_test[:1]),),
        HERE / "digits_cnn.onnx",
        input_names=["input"],
        output_names=["logits"],
        opset=17,
    )
    np.savez(HERE / "digits_calib.npz", input=x_train[:CALIB_SAMPLES])
    np.savez(HERE / "digits_test.npz", input=x_test, label=y_test)
    info = {
        "float_test_accuracy": accuracy,
        "test_samples": len(y_test),
        "calib_samples": CALIB_SAMPLES,
        **result,
    }
    (HERE / "digits_cnn.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))


if __name__ == "__main__":
    main()
