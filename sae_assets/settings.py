"""Every environment variable the platform reads, in one place: its name, its default and what it does.

The package reads the environment only through this module (:func:`get` and the typed accessors below), and
always when called, never at import, so a variable set later (a test's ``monkeypatch``) is seen. Secrets that
Dagster resources take as ``dg.EnvVar`` (so the UI does not show them) use the names defined here.
``python -m sae_assets.settings`` prints the table of docs/configuration.md; ``tests/test_settings.py`` keeps the
two equal and fails when the package reads a variable that is not in :data:`SETTINGS`. Plain Python: no Dagster.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import overload

LAKE = "SAE_ASSETS_LAKE"
FILES = "SAE_ASSETS_FILES"
CATALOG = "SAE_ASSETS_CATALOG"
SAE_DROP = "SAE_ASSETS_SAE_DROP"
DEVICE = "SAE_ASSETS_DEVICE"
DTYPE = "SAE_ASSETS_DTYPE"
CORPUS = "SAE_ASSETS_CORPUS"
LABELLER_URL = "SAE_ASSETS_LABELLER_URL"
LABELLER_MODEL = "SAE_ASSETS_LABELLER_MODEL"
OPENAI_API_KEY = "OPENAI_API_KEY"
NEURONPEDIA_S3_URL = "NEURONPEDIA_S3_URL"
NEURONPEDIA_API_URL = "NEURONPEDIA_API_URL"
NEURONPEDIA_API_KEY = "NEURONPEDIA_API_KEY"
HF_TOKEN = "HF_TOKEN"
HF_ENDPOINT = "HF_ENDPOINT"
AUTOMATION = "SAE_ASSETS_AUTOMATION"
EXPLANATIONS_CRON = "SAE_ASSETS_EXPLANATIONS_CRON"
LAKE_MAINTENANCE_CRON = "SAE_ASSETS_LAKE_MAINTENANCE_CRON"
MIN_EXPLAINED_VARIANCE = "SAE_ASSETS_MIN_EXPLAINED_VARIANCE"
MIN_CE_LOSS_SCORE = "SAE_ASSETS_MIN_CE_LOSS_SCORE"
EXECUTOR = "SAE_ASSETS_EXECUTOR"
MAX_CONCURRENT = "SAE_ASSETS_MAX_CONCURRENT"
K8S_NAMESPACE = "SAE_ASSETS_K8S_NAMESPACE"
CELERY_BROKER = "SAE_ASSETS_CELERY_BROKER"
CELERY_BACKEND = "SAE_ASSETS_CELERY_BACKEND"
DAGSTER_HOME = "DAGSTER_HOME"
VIEWER_URL = "SAE_ASSETS_VIEWER_URL"
BUDGET = "SAE_ASSETS_BUDGET"
MODEL_CACHE = "SAE_ASSETS_MODEL_CACHE"
# deltalake's names for S3 access; the lake's S3 filesystem reads them when its storage_options do not.
AWS_SETTINGS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ALLOW_HTTP")

DEFAULT_DEVICE = "auto"
DEFAULT_DTYPE = "auto"
DEFAULT_LABELLER_MODEL = "gpt-4o-mini"
DEFAULT_AUTOMATION = "running"
DEFAULT_CRON = "0 3 * * 1"  # Mondays 03:00 UTC
DEFAULT_LAKE_MAINTENANCE_CRON = "0 4 * * 0"  # Sundays 04:00 UTC
DEFAULT_MIN_EXPLAINED_VARIANCE = 0.5
DEFAULT_MIN_CE_LOSS_SCORE = 0.5
DEFAULT_MODEL_CACHE = "~/.cache/sae-assets/models"
DEFAULT_VIEWER_URL = "http://127.0.0.1:8050"  # python -m sae_assets.viewer's default address
DEFAULT_LAKE_ROOT = "dagster_home/lake"  # relative to the working directory: the repository's dagster_home
BUDGET_PROFILES = ("cpu", "gpu")
EXECUTOR_KINDS = ("in_process", "multiprocess", "celery", "k8s")
DEFAULT_MAX_CONCURRENT = {"multiprocess": 2, "k8s": 8}
DEFAULT_CELERY_BROKER = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Setting:
    """One environment variable: ``default`` and ``help`` (one line) as docs/configuration.md's table shows them."""

    name: str
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(LAKE, f"`$DAGSTER_HOME/lake`, else `{DEFAULT_LAKE_ROOT}`",
            "lake root: a path or any deltalake URI (`s3://`, `gs://`, `az://`)"),
    Setting(FILES, "the lake root",
            "local directory for non-table files (trained SAE weights, exports); needed when the lake is remote"),
    Setting(CATALOG, "`sae_assets/catalog/catalog.yaml`", "the SAE catalog (a YAML file)"),
    Setting(SAE_DROP, "`$DAGSTER_HOME/sae_drop`, else `dagster_home/sae_drop`",
            "drop folder of SAELens directories `<model-key>/<layer>/` (catalog entries)"),
    Setting(DEVICE, f"`{DEFAULT_DEVICE}`", "`auto`, `cpu`, `cuda`, `cuda:N`"),
    Setting(DTYPE, f"`{DEFAULT_DTYPE}`",
            "`auto` (bf16 on a GPU that has it, else fp32), `float32`, `bfloat16`, `float16`"),
    Setting(CORPUS, "`offline:wiki-summaries`",
            "a Hugging Face dataset id (text column `text`), or the offline Wikipedia summaries"),
    Setting(LABELLER_URL, "unset (local SmolLM2)",
            "an OpenAI-compatible endpoint for labels (e.g. `http://127.0.0.1:8000/v1`)"),
    Setting(LABELLER_MODEL, f"`{DEFAULT_LABELLER_MODEL}`", "the model asked at that endpoint"),
    Setting(OPENAI_API_KEY, "unset", "bearer token for that endpoint (a secret: not shown in the UI)"),
    Setting(NEURONPEDIA_S3_URL, "`https://neuronpedia-datasets.s3.us-east-1.amazonaws.com`",
            "where Neuronpedia's explanation exports are read"),
    Setting(NEURONPEDIA_API_URL, "`https://www.neuronpedia.org`", "where Neuronpedia's API is read"),
    Setting(NEURONPEDIA_API_KEY, "unset", "sent as `x-api-key` to the API (a secret: not shown in the UI)"),
    Setting(HF_TOKEN, "unset", "for gated hub models (Gemma, Llama); read by huggingface_hub"),
    Setting(HF_ENDPOINT, "`https://huggingface.co`", "the hub (or a mirror of it) that models and SAELens releases are "
            "downloaded from; read by huggingface_hub"),
    Setting(AUTOMATION, f"`{DEFAULT_AUTOMATION}`",
            "`stopped`: sensors and schedules start stopped (turn them on in the UI)"),
    Setting(EXPLANATIONS_CRON, f"`{DEFAULT_CRON}`", "when the weekly explanations refresh runs (cron, UTC)"),
    Setting(LAKE_MAINTENANCE_CRON, f"`{DEFAULT_LAKE_MAINTENANCE_CRON}`",
            "when the weekly `lake_maintenance` job (compact, vacuum, checkpoint the Delta tables) runs (cron, UTC)"),
    Setting(BUDGET, "`auto`", "run budgets: `cpu` (small: 2 cores) or `gpu` (the assets' full defaults); `auto`: the "
            "catalog entry's `budget`, else `gpu` on a CUDA device and `cpu` otherwise. Run config overrides"),
    Setting(MODEL_CACHE, f"`{DEFAULT_MODEL_CACHE}`", "where GGUF language models are kept once dequantized (a later "
            "process loads them in ~1 s instead of ~20 s); `off`: dequantize every time"),
    Setting(MIN_EXPLAINED_VARIANCE, f"`{DEFAULT_MIN_EXPLAINED_VARIANCE}`",
            "floor of the blocking explained-variance checks"),
    Setting(MIN_CE_LOSS_SCORE, f"`{DEFAULT_MIN_CE_LOSS_SCORE}`",
            "floor of the `sae_evals` check on the CE loss score (fraction of the model's loss kept with the SAE)"),
    Setting(EXECUTOR, f"`{EXECUTOR_KINDS[0]}`",
            "`in_process`, `multiprocess` (a process per step), `celery` (steps on Celery workers: "
            "`python -m sae_assets.worker`) or `k8s` (a Kubernetes Job per step)"),
    Setting(MAX_CONCURRENT, ", ".join(f"`{n}` ({kind})" for kind, n in DEFAULT_MAX_CONCURRENT.items()),
            "steps at once with the `multiprocess` or `k8s` executor"),
    Setting(K8S_NAMESPACE, "unset (the run's)", "namespace of the step Jobs (`k8s` executor)"),
    Setting(CELERY_BROKER, f"`{DEFAULT_CELERY_BROKER}`",
            "the Celery broker (Redis) that runs send steps to and workers read (`celery` executor)"),
    Setting(CELERY_BACKEND, "the broker's URL", "where Celery workers store step results (`celery` executor)"),
    Setting(VIEWER_URL, f"`{DEFAULT_VIEWER_URL}`",
            "where `python -m sae_assets.viewer` serves: the feature map's and labels' metadata link there"),
    Setting(DAGSTER_HOME, "unset (the demo: `dagster_home/`)",
            "Dagster's instance directory (runs, schedules, logs); the lake and the drop folder default under it"),
    Setting("AWS_ACCESS_KEY_ID", "unset",
            "access key of an `s3://` lake (the `lake` resource's `storage_options` come first)"),
    Setting("AWS_SECRET_ACCESS_KEY", "unset", "secret key of an `s3://` lake"),
    Setting("AWS_SESSION_TOKEN", "unset", "session token of an `s3://` lake (temporary credentials)"),
    Setting("AWS_REGION", "unset", "region of an `s3://` lake's bucket"),
    Setting("AWS_DEFAULT_REGION", "unset", "the region when `AWS_REGION` is unset"),
    Setting("AWS_ENDPOINT_URL", "unset", "an S3-compatible endpoint for the lake (MinIO, moto...)"),
    Setting("AWS_ENDPOINT", "unset", "the endpoint when `AWS_ENDPOINT_URL` is unset"),
    Setting("AWS_ALLOW_HTTP", "unset", "`true`: plain HTTP to the endpoint (also implied by an `http://` endpoint)"),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


