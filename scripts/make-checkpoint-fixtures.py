#!/usr/bin/python3
"""Regenerate the checkpoint-reader fixtures in test/fixtures/checkpoints/ with real PyTorch.

Run from the project root:  /usr/bin/python3 scripts/make-checkpoint-fixtures.py
Needs torch (Debian's python3-torch is enough); the TypeScript tests only read the files written
here and never need Python. Every file is a few KB. expected.json records, per fixture and key, the
shape, storage dtype, all values (flattened, row-major) and their sum, as PyTorch reads them.

The hostile fixtures (os-system.*) are written byte by byte and are never unpickled here.
"""
import io
import json
import math
import os
import pickle
import struct
import sys
import zipfile

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "test", "fixtures", "checkpoints")
LEYOLO = os.path.join(ROOT, "..", "shared", "fixtures", "weights", "LeYOLONano.pt")

DTYPE_NAMES = {
    torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32", torch.float64: "float64",
    torch.int64: "int64", torch.int32: "int32", torch.uint8: "uint8", torch.bool: "bool",
}


def path(name):
    return os.path.join(OUT, name)


def json_float(x):
    """JSON has no infinities: write them as the strings JavaScript's Number() reads back."""
    return x if math.isfinite(x) else ("Infinity" if x > 0 else "-Infinity")


def describe(t):
    """shape, dtype, every value (int64 as strings: JSON numbers lose bits past 2^53) and the float64 sum."""
    flat = t.detach().reshape(-1)
    if t.dtype == torch.int64:
        values = [str(int(v)) for v in flat.tolist()]
        total = str(int(flat.sum()))
    elif t.dtype == torch.bool:
        values = [int(v) for v in flat.tolist()]
        total = int(flat.sum())
    elif t.dtype.is_floating_point:
        values = [json_float(v) for v in flat.float().tolist()]
        total = json_float(float(flat.double().sum()))
    else:
        values = [int(v) for v in flat.tolist()]
        total = int(flat.long().sum())
    return {"shape": list(t.shape), "dtype": DTYPE_NAMES[t.dtype], "values": values, "sum": total}


def describe_all(sd):
    return {k: describe(v) for k, v in sd.items()}


def every_dtype():
    return {
        # fp16: ordinary values, the largest finite, the smallest subnormal, a negative zero, ±inf
        "half": torch.tensor([[0.5, -1.25, 65504.0], [2.0 ** -24, -0.0, 3.140625]], dtype=torch.float16),
        "half_inf": torch.tensor([float("inf"), float("-inf")], dtype=torch.float16),
        "bfloat": torch.tensor([1.0, -2.5, 3.0e38, 1.0e-30], dtype=torch.bfloat16),
        "float": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7,
        "double": torch.tensor([1.0 / 3.0, -2.0e-5, 12345.678], dtype=torch.float64),
        "long": torch.tensor([0, -1, 2 ** 53 + 1, -(2 ** 62) - 3, 7], dtype=torch.int64),
        "int": torch.tensor([[-2147483648, 2147483647], [0, -5]], dtype=torch.int32),
        "byte": torch.tensor([0, 1, 127, 128, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, False, True], dtype=torch.bool),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }


def views():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "base": base,
        "transposed": base.t(),            # strides (1, 6)
        "block": base[1:3, 2:5],           # storage offset 8, strides (6, 1)
        "column": base[:, 3],              # storage offset 3, stride 6
        "strided": base[::2, ::3],         # strides (12, 3)
        "row": base[2],                    # contiguous slice at offset 12
    }


class Scaled(nn.Module):
    """A user module with a parameter that is None, a child, and a non-persistent buffer."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([1.5, -0.5]))
        self.register_parameter("unused", None)
        self.register_buffer("scratch", torch.zeros(2), persistent=False)
        self.head = nn.Linear(4, 2)


def nested_module():
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),
        nn.BatchNorm2d(4, eps=1e-3, momentum=0.03),
        nn.ReLU(),
        nn.Sequential(nn.Flatten(), nn.Linear(4, 4)),
    )
    with torch.no_grad():
        m[1].running_mean.copy_(torch.tensor([0.1, -0.2, 0.3, -0.4]))
        m[1].running_var.copy_(torch.tensor([1.0, 2.0, 0.5, 0.25]))
        m[1].num_batches_tracked.fill_(42)
    return m.eval()


def write_safetensors(tensors, metadata):
    """The format by hand: u64 LE header length, JSON header, then little-endian data (8-byte aligned header)."""
    names = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
             torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else t.numpy().astype("uint8").tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    with open(path("tensors.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def fixed_time(name, compression=zipfile.ZIP_STORED):
    """A zip entry dated like torch's (1980), so regenerated fixtures are byte-identical."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = compression
    return info


