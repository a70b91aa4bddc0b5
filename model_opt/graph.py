"""Rewrites of the converted TFLite graph that make it faster in LiteRT and compute the same.

The TFLite converter writes the Keras graph as it is; four parts of it cost the int8 model time for
nothing (measured at 640x384 with XNNPACK on its VNNI kernels, see `limelight/amx.py`; two threads,
invoke only: 5.06 -> 4.41 -> 3.89 ms against float32's 7.86 -> 7.75 ms for the first three; their
outputs are bit-identical on the WIDER FACE images, and tested so on the tiny pipeline; the fourth
leaves the softmax to the runtime, which computes it unrounded):

1. **uint8 input**: a QUANTIZE op turns the uint8 frame into int8 (v - 128) over every input pixel,
   0.5 ms. The input becomes that int8 tensor (scale 1, zero point -128) and the runtime feeds
   `pixel ^ 0x80` (`limelight.detector.to_model_input`), the same numbers, in 0.02 ms.
2. **Stem on 2x2 blocks** (int8 only): XNNPACK's int8 convolutions cost about the same per output
   pixel whatever their few channels, and the full-size input had two (the fixed BGR-swap-and-mean
   1x1 convolution, 0.85 ms, then the 3x3 stride-2 stem). After a SPACE_TO_DEPTH(2) both run on a
   quarter of the pixels with 4x the channels: the preprocessing as a block-diagonal 1x1 convolution,
   the stem as a 2x2 stride-1 one holding the same int8 weights (`space_to_depth_stem`). Float32
   runs it no faster (7.87 vs 7.80 ms), so its graph keeps the plain stem.
3. **Dynamic upsampling**: the FPN's x2 nearest-neighbour upsampling was SHAPE -> SLICE -> MUL ->
   RESIZE_NEAREST_NEIGHBOR, ops XNNPACK does not take, which cut the graph into several delegate
   partitions. It becomes CONCATENATION(x, x, x, x) -> DEPTH_TO_SPACE(2), the same values, both in
   XNNPACK (0.1 ms).

4. **The softmax**: the score output was SOFTMAX over the two class logits and a slice of its face
   channel, quantized in the int8 model to steps of 1/256 and run outside XNNPACK (a second delegate
   partition). The graph now ends at the logits (dequantized in int8) and the runtime takes the
   two-class softmax, 1 / (1 + e^(background - face)), over (A, 2) values as it decodes the boxes
   (`limelight.detector.face_probability`): one partition, 0.1 ms less, and the scores are no longer
   rounded to 1/256 (int8 AP on WIDER FACE: +0.0 at long side 640, +0.3 to +0.7 points at original size).

Tried and left out: the preprocessing as a per-channel ADD with the swap moved into the stem's kernel
(exact, but the int8 ADD over 3 channels costs about as much as the convolution), or folded into the
stem's bias as well (no full-size op left, but the stem then reads exact pixels instead of the
values rounded to the preprocessing output's scale, and the int8 model's answers move: -0.9 / -0.5 /
-0.5 AP at 640).

`optimize` applies them to float32 and int8 exports (each rewrite where it applies).
`python -m model_opt.graph MODEL.tflite [OUT.tflite]` rewrites an already exported model.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import flatbuffers  # noqa: E402
import numpy as np  # noqa: E402
from tensorflow.lite.python import schema_py_generated as schema  # noqa: E402

OP = schema.BuiltinOperator
_NUMPY = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.INT32: np.int32,
          schema.TensorType.INT8: np.int8, schema.TensorType.UINT8: np.uint8}


class GraphError(ValueError):
    """The graph does not have the shape a rewrite expects (another network, or already rewritten)."""


def optimize(model: bytes) -> bytes:
    """The rewrites (see the module docstring); a rewrite whose pattern is absent is skipped."""
    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    for rewrite in _REWRITES:
        rewrite(m)
    return pack(m)


def pack(m: schema.ModelT) -> bytes:
    """The model as a .tflite file's bytes."""
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _code(m: schema.ModelT, op: schema.OperatorT) -> int:
    code = m.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _opcode(m: schema.ModelT, builtin: int) -> int:
    for i, code in enumerate(m.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    m.operatorCodes.append(code)
    return len(m.operatorCodes) - 1


def _array(m: schema.ModelT, graph: schema.SubGraphT, tensor: int) -> np.ndarray:
    t = graph.tensors[tensor]
    return np.frombuffer(bytes(m.buffers[t.buffer].data), _NUMPY[t.type]).reshape(t.shape).copy()


def _readers(graph: schema.SubGraphT, tensor: int) -> list[int]:
    return [k for k, op in enumerate(graph.operators) if tensor in op.inputs]


def int8_input(m: schema.ModelT) -> bool:
    """uint8 input -> QUANTIZE -> int8 (scale 1, zero point -128)  =>  that int8 tensor is the input."""
    graph = m.subgraphs[0]
    first = graph.operators[0] if graph.operators else None
    if first is None or _code(m, first) != OP.QUANTIZE or list(first.inputs) != list(graph.inputs):
        return False
    source, target = first.inputs[0], first.outputs[0]
    s, t = graph.tensors[source], graph.tensors[target]
    if (s.type, t.type) != (schema.TensorType.UINT8, schema.TensorType.INT8) or _readers(graph, source) != [0]:
        return False
    if (list(s.quantization.scale), list(s.quantization.zeroPoint)) != (list(t.quantization.scale), [0]) \
            or list(t.quantization.zeroPoint) != [-128]:
        raise GraphError("input QUANTIZE is not the plain uint8 -> int8 shift (v - 128)")
    graph.operators.pop(0)
    graph.inputs = [target]
    t.name = s.name
    for signature in m.signatureDefs or []:
        for io in signature.inputs:
            if io.tensorIndex == source:
                io.tensorIndex = target
    return True


def _tensor(m: schema.ModelT, graph: schema.SubGraphT, like: schema.TensorT, name: bytes, shape: list[int],
            data: np.ndarray | None = None, quantization=None) -> int:
    """A new tensor of `like`'s type (and quantization, unless given), constant when `data` is given;
    a variable one keeps a dynamic height and width."""
    t = schema.TensorT()
    t.name, t.type, t.shape = name, like.type, list(shape)
    t.quantization = like.quantization if quantization is None else quantization
    if data is None:
        t.shapeSignature = [1, -1, -1, shape[3]]
    buffer = schema.BufferT()
    if data is not None:
        buffer.data = np.ascontiguousarray(data).tobytes()
    m.buffers.append(buffer)
    t.buffer = len(m.buffers) - 1
    graph.tensors.append(t)
    return len(graph.tensors) - 1


def _per_channel(scales: list[float], times: int) -> schema.QuantizationParametersT:
    q = schema.QuantizationParametersT()
    q.scale = [float(v) for v in scales] * times
    q.zeroPoint = [0] * len(q.scale)
    return q


def space_to_depth_stem(m: schema.ModelT) -> bool:
    """int8 input -> 1x1 CONV_2D (preprocessing) -> PAD 1 -> 3x3 CONV_2D stride 2 (stem)  =>
    SPACE_TO_DEPTH(2) -> 1x1 CONV_2D (the preprocessing 4 times over, block-diagonal) -> PAD top and
    left 1 -> 2x2 CONV_2D stride 1. Stem output row i reads input rows 2i-1, 2i, 2i+1, i.e. rows i-1
    (its odd half) and i (both halves) of the space-to-depth tensor; the kernel holds the same int8
    weights at those places and zeros elsewhere, so every accumulator is the same sum. The input's
    height and width are even (multiples of 32), so the stem never read the bottom and right padding.
    For int8 only: float32 runs it no faster."""
    graph = m.subgraphs[0]
    if len(graph.operators) < 3 or [_code(m, op) for op in graph.operators[:3]] != [OP.CONV_2D, OP.PAD, OP.CONV_2D]:
        return False
    pre, pad, stem = graph.operators[:3]
    source = pre.inputs[0]
    if source not in graph.inputs or graph.tensors[source].type != schema.TensorType.INT8:
        return False
    w_pre, w_stem = _array(m, graph, pre.inputs[1]), _array(m, graph, stem.inputs[1])
    channels = w_pre.shape[3]
    options = stem.builtinOptions
    if (w_pre.shape[1:3] != (1, 1) or w_pre.shape[0] != channels or w_stem.shape[1:] != (3, 3, channels)
            or (options.strideH, options.strideW) != (2, 2) or options.padding != schema.Padding.VALID
            or (options.dilationHFactor, options.dilationWFactor) not in ((1, 1), (0, 0))
            or _array(m, graph, pad.inputs[1]).tolist() != [[0, 0], [1, 1], [1, 1], [0, 0]]
            or _readers(graph, pre.outputs[0]) != [1] or _readers(graph, pad.outputs[0]) != [2]):
        return False
    t_source, t_wp, t_bp = graph.tensors[source], graph.tensors[pre.inputs[1]], graph.tensors[pre.inputs[2]]
    wide = 4 * channels
    # space to depth: channel (dy * 2 + dx) * C + c holds pixel (2i + dy, 2j + dx), channel c
    s2d = _tensor(m, graph, t_source, t_source.name + b"/space_to_depth", [1, 1, 1, wide])
    to_depth = schema.OperatorT()
    to_depth.opcodeIndex = _opcode(m, OP.SPACE_TO_DEPTH)
    to_depth.inputs, to_depth.outputs = [source], [s2d]
    to_depth.builtinOptionsType = schema.BuiltinOptions.SpaceToDepthOptions
    to_depth.builtinOptions = schema.SpaceToDepthOptionsT()
    to_depth.builtinOptions.blockSize = 2
    # the preprocessing on each of the 4 pixels of a block
    kernel = np.zeros((wide, 1, 1, wide), w_pre.dtype)
    for block in range(4):
        kernel[block * channels:(block + 1) * channels, :, :, block * channels:(block + 1) * channels] = w_pre
    bias = np.tile(_array(m, graph, pre.inputs[2]), 4)
    t_pre_out = graph.tensors[pre.outputs[0]]
    pre.inputs = [s2d,
                  _tensor(m, graph, t_wp, t_wp.name + b"/x4", list(kernel.shape), kernel,
                          _per_channel(t_wp.quantization.scale, 4)),
                  _tensor(m, graph, t_bp, t_bp.name + b"/x4", list(bias.shape), bias,
                          _per_channel(t_bp.quantization.scale, 4))]
    pre.outputs = [_tensor(m, graph, t_pre_out, t_pre_out.name + b"/x4", [1, 1, 1, wide])]
    t_pad_out = graph.tensors[pad.outputs[0]]
    top_left = np.array([[0, 0], [1, 0], [1, 0], [0, 0]], np.int32)
    pad.inputs = [pre.outputs[0], _tensor(m, graph, graph.tensors[pad.inputs[1]], b"pad_top_left", [4, 2], top_left)]
    pad.outputs = [_tensor(m, graph, t_pad_out, t_pad_out.name + b"/x4", [1, 1, 1, wide])]
    # stem tap k (0..2) over rows (and columns) -> (space-to-depth tap: row i - 1 or i, half of the block)
    taps = {0: (0, 1), 1: (1, 0), 2: (1, 1)}
    stem_kernel = np.zeros((w_stem.shape[0], 2, 2, wide), w_stem.dtype)
    for kh, (th, dy) in taps.items():
        for kw, (tw, dx) in taps.items():
            block = dy * 2 + dx
            stem_kernel[:, th, tw, block * channels:(block + 1) * channels] = w_stem[:, kh, kw, :]
    t_ws = graph.tensors[stem.inputs[1]]
    stem.inputs = [pad.outputs[0], _tensor(m, graph, t_ws, t_ws.name + b"/space_to_depth", list(stem_kernel.shape),
                                           stem_kernel), stem.inputs[2]]
    options.strideH = options.strideW = 1
    graph.operators.insert(0, to_depth)
    return True


def static_upsampling(m: schema.ModelT) -> int:
    """SHAPE -> SLICE -> MUL -> RESIZE_NEAREST_NEIGHBOR(x, size)  =>  CONCATENATION(x, x, x, x) ->
    DEPTH_TO_SPACE(2). Returns how many were rewritten."""
    graph = m.subgraphs[0]
    done = 0
    while True:
        k = next((k for k, op in enumerate(graph.operators) if _code(m, op) == OP.RESIZE_NEAREST_NEIGHBOR), None)
        if k is None:
            return done
        resize = graph.operators[k]
        # x2 exactly: output row r reads row r // 2 with or without half-pixel centres
        # (floor(r / 2 + 1/4) == r // 2), not with aligned corners.
        if resize.builtinOptions is not None and resize.builtinOptions.alignCorners:
            raise GraphError("a nearest-neighbour resize with aligned corners")
        x, size = resize.inputs[0], resize.inputs[1]
        # The size must be the input's own height and width times 2.
        made = {out: j for j, op in enumerate(graph.operators) for out in op.outputs}
        chain, t = [], size
        while t in made and _code(m, graph.operators[made[t]]) in (OP.MUL, OP.SLICE, OP.SHAPE):
            op = graph.operators[made[t]]
            chain.append(made[t])
            if _code(m, op) == OP.MUL and not np.array_equal(_array(m, graph, op.inputs[1]), [2, 2]):
                raise GraphError("the upsampling is not x2")
            if _code(m, op) == OP.SLICE and [_array(m, graph, i).tolist() for i in op.inputs[1:]] != [[1], [2]]:
                raise GraphError("the upsampling's size is not its input's height and width")
            t = op.inputs[0]
        # ... of x itself, or of the tensor x was requantized from (same shape)
        same = {x}
        if x in made and _code(m, graph.operators[made[x]]) == OP.QUANTIZE:
            same.add(graph.operators[made[x]].inputs[0])
        if t not in same or not chain or _code(m, graph.operators[chain[-1]]) != OP.SHAPE:
            raise GraphError("the upsampling's size is not computed from its input's shape")
        t_x = graph.tensors[x]
        tiled = _tensor(m, graph, t_x, t_x.name + b"/tiled", [1, 1, 1, t_x.shape[3] * 4])
        concat = schema.OperatorT()
        concat.opcodeIndex = _opcode(m, OP.CONCATENATION)
        concat.inputs, concat.outputs = [x] * 4, [tiled]
        concat.builtinOptionsType = schema.BuiltinOptions.ConcatenationOptions
        concat.builtinOptions = schema.ConcatenationOptionsT()
        concat.builtinOptions.axis = 3
        to_space = schema.OperatorT()
        to_space.opcodeIndex = _opcode(m, OP.DEPTH_TO_SPACE)
        to_space.inputs, to_space.outputs = [tiled], list(resize.outputs)
        to_space.builtinOptionsType = schema.BuiltinOptions.DepthToSpaceOptions
        to_space.builtinOptions = schema.DepthToSpaceOptionsT()
        to_space.builtinOptions.blockSize = 2
        graph.operators[k:k + 1] = [concat, to_space]
        for j in sorted(chain, reverse=True):  # the size computation, now read by nothing
            if not any(graph.operators[j].outputs[0] in op.inputs for i, op in enumerate(graph.operators) if i != j):
                graph.operators.pop(j)
        done += 1


def softmax_to_runtime(m: schema.ModelT) -> bool:
    """SOFTMAX(logits) -> STRIDED_SLICE(face channel) [-> DEQUANTIZE] -> score output (1, A)  =>
    [DEQUANTIZE ->] the class logits as that output, (1, A, 2); the runtime takes the softmax
    (`limelight.detector.face_probability`), as it decodes the boxes."""
    graph = m.subgraphs[0]
    k = next((k for k, op in enumerate(graph.operators) if _code(m, op) == OP.SOFTMAX), None)
    if k is None:
        return False
    softmax = graph.operators[k]
    logits = softmax.inputs[0]
    readers = _readers(graph, softmax.outputs[0])
    if len(readers) != 1 or _code(m, graph.operators[readers[0]]) != OP.STRIDED_SLICE:
        raise GraphError("the softmax is not read by one face-channel slice")
    j = readers[0]
    take = graph.operators[j]
    begin, end, strides = (_array(m, graph, i).tolist() for i in take.inputs[1:])
    options = take.builtinOptions
    if graph.tensors[logits].shape[-1] != 2 or (begin[-1], end[-1], strides[-1]) != (1, 2, 1) \
            or options.shrinkAxisMask != 1 << (len(begin) - 1):
        raise GraphError("the score is not the softmax's face channel of two")
    out = take.outputs[0]
    after = _readers(graph, out)
    if after:  # int8: the slice's int8 face channel is dequantized into the output
        dequantize = graph.operators[after[0]]
        if len(after) != 1 or _code(m, dequantize) != OP.DEQUANTIZE:
            raise GraphError("the face score goes on to more than a DEQUANTIZE")
        dequantize.inputs = [logits]
        output = dequantize.outputs[0]
        t = graph.tensors[output]
        t.shape, t.shapeSignature = [*t.shape, 2], [*graph.tensors[logits].shapeSignature]
    else:  # float32: the logits themselves become the output
        if out not in graph.outputs:
            raise GraphError("the face score is not an output")
        graph.outputs = [logits if o == out else o for o in graph.outputs]
        graph.tensors[logits].name = graph.tensors[out].name
        output = logits
    for signature in m.signatureDefs or []:  # the signature's "score" output is now "logits"
        for io in signature.outputs:
            if io.tensorIndex in (out, output):
                io.tensorIndex, io.name = output, b"logits"
    for i in sorted((k, j), reverse=True):
        graph.operators.pop(i)
    return True


# What `optimize` applies, in order. Their names are part of the export stage's cache key
# (model_opt/pipeline.py), so a work dir exported before a rewrite changed is exported again.
_REWRITES = (int8_input, space_to_depth_stem, static_upsampling, softmax_to_runtime)
REWRITES = tuple(rewrite.__name__ for rewrite in _REWRITES)


def main() -> None:
    p = argparse.ArgumentParser(description="Rewrite an exported TFLite detector's graph (see model_opt/graph.py).")
    p.add_argument("model", type=Path)
    p.add_argument("out", type=Path, nargs="?", help="default: rewrite MODEL in place")
    args = p.parse_args()
    from model_opt.export import write_atomically

    write_atomically(args.out or args.model, optimize(args.model.read_bytes()))


if __name__ == "__main__":
    main()
