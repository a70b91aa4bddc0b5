"""model_opt: the torch-free checkpoint reader and parity of the Keras network with the reference ONNX."""

import pickle

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="model_opt needs the dev requirements (tensorflow-cpu)")

from model_opt.torch_legacy import LegacyCheckpointError, load_state_dict  # noqa: E402

WEIGHTS = "weights/retinaface_mnet025/mobilenet0.25_Final.pth"
ONNX = "weights/retinaface_mnet025/retinaface_mbnet0.25.onnx"


def test_legacy_checkpoint_reads_every_tensor(shared_file):
    # GIVEN the WIDER FACE-trained RetinaFace-mnet0.25 checkpoint WHEN read without PyTorch
    state = load_state_dict(shared_file(WEIGHTS))
    # THEN all 300 entries arrive with their PyTorch shapes and 433k trainable values
    assert len(state) == 300
    assert state["body.stage1.0.0.weight"].shape == (8, 3, 3, 3)
    assert state["ClassHead.0.conv1x1.weight"].shape == (4, 64, 1, 1)
    assert sum(v.size for k, v in state.items() if "num_batches" not in k) == 433296
    var = state["body.stage1.0.1.running_var"]
    assert var.dtype == np.float32 and np.all(var > 0)


def test_non_checkpoint_file_is_rejected(tmp_path):
    bogus = tmp_path / "x.pth"
    bogus.write_bytes(pickle.dumps(12345, protocol=2))
    with pytest.raises(LegacyCheckpointError, match="bad magic number"):
        load_state_dict(bogus)


@pytest.mark.slow
def test_keras_model_matches_reference_onnx_on_wider_images(shared_file, data_dir):
    pytest.importorskip("onnxruntime")
    from model_opt.parity import BOX_TOLERANCE_PX, SCORE_TOLERANCE, compare_with_onnx
    from model_opt.pipeline import float_model

    shared_file("widerface/val/WIDER_val/images")
    # GIVEN the float Keras model with the checkpoint loaded WHEN run beside the reference ONNX on real images
    worst = compare_with_onnx(float_model(data_dir), shared_file(ONNX), data_dir, images=3)
    # THEN boxes agree within 1 px (checked inside) and scores within 1e-3
    assert BOX_TOLERANCE_PX == 1.0 and SCORE_TOLERANCE == 1e-3
    assert worst < SCORE_TOLERANCE
