"""``sae_decoder``: the decoder vectors of the partition's SAE, one row per feature."""

import dagster as dg

from sae_assets.core.common.plots import histogram_png
from sae_assets.core.sae.decoder import decoder_frame
from sae_assets.defs.assets.trained_sae import trained_sae
from sae_assets.defs.metadata import input_table_versions, png_markdown, table_metadata
from sae_assets.defs.partitions import model_layer_partitions, resolve_partition
from sae_assets.resources.lake import LakeResource
from sae_assets.resources.sae_source import SaeLoadError, SaeSourceResource


@dg.asset(
    partitions_def=model_layer_partitions,
    deps=[trained_sae],
    kinds={"torch", "polars", "delta"},
    group_name="sae",
    owners=["team:interpretability"],
    code_version="1",
    description="One row per SAE feature: its decoder vector (list<float32>, d_in long) and norm. Loads "
    "the SAE the catalog names: SAELens pretrained release, local directory, or the platform's own.",
)
def sae_decoder(context: dg.AssetExecutionContext, lake: LakeResource,
                sae_source: SaeSourceResource) -> dg.MaterializeResult:
    location = resolve_partition(context)
    inputs = input_table_versions(context, lake)
    try:
        loaded = sae_source.load(location)
    except SaeLoadError as err:
        raise dg.Failure(str(err)) from err
    frame = decoder_frame(loaded.sae.W_dec)
    written = lake.write_partition("sae_decoder", frame, location.model_key, location.layer)
    context.log.info("Wrote %d decoder rows of %s", frame.height, loaded.source)
    cfg = loaded.sae.cfg
    return dg.MaterializeResult(
        metadata={
            **table_metadata(written, inputs),
            "d_in": loaded.d_in,
            "d_sae": loaded.d_sae,
            "architecture": loaded.architecture,
            "hook_name": loaded.hook_name,
            "sae_source": loaded.source,
            "sae_config": dg.MetadataValue.json(
                {k: v for k, v in cfg.to_dict().items() if isinstance(v, str | int | float | bool)}),
            "decoder_norms": png_markdown(
                histogram_png(frame["decoder_norm"].to_numpy(), "Decoder norms", "||W_dec[i]||"),
                "decoder norm histogram"),
        }
    )
