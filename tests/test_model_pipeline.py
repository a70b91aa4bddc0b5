"""model_opt end to end on a tiny network: build -> prune -> fine-tune -> strip -> int8 -> LiteRT."""

import numpy as np
import pytest

pytest.importorskip("tensorflow_model_optimization", reason="model_opt needs the dev requirements")

from limelight.detector import Detector, LiteRTRunner  # noqa: E402
from model_opt.data import match_targets, read_bbx_gt  # noqa: E402
from model_opt.export import CalibrationError, to_int8_tflite, write_atomically  # noqa: E402
from model_opt.retinaface import RetinaFaceConfig, build_core  # noqa: E402
from model_opt.train import PruneSettings, kernel_sparsity, prune_and_finetune  # noqa: E402
from limelight.anchors import prior_boxes  # noqa: E402

TRAIN_GT = "widerface/train/wider_face_train_bbx_gt.subset.txt"
TRAIN_IMAGES = "widerface/train/WIDER_train/images"


@pytest.fixture(scope="module")
def tiny_pruned(shared_file, tmp_path_factory):
    samples = read_bbx_gt(shared_file(TRAIN_GT), shared_file(TRAIN_IMAGES))[:6]
    config = RetinaFaceConfig.tiny()
    settings = PruneSettings(
        target_sparsity=0.5, steps=4, prune_end_fraction=0.5, prune_frequency=1,
        batch_size=2, image_size=128, checkpoint_every=2,
    )
    work = tmp_path_factory.mktemp("finetune")
    model = prune_and_finetune(build_core(config), samples, config, settings, work)
    return model, settings, work


@pytest.mark.slow
def test_pruned_tiny_model_reaches_target_sparsity(tiny_pruned):
    model, settings, work = tiny_pruned
    sparsity = kernel_sparsity(model)
    assert sparsity["prunable_kernels"] >= settings.target_sparsity - 0.01
    assert sparsity["all_conv_kernels"] < sparsity["prunable_kernels"]  # depthwise and heads stay dense
    # a finished run recorded its last step, so a rerun resumes instead of training again
    assert '"step": 4' in (work / "state.json").read_text()


@pytest.mark.slow
def test_int8_export_runs_in_litert_with_uint8_input(tiny_pruned, tmp_path):
    model, _, _ = tiny_pruned
    rng = np.random.default_rng(0)
    calib = lambda: (rng.integers(0, 256, (128, 160, 3)).astype(np.uint8) for _ in range(4))  # noqa: E731
    data, count = to_int8_tflite(model, calib)
    assert count == 4
    path = write_atomically(tmp_path / "tiny_int8.tflite", data)
    runner = LiteRTRunner(path)
    assert runner.input_dtype == np.uint8
    # GIVEN a non-square frame WHEN detected THEN raw outputs cover every anchor and detections are (N, 5)
    loc, score = runner(np.zeros((1, 96, 160, 3), np.uint8))
    assert loc.shape == (len(prior_boxes(96, 160)), 4) and score.shape == (len(prior_boxes(96, 160)),)
    assert np.all((score >= 0) & (score <= 1))
    dets = Detector(runner, detect_size=160, threshold=0.0)(rng.integers(0, 256, (90, 150, 3), dtype=np.uint8))
    assert dets.ndim == 2 and dets.shape[1] == 5 and len(dets) > 0
    assert dets[:, [0, 2]].max() <= 150 and dets[:, [1, 3]].max() <= 90


def test_empty_calibration_set_is_refused():
    with pytest.raises(CalibrationError, match="empty"):
        to_int8_tflite(build_core(RetinaFaceConfig.tiny()), lambda: iter(()))


def test_every_face_gets_an_anchor():
    priors = prior_boxes(128, 128)
    boxes = np.array([[10, 10, 26, 30], [60, 40, 124, 120]], np.float32)
    targets = match_targets(boxes, priors, RetinaFaceConfig().anchors)
    assert targets[:, 4].sum() >= 2
    assert set(np.flatnonzero(targets[:, 4])).issubset(range(len(priors)))
