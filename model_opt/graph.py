"""Rewrites of the converted TFLite graph that make it faster in LiteRT and compute exactly the same.

The TFLite converter writes the Keras graph as it is; two parts of it cost the int8 model time for
nothing (measured at 640x384 with XNNPACK on its VNNI kernels, see `limelight/amx.py`; two threads:
5.06 -> 4.41 ms, float32 7.86 -> 7.75 ms; the outputs are bit-identical on the WIDER FACE images):

1. **uint8 input**: a QUANTIZE op turns the uint8 frame into int8 (v - 128) over every input pixel,
   0.5 ms. The input becomes that int8 tensor (scale 1, zero point -128) and the runtime feeds
   `pixel ^ 0x80` (`limelight.detector.to_model_input`), the same numbers, in 0.02 ms.
2. **Dynamic upsampling**: the FPN's x2 nearest-neighbour upsampling was SHAPE -> SLICE -> MUL ->
   RESIZE_NEAREST_NEIGHBOR, ops XNNPACK does not take, which cut the graph into several delegate
   partitions. It becomes CONCATENATION(x, x, x, x) -> DEPTH_TO_SPACE(2), the same values, both in
   XNNPACK (0.1 ms).

Tried and left out: replacing the fixed BGR-swap-and-mean convolution over the full-size input
(0.85 ms in int8) by a per-channel ADD with the swap moved into the stem's kernel (exact, but the
int8 ADD over 3 channels costs about as much), or folding the mean into the stem's bias as well
(no full-size op left, 3.6 ms, but the stem then reads exact pixels instead of the values rounded
to the preprocessing output's scale, and the int8 model's answers move: -0.9 / -0.5 / -0.5 AP at 640).

`optimize` applies both to float32 and int8 exports alike (the latency baseline gets the same
graph). `python -m model_opt.graph MODEL.tflite [OUT.tflite]` rewrites an already exported model.
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
    """Both rewrites (see the module docstring); a rewrite whose pattern is absent is skipped."""
    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    int8_input(m)
    static_upsampling(m)
    builder = flatbuffers.Builder(len(model) + 4096)
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
    first = graph.operators[0]
    if _code(m, first) != OP.QUANTIZE or list(first.inputs) != list(graph.inputs):
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
        tiled = schema.TensorT()
        tiled.name = t_x.name + b"/tiled"
        tiled.type, tiled.quantization = t_x.type, t_x.quantization
        tiled.shape = [*t_x.shape[:3], t_x.shape[3] * 4]
        if t_x.shapeSignature is not None:
            tiled.shapeSignature = [*t_x.shapeSignature[:3], t_x.shapeSignature[3] * 4]
        m.buffers.append(schema.BufferT())
        tiled.buffer = len(m.buffers) - 1
        graph.tensors.append(tiled)
        concat = schema.OperatorT()
        concat.opcodeIndex = _opcode(m, OP.CONCATENATION)
        concat.inputs, concat.outputs = [x] * 4, [len(graph.tensors) - 1]
        concat.builtinOptionsType = schema.BuiltinOptions.ConcatenationOptions
        concat.builtinOptions = schema.ConcatenationOptionsT()
        concat.builtinOptions.axis = 3
        to_space = schema.OperatorT()
        to_space.opcodeIndex = _opcode(m, OP.DEPTH_TO_SPACE)
        to_space.inputs, to_space.outputs = [len(graph.tensors) - 1], list(resize.outputs)
        to_space.builtinOptionsType = schema.BuiltinOptions.DepthToSpaceOptions
        to_space.builtinOptions = schema.DepthToSpaceOptionsT()
        to_space.builtinOptions.blockSize = 2
        graph.operators[k:k + 1] = [concat, to_space]
        for j in sorted(chain, reverse=True):  # the size computation, now read by nothing
            if not any(graph.operators[j].outputs[0] in op.inputs for i, op in enumerate(graph.operators) if i != j):
                graph.operators.pop(j)
        done += 1


def main() -> None:
    p = argparse.ArgumentParser(description="Rewrite an exported TFLite detector's graph (see model_opt/graph.py).")
    p.add_argument("model", type=Path)
    p.add_argument("out", type=Path, nargs="?", help="default: rewrite MODEL in place")
    args = p.parse_args()
    from model_opt.export import write_atomically

    write_atomically(args.out or args.model, optimize(args.model.read_bytes()))


if __name__ == "__main__":
    main()
