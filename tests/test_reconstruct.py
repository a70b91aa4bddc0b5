"""model_opt.reconstruct: one-shot pruning with the kept weights re-solved by least squares."""

import numpy as np
import pytest

pytest.importorskip("tensorflow_model_optimization", reason="model_opt needs the dev requirements")

import tf_keras as keras  # noqa: E402

from model_opt.data import read_bbx_gt, training_examples  # noqa: E402
from model_opt.reconstruct import ReconstructSettings, input_patches, magnitude_mask, reconstruct, solve_kept  # noqa: E402
from model_opt.retinaface import RetinaFaceConfig, build_core, copy_weights_by_name  # noqa: E402
from model_opt.train import lamp_sparsities, prunable_kernels  # noqa: E402

TRAIN_GT = "widerface/train/wider_face_train_bbx_gt.subset.txt"
TRAIN_IMAGES = "widerface/train/WIDER_train/images"


def test_magnitude_mask_keeps_the_largest_weights_at_the_share():
    k = np.random.default_rng(0).normal(size=(3, 3, 4, 5))
    keep = magnitude_mask(k, 0.6)
    assert keep.shape == k.shape and np.sum(~keep) == round(0.6 * k.size)
    assert np.abs(k[keep]).min() > np.abs(k[~keep]).max()
    assert magnitude_mask(k, 0.0).all()


@pytest.mark.parametrize("stride, padding", [(1, "same"), (2, "valid"), (1, "valid")])
def test_input_patches_times_the_kernel_is_the_convolution(stride, padding):
    rng = np.random.default_rng(1)
    conv = keras.layers.Conv2D(6, 3, stride, padding=padding, use_bias=False)
    x = rng.normal(size=(2, 11, 9, 4)).astype(np.float32)
    y = conv(x).numpy()
    patches = input_patches(x, conv)
    np.testing.assert_allclose(patches @ conv.kernel.numpy().reshape(-1, 6), y.reshape(-1, 6), atol=1e-5)


def test_solve_kept_recovers_sparse_weights_and_beats_masking():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 12)) @ rng.normal(size=(12, 12))  # correlated inputs
    dense = rng.normal(size=(12, 3))
    keep = magnitude_mask(dense, 0.5)
    # a target the kept weights can express exactly is found again
    np.testing.assert_allclose(solve_kept(x, x @ (dense * keep), keep, damping=0.0), dense * keep, atol=1e-8)
    # for the dense layer's output, the solve beats keeping the surviving weights as they were
    y = x @ dense
    w = solve_kept(x, y, keep, damping=0.01)
    assert np.all(w[~keep] == 0)
    assert np.mean((x @ w - y) ** 2) < 0.8 * np.mean((x @ (dense * keep) - y) ** 2)


@pytest.mark.slow
def test_reconstruct_prunes_to_the_shares_and_stays_closer_to_the_dense_model(shared_file):
    samples = read_bbx_gt(shared_file(TRAIN_GT), shared_file(TRAIN_IMAGES))[:4]
    config = RetinaFaceConfig.tiny()
    keras.utils.set_random_seed(5)
    dense = build_core(config)
    kernels = prunable_kernels(dense)
    shares = lamp_sparsities(kernels, 0.5)
    settings = ReconstructSettings(images=2, image_size=128, positions=5000)

    solved, masked = build_core(config), build_core(config)
    copy_weights_by_name(dense, solved)
    copy_weights_by_name(dense, masked)
    errors = reconstruct(dense, solved, shares, samples, config, settings)
    assert set(errors) == set(shares)
    for name, share in shares.items():
        kernel = solved.get_layer(name).kernel.numpy()
        assert np.sum(kernel == 0) == round(share * kernel.size)
        # the zeros are where magnitude pruning puts them
        assert np.array_equal(kernel != 0, magnitude_mask(kernels[name], share))
        layer = masked.get_layer(name)
        layer.kernel.assign(kernels[name] * magnitude_mask(kernels[name], share))
    # on crops it has not seen, the re-solved network's outputs stay nearer the dense network's
    stream = training_examples(samples, 128, config.anchors, 77)
    crops = np.stack([next(stream)[0] for _ in range(2)])
    ref = dense(crops, training=False)[1].numpy()
    gap = lambda m: float(np.mean((m(crops, training=False)[1].numpy() - ref) ** 2))  # noqa: E731
    assert gap(solved) < gap(masked)
