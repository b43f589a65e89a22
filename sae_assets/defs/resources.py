"""Default resource bindings, configured from the environment (:mod:`sae_assets.settings`).

Secrets (API keys) go to resources as ``dg.EnvVar``: read when the resource is set up, and not shown in the UI.
"""

from __future__ import annotations

import dagster as dg

from sae_assets import settings
from sae_assets.resources.corpus import OFFLINE_WIKI, CorpusResource
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.embedder import EmbedderResource
from sae_assets.resources.labeller import LabellerResource
from sae_assets.resources.lake import LakeResource
from sae_assets.resources.language_model import LanguageModelResource
from sae_assets.resources.neuronpedia import DEFAULT_API_URL, DEFAULT_S3_URL, NeuronpediaResource
from sae_assets.resources.sae_source import SaeSourceResource


def _labeller(device: DeviceResource) -> LabellerResource:
    """Local SmolLM2 by default; an OpenAI-compatible endpoint when SAE_ASSETS_LABELLER_URL is set."""
    url = settings.nonempty(settings.LABELLER_URL)
    if not url:
        return LabellerResource(device=device)
    api_key = dg.EnvVar(settings.OPENAI_API_KEY) if settings.is_set(settings.OPENAI_API_KEY) else None
    return LabellerResource(backend="openai", base_url=url, device=device,
                            model=settings.get(settings.LABELLER_MODEL, settings.DEFAULT_LABELLER_MODEL),
                            api_key=api_key)


def default_resources() -> dict[str, dg.ConfigurableResource]:
    device = DeviceResource(
        device=settings.get(settings.DEVICE, settings.DEFAULT_DEVICE),
        dtype=settings.get(settings.DTYPE, settings.DEFAULT_DTYPE),
    )
    lake = LakeResource(root=settings.lake_root(), files_root=settings.files_root())
    neuronpedia_key = dg.EnvVar(settings.NEURONPEDIA_API_KEY) if settings.is_set(settings.NEURONPEDIA_API_KEY) else None
    return {
        "device": device,
        "lake": lake,
        "language_model": LanguageModelResource(device=device),
        "sae_source": SaeSourceResource(device=device, lake=lake),
        "corpus": CorpusResource(dataset=settings.get(settings.CORPUS, OFFLINE_WIKI)),
        "embedder": EmbedderResource(device=device),
        "labeller": _labeller(device),
        "neuronpedia": NeuronpediaResource(
            s3_url=settings.get(settings.NEURONPEDIA_S3_URL, DEFAULT_S3_URL),
            api_url=settings.get(settings.NEURONPEDIA_API_URL, DEFAULT_API_URL),
            api_key=neuronpedia_key,
        ),
    }
