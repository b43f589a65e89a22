"""The Neuronpedia client on Gemma Scope 2's export for Gemma 3 270M (``gemma-3-270m/12-gemmascope-2-res-16k``),
served in Neuronpedia's layout by the loopback server, reached through the packaged catalog's ids."""

from __future__ import annotations

from sae_assets.catalog import load_catalog
from sae_assets.resources.neuronpedia import NeuronpediaResource
from tests.gemma import REPO_ROOT
from tests.neuronpedia_server import GEMMA_3_270M, NeuronpediaServer, source_export

ENTRY, LAYER = "gemma-3-270m@gemmascope-2-res-16k", 12


def _ids() -> tuple[str, str]:
    entry = load_catalog(REPO_ROOT / "sae_assets" / "catalog" / "catalog.yaml").entry(ENTRY)
    assert entry.neuronpedia is not None
    return entry.neuronpedia.model_id, entry.neuronpedia.source_id(LAYER)


def test_the_catalog_names_the_source_the_server_holds() -> None:
    assert _ids() == ("gemma-3-270m", "12-gemmascope-2-res-16k") == (GEMMA_3_270M.model_id, GEMMA_3_270M.source_id)


def test_the_client_reads_every_batch_of_the_gemma_scope_2_export() -> None:
    model_id, source_id = _ids()
    files = source_export(GEMMA_3_270M, batch_size=2)  # 6 explanations: 3 batches
    with NeuronpediaServer(files, page_size=2) as server:
        client = NeuronpediaResource(s3_url=server.url, api_url=server.url, backoff_s=0.01, timeout_s=5).client()
        keys = client.list_explanation_batches(model_id, source_id)
        prefix = "v1/gemma-3-270m/12-gemmascope-2-res-16k/explanations/"
        assert keys == [f"{prefix}batch-{n}.jsonl.gz" for n in range(3)]  # source.jsonl, features/ not listed
        records = [record for key in keys for _, record in client.iter_batch(key)]
        assert server.hits.count("/") == 2  # 3 keys under the prefix, listed 2 a page
    assert [r["index"] for r in records] == ["0", "10", "10", "16383", "2", "511"]  # Neuronpedia's text order
    assert {r["modelId"] for r in records} == {"gemma-3-270m"} and {r["layer"] for r in records} == {source_id}
    explained = {(int(r["index"]), r["description"], r["explanationModelName"]) for r in records}
    assert explained == {(i, d, m) for i, found in GEMMA_3_270M.explanations.items() for d, m in found}


def test_the_client_reads_a_gemma_scope_2_feature_from_the_api() -> None:
    model_id, source_id = _ids()
    with NeuronpediaServer({}, api_key="k", features=GEMMA_3_270M.api_features()) as server:
        client = NeuronpediaResource(s3_url=server.url, api_url=server.url, api_key="k", backoff_s=0.01).client()
        feature = client.feature(model_id, source_id, 10)
        assert server.hits == ["/api/feature/gemma-3-270m/12-gemmascope-2-res-16k/10"]
    assert (feature["modelId"], feature["layer"], feature["index"]) == ("gemma-3-270m", source_id, "10")
    assert [e["description"] for e in feature["explanations"]] == ["closing parentheses in code",
                                                                   "code: closing brackets"]
