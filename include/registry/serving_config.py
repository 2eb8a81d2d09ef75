"""TensorFlow Serving's `models.config`: every model under a serving root, its policy and labels.

Rendered from the manifests' heads (include/registry/store.py): labels, policy and the newest published
versions, so rendering reads a few small files per model whatever its number of versions. Rewritten
atomically after each publish and label move, for `tensorflow_model_server --model_config_file`.
"""

from __future__ import annotations

from pathlib import Path

from include.durable import locked, write_text_atomic
from include.registry.store import MANIFEST_FILE, is_published, read_head

MODELS_CONFIG_FILE = "models.config"


def render_models_config(serving_root: Path) -> str:
    """Returns TF Serving's ModelServerConfig (text proto) for every model under the root."""
    blocks = []
    for model_dir in sorted(p for p in Path(serving_root).iterdir() if (p / MANIFEST_FILE).is_file()):
        head = read_head(model_dir)
        newest = head["newest"]
        if not newest:
            continue
        labels = {
            k: v for k, v in sorted(head["labels"].items()) if v in newest or is_published(model_dir, v)
        }
        blocks.append(
            _model_config_block(head["model"], model_dir.resolve(), newest, labels, head["serving"])
        )
    return "model_config_list {\n" + "".join(blocks) + "}\n"


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
    """Regenerates `<serving_root>/models.config` atomically under the root's lock."""
    serving_root = Path(serving_root)
    with locked(serving_root):
        for stale in serving_root.glob(f".{MODELS_CONFIG_FILE}.*.tmp"):  # a crashed writer's
            stale.unlink(missing_ok=True)
        path = serving_root / MODELS_CONFIG_FILE
        write_text_atomic(path, render_models_config(serving_root))
    return path
