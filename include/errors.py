"""The project's exceptions: one base class, specific subclasses carrying the offending values."""

from __future__ import annotations

import re
from collections.abc import Sequence


class PipelineError(Exception):
    """Base class of every error this project raises on purpose."""

    #: True when retrying the same task cannot help (bad config, contract mismatch, ...).
    permanent = True


class ConfigError(PipelineError):
    """A pipeline YAML file is invalid; carries the file and one line per problem."""

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        details = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"invalid pipeline config {self.path}:\n{details}")


class ModelBuilderError(ConfigError):
    """The user's code named by `model.builder` raised while the model was imported, built or called.

    Carries the pipeline file, the builder's dotted path, what the pipeline was doing, and the
    original error's type and message (the original stays chained as `__cause__`, traceback and all).
    """

    def __init__(self, path: str, builder: str, doing: str, error: BaseException, hint: str = "") -> None:
        self.builder, self.doing = builder, doing
        self.error_type = type(error).__name__
        self.error_message = str(error)
        plain = re.sub(r"\x1b\[[0-9;]*m", "", self.error_message)  # Keras colours its messages
        detail = plain if len(plain) <= 2000 else plain[:2000] + " ..."
        problem = f"model.builder: {builder!r} raised {self.error_type} while {doing}: {detail}{hint}"
        super().__init__(path, [problem])
        # ConfigError's first line says "invalid pipeline config": here the config parsed, the code failed.
        self.args = (
            f"the model builder of pipeline config {self.path} failed (a retry runs the same code):\n"
            f"  - {problem}",
        )


class RunParamsError(PipelineError):
    """The params of a triggered run are invalid (bad version, force without reason, ...)."""


class NoDataError(PipelineError):
    """No training or evaluation data is available as of the run's date."""


class DataError(PipelineError):
    """A data partition holds something the declared features and label cannot read.

    Carries the file, the record index (None where the whole file is at fault) and the problem.
    """

    def __init__(self, path: str, problem: str, record: int | None = None) -> None:
        self.path, self.problem, self.record = str(path), problem, record
        where = f"{self.path}, record {record}" if record is not None else self.path
        super().__init__(f"bad training data in {where}: {problem}")


class DataCheckError(PipelineError):
    """The data checks blocked a run before training: its data broke an expectation or drifted.

    Carries the report (include/validate/data_checks.py) and the failing checks in words.
    """

    def __init__(self, report: dict, failed: Sequence[str]) -> None:
        self.report, self.failed = report, list(failed)
        lines = "\n".join(f"  - {line}" for line in self.failed)
        super().__init__(
            f"data checks blocked the run ({len(self.failed)} of {report['checked']} failed):\n{lines}"
        )


class ContractMismatchError(PipelineError):
    """The model's signatures differ from the signature contract declared in the YAML."""

    def __init__(self, diff: Sequence[str]) -> None:
        self.diff = list(diff)
        lines = "\n".join(f"  - {line}" for line in self.diff)
        super().__init__(f"signatures do not match the contract:\n{lines}")


class QualityGateError(PipelineError):
    """A metric is outside the bound set in the YAML; carries metric, value and bound."""

    def __init__(self, metric: str, value: float, bound: str, report: list[dict] | None = None) -> None:
        self.metric, self.value, self.bound = metric, value, bound
        self.report = report or []  # every check of the gate (include/validate/gate.py), when known
        super().__init__(f"quality gate failed: {metric}={value:.6f}, expected {bound}")


class IncompleteModelError(PipelineError):
    """A SavedModel directory is missing files or holds corrupted ones."""

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        super().__init__(f"incomplete SavedModel at {self.path}: {'; '.join(self.problems)}")


class ExportVerificationError(PipelineError):
    """The exported SavedModel does not load, or does not answer like the trained model."""

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        details = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"the exported SavedModel at {self.path} is refused, nothing published:\n{details}")


class RunRecordError(PipelineError):
    """A run record is missing, unreadable, or its config snapshot no longer matches its digest."""


class VersionConflictError(PipelineError):
    """A version already exists with different content and no overwrite was asked for."""

    def __init__(self, version_dir: str, existing: str, candidate: str) -> None:
        self.version_dir, self.existing, self.candidate = version_dir, existing, candidate
        super().__init__(
            f"version {version_dir} already holds different content "
            f"(sha256 {existing[:12]}, candidate {candidate[:12]}); "
            "trigger with force_publish=true and a force_reason to replace it"
        )


class InvalidPipelinesError(PipelineError):
    """One or more pipeline YAML files are invalid; raised once to list them all."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        self.errors = list(errors)
        blocks = "\n".join(
            f"{error.path}:\n" + "\n".join(f"  - {problem}" for problem in error.problems)
            for error in self.errors
        )
        super().__init__(f"{len(self.errors)} invalid pipeline file(s); their DAGs are not loaded:\n{blocks}")


class RegistryError(PipelineError):
    """A registry operation was refused (unknown version, incomplete dir, bad label, ...)."""


class StorageError(PipelineError):
    """Writing to the model store failed (disk full, I/O error); nothing partial is left behind."""

    permanent = False  # space may be freed; a retry can succeed


class ManifestError(RegistryError):
    """A registry file (manifest.json, a version entry, history.jsonl) is unreadable or inconsistent.

    Carries the file, what is wrong with it and the model dir whose registry can be rebuilt.
    """

    def __init__(self, path: str, problem: str, model_dir: str) -> None:
        self.path, self.problem, self.model_dir = str(path), problem, str(model_dir)
        super().__init__(
            f"damaged registry file {self.path}: {problem}; rebuild the registry from the version dirs "
            f"on disk with: python -m include.registry.cli rebuild {self.model_dir}"
        )


class PreflightError(PipelineError):
    """Before training, a storage path turned out unusable for publishing; carries the path and why."""

    def __init__(self, path: str, problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"storage preflight failed, nothing was trained: {self.path} {problem}")


class SignatureError(PipelineError):
    """A webhook request's signature is missing, malformed, stale or wrong (include/notify/signing.py)."""


class DeliveryError(PipelineError):
    """One try to deliver a notification failed; `permanent` when another try cannot help (HTTP 4xx)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        self.permanent = permanent
        super().__init__(message)
