"""Run RapidOCR's bundled PP-OCR ONNX networks (detection, recognition) in torch.

Why: on a GPU executor CLIP already runs in torch; running the OCR networks in torch too
means one runtime, one CUDA context and one memory pool per worker instead of torch
beside onnxruntime-gpu (and no onnxruntime-gpu/CUDA/cuDNN version triangle to keep in
step). `udfs.batched_ocr.BatchedOcrSpotter(runtime="torch")` uses it.

Why hand-written: onnx2torch (1.5.15) refuses `Conv`/`MaxPool` with
`auto_pad=SAME_UPPER`, which these Paddle-exported graphs use. SAME padding is not a
constant: for a stride-s layer it depends on the input's spatial size (total =
max((ceil(in / s) - 1) * s + (k - 1) * d + 1 - in, 0), the odd pixel at the end), so it
is computed per call here from the tensor's shape (for stride 1 it is constant and
precomputed). The two models use only ~25 op types (see `OPS`), a small table.

The converter reads the graph with the `onnx` package and builds an `nn.Module` whose
buffers are the graph's float initialisers and whose forward runs the nodes in graph
order (ONNX guarantees topological order). Shape arithmetic (Shape, Slice, Reshape and
the int64 constants feeding it; Resize scales) stays on the host as small CPU tensors,
so nothing on the device is read back mid-graph and a GPU run never synchronises.
Batch, height and width may change from call to call.

Licences: the PP-OCR models are Apache-2.0 (PaddleOCR), bundled by rapidocr (Apache-2.0);
converting them in memory redistributes nothing new.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from udfs.worker_cache import worker_cached

Op = Callable[..., Any]

# Inputs read as host values (shapes, slice bounds, resize scales), not device tensors:
# op type -> input positions. Initialisers feeding them stay CPU tensors.
_HOST_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Slice": (1, 2, 3, 4),
    "Resize": (1, 2, 3),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
}


def _ints(value: Any) -> list[int]:
    """A host tensor (or list) of ints as a Python list."""
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in value]


def _same_pads(size: int, kernel: int, stride: int, dilation: int, upper: bool
               ) -> tuple[int, int]:
    """ONNX SAME_UPPER/SAME_LOWER padding (begin, end) of one spatial axis."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


class _Padder:
    """The padding rule of a Conv/MaxPool node: fixed pads, or SAME computed per call.

    `__call__(x)` returns (x padded where the pads are not symmetric, symmetric pads to
    hand to the torch op)."""

    def __init__(self, attrs: dict[str, Any], kernel: list[int], value: float = 0.0) -> None:
        rank = len(kernel)
        self.kernel = kernel
        self.strides = list(attrs.get("strides", [1] * rank))
        self.dilations = list(attrs.get("dilations", [1] * rank))
        self.auto = attrs.get("auto_pad", "NOTSET")
        self.value = value
        self.fixed: list[int] | None = None
        if self.auto in ("NOTSET", "VALID"):
            zero = [0] * 2 * rank
            self.fixed = list(attrs.get("pads", zero)) if self.auto == "NOTSET" else zero
        elif self.auto in ("SAME_UPPER", "SAME_LOWER"):
            if all(s == 1 for s in self.strides):  # then the pads do not depend on size
                pair = [_same_pads(1, k, 1, d, self.auto == "SAME_UPPER")
                        for k, d in zip(kernel, self.dilations, strict=True)]
                self.fixed = [p[0] for p in pair] + [p[1] for p in pair]
        else:
            raise NotImplementedError(f"auto_pad={self.auto}")

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        rank = len(self.kernel)
        if self.fixed is not None:
            pads = self.fixed
        else:
            pair = [_same_pads(int(n), k, s, d, self.auto == "SAME_UPPER")
                    for n, k, s, d in zip(x.shape[2:], self.kernel, self.strides,
                                          self.dilations, strict=True)]
            pads = [p[0] for p in pair] + [p[1] for p in pair]
        begin, end = pads[:rank], pads[rank:]
        if begin == end:
            return x, begin
        flat: list[int] = []
        for b, e in zip(reversed(begin), reversed(end), strict=True):  # F.pad: last axis first
            flat += [b, e]
        return F.pad(x, flat, value=self.value), [0] * rank


