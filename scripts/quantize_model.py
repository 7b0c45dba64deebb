#!/usr/bin/env python3
"""Quantise a model2vec model to int8 with one scale per row, keeping it a model2vec model.

Why per row: a single scale for the whole matrix (what model2vec's own int8 option
does) wastes most of the 8 bits on rows with small values. Each row r is stored as
round(r * 127 / max|r|) in int8, and its scale max|r| / 127 goes into the optional
`weights` tensor, which model2vec multiplies into each token's row: the quantised
directory loads in model2vec (Python) and in nexusd alike, and embeds the same.

Usage:
  pip install numpy safetensors
  python3 scripts/quantize_model.py SRC_DIR DST_DIR
  (the shipped default: SRC_DIR = ../shared/data/minilm-static-256,
   DST_DIR = daemon/models/minilm-static-256)

Copies tokenizer.json unchanged and config.json with `embedding_dtype: int8`.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file


def quantize_rows(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = embeddings.astype(np.float32)
    max_abs = np.abs(rows).max(axis=1)
    scale = np.where(max_abs > 0, max_abs / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(rows / scale[:, None]), -127, 127).astype(np.int8)
    return codes, scale


def main(src: Path, dst: Path) -> None:
    tensors = load_file(src / "model.safetensors")
    if "weights" in tensors or "mapping" in tensors:
        sys.exit("source already has weights or a mapping: fold them in first")
    codes, scale = quantize_rows(tensors["embeddings"])
    dst.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": codes, "weights": scale}, dst / "model.safetensors")
    shutil.copyfile(src / "tokenizer.json", dst / "tokenizer.json")
    config = json.loads((src / "config.json").read_text())
    config["embedding_dtype"] = "int8"
    (dst / "config.json").write_text(json.dumps(config, indent=4) + "\n")
    restored = codes.astype(np.float32) * scale[:, None]
    original = tensors["embeddings"].astype(np.float32)
    error = np.abs(restored - original).max()
    print(f"{codes.shape[0]} rows x {codes.shape[1]} dims, max abs error {error:.3g}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
