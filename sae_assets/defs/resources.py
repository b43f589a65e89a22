"""Default resource bindings, configured from the environment (``SAE_ASSETS_*``)."""

from __future__ import annotations

import os

import dagster as dg

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
    url = dg.EnvVar("SAE_ASSETS_LABELLER_URL").get_value()
    if not url:
        return LabellerResource(device=device)
    return LabellerResource(backend="openai", base_url=url, device=device,
                            model=dg.EnvVar("SAE_ASSETS_LABELLER_MODEL").get_value("gpt-4o-mini"),
                            api_key=dg.EnvVar("OPENAI_API_KEY") if os.environ.get("OPENAI_API_KEY") else None)


def default_resources() -> dict[str, dg.ConfigurableResource]:
    device = DeviceResource(
        device=dg.EnvVar("SAE_ASSETS_DEVICE").get_value("auto"),
        dtype=dg.EnvVar("SAE_ASSETS_DTYPE").get_value("auto"),
    )
    lake = LakeResource()
    return {
        "device": device,
        "lake": lake,
        "language_model": LanguageModelResource(device=device),
        "sae_source": SaeSourceResource(device=device, lake=lake),
        "corpus": CorpusResource(dataset=dg.EnvVar("SAE_ASSETS_CORPUS").get_value(OFFLINE_WIKI)),
        "embedder": EmbedderResource(device=device),
        "labeller": _labeller(device),
        "neuronpedia": NeuronpediaResource(
            s3_url=dg.EnvVar("NEURONPEDIA_S3_URL").get_value(DEFAULT_S3_URL),
            api_url=dg.EnvVar("NEURONPEDIA_API_URL").get_value(DEFAULT_API_URL),
            api_key=dg.EnvVar("NEURONPEDIA_API_KEY") if os.environ.get("NEURONPEDIA_API_KEY") else None,
        ),
    }