def _conv(attrs: dict[str, Any], node: Any) -> Op:
    kernel = list(attrs["kernel_shape"])
    if len(kernel) != 2:
        raise NotImplementedError("Conv: 2-D only")
    padder = _Padder(attrs, kernel)
    strides, dilations, group = padder.strides, padder.dilations, int(attrs.get("group", 1))

    def conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        x, pads = padder(x)
        return F.conv2d(x, w, b, strides, pads, dilations, group)
    return conv


def _conv_transpose(attrs: dict[str, Any], node: Any) -> Op:
    if attrs.get("auto_pad", "NOTSET") != "NOTSET" or "output_shape" in attrs:
        raise NotImplementedError("ConvTranspose: auto_pad/output_shape")
    kernel = list(attrs["kernel_shape"])
    pads = list(attrs.get("pads", [0] * 2 * len(kernel)))
    if pads[:len(kernel)] != pads[len(kernel):]:
        raise NotImplementedError("ConvTranspose: asymmetric pads")
    strides = list(attrs.get("strides", [1] * len(kernel)))
    dilations = list(attrs.get("dilations", [1] * len(kernel)))
    out_pad = list(attrs.get("output_padding", [0] * len(kernel)))
    group = int(attrs.get("group", 1))

    def conv_transpose(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None
                       ) -> torch.Tensor:
        return F.conv_transpose2d(x, w, b, strides, pads[:len(kernel)], out_pad, group,
                                  dilations)
    return conv_transpose


def _max_pool(attrs: dict[str, Any], node: Any) -> Op:
    if len(node.output) > 1 or attrs.get("storage_order", 0):
        raise NotImplementedError("MaxPool: indices output")
    kernel = list(attrs["kernel_shape"])
    padder = _Padder(attrs, kernel, value=-math.inf)  # padded cells never win the max
    ceil = bool(attrs.get("ceil_mode", 0))

    def max_pool(x: torch.Tensor) -> torch.Tensor:
        x, pads = padder(x)
        return F.max_pool2d(x, kernel, padder.strides, pads, padder.dilations, ceil)
    return max_pool


def _avg_pool(attrs: dict[str, Any], node: Any) -> Op:
    kernel = list(attrs["kernel_shape"])
    if attrs.get("auto_pad", "NOTSET") != "NOTSET":
        raise NotImplementedError("AveragePool: auto_pad")
    pads = list(attrs.get("pads", [0] * 2 * len(kernel)))
    if pads[:len(kernel)] != pads[len(kernel):]:
        raise NotImplementedError("AveragePool: asymmetric pads")
    strides = list(attrs.get("strides", [1] * len(kernel)))
    ceil = bool(attrs.get("ceil_mode", 0))
    include = bool(attrs.get("count_include_pad", 0))

    def avg_pool(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel, strides, pads[:len(kernel)], ceil, include)
    return avg_pool


def _batch_norm(attrs: dict[str, Any], node: Any) -> Op:
    eps = float(attrs.get("epsilon", 1e-5))

    def batch_norm(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                   mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, mean, var, scale, bias, False, 0.0, eps)
    return batch_norm


def _hard_sigmoid(attrs: dict[str, Any], node: Any) -> Op:
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    return lambda x: torch.clamp(x * alpha + beta, 0.0, 1.0)


def _reduce_mean(attrs: dict[str, Any], node: Any) -> Op:
    axes = attrs.get("axes")
    keep = bool(attrs.get("keepdims", 1))
    if axes is None:
        return lambda x: x.mean(dim=tuple(range(x.dim())), keepdim=keep)
    dims = tuple(int(a) for a in axes)
    return lambda x: x.mean(dim=dims, keepdim=keep)


