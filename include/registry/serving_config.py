"""TensorFlow Serving's `models.config`: every model under a serving root, its policy and labels.

Rendered from the manifests' heads (include/registry/store.py): labels, policy and the newest published
versions, so rendering reads a few small files per model whatever its number of versions. Only
versions whose dirs are on disk and complete are named: a version dir deleted (or damaged) by hand
drops out at the next publish or label move, and its label with it, though the manifest keeps both.
Rewritten atomically after each publish and label move, for `tensorflow_model_server
--model_config_file`.

Read back (the Models page) with TF Serving's own `ModelServerConfig` proto, not by pattern
matching. Its module needs protobuf only, no TensorFlow (about 0.1 s to import on this project's
machines), and is imported on the first read, so the Airflow API server pays for it only when a
version page is shown.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from include.durable import locked, write_text_atomic
from include.errors import RegistryError
from include.registry.store import (
    MODELS_CONFIG_FILE,
    model_dirs,
    read_head,
    read_version_entry,
    serving_root_problem,
    version_dirs,
    version_path,
    version_problems,
)
from include.storage import objects
from include.storage.paths import as_path, is_remote, uri_of

if TYPE_CHECKING:
    from tensorflow_serving.config.model_server_config_pb2 import ModelConfig, ModelServerConfig

log = logging.getLogger(__name__)

__all__ = [
    "MODELS_CONFIG_FILE",
    "model_config",
    "read_models_config",
    "render_models_config",
    "write_models_config",
]


def render_models_config(serving_root: Path) -> str:
    """Returns TF Serving's ModelServerConfig (text proto) for every model under the root."""
    blocks = []
    for model_dir in model_dirs(serving_root):
        head = read_head(model_dir)
        newest = servable_newest(model_dir, head)
        if not newest:
            continue
        labels = {
            k: v
            for k, v in sorted(head["labels"].items())
            if v is not None and (v in newest or _servable(model_dir, v))
        }
        blocks.append(
            _model_config_block(head["model"], _base_path(model_dir), newest, labels, head["serving"])
        )
    return "model_config_list {\n" + "".join(blocks) + "}\n"


def servable_newest(model_dir: Path, head: dict) -> list[int]:
    """Returns the head's newest published versions whose dirs are on disk and complete, oldest first.

    When one of them is gone (deleted by hand), the newest num_latest servable ones are looked up
    on disk instead: a listing and a few entries, only then.
    """
    wanted = max(1, int(head["serving"].get("num_latest", 1)))
    newest = head["newest"][-wanted:]  # a single-file manifest's head lists every published version
    kept = [v for v in newest if _complete(version_path(model_dir, v))]
    if len(kept) == len(newest):
        return newest
    gone = sorted(set(newest) - set(kept))
    log.warning("%s: versions %s are published but their dirs are gone or incomplete", model_dir, gone)
    found: list[int] = []
    for version in reversed(version_dirs(model_dir)):
        if len(found) == wanted:
            break
        if _servable(model_dir, version):
            found.append(version)
    return sorted(found)


def _servable(model_dir: Path, version: int) -> bool:
    """Returns whether a version is published and its dir is on disk and complete."""
    published = (read_version_entry(model_dir, version) or {}).get("status") == "published"
    return published and _complete(version_path(model_dir, version))


def _base_path(model_dir: Path) -> str:
    """Returns the model dir as TF Serving's base_path: an absolute path, or the bucket URI."""
    return str(model_dir) if is_remote(model_dir) else str(model_dir.resolve())


def _complete(version_dir: Path) -> bool:
    """Returns whether a version dir is complete (in a bucket: it has its saved_model.pb)."""
    return not version_problems(version_dir)


def _model_config_block(name: str, base_path: Path, newest: list[int], labels: dict, policy: dict) -> str:
    """Returns one `config { ... }` block (`newest`: at least the newest num_latest published versions).

    TF Serving only assigns labels to versions it has loaded, so with labels the `latest`
    policy is written as `specific` over the latest N plus every labelled version.
    """
    kind, num_latest = policy.get("version_policy", "latest"), int(policy.get("num_latest", 1))
    if kind == "all":
        policy_text = "all {}"
    else:
        chosen = set(newest[-num_latest:]) | set(labels.values())
        if kind == "latest" and not labels:
            policy_text = f"latest {{ num_versions: {num_latest} }}"
        else:
            policy_text = "specific { " + " ".join(f"versions: {v}" for v in sorted(chosen)) + " }"
    label_text = "".join(
        f'    version_labels {{ key: "{key}" value: {value} }}\n' for key, value in labels.items()
    )
    return (
        "  config {\n"
        f'    name: "{name}"\n'
        f'    base_path: "{base_path}"\n'
        '    model_platform: "tensorflow"\n'
        f"    model_version_policy {{ {policy_text} }}\n"
        f"{label_text}"
        "  }\n"
    )


def write_models_config(serving_root: Path) -> Path:
    """Regenerates `<serving_root>/models.config` atomically under the root's lock (making the root).

    Raises RegistryError, writing nothing, when the path is no serving root (a file, a model dir,
    a version dir).
    """
    serving_root = as_path(serving_root)
    problem = serving_root_problem(serving_root)
    if problem:
        raise RegistryError(
            f"{serving_root} {problem}: expected a serving root (the dir holding the model dirs and "
            f"{MODELS_CONFIG_FILE}); nothing was written"
        )
    if is_remote(serving_root):
        with locked(serving_root):
            path = serving_root / MODELS_CONFIG_FILE
            found = objects.stat(uri_of(path))
            text = render_models_config(serving_root).encode()
            if found is None:
                objects.write(uri_of(path), text, if_absent=True)
            else:  # the lease keeps other writers out; the condition catches one that lost it
                objects.write(uri_of(path), text, if_token=found.token)
        return path
    serving_root.mkdir(parents=True, exist_ok=True)
    with locked(serving_root):
        for stale in serving_root.glob(f".{MODELS_CONFIG_FILE}.*.tmp"):  # a crashed writer's
            stale.unlink(missing_ok=True)
        path = serving_root / MODELS_CONFIG_FILE
        write_text_atomic(path, render_models_config(serving_root))
    return path


def read_models_config(serving_root: Path) -> ModelServerConfig | None:
    """Returns `<serving_root>/models.config` parsed as TF Serving parses it (None if there is none).

    Raises RegistryError naming the file when it is not a valid ModelServerConfig text proto.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = as_path(serving_root) / MODELS_CONFIG_FILE
    try:
        if is_remote(path):  # one GET: a file object of an object replaced meanwhile reads torn
            found = objects.read_bytes(uri_of(path))
            if found is None:
                return None
            text = found.decode()
        else:
            text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise RegistryError(f"{path} cannot be read: {err}") from None
    try:
        return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as err:
        raise RegistryError(f"{path} is not a valid ModelServerConfig: {err}") from None


def model_config(config: ModelServerConfig | None, model: str) -> ModelConfig | None:
    """Returns the `config { ... }` of model `model` in a parsed models.config (None if absent)."""
    if config is None:
        return None
    return next((c for c in config.model_config_list.config if c.name == model), None)