@overload
def get(name: str) -> str | None: ...


@overload
def get(name: str, default: str) -> str: ...


def get(name: str, default: str | None = None) -> str | None:
    """The variable's value now, ``default`` when unset; ``KeyError`` for a name not in :data:`SETTINGS`."""
    if name not in BY_NAME:
        raise KeyError(f"{name} is not in sae_assets.settings.SETTINGS: add it there (and regenerate the "
                       "table in docs/configuration.md).")
    return os.environ.get(name, default)


def nonempty(name: str) -> str | None:
    """The variable's value when it is set and not empty, else ``None``."""
    return get(name) or None


def is_set(name: str) -> bool:
    return nonempty(name) is not None


def automation_running() -> bool:
    """Sensors and schedules start running unless ``SAE_ASSETS_AUTOMATION=stopped`` (then: start them in the UI)."""
    value = get(AUTOMATION, DEFAULT_AUTOMATION).strip().lower()
    if value not in ("running", "stopped"):
        raise ValueError(f"{AUTOMATION} must be 'running' or 'stopped', not {value!r}")
    return value == "running"


def lake_root() -> str:
    """The lake root (a path or deltalake URI): ``SAE_ASSETS_LAKE``, else ``$DAGSTER_HOME/lake``, else
    :data:`DEFAULT_LAKE_ROOT`. The ``lake`` resource's, the viewer's and the CLI's default."""
    if lake := nonempty(LAKE):
        return lake
    if home := nonempty(DAGSTER_HOME):
        return str(Path(home) / "lake")
    return DEFAULT_LAKE_ROOT