def _softmax(attrs: dict[str, Any], node: Any) -> Op:
    opset = int(attrs["_opset"])
    axis = int(attrs.get("axis", 1 if opset < 13 else -1))

    def softmax(x: torch.Tensor) -> torch.Tensor:
        ax = axis % x.dim()
        if opset >= 13 or ax == x.dim() - 1:
            return torch.softmax(x, dim=ax)
        # Before opset 13 the input is coerced to 2-D at `axis`: one softmax over all
        # trailing axes together.
        return torch.softmax(x.flatten(ax), dim=-1).reshape(x.shape)
    return softmax


def _transpose(attrs: dict[str, Any], node: Any) -> Op:
    perm = attrs.get("perm")
    if perm is None:
        return lambda x: x.permute(*reversed(range(x.dim())))
    dims = [int(p) for p in perm]
    return lambda x: x.permute(*dims)


def _squeeze(attrs: dict[str, Any], node: Any) -> Op:
    def squeeze(x: torch.Tensor, axes: Any = None) -> torch.Tensor:
        dims = attrs.get("axes") if axes is None else _ints(axes)
        if dims is None:
            return x.squeeze()
        return x.squeeze(tuple(int(d) % x.dim() for d in dims))
    return squeeze


def _unsqueeze(attrs: dict[str, Any], node: Any) -> Op:
    def unsqueeze(x: torch.Tensor, axes: Any = None) -> torch.Tensor:
        dims = _ints(attrs["axes"] if axes is None else axes)
        rank = x.dim() + len(dims)
        for d in sorted(int(d) % rank for d in dims):
            x = x.unsqueeze(d)
        return x
    return unsqueeze


def _concat(attrs: dict[str, Any], node: Any) -> Op:
    axis = int(attrs["axis"])
    return lambda *xs: torch.cat(xs, dim=axis)


def _shape(attrs: dict[str, Any], node: Any) -> Op:
    # A host tensor: the shape arithmetic after it never touches the device.
    return lambda x: torch.tensor(tuple(x.shape), dtype=torch.int64)


def _slice(attrs: dict[str, Any], node: Any) -> Op:
    def slice_(x: torch.Tensor, starts: Any, ends: Any, axes: Any = None,
               steps: Any = None) -> torch.Tensor:
        begin, end = _ints(starts), _ints(ends)
        dims = list(range(len(begin))) if axes is None else _ints(axes)
        step = [1] * len(begin) if steps is None else _ints(steps)
        index = [slice(None)] * x.dim()
        for d, b, e, s in zip(dims, begin, end, step, strict=True):
            if s <= 0:
                raise NotImplementedError("Slice: negative steps")
            index[d % x.dim()] = slice(b, e, s)  # Python clamps like ONNX
        return x[tuple(index)]
    return slice_


def _reshape(attrs: dict[str, Any], node: Any) -> Op:
    if attrs.get("allowzero", 0):
        raise NotImplementedError("Reshape: allowzero")

    def reshape(x: torch.Tensor, shape: Any) -> torch.Tensor:
        dims = _ints(shape)
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]  # 0 = keep
        return x.reshape(dims)
    return reshape


def _resize(attrs: dict[str, Any], node: Any) -> Op:
    mode = attrs.get("mode", "nearest")
    coords = attrs.get("coordinate_transformation_mode", "half_pixel")
    nearest = attrs.get("nearest_mode", "round_prefer_floor")
    if (mode, coords, nearest) != ("nearest", "asymmetric", "floor"):
        # The only flavour these models use: a plain integer nearest upsample.
        raise NotImplementedError(f"Resize: {mode}/{coords}/{nearest}")

    def resize(x: torch.Tensor, roi: Any = None, scales: Any = None, sizes: Any = None
               ) -> torch.Tensor:
        if sizes is not None and sizes.numel():
            size = _ints(sizes)
            if size[:2] != list(x.shape[:2]):
                raise NotImplementedError("Resize: batch/channel resizing")
            return F.interpolate(x, size=size[2:], mode="nearest")
        factors = [float(s) for s in scales.reshape(-1).tolist()]
        if factors[:2] != [1.0, 1.0]:
            raise NotImplementedError("Resize: batch/channel resizing")
        # asymmetric + floor: source index = floor(dst / scale), as torch's "nearest"
        # with the scale kept as given.
        return F.interpolate(x, scale_factor=factors[2:], mode="nearest",
                             recompute_scale_factor=False)
    return resize


