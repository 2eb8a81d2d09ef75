"""Does the TF Serving image of docker-compose.yml read what the project exports? Its TensorFlow says.

docker-compose.yml's `serving` profile pins `tensorflow/serving:X.Y.Z`, a model server built on
TensorFlow X.Y, while the project exports with requirements.txt's TensorFlow. With no Docker
engine at hand, this check loads an exported version the way the model server's SavedModel
loader does, through the TensorFlow C API of the `tensorflow-cpu==X.Y.Z` wheel
(`libtensorflow_cc.so.2`: TF_LoadSessionFromSavedModel with the tag `serve`, main op included),
and runs one signature once with TF_SessionRun. The wheel lives in a side environment,
build/serving-tf-X.Y.Z/ (uv; the wheel alone, its Python dependencies are not needed), created
once per machine; the C API runs in a process of that environment's Python, since two
TensorFlow runtimes cannot share one process.

Usage: python -m tools.check_serving_image VERSION_DIR [--signature KEY]
The input is the signature's warmup request in the version's assets.extra/ (what TF Serving
replays when it loads the version); prints the TensorFlow version and the signature's outputs.

The part that runs in the side environment (`python check_serving_image.py --c-api ...`) uses
only the standard library (ctypes), and the module imports nothing else at the top.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
SERVING_SERVICE = "tensorflow-serving"
SERVING_REPOSITORY = "tensorflow/serving"
#: Where the side environments live: build/serving-tf-<version>/ (git-ignored, out of the Docker context).
SIDE_ENV_ROOT = PROJECT_ROOT / "build"
SERVE_TAG = "serve"
C_API_LIBRARY = "libtensorflow_cc.so.2"
#: The file in a side environment that says it is complete, holding the requirement installed.
STAMP = ".installed"


# --- in the project's environment -------------------------------------------------------------


def serving_image(compose_file: Path = COMPOSE_FILE) -> str:
    """Returns the image of the compose file's TF Serving service (`tensorflow/serving:X.Y.Z`)."""
    import yaml

    return yaml.safe_load(compose_file.read_text())["services"][SERVING_SERVICE]["image"]


def tensorflow_version(image: str) -> str:
    """Returns the TensorFlow release of a TF Serving image (`tensorflow/serving:2.20.0` -> 2.20.0).

    TF Serving's releases carry the number of the TensorFlow release they are built on.
    """
    match = re.fullmatch(rf"{re.escape(SERVING_REPOSITORY)}:(\d+\.\d+\.\d+)", image)
    if not match:
        raise ValueError(f"{image!r}: expected {SERVING_REPOSITORY}:X.Y.Z, a pinned CPU release")
    return match.group(1)


def side_env(version: str, root: Path = SIDE_ENV_ROOT) -> Path:
    """Returns build/serving-tf-<version>/, a venv holding the tensorflow-cpu==<version> wheel.

    Created once (uv venv, uv pip install --no-deps) and reused while its stamp names the same
    requirement; two processes creating it at once take turns on a lock file. Raises
    RuntimeError, with uv's output, when the install fails (no network, no such release).
    """
    import fcntl

    env = root / f"serving-tf-{version}"
    requirement = f"tensorflow-cpu=={version}"
    if _complete(env, requirement):
        return env
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".serving-tf-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(env, requirement):
            return env
        shutil.rmtree(env, ignore_errors=True)
        uv, python = _uv(), str(env / "bin" / "python")
        for command in (
            [uv, "venv", "--quiet", "--python", sys.executable, str(env)],
            [uv, "pip", "install", "--quiet", "--python", python, "--no-deps", requirement],
        ):
            done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
            if done.returncode != 0:
                raise RuntimeError(
                    f"cannot create {env} ({' '.join(command[:3])} ... exited {done.returncode}):\n"
                    f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
                )
        c_api_library(env)  # the wheel ships the C API, or this is not the check it claims to be
        (env / STAMP).write_text(requirement + "\n")
    return env


def _complete(env: Path, requirement: str) -> bool:
    with contextlib.suppress(OSError):
        return (env / STAMP).read_text().strip() == requirement
    return False


def _uv() -> str:
    """Returns the uv of this environment (the Makefile installs it into .venv), else the one on PATH."""
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.is_file() else shutil.which("uv")
    if not found:
        raise RuntimeError("uv not found beside this Python or on PATH (`make venv` installs it)")
    return found


def c_api_library(env: Path) -> Path:
    """Returns the wheel's libtensorflow_cc.so.2 (the C API) in a side environment."""
    found = sorted(env.glob(f"lib/python*/site-packages/tensorflow/{C_API_LIBRARY}"))
    if not found:
        raise RuntimeError(f"{env}: no tensorflow/{C_API_LIBRARY} (the TensorFlow C API) in the wheel")
    return found[0]