def files_root() -> str | None:
    """``SAE_ASSETS_FILES``: the local directory for files that are not tables; None: the lake root's."""
    return nonempty(FILES)


def viewer_url() -> str:
    """The viewer's base URL, without a trailing slash."""
    return get(VIEWER_URL, DEFAULT_VIEWER_URL).rstrip("/")


def budget() -> str | None:
    """The forced budget profile (``cpu`` / ``gpu``), or None for ``auto`` (catalog entry, then device)."""
    value = get(BUDGET, "auto").strip().lower()
    if value == "auto":
        return None
    if value not in BUDGET_PROFILES:
        raise ValueError(f"{BUDGET} must be auto, {' or '.join(BUDGET_PROFILES)}, not {value!r}")
    return value


def explanations_cron() -> str:
    return get(EXPLANATIONS_CRON, DEFAULT_CRON)


def lake_maintenance_cron() -> str:
    return get(LAKE_MAINTENANCE_CRON, DEFAULT_LAKE_MAINTENANCE_CRON)


def min_explained_variance() -> float:
    return float(get(MIN_EXPLAINED_VARIANCE, str(DEFAULT_MIN_EXPLAINED_VARIANCE)))


def min_ce_loss_score() -> float:
    return float(get(MIN_CE_LOSS_SCORE, str(DEFAULT_MIN_CE_LOSS_SCORE)))


def executor_kind() -> str:
    """``SAE_ASSETS_EXECUTOR``, trimmed and lower-cased: one of :data:`EXECUTOR_KINDS`."""
    kind = get(EXECUTOR, EXECUTOR_KINDS[0]).strip().lower()
    if kind not in EXECUTOR_KINDS:
        raise ValueError(f"{EXECUTOR} must be in_process, multiprocess, celery or k8s, not {kind!r}")
    return kind


def max_concurrent(kind: str) -> int:
    """Steps at once for the executor ``kind`` (``multiprocess`` or ``k8s``)."""
    return int(get(MAX_CONCURRENT, str(DEFAULT_MAX_CONCURRENT[kind])))


def celery_broker() -> str:
    return get(CELERY_BROKER, DEFAULT_CELERY_BROKER)


def celery_backend() -> str:
    """Where step results are kept: ``SAE_ASSETS_CELERY_BACKEND``, else the broker (Redis holds both)."""
    return nonempty(CELERY_BACKEND) or celery_broker()


def aws_environment() -> dict[str, str]:
    """The :data:`AWS_SETTINGS` that are set, by name."""
    return {name: value for name in AWS_SETTINGS if (value := get(name)) is not None}


def markdown_table() -> str:
    """The table of docs/configuration.md (Environment variables): one row per setting."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{s.name}` | {s.default} | {s.help} |" for s in SETTINGS]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