def _elementwise(fn: Callable[..., torch.Tensor]) -> Callable[[dict, Any], Op]:
    return lambda attrs, node: fn


# op type -> factory(attributes, node) -> callable on the node's inputs. Only the ops of
# the bundled PP-OCRv6 det/rec models (plus their obvious variants); anything else
# raises at conversion time, never silently at run time.
OPS: dict[str, Callable[[dict[str, Any], Any], Op]] = {
    "Add": _elementwise(torch.add),
    "Sub": _elementwise(torch.sub),
    "Mul": _elementwise(torch.mul),
    "Div": _elementwise(torch.div),
    "Pow": _elementwise(torch.pow),
    "MatMul": _elementwise(torch.matmul),
    "Relu": _elementwise(torch.relu),
    "Sigmoid": _elementwise(torch.sigmoid),
    "Erf": _elementwise(torch.erf),
    "Sqrt": _elementwise(torch.sqrt),
    "GlobalAveragePool": _elementwise(lambda x: x.mean(dim=(2, 3), keepdim=True)),
    "HardSigmoid": _hard_sigmoid,
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "MaxPool": _max_pool,
    "AveragePool": _avg_pool,
    "BatchNormalization": _batch_norm,
    "ReduceMean": _reduce_mean,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Concat": _concat,
    "Shape": _shape,
    "Slice": _slice,
    "Reshape": _reshape,
    "Resize": _resize,
    "Softmax": _softmax,
}


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        out[a.name] = value.decode() if isinstance(value, bytes) else value
    return out


@dataclass
class _Node:
    """One graph node after Identity removal (names resolved to their sources)."""

    op_type: str
    input: list[str]
    output: list[str]
    attrs: dict[str, Any]


def _resolve(alias: dict[str, str], name: str) -> str:
    """The tensor an Identity chain stands for."""
    while name in alias:
        name = alias[name]
    return name


def _nodes(graph: Any) -> tuple[list[_Node], dict[str, str]]:
    """The graph's nodes without Identity (a pure alias), and the alias table."""
    alias: dict[str, str] = {}

    def resolve(name: str) -> str:
        return _resolve(alias, name)

    out = []
    for node in graph.node:
        if node.op_type == "Identity":
            alias[node.output[0]] = resolve(node.input[0])
            continue
        out.append(_Node(node.op_type, [resolve(i) if i else "" for i in node.input],
                         list(node.output), _attributes(node)))
    return out, alias


def _fold_conv_bias(nodes: list[_Node], inits: dict[str, np.ndarray],
                    keep: set[str]) -> list[_Node]:
    """Paddle exports a convolution's bias as a separate Add of a (1, C, 1, 1) constant;
    fold it into the Conv (one pass over the activation less per layer: ~70 of each
    model's ~120 Adds). Only where the Conv output feeds that Add alone."""
    uses: dict[str, int] = {}
    for n in nodes:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    producer = {o: n for n in nodes for o in n.output}
    dropped: set[int] = set()
    for n in nodes:
        if n.op_type != "Add" or len(n.input) != 2:
            continue
        for a, b in (n.input, n.input[::-1]):
            conv = producer.get(a)
            if (conv is None or conv.op_type != "Conv" or len(conv.input) != 2
                    or uses.get(a) != 1 or a in keep or b not in inits):
                continue
            bias, weight = inits[b], inits.get(conv.input[1])
            if (weight is None or bias.shape != (1, weight.shape[0], 1, 1)
                    or uses.get(b) != 1):
                continue
            name = b + "/conv_bias"
            inits[name] = bias.reshape(-1)
            conv.input.append(name)
            conv.output = list(n.output)
            dropped.add(id(n))
            break
    return [n for n in nodes if id(n) not in dropped]