def rezip(src, dst, edit=None, compression=zipfile.ZIP_STORED, extra=None):
    """Copy a zip entry by entry, optionally changing entries (edit(name, bytes) -> bytes or None to drop)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if edit:
                data = edit(info.filename, data)
            if data is not None:
                zout.writestr(fixed_time(info.filename, compression), data)
        for name, data in (extra or {}).items():
            zout.writestr(fixed_time(name, compression), data)


def archive_prefix(file):
    with zipfile.ZipFile(file) as z:
        return min((n[: -len("data.pkl")] for n in z.namelist() if n.endswith("data.pkl")), key=len)


def byteswapper(file):
    """An edit for rezip that reverses the bytes of every element of every storage."""
    item_size = {}

    class Keys(pickle.Unpickler):
        def persistent_load(self, pid):  # ('storage', torch.HalfStorage, key, location, numel)
            item_size[pid[2]] = torch.empty(0, dtype=pid[1].dtype).element_size()
            return None

        def find_class(self, module, name):
            if module == "torch._utils":
                return lambda *args: None
            return super().find_class(module, name)

    prefix = archive_prefix(file)
    with zipfile.ZipFile(file) as z:
        Keys(io.BytesIO(z.read(prefix + "data.pkl"))).load()

    def swap(name, data):
        n = item_size.get(name.rsplit("/", 1)[-1], 1) if "/data/" in name else 1
        return data if n == 1 else b"".join(data[i:i + n][::-1] for i in range(0, len(data), n))

    return swap


def hostile_pickle():
    """`posix.system('echo pwned')` as protocol-2 opcodes: GLOBAL, the argument tuple, REDUCE, STOP."""
    return b"\x80\x02cposix\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03."


def leyolo_expected():
    """LeYOLO-Nano as PyTorch reads it: ultralytics classes stand in as plain nn.Module subclasses."""
    import importlib.abc
    import importlib.machinery
    import types

    class StubModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        """Any `ultralytics.*` module imports as an empty module whose classes are plain nn.Module subclasses."""

        def find_spec(self, name, path=None, target=None):
            if name == "ultralytics" or name.startswith("ultralytics."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            module = types.ModuleType(spec.name)
            classes = {}
            module.__path__ = []
            module.__getattr__ = lambda attr: classes.setdefault(attr, type(attr, (nn.Module,), {"__module__": spec.name}))
            return module

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, StubModules())
    ckpt = torch.load(LEYOLO, map_location="cpu")
    model = ckpt["model"]
    sd = model.state_dict()
    picks = ["model.0.c.weight", "model.0.bn.running_var", "model.3.layers.2.bias", "model.14.cv1.conv.weight",
             "model.35.cv2.0.3.bias", "model.35.dfl.conv.weight"]
    floats = [v.double() for v in sd.values() if v.dtype.is_floating_point]
    return {
        "keys": [[k, list(v.shape), DTYPE_NAMES[v.dtype]] for k, v in sd.items()],
        "picks": {k: {"first": [float(x) for x in sd[k].reshape(-1)[:8].float().tolist()], "sum": float(sd[k].double().sum())}
                  for k in picks},
        "float_sum": float(sum(v.sum() for v in floats)),
        "float_abs_sum": float(sum(v.abs().sum() for v in floats)),
        "parameters": sum(p.numel() for p in model.parameters()),
        "stride": [float(x) for x in model.stride.tolist()],
        "stride_dtype": DTYPE_NAMES[model.stride.dtype],
        "bn_eps": sorted({m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)}),
        "batchnorms": sum(1 for m in model.modules() if isinstance(m, nn.BatchNorm2d)),
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {}

    sd = every_dtype()
    torch.save(sd, path("dtypes.pt"))
    expected["dtypes.pt"] = describe_all(sd)
    torch.save(sd, path("dtypes-protocol4.pt"), pickle_protocol=4)
    torch.save(sd, path("dtypes-protocol5.pt"), pickle_protocol=5)

    v = views()
    torch.save(v, path("views.pt"))
    expected["views.pt"] = describe_all(v)

    m = nested_module()
    torch.save(m, path("module.pt"))
    expected["module.pt"] = {"keys": describe_all(m.state_dict()), "bn_eps": {"1": m[1].eps}}

    s = Scaled()  # pickled as __main__.Scaled: the reader needs no importable class
    torch.save(s, path("user-module.pt"))
    expected["user-module.pt"] = {"keys": describe_all(s.state_dict())}

    small = {"weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "bias": torch.tensor([0.5, -0.5])}
    torch.save({"epoch": 3, "model": small, "optimizer": None}, path("wrapped.pt"))
    expected["wrapped.pt"] = describe_all(small)

    st = {k: t for k, t in every_dtype().items() if k not in ("scalar", "empty")}
    st["matrix"] = torch.arange(6, dtype=torch.float32).reshape(3, 2)
    write_safetensors(st, {"format": "pt", "note": "fovea fixture"})
    expected["tensors.safetensors"] = describe_all(st)

    torch.save(small, path("legacy.pt"), _use_new_zipfile_serialization=False)

    with open(path("os-system.pkl"), "wb") as f:
        f.write(hostile_pickle())
    with zipfile.ZipFile(path("os-system.pt"), "w") as z:
        z.writestr(fixed_time("archive/data.pkl"), hostile_pickle())
        z.writestr(fixed_time("archive/version"), "3\n")

    # Damaged archives, each with a valid zip directory (zipfile recomputes the CRCs).
    rezip(path("dtypes.pt"), path("short-storage.pt"),
          edit=lambda name, data: data[: len(data) // 2] if name.endswith("/data/0") else data)
    rezip(path("dtypes.pt"), path("no-data-pkl.pt"), edit=lambda name, data: None if name.endswith("data.pkl") else data)
    rezip(path("module.pt"), path("deflated.pt"), compression=zipfile.ZIP_DEFLATED)

    # Big-endian storages (what a torch>=2.1 file from a big-endian host holds), from the dtypes fixture.
    rezip(path("dtypes.pt"), path("bigendian.pt"), edit=byteswapper(path("dtypes.pt")), extra={archive_prefix(path("dtypes.pt")) + "byteorder": "big"})

    if os.path.exists(LEYOLO):
        with open(path("leyolo-nano-expected.json"), "w") as f:
            json.dump(leyolo_expected(), f, separators=(",", ":"))
    else:
        print(f"skipping LeYOLO expectations: {LEYOLO} not found", file=sys.stderr)

    with open(path("expected.json"), "w") as f:
        json.dump(expected, f, indent=1, allow_nan=False, default=lambda x: None)
    print(f"torch {torch.__version__}: wrote", ", ".join(sorted(os.listdir(OUT))))


if __name__ == "__main__":
    main()
