"""The runtime detector's geometry and input conditioning (no model needed)."""

import warnings

import numpy as np
import pytest

from limelight.anchors import prior_boxes
from limelight.detector import (AUTO, TARGET_MEAN, Detector, InputGeometry, _brighten, auto_detect_size, face_probability,
                                photo_detect_sizes, to_model_input)


def test_input_is_scaled_to_the_long_side_and_padded_to_multiples_of_32():
    geo = InputGeometry.for_frame(720, 1280, 640)
    assert geo.resized == (360, 640) and geo.padded == (384, 640) and geo.scale == 0.5
    portrait = InputGeometry.for_frame(1080, 608, 640)
    assert portrait.resized == (640, 360) and portrait.padded == (640, 384)


@pytest.mark.parametrize("height, width, size", [
    (360, 640, 640), (720, 1280, 640), (1080, 608, 640),  # up to 1280 px: 640, as before
    (1080, 1920, 960), (1440, 2560, 960), (2160, 3840, 960),  # half the long side, at most 960
    (1200, 1600, 800), (240, 320, 640),
])
def test_auto_detection_size_follows_the_frame(height, width, size):
    assert auto_detect_size(height, width) == size


@pytest.mark.parametrize("height, width, sizes", [
    (768, 1024, [640, 1024]),  # a WIDER FACE photo: the video size, then its own
    (3024, 4032, [960, 1920, 4032]),  # a 12 MP phone photo: about doubling up to its own size
    (4000, 6000, [960, 1920, 4096]),  # bounded
    (630, 1200, [640, 1200]), (300, 400, [640]),  # a small photo is scaled up once, like a video frame
])
def test_a_photo_is_detected_from_the_video_size_up_to_its_own(height, width, sizes):
    assert photo_detect_sizes(height, width) == sizes


def test_a_photo_is_detected_at_each_size_and_the_passes_merged():
    runner = _Runner(x=100, y=60)
    photo = np.zeros((768, 1024, 3), np.uint8)
    faces = Detector(runner).detect_photo(photo)
    assert runner.shapes == [(1, 480, 640, 3), (1, 768, 1024, 3)]
    # the fake face sits at input pixel (100, 60) of each pass: two places in the photo, both kept
    centres = sorted(((f[0] + f[2]) / 2, (f[1] + f[3]) / 2) for f in faces)
    assert len(faces) == 2 and abs(centres[0][0] - 100) <= 8 and abs(centres[1][0] - 160) <= 13
    assert Detector(runner).photo_input_size(768, 1024) == (768, 1024)
    # a size the user chose is one pass, as for a video frame
    runner.shapes.clear()
    assert len(Detector(runner, detect_size=512).detect_photo(photo)) == 1 and runner.shapes == [(1, 384, 512, 3)]


def test_a_crowd_photo_loses_fewer_faces_to_the_photo_passes(shared_file):
    import cv2

    from limelight.anchors import iou_matrix
    from model_opt.widerface_eval import load_ground_truth

    # GIVEN a WIDER FACE parade photo (1024 x 687) with 43 annotated faces in the "medium" setting
    image = shared_file("widerface/val/WIDER_val/images/0--Parade/0_Parade_Parade_0_873.jpg")
    gt = load_ground_truth(shared_file("widerface/ground_truth"))
    key = "0--Parade/0_Parade_Parade_0_873"
    faces = gt.boxes[key][gt.keep["medium"][key]]
    rgb = np.ascontiguousarray(cv2.imread(str(image))[..., ::-1])
    detector = Detector()  # the shipped model at the engine's defaults
    one_pass, photo = detector(rgb), detector.detect_photo(rgb)

    def found(dets):
        return int((iou_matrix(faces, dets[:, :4]).max(1) >= 0.5).sum())

    # THEN the photo passes find many more of them than the one video-size pass (measured 25 vs 13)
    assert len(faces) == 43 and found(photo) >= found(one_pass) + 8
    # AND every face the one pass was sure of is still covered
    sure = one_pass[one_pass[:, 4] >= 0.5]
    assert len(sure) and (iou_matrix(sure[:, :4], photo[:, :4]).max(1) >= 0.5).all()


def test_auto_detection_size_reaches_the_network_per_frame_size():
    runner = _Runner(x=100, y=60)
    det = Detector(runner)  # AUTO is the default
    assert det.detect_size == AUTO
    det(np.zeros((720, 1280, 3), np.uint8))
    det(np.zeros((1080, 1920, 3), np.uint8))
    assert runner.shapes == [(1, 384, 640, 3), (1, 544, 960, 3)]
    assert det.input_size(1080, 1920) == (540, 960)


@pytest.mark.parametrize("bad", ["big", 0, -640, 640.5])
def test_a_bad_detection_size_is_refused(bad):
    with pytest.raises(ValueError, match="detect_size"):
        Detector(_Runner(0, 0), detect_size=bad)


