"""Default resource bindings, configured from the environment (``SAE_ASSETS_*``)."""

from __future__ import annotations

import dagster as dg

from sae_assets.resources.corpus import OFFLINE_WIKI, CorpusResource
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.lake import LakeResource
from sae_assets.resources.language_model import LanguageModelResource
from sae_assets.resources.sae_source import SaeSourceResource


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
    }
