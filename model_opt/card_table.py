"""Print the model card's results table (Markdown) from the shipped model's metadata JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "functions"))

from limelight.detector import default_model_path  # noqa: E402

NAMES = {
    "float": "float32 (original weights)",
    "pruned_float": "pruned, float32",
    "pruned_int8_ptq": "pruned, full int8, post-training quantization",
    "pruned_int8": "pruned, full int8, quantization-aware training (shipped)",
}


def table(meta: dict) -> str:
    ev = meta["evaluation"]
    rows = ["| model | AP easy / medium / hard @ long side 640 | @ original size (≤1600) | LiteRT ms, 640x384, 2 threads |", "|---|---|---|---|"]
    for key, label in NAMES.items():
        ap = ev["ap"][key]
        cell = lambda s: " / ".join(f"{ap[s][k]:.3f}" for k in ("easy", "medium", "hard"))  # noqa: E731
        ms = ev["latency_ms"].get(key)
        rows.append(f"| {label} | {cell('640')} | {cell('original')} | {'—' if ms is None else f'{ms:.1f}'} |")
    sp = meta["pruning"]["achieved_sparsity"]
    rows.append("")
    rows.append(
        f"Sparsity: {sp['prunable_kernels']:.1%} of the {sp['prunable_params']:,} prunable kernel weights, "
        f"{sp['all_conv_kernels']:.1%} of all {sp['all_conv_params']:,} convolution weights. "
        f"Model file: {meta['file_bytes'] / 1024:.0f} KiB. Calibration: {meta['quantization']['calibration_images']} images."
    )
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(json.loads(default_model_path().with_suffix(".json").read_text())))