@dataclass(frozen=True)
class SignatureRun:
    """What the C API of one TensorFlow answered: its version, the signature's method, its outputs."""

    tf_version: str
    signature: str
    method_name: str
    outputs: dict  # output key -> numpy array (strings as bytes objects)


def run_signature(env: Path, version_dir: Path, signature: str, feeds: dict) -> SignatureRun:
    """Runs `signature` of the SavedModel at `version_dir` once on `feeds` ({input key: array}).

    In a process of the side environment's Python, through the C API of its TensorFlow.
    """
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="check-serving-") as tmp:
        feeds_file = Path(tmp) / "feeds.json"
        feeds_file.write_text(json.dumps({key: _encode(np.asarray(value)) for key, value in feeds.items()}))
        command = [
            *(str(env / "bin" / "python"), "-I", str(Path(__file__).resolve()), "--c-api"),
            *(str(c_api_library(env)), str(version_dir), signature, str(feeds_file)),
        ]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")},
        )
    if done.returncode != 0:
        raise RuntimeError(f"the C API run exited {done.returncode}:\n{done.stderr[-5000:]}")
    answer = json.loads(done.stdout)
    outputs = {key: _decode(value) for key, value in answer["outputs"].items()}
    return SignatureRun(answer["tf_version"], signature, answer["method_name"], outputs)


def _encode(array) -> dict:
    if array.dtype.kind in "OSU":
        values = [v if isinstance(v, bytes) else str(v).encode() for v in array.ravel().tolist()]
        return {"dtype": "string", "shape": list(array.shape), "hex": [v.hex() for v in values]}
    return {"dtype": array.dtype.name, "shape": list(array.shape), "values": array.ravel().tolist()}


def _decode(value: dict):
    import numpy as np

    if value["dtype"] == "string":
        flat = np.empty(len(value["hex"]), dtype=object)
        flat[:] = [bytes.fromhex(h) for h in value["hex"]]
        return flat.reshape(value["shape"])
    return np.array(value["values"], dtype=value["dtype"]).reshape(value["shape"])


def warmup_feeds(version_dir: Path, signature: str) -> dict:
    """Returns the inputs of the version's warmup request for `signature`, as TF Serving feeds them."""
    from include.savedmodel.warmup import read_warmup_requests, request_feeds

    for log in read_warmup_requests(version_dir):
        key, feeds = request_feeds(log)
        if key == signature:
            return feeds
    raise LookupError(f"{version_dir}: no warmup request for the signature {signature!r} in assets.extra/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version_dir", type=Path, help="an exported SavedModel (a version dir)")
    parser.add_argument("--signature", default="serving_default", help="signature key (serving_default)")
    args = parser.parse_args(argv)
    image = serving_image()
    version = tensorflow_version(image)
    feeds = warmup_feeds(args.version_dir, args.signature)
    env = side_env(version)
    run = run_signature(env, args.version_dir.resolve(), args.signature, feeds)
    print(f"{image}: TensorFlow {run.tf_version}'s C API ({c_api_library(env)})")
    print(f"loaded {args.version_dir} (tag {SERVE_TAG!r}) and ran {run.signature} ({run.method_name})")
    print("on its warmup request: " + ", ".join(f"{k} {_describe(v)}" for k, v in sorted(feeds.items())))
    for key, value in sorted(run.outputs.items()):
        print(f"{key} {_describe(value)}:")
        for row in value.tolist() if value.ndim else [value.item()]:
            print("  " + json.dumps(_printable(row)))
    if run.tf_version != version:
        print(f"the side environment's TensorFlow is {run.tf_version}, not {version}", file=sys.stderr)
        return 1
    return 0


def _describe(array) -> str:
    return f"{'string' if array.dtype == object else array.dtype.name}{list(array.shape)}"


def _printable(value):
    if isinstance(value, list):
        return [_printable(item) for item in value]
    return value.decode(errors="replace") if isinstance(value, bytes) else value


# --- in the side environment: the TensorFlow C API through ctypes, standard library only ------

#: TF_DataType codes (tensorflow/c/tf_datatype.h) and the struct format of one element.
TF_DTYPES = {
    "float32": (1, "f"),
    "float64": (2, "d"),
    "int32": (3, "i"),
    "uint8": (4, "B"),
    "int16": (5, "h"),
    "int8": (6, "b"),
    "string": (7, None),
    "int64": (9, "q"),
    "bool": (10, "?"),
}
#: sizeof(TF_TString) (tsl/platform/ctstring_internal.h): a string tensor's element.
TF_TSTRING_SIZE = 24


class _TFOutput(ctypes.Structure):
    _fields_ = (("oper", ctypes.c_void_p), ("index", ctypes.c_int))


class _TFBuffer(ctypes.Structure):
    _fields_ = (("data", ctypes.c_void_p), ("length", ctypes.c_size_t), ("deallocator", ctypes.c_void_p))