def test_dark_input_is_brightened_and_bright_input_left_alone():
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 60, (64, 64, 3), dtype=np.uint8)
    before = dark.copy()
    _brighten(dark)
    assert abs(dark.mean() - TARGET_MEAN) < 15 and np.all(dark >= before)
    # the order of levels is kept (a monotonic curve): no detail is invented or swapped
    order = np.argsort(before.ravel(), kind="stable")
    assert np.all(np.diff(dark.ravel()[order].astype(int)) >= 0)
    bright = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    kept = bright.copy()
    _brighten(bright)
    np.testing.assert_array_equal(bright, kept)


def test_a_dark_scene_with_a_spotlight_is_still_brightened():
    # GIVEN a dark audience (level 25) under a small saturated spotlight: a linear stretch to the
    # brightest level would leave it as it is
    frame = np.full((90, 160, 3), 25, np.uint8)
    frame[:10, :10] = 255
    _brighten(frame)
    # THEN the audience's level is lifted several times, the spotlight stays white
    assert frame[50, 100, 0] >= 4 * 25 and np.all(frame[:10, :10] == 255)


class _Runner:
    """Fakes the network: one confident face on the anchor nearest to a chosen input point."""

    def __init__(self, x, y):
        self.x, self.y, self.shapes = x, y, []

    def __call__(self, batch):
        self.shapes.append(batch.shape)
        priors = prior_boxes(*batch.shape[1:3])
        score = np.zeros(len(priors), np.float32)
        score[np.argmin(np.hypot(priors[:, 0] - self.x, priors[:, 1] - self.y) + (priors[:, 2] != 32) * 1e6)] = 0.9
        return np.zeros((len(priors), 4), np.float32), score


def test_boxes_come_back_in_frame_pixels_and_the_frame_is_not_touched():
    runner = _Runner(x=100, y=60)
    det = Detector(runner, detect_size=640)
    frame = np.full((720, 1280, 3), 30, np.uint8)
    dets = det(frame)
    assert runner.shapes == [(1, 384, 640, 3)]
    assert dets.shape == (1, 5)
    cx, cy = (dets[0, 0] + dets[0, 2]) / 2, (dets[0, 1] + dets[0, 3]) / 2
    assert abs(cx - 200) <= 8 and abs(cy - 120) <= 8  # input pixels x2 (scale 0.5)
    assert np.all(frame == 30)  # brightening works on the detector's copy only


def test_frames_reach_the_model_as_its_input_quantization_reads_them():
    frame = np.array([[[[0, 38, 255], [100, 101, 102]]]], np.uint8)
    # the shipped contract: int8, scale 1, zero point -128 -> pixel - 128, by flipping the top bit
    shifted = to_model_input(frame, np.int8, (1.0, -128))
    assert shifted.dtype == np.int8
    np.testing.assert_array_equal(shifted.astype(int), frame.astype(int) - 128)
    # a uint8 input of scale 1 and zero point 0 takes the frame itself, no copy per frame
    assert to_model_input(frame, np.uint8, (1.0, 0)) is frame
    # a float export takes the same values
    np.testing.assert_array_equal(to_model_input(frame, np.float32, (0.0, 0)), frame.astype(np.float32))
    # another input range: each pixel is quantized so that (q - zero point) * scale reads it back
    scale, zp = 1.4947, 38
    q = to_model_input(frame, np.uint8, (scale, zp))
    assert q.dtype == np.uint8
    np.testing.assert_allclose((q.astype(float) - zp) * scale, frame, atol=scale / 2 + 1e-6)
    q8 = to_model_input(frame, np.int8, (2.0, -128))  # an int8 input of range 0..510
    np.testing.assert_array_equal(q8.astype(int), np.rint(frame / 2) - 128)


def test_the_shipped_model_is_what_its_metadata_says():
    from limelight.detector import LiteRTRunner, default_model_path, model_metadata

    path = default_model_path()
    meta = model_metadata(path)
    assert meta["evaluation"]["int8_sha256"] == meta["sha256"]  # the figures were measured on this file
    assert path.stat().st_size == meta["file_bytes"] <= 1_000_000
    assert meta["pruning"]["achieved_sparsity"]["prunable_kernels"] >= 0.5
    runner = LiteRTRunner(path)
    # decoded frames go in as pixel - 128: int8, scale 1, zero point -128 (each byte's top bit flipped)
    assert runner.input_dtype == np.int8 and runner.input_quantization == (1.0, -128)
    assert (meta["input"]["dtype"], meta["input"]["scale"], meta["input"]["zero_point"]) == ("int8", 1.0, -128)
    # and its graph is the rewritten one (model_opt/graph.py): no input QUANTIZE, the stem on 2x2 blocks,
    # no run-time upsampling size
    ops = [op["op_name"] for op in runner.interpreter._get_ops_details()]
    assert ops[:2] == ["SPACE_TO_DEPTH", "CONV_2D"] and "SHAPE" not in ops and ops.count("DEPTH_TO_SPACE") == 2
    # and it ends at the class logits, whose softmax the runtime takes (scores are not rounded to 1/256)
    assert "SOFTMAX" not in ops and runner._logits
    assert sorted(runner.interpreter.get_signature_list()["serving_default"]["outputs"]) == ["loc", "logits"]
    from model_opt.graph import REWRITES

    assert meta["graph_rewrites"] == list(REWRITES)  # every rewrite graph.py has now was applied to it
    # and XNNPACK takes it in one piece: one delegate node (the graph's own softmax made it two)
    nodes = runner.interpreter._interpreter.NumNodes()
    assert [runner.interpreter._get_op_details(i)["op_name"] for i in range(nodes)].count("DELEGATE") == 1
    loc, score = runner(np.zeros((1, 64, 96, 3), np.uint8))
    assert loc.shape == (len(score), 4) and score.dtype == np.float32 and 0 <= score.min() <= score.max() <= 1