class OnnxGraph(nn.Module):
    """An ONNX graph as a torch module: float initialisers are buffers (so `.to()`,
    `.half()` move them), shape constants stay host tensors, and `forward` runs the
    nodes in order. `metadata` holds the model's metadata_props (the recogniser's
    character list is there, under "character")."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        super().__init__()
        graph = model.graph
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.metadata: dict[str, str] = {p.key: p.value for p in model.metadata_props}
        inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        nodes, alias = _nodes(graph)
        resolved = [_resolve(alias, o.name) for o in graph.output]
        nodes = _fold_conv_bias(nodes, inits, set(resolved))
        used = {i for n in nodes for i in n.input}

        host: set[str] = set()
        for n in nodes:
            for pos in _HOST_INPUTS.get(n.op_type, ()):
                if pos < len(n.input) and n.input[pos]:
                    host.add(n.input[pos])

        slots: dict[str, int] = {}

        def slot(name: str) -> int:
            return slots.setdefault(name, len(slots))

        self.input_slots = [slot(i.name) for i in graph.input if i.name not in inits]
        self._buffer_slots: list[tuple[int, str]] = []
        self._host_values: list[tuple[int, torch.Tensor]] = []
        for k, (name, array) in enumerate(inits.items()):
            if name not in used:
                continue  # folded away
            tensor = torch.from_numpy(np.array(array, copy=True))
            if name in host or not tensor.is_floating_point():
                self._host_values.append((slot(name), tensor))  # shape arithmetic
            else:
                key = f"init_{k}"
                self.register_buffer(key, tensor)
                self._buffer_slots.append((slot(name), key))
        self._steps: list[tuple[Op, list[int | None], list[int]]] = []
        self.op_types: list[str] = []
        for n in nodes:
            factory = OPS.get(n.op_type)
            if factory is None:
                raise NotImplementedError(f"ONNX op {n.op_type} is not in udfs.ppocr_torch.OPS")
            fn = factory({**n.attrs, "_opset": opset}, n)
            ins: list[int | None] = [slot(i) if i else None for i in n.input]
            while ins and ins[-1] is None:
                ins.pop()
            self._steps.append((fn, ins, [slot(o) for o in n.output]))
            self.op_types.append(n.op_type)
        self.output_slots = [slots[name] for name in resolved]
        self._n_slots = len(slots)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        env: list[Any] = [None] * self._n_slots
        buffers = self._buffers
        dtype = None
        for s, key in self._buffer_slots:
            env[s] = buffers[key]
            if dtype is None:
                dtype = buffers[key].dtype
        for s, value in self._host_values:
            env[s] = value
        for s, x in zip(self.input_slots, inputs, strict=True):
            env[s] = x.to(dtype) if dtype is not None and x.is_floating_point() else x
        for fn, ins, outs in self._steps:
            result = fn(*[None if i is None else env[i] for i in ins])
            if len(outs) == 1:
                env[outs[0]] = result
            else:
                for s, r in zip(outs, result, strict=False):
                    env[s] = r
        outputs = tuple(env[s] for s in self.output_slots)
        return outputs[0] if len(outputs) == 1 else outputs


def convert_onnx(path: str | Path) -> OnnxGraph:
    """Read an ONNX file and build its torch module (CPU, float32, eval mode)."""
    import onnx

    return OnnxGraph(onnx.load(str(path))).eval()


def load_torch_ppocr(onnx_path: str | Path, device: Any = "cpu",
                     dtype: torch.dtype = torch.float32) -> OnnxGraph:
    """The torch module of a PP-OCR ONNX model on `device`, converted at first use and
    then cached for the worker (`udfs.worker_cache`): one conversion per process and
    model file, however many spotters or tasks ask for it."""
    path = Path(onnx_path).resolve()
    stat = path.stat()
    key = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
           "device": str(torch.device(device)), "dtype": str(dtype)}

    def build() -> OnnxGraph:
        module = convert_onnx(path).to(device=torch.device(device))
        return module.to(dtype) if dtype != torch.float32 else module

    return worker_cached("ppocr_torch", key, build)