def _c_api(library: str) -> ctypes.CDLL:
    """Returns the C API library with the signatures of the functions used here declared."""
    lib = ctypes.CDLL(library)
    p, i, i64, size = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_size_t
    outputs, pointers = ctypes.POINTER(_TFOutput), ctypes.POINTER(ctypes.c_void_p)
    functions = {
        "TF_Version": (ctypes.c_char_p, []),
        "TF_NewStatus": (p, []),
        "TF_GetCode": (i, [p]),
        "TF_Message": (ctypes.c_char_p, [p]),
        "TF_NewGraph": (p, []),
        "TF_NewSessionOptions": (p, []),
        "TF_NewBuffer": (ctypes.POINTER(_TFBuffer), []),
        "TF_LoadSessionFromSavedModel": (
            p,
            [p, p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), i, p, ctypes.POINTER(_TFBuffer), p],
        ),
        "TF_GraphOperationByName": (p, [p, ctypes.c_char_p]),
        "TF_AllocateTensor": (p, [i, ctypes.POINTER(i64), i, size]),
        "TF_TensorData": (p, [p]),
        "TF_TensorType": (i, [p]),
        "TF_NumDims": (i, [p]),
        "TF_Dim": (i64, [p, i]),
        "TF_TensorElementCount": (i64, [p]),
        "TF_TensorByteSize": (size, [p]),
        "TF_StringInit": (None, [p]),
        "TF_StringCopy": (None, [p, ctypes.c_char_p, size]),
        "TF_StringGetDataPointer": (p, [p]),
        "TF_StringGetSize": (size, [p]),
        "TF_SessionRun": (
            None,
            # session, run_options, inputs, input_values, ninputs, outputs, output_values, noutputs,
            # target_opers, ntargets, run_metadata, status
            [p, p, outputs, pointers, i, outputs, pointers, i, pointers, i, p, p],
        ),
        "TF_DeleteTensor": (None, [p]),
        "TF_CloseSession": (None, [p, p]),
        "TF_DeleteSession": (None, [p, p]),
    }
    for name, (restype, argtypes) in functions.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Returns (field number, value) of a protobuf message: varints as ints, length-delimited as bytes."""
    fields, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            continue
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    return fields


def _map(entries: list[bytes]) -> dict[str, bytes]:
    """Returns a protobuf map<string, message> from its entries (key = field 1, value = field 2)."""
    result = {}
    for entry in entries:
        fields = dict(_fields(entry))
        result[fields.get(1, b"").decode()] = fields.get(2, b"")
    return result


def _signature(meta_graph_def: bytes, key: str) -> tuple[str, dict, dict]:
    """Returns (method name, {input: (tensor name, dtype)}, {output: ...}) of a MetaGraphDef's signature.

    MetaGraphDef.signature_def = 5; SignatureDef inputs = 1, outputs = 2, method_name = 3;
    TensorInfo name = 1, dtype = 2 (tensorflow/core/protobuf/meta_graph.proto).
    """
    signatures = _map([v for n, v in _fields(meta_graph_def) if n == 5])
    if key not in signatures:
        raise LookupError(f"no signature {key!r} (the SavedModel has {sorted(signatures)})")
    fields = _fields(signatures[key])

    def tensors(number: int) -> dict[str, tuple[str, int]]:
        result = {}
        for name, info in _map([v for n, v in fields if n == number]).items():
            tensor_info = dict(_fields(info))
            if 1 not in tensor_info:
                raise ValueError(f"signature {key!r}: {name!r} is not a dense tensor (sparse or composite)")
            result[name] = (tensor_info[1].decode(), tensor_info.get(2, 0))
        return result

    method = b"".join(v for n, v in fields if n == 3).decode()
    return method, tensors(1), tensors(2)


class _Session:
    """A SavedModel loaded by the C API (TF_LoadSessionFromSavedModel, tag `serve`)."""

    def __init__(self, lib: ctypes.CDLL, export_dir: str) -> None:
        self.lib = lib
        self.status = lib.TF_NewStatus()
        self.graph = lib.TF_NewGraph()
        meta = lib.TF_NewBuffer()
        tags = (ctypes.c_char_p * 1)(SERVE_TAG.encode())
        options = lib.TF_NewSessionOptions()
        self.session = lib.TF_LoadSessionFromSavedModel(
            options, None, export_dir.encode(), tags, 1, self.graph, meta, self.status
        )
        self.check(f"TF_LoadSessionFromSavedModel({export_dir}, tags=[{SERVE_TAG!r}])")
        self.meta_graph_def = ctypes.string_at(meta.contents.data, meta.contents.length)

    def check(self, what: str) -> None:
        if self.lib.TF_GetCode(self.status) != 0:
            raise RuntimeError(f"{what}: {self.lib.TF_Message(self.status).decode(errors='replace')}")

    def output(self, tensor_name: str) -> _TFOutput:
        op_name, _, index = tensor_name.partition(":")
        op = self.lib.TF_GraphOperationByName(self.graph, op_name.encode())
        if not op:
            raise LookupError(f"the loaded graph has no operation {op_name!r}")
        return _TFOutput(op, int(index or 0))

    def tensor(self, value: dict, dtype_code: int):
        lib = self.lib
        code, fmt = TF_DTYPES[value["dtype"]]
        if code != dtype_code:
            raise TypeError(f"a {value['dtype']} input for a tensor of TF_DataType {dtype_code}")
        shape = value["shape"]
        dims = (ctypes.c_int64 * len(shape))(*shape)
        if fmt is None:
            strings = [bytes.fromhex(h) for h in value["hex"]]
            tensor = lib.TF_AllocateTensor(code, dims, len(shape), TF_TSTRING_SIZE * len(strings))
            base = lib.TF_TensorData(tensor)
            for i, string in enumerate(strings):
                element = base + i * TF_TSTRING_SIZE
                lib.TF_StringInit(element)
                lib.TF_StringCopy(element, string, len(string))
            return tensor
        data = struct.pack(f"<{len(value['values'])}{fmt}", *value["values"])
        tensor = lib.TF_AllocateTensor(code, dims, len(shape), len(data))
        ctypes.memmove(lib.TF_TensorData(tensor), data, len(data))
        return tensor

    def value(self, tensor) -> dict:
        lib = self.lib
        code = lib.TF_TensorType(tensor)
        name, fmt = next((n, f) for n, (c, f) in TF_DTYPES.items() if c == code)
        shape = [lib.TF_Dim(tensor, d) for d in range(lib.TF_NumDims(tensor))]
        count, base = lib.TF_TensorElementCount(tensor), lib.TF_TensorData(tensor)
        if fmt is None:
            elements = (base + i * TF_TSTRING_SIZE for i in range(count))
            strings = [
                ctypes.string_at(lib.TF_StringGetDataPointer(e), lib.TF_StringGetSize(e)) for e in elements
            ]
            return {"dtype": name, "shape": shape, "hex": [s.hex() for s in strings]}
        data = ctypes.string_at(base, lib.TF_TensorByteSize(tensor))
        return {"dtype": name, "shape": shape, "values": list(struct.unpack(f"<{count}{fmt}", data))}

    def run(self, inputs: dict, feeds: dict, outputs: dict) -> dict:
        """Runs the graph once: {input key: (tensor name, dtype)} fed `feeds`; returns {output key: value}."""
        lib = self.lib
        if set(feeds) != set(inputs):
            raise KeyError(f"the signature takes {sorted(inputs)}, the feeds are {sorted(feeds)}")
        in_keys, out_keys = sorted(inputs), sorted(outputs)
        in_tensors = [self.tensor(feeds[k], inputs[k][1]) for k in in_keys]
        in_ops = (_TFOutput * len(in_keys))(*(self.output(inputs[k][0]) for k in in_keys))
        out_ops = (_TFOutput * len(out_keys))(*(self.output(outputs[k][0]) for k in out_keys))
        in_values = (ctypes.c_void_p * len(in_keys))(*in_tensors)
        out_values = (ctypes.c_void_p * len(out_keys))()
        lib.TF_SessionRun(
            *(self.session, None, in_ops, in_values, len(in_keys), out_ops, out_values, len(out_keys)),
            *(None, 0, None, self.status),
        )
        for tensor in in_tensors:
            lib.TF_DeleteTensor(tensor)
        self.check("TF_SessionRun")
        answer = {key: self.value(out_values[i]) for i, key in enumerate(out_keys)}
        for i in range(len(out_keys)):
            lib.TF_DeleteTensor(out_values[i])
        return answer

    def close(self) -> None:
        self.lib.TF_CloseSession(self.session, self.status)
        self.lib.TF_DeleteSession(self.session, self.status)


def c_api_main(library: str, export_dir: str, signature: str, feeds_file: str) -> None:
    """Loads `export_dir` with the C API of `library`, runs `signature` on the feeds; prints JSON."""
    lib = _c_api(library)
    session = _Session(lib, export_dir)
    method, inputs, outputs = _signature(session.meta_graph_def, signature)
    answer = session.run(inputs, json.loads(Path(feeds_file).read_text()), outputs)
    session.close()
    print(json.dumps({"tf_version": lib.TF_Version().decode(), "method_name": method, "outputs": answer}))


if __name__ == "__main__":
    if sys.argv[1:2] != ["--c-api"]:
        sys.exit(main())
    try:
        c_api_main(*sys.argv[2:])
    except (RuntimeError, LookupError, TypeError, ValueError) as err:  # what the C API or the feeds refused
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
