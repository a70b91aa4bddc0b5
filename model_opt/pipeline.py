"""`make model`: float weights -> pruned + fine-tuned -> batch-norm statistics re-estimated ->
quantization-aware trained -> full int8 TFLite + metadata, evaluated.

Each stage is a function from paths to paths; a stage whose output exists is not redone, so an
interrupted run resumes (the fine-tune also resumes from its own checkpoints).

    python -m model_opt.pipeline --data ../shared/data [--work model_opt/work] [--out functions/limelight/models]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from limelight.detector import MODEL_NAME, InputGeometry, LiteRTRunner  # noqa: E402
from model_opt.graph import REWRITES  # noqa: E402
from model_opt.retinaface import GRAPH_VERSION, RetinaFaceConfig, build_core, load_torch_state  # noqa: E402
from model_opt.torch_legacy import load_state_dict  # noqa: E402

log = logging.getLogger("model_opt")
REPO = Path(__file__).resolve().parent.parent
WEIGHTS = "weights/retinaface_mnet025/mobilenet0.25_Final.pth"
REFERENCE_ONNX = "weights/retinaface_mnet025/retinaface_mbnet0.25.onnx"
TRAIN_GT = "widerface/train/wider_face_train_bbx_gt.subset.txt"
TRAIN_IMAGES = "widerface/train/WIDER_train/images"
CALIBRATION_COUNT = 320
CALIBRATION_SIZE = 640
LATENCY_SHAPE = (384, 640)  # H, W: a 16:9 frame at long side 640, padded to a multiple of 32
LATENCY_RUNS = 60
EVAL_SIZES = {"640": 640, "original": None}  # original = the image's own size, long side capped at 1600


OUTPUTS = {"loc": "(1, A, 4) float offsets, variances (0.1, 0.2)",
           "logits": "(1, A, 2) float background / face class logits; the face score is their softmax, "
                     "taken by the runtime (limelight.detector.face_probability)"}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def float_model(data: Path, config: RetinaFaceConfig = RetinaFaceConfig()):
    """The float RetinaFace with the WIDER FACE-trained weights."""
    model = build_core(config)
    load_torch_state(model, load_state_dict(data / WEIGHTS))
    return model


def train_samples(data: Path):
    from model_opt.data import read_bbx_gt

    return read_bbx_gt(data / TRAIN_GT, data / TRAIN_IMAGES)


def stage_source(start_weights: Path, settings) -> str:
    """What a training stage's output depends on: the hash of the weights it starts from, the graph
    (`GRAPH_VERSION`), and its settings."""
    return f"{sha256(start_weights)} graph {GRAPH_VERSION} {json.dumps(asdict(settings), sort_keys=True)}"


def train_stage(work: Path, name: str, source: str, train) -> Path:
    """`train(checkpoint_dir)` -> model, saved to work/<name>_weights.h5 (legacy HDF5 layout: a
    ".weights.h5" name would select the Keras 3 format). Redone only when `source` (`stage_source`: the
    weights it starts from and its settings) changed; an interrupted run resumes from its checkpoints
    in work/<name>/."""
    out, stamp = work / f"{name}_weights.h5", work / f"{name}_weights.source"
    if out.exists() and stamp.exists() and stamp.read_text() == source:
        return out
    if not stamp.exists() or stamp.read_text() != source:  # checkpoints of other start weights
        shutil.rmtree(work / name, ignore_errors=True)
        stamp.write_text(source)
    out.unlink(missing_ok=True)
    model = train(work / name)
    tmp = out.with_name(f"{name}_weights.tmp.h5")
    model.save_weights(str(tmp))
    tmp.replace(out)
    return out


def stage_finetune(data: Path, work: Path, settings) -> Path:
    """Prune + fine-tune the float model; writes `work/pruned_weights.h5` (stripped, plain layers)."""
    from model_opt.train import prune_and_finetune

    def train(ckpt):
        teacher = float_model(data)
        return prune_and_finetune(teacher, train_samples(data), RetinaFaceConfig(), settings, ckpt, teacher)
    return train_stage(work, "pruned", stage_source(data / WEIGHTS, settings), train)


def stage_recover(data: Path, work: Path, pruned_weights: Path, settings) -> Path:
    """Second fine-tune of the pruned model (`train.RECOVERY`); writes `work/recovered_weights.h5`."""
    from model_opt.train import prune_and_finetune

    def train(ckpt):
        return prune_and_finetune(pruned_model(pruned_weights), train_samples(data), RetinaFaceConfig(), settings, ckpt,
                                  float_model(data))
    return train_stage(work, "recovered", stage_source(pruned_weights, settings), train)


def stage_batch_norm(data: Path, work: Path, pruned_weights: Path, settings) -> Path:
    """Batch-norm statistics re-estimated for the pruned kernels (`train.reestimate_batch_norm`);
    writes `work/bn_weights.h5`."""
    from model_opt.train import reestimate_batch_norm

    def train(ckpt):
        return reestimate_batch_norm(pruned_model(pruned_weights), train_samples(data), RetinaFaceConfig(), settings)
    return train_stage(work, "bn", stage_source(pruned_weights, settings), train)


def stage_qat(data: Path, work: Path, pruned_weights: Path, settings) -> Path:
    """Quantization-aware fine-tune of the pruned model (`qat.py`); writes `work/qat_weights.h5`."""
    from model_opt.qat import qat_finetune

    def train(ckpt):
        return qat_finetune(pruned_model(pruned_weights), train_samples(data), RetinaFaceConfig(), settings, ckpt,
                            float_model(data))
    return train_stage(work, "qat", stage_source(pruned_weights, settings), train)


def pruned_model(weights: Path, config: RetinaFaceConfig = RetinaFaceConfig()):
    model = build_core(config)
    model.load_weights(str(weights))
    return model


def calibration_images(images: list[Path], size: int = CALIBRATION_SIZE):
    """Images as the runtime feeds them: long side `size`, padded with black to multiples of 32."""
    def generate():
        for path in images:
            rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            geo = InputGeometry.for_frame(*rgb.shape[:2], size)
            canvas = np.zeros((*geo.padded, 3), np.uint8)
            canvas[: geo.resized[0], : geo.resized[1]] = cv2.resize(rgb, geo.resized[::-1], interpolation=cv2.INTER_AREA)
            yield canvas
    return generate


def stage_export(data: Path, work: Path, out_dir: Path, pruned_weights: Path, qat_weights: Path) -> dict:
    """Write the float32 TFLite baselines and the post-training int8 model of the pruned weights (work/),
    and the shipped int8 model of the QAT weights (out_dir/)."""
    from model_opt.export import to_float_tflite, to_int8_tflite, write_atomically
    from model_opt.qat import load_qat

    int8_path = out_dir / f"{MODEL_NAME}.tflite"
    info_path = work / "export.json"
    source = {"pruned_weights_sha256": sha256(pruned_weights), "weights_sha256": sha256(qat_weights),
              "graph_rewrites": list(REWRITES)}
    if int8_path.exists() and info_path.exists() and all(json.loads(info_path.read_text()).get(k) == v for k, v in source.items()):
        return json.loads(info_path.read_text())
    write_atomically(work / "float.tflite", to_float_tflite(float_model(data)))
    pruned = pruned_model(pruned_weights)
    write_atomically(work / "pruned_float.tflite", to_float_tflite(pruned))
    rng = np.random.default_rng(0)
    train = sorted((data / TRAIN_IMAGES).rglob("*.jpg"))
    chosen = [train[i] for i in sorted(rng.choice(len(train), CALIBRATION_COUNT, replace=False))]
    ptq, _ = to_int8_tflite(pruned, calibration_images(chosen))
    write_atomically(work / "pruned_int8_ptq.tflite", ptq)
    # The QAT model carries its learnt ranges; the calibration set only sets the ops after it (the
    # softmax, which graph.py then leaves to the runtime).
    model, count = to_int8_tflite(load_qat(qat_weights), calibration_images(chosen))
    write_atomically(int8_path, model)
    info = {"calibration_images": count, "calibration_source": "WIDER FACE train subset, long side 640", **source}
    write_atomically(info_path, json.dumps(info).encode())
    return info


def latency_ms(model_path: Path, shape=LATENCY_SHAPE, runs: int = LATENCY_RUNS, threads: int = 2) -> float:
    """Median LiteRT invoke time in ms for one (1, H, W, 3) input."""
    runner = LiteRTRunner(model_path, num_threads=threads)
    batch = np.random.default_rng(0).integers(0, 256, (1, *shape, 3), dtype=np.uint8)
    for _ in range(5):
        runner(batch)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        runner(batch)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def measure(data: Path, models: dict[str, Path], limit: int | None = None, rounds: int = 3) -> dict:
    """AP table (each model x each eval size) and side-by-side latency (`rounds` interleaved rounds, the
    median of their medians; each round's figures kept, since the machine's noise moves them), for
    bench/ and the metadata."""
    from model_opt.evaluate import widerface_ap

    table = {}
    for name, path in models.items():
        runner = LiteRTRunner(path, num_threads=2)
        table[name] = {size: widerface_ap(runner, data, detect, limit) for size, detect in EVAL_SIZES.items()}
        log.info("evaluated %s: %s", name, table[name])
    # Latency side by side, interleaved so machine noise hits both alike.
    lat = {name: [] for name in models}
    for _ in range(rounds):
        for name, path in models.items():
            lat[name].append(latency_ms(path))
    latency = {name: float(np.median(v)) for name, v in lat.items()}
    return {"ap": table, "latency_ms": latency, "latency_rounds_ms": lat, "latency_input": list(LATENCY_SHAPE),
            "latency_threads": 2}


def versions() -> dict:
    import ai_edge_litert
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tensorflow_model_optimization": tfmot.__version__,
        "ai_edge_litert": getattr(ai_edge_litert, "__version__", "unknown"),
        "numpy": np.__version__,
    }


def stage_metadata(data: Path, work: Path, out_dir: Path, settings: list, qat_settings, export_info: dict,
                   qat_weights: Path) -> Path:
    """Evaluate float / pruned float / pruned int8 (PTQ and QAT) and write `<name>.json` beside the int8 model."""
    from model_opt.qat import float_kernels, load_qat
    from model_opt.train import kernel_sparsity

    int8_path = out_dir / f"{MODEL_NAME}.tflite"
    results_path = work / "measure.json"
    model_hash = sha256(int8_path)
    if results_path.exists() and json.loads(results_path.read_text()).get("int8_sha256") == model_hash:
        results = json.loads(results_path.read_text())
    else:
        results = measure(data, {"float": work / "float.tflite", "pruned_float": work / "pruned_float.tflite",
                                 "pruned_int8_ptq": work / "pruned_int8_ptq.tflite", "pruned_int8": int8_path})
        results["int8_sha256"] = model_hash
        results_path.write_text(json.dumps(results, indent=1))
    meta = {
        "name": MODEL_NAME,
        "architecture": "RetinaFace-MobileNet0.25 (MobileNetV1-0.25, 3-level FPN, SSH, 2 anchors/cell)",
        "source_weights": {"file": WEIGHTS, "sha256": sha256(data / WEIGHTS), "license": "MIT (biubug6/Pytorch_Retinaface)"},
        "training_data": "WIDER FACE train subset (1,239 images) - non-commercial research licence",
        # Sparsity of the shipped kernels: after QAT, which keeps the pruned zeros.
        "pruning": {"stages": [{"stage": type(s).__name__, **asdict(s)} for s in settings], "achieved_sparsity": kernel_sparsity(float_kernels(load_qat(qat_weights)))},
        "quantization": {"type": "full int8 (weights and activations), quantization-aware training "
                                 "(tfmot Default8BitPrunePreserveQuantizeScheme, depthwise kernels per channel)",
                         "qat": asdict(qat_settings), **export_info},
        "input": input_convention(int8_path),
        "outputs": OUTPUTS,
        "graph_rewrites": list(REWRITES),
        "anchors": {"min_sizes": [[16, 32], [64, 128], [256, 512]], "steps": [8, 16, 32], "variances": [0.1, 0.2]},
        "evaluation": {"protocol": "official WIDER FACE (IoU 0.5, easy/medium/hard keep lists, VOC AP)",
                       "images": "local val subset: 315 images of 3 events (Parade, Interview, Family_Group)",
                       **results},
        "file_bytes": int8_path.stat().st_size,
        "tool_versions": versions(),
    }
    path = int8_path.with_suffix(".json")
    path.write_text(json.dumps(meta, indent=1) + "\n")
    return path


def input_convention(model_path: Path) -> dict:
    """The int8 model's input, read from the file, and how the runtime feeds decoded RGB frames to it
    (`limelight.detector.to_model_input`)."""
    runner = LiteRTRunner(model_path)
    scale, zero_point = runner.input_quantization
    dtype = np.dtype(runner.input_dtype).name
    if (dtype, scale, zero_point) == ("int8", 1.0, -128):
        feed = "0..255 pixels as pixel - 128 (each byte's top bit flipped)"
    elif (dtype, scale, zero_point) == ("uint8", 1.0, 0):
        feed = "0..255 pixels unchanged"
    elif not scale:
        feed = "0..255 as floats"
    else:
        feed = f"pixel v enters as round(v / {scale:.4f} + {zero_point})"
    return {
        "layout": "NHWC (1, H, W, 3), H and W multiples of 32, dynamic", "dtype": dtype,
        "color": "RGB", "scale": scale, "zero_point": zero_point,
        "range": feed + "; BGR swap and mean (104,117,123) inside the model",
    }


def remeasure(data: Path, work: Path, out_dir: Path) -> Path:
    """Measure again the shipped model (after `python -m model_opt.graph` rewrote it, or on another
    machine) beside the float32 baseline, and update its metadata: AP and latency of the models whose
    files exist (the float32 one is exported again from the source weights when missing), the input
    convention, hash and size. Models whose files are gone (pruned float, post-training int8: their
    weights are not kept) keep their AP, which the rewrite does not change, and lose their latency,
    which was measured on the old graph."""
    from model_opt.export import to_float_tflite, write_atomically

    int8_path = out_dir / f"{MODEL_NAME}.tflite"
    meta_path = int8_path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    float_path = work / "float.tflite"
    if not float_path.exists():
        write_atomically(float_path, to_float_tflite(float_model(data)))
    models = {"float": float_path, "pruned_float": work / "pruned_float.tflite",
              "pruned_int8_ptq": work / "pruned_int8_ptq.tflite", "pruned_int8": int8_path}
    present = {name: path for name, path in models.items() if path.exists()}
    results = measure(data, present)
    evaluation = meta["evaluation"]
    evaluation["ap"].update(results["ap"])
    evaluation["latency_ms"] = {name: results["latency_ms"].get(name) for name in models}
    evaluation["latency_rounds_ms"] = results["latency_rounds_ms"]
    evaluation["remeasured"] = sorted(present)
    evaluation["int8_sha256"] = sha256(int8_path)
    meta["input"] = input_convention(int8_path)
    meta["outputs"] = OUTPUTS
    meta["graph_rewrites"] = list(REWRITES)
    meta["file_bytes"] = int8_path.stat().st_size
    meta["tool_versions"] = versions()
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return meta_path


def check_parity(data: Path, images: int = 5) -> float:
    """Largest score difference between the float Keras model and the reference ONNX on real images.

    Raises AssertionError-free `ParityError` when boxes differ by > 1 px or scores by > 1e-3."""
    from model_opt.parity import compare_with_onnx

    return compare_with_onnx(float_model(data), data / REFERENCE_ONNX, data, images)


def main(argv: list[str] | None = None) -> None:
    from model_opt.qat import QatSettings
    from model_opt.train import RECOVERY, BatchNormSettings, PruneSettings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("LIMELIGHT_DATA", REPO.parent / "shared" / "data")))
    p.add_argument("--work", type=Path, default=REPO / "model_opt" / "work")
    p.add_argument("--out", type=Path, default=REPO / "functions" / "limelight" / "models")
    p.add_argument("--stage", choices=["finetune", "all"], default="all", help="stop after this stage")
    p.add_argument("--recover", action="store_true",
                   help="add the second, 640 px recovery fine-tune (model_opt/README.md: better float AP, 48.8%% sparsity)")
    p.add_argument("--steps", type=int, default=None, help="fine-tune steps (default: PruneSettings)")
    p.add_argument("--qat-steps", type=int, default=None, help="quantization-aware training steps (default: QatSettings)")
    p.add_argument("--allocation", choices=["uniform", "lamp"], default=None,
                   help="how the target sparsity is shared among the kernels (default: PruneSettings')")
    p.add_argument("--reconstruct-images", type=int, default=None,
                   help="crops for the one-shot sparse reconstruction before the fine-tune (0: off, magnitude "
                        "pruning ramped up during it; default: PruneSettings')")
    p.add_argument("--mosaic", type=float, default=None,
                   help="share of 2x2 mosaic crops in both fine-tunes (default: the settings')")
    p.add_argument("--distill", type=float, default=None,
                   help="weight of the distillation term towards the float model in both fine-tunes (0: off; default: the settings')")
    p.add_argument("--feature-distill", type=float, default=None,
                   help="weight of the head-feature distillation term in both fine-tunes (0: off; default: the settings')")
    p.add_argument("--remeasure", action="store_true",
                   help="only measure the shipped model again beside the float32 one and update its metadata")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.remeasure:
        args.work.mkdir(parents=True, exist_ok=True)
        log.info("metadata written to %s", remeasure(args.data, args.work, args.out))
        return
    # --distill, --feature-distill and --mosaic set every fine-tune's (pruning, recovery, QAT)
    shared = {name: value for name, value in (("distill", args.distill), ("feature_distill", args.feature_distill),
                                              ("mosaic", args.mosaic)) if value is not None}
    settings = replace(PruneSettings(), **shared)
    if args.steps is not None:
        settings = replace(settings, steps=args.steps)
    if args.allocation is not None:
        settings = replace(settings, allocation=args.allocation)
    if args.reconstruct_images is not None:
        settings = replace(settings, reconstruct_images=args.reconstruct_images)
    args.work.mkdir(parents=True, exist_ok=True)
    log.info("parity with the reference ONNX: max score difference %.2e", check_parity(args.data))
    weights = stage_finetune(args.data, args.work, settings)
    if args.stage == "finetune":
        return
    stages = [settings]
    if args.recover:
        recovery = replace(RECOVERY, **shared)
        if args.steps is not None:
            recovery = replace(recovery, steps=max(1, args.steps // 2))
        weights = stage_recover(args.data, args.work, weights, recovery)
        stages.append(recovery)
    weights = stage_batch_norm(args.data, args.work, weights, BatchNormSettings())
    stages.append(BatchNormSettings())
    qat_settings = replace(QatSettings(), **shared)
    if args.qat_steps is not None:
        qat_settings = replace(qat_settings, steps=args.qat_steps)
    qat_weights = stage_qat(args.data, args.work, weights, qat_settings)
    info = stage_export(args.data, args.work, args.out, weights, qat_weights)
    path = stage_metadata(args.data, args.work, args.out, stages, qat_settings, info, qat_weights)
    log.info("metadata written to %s", path)


if __name__ == "__main__":
    main()