def test_a_model_of_another_form_is_refused_naming_it(tmp_path):
    from limelight.detector import LiteRTRunner, ModelError, default_model_path
    from model_opt.graph import pack, schema

    # GIVEN the shipped model with its face-score output taken away (a model of another form)
    m = schema.ModelT.InitFromPackedBuf(bytearray(default_model_path().read_bytes()), 0)
    m.subgraphs[0].outputs = m.subgraphs[0].outputs[:1]
    m.signatureDefs = []
    path = tmp_path / "boxes_only.tflite"
    path.write_bytes(pack(m))
    # THEN loading it fails with an error naming the file and what the runtime expects
    with pytest.raises(ModelError, match=r"boxes_only\.tflite: not a face detector .*\(1, A, 4\)"):
        LiteRTRunner(path)


def test_the_face_score_is_the_two_class_softmax_of_the_logits():
    logits = np.array([[0.0, 0.0], [1.5, -2.0], [-3.0, 4.0], [200.0, -200.0], [-200.0, 200.0]], np.float32)
    e = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))  # softmax, stably in float64
    expected = e[:, 1] / e.sum(axis=1)
    with warnings.catch_warnings():  # a sure background or face gives 0 or 1, without a warning
        warnings.simplefilter("error")
        score = face_probability(logits)
    assert score.dtype == np.float32
    np.testing.assert_allclose(score, expected, atol=1e-7)
    assert score[3] == 0.0 and score[4] == 1.0


def test_the_features_the_heads_read_use_all_256_int8_levels():
    from ai_edge_litert.interpreter import Interpreter

    from limelight.detector import default_model_path

    # GIVEN the shipped model's graph: the SSH outputs are the 4-D concatenations the class and box
    # heads read (one per level)
    interpreter = Interpreter(model_path=str(default_model_path()))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ssh = [tensors[op["outputs"][0]] for op in interpreter._get_ops_details()
           if op["op_name"] == "CONCATENATION" and len(tensors[op["outputs"][0]]["shape"]) == 4
           and len(set(op["inputs"])) > 1]  # not the upsampling's copies of one tensor
    assert len(ssh) == 3
    # THEN each holds values >= 0 only (its ReLU before the concat, fused into the convolutions), so
    # real 0 is the lowest int8 level and no level is spent on negatives (a ReLU after the concat left
    # them a range of about -6..6, i.e. 7 bits)
    assert all(t["quantization"][1] == -128 for t in ssh)


def test_runtime_delegate_notice_is_kept_off_stderr_but_other_output_is_not(capfd):
    import os

    from limelight.detector import _without_delegate_notice

    with _without_delegate_notice():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"ERROR: something the user must see\n")
    err = capfd.readouterr().err
    assert "XNNPACK" not in err and "ERROR: something the user must see" in err


def test_a_replica_is_the_same_detector_on_its_own_single_threaded_interpreter(shared_file):
    import cv2

    from limelight.detector import LiteRTRunner, default_model_path

    # GIVEN the shipped detector with its settings changed from the defaults, and a real WIDER FACE image
    detector = Detector(LiteRTRunner(default_model_path(), num_threads=2), detect_size=512, threshold=0.3, brighten_dark=False)
    replica = detector.replica(1)
    image = np.ascontiguousarray(cv2.imread(str(shared_file("widerface/val/WIDER_val/images/20--Family_Group/20_Family_Group_Family_Group_20_483.jpg")))[..., ::-1])
    # THEN the replica has its own interpreter and the same settings, and finds the same faces exactly
    assert replica.runner.interpreter is not detector.runner.interpreter
    assert (replica.detect_size, replica.threshold, replica.brighten_dark) == (512, 0.3, False)
    faces = detector(image)
    assert len(faces) >= 5
    np.testing.assert_array_equal(replica(image), faces)
    # AND a detector on a runner that cannot be duplicated has no replica (the engine then uses it alone)
    assert Detector(_Runner(x=10, y=10)).replica(1) is None
