from __future__ import annotations

import gzip
import json
import logging

import pytest

from sae_assets.resources.neuronpedia import NeuronpediaError, NeuronpediaResource
from tests.neuronpedia_server import NeuronpediaServer

PREFIX = "v1/gemma-2-2b/12-gemmascope-res-16k/explanations/"


def _records(lo: int, hi: int) -> list[dict]:
    return [{"modelId": "gemma-2-2b", "layer": "12-gemmascope-res-16k", "index": str(i), "description": f"d{i}",
             "typeName": "oai_token-act-pair", "explanationModelName": "gpt-4o-mini", "authorId": "a"}
            for i in range(lo, hi)]


def _resource(server: NeuronpediaServer, **kw) -> NeuronpediaResource:
    return NeuronpediaResource(**{"s3_url": server.url, "api_url": server.url, "backoff_s": 0.01, "timeout_s": 5,
                                  **kw})


def _client(server: NeuronpediaServer, **kw):
    return _resource(server, **kw).client()


def test_listing_pages_and_orders_batches_numerically() -> None:
    batches = {f"{PREFIX}batch-{n}.jsonl.gz": _records(n * 3, n * 3 + 3) for n in (0, 1, 2, 10, 11)}
    batches["v1/other/0-x/explanations/batch-0.jsonl.gz"] = _records(0, 1)
    with NeuronpediaServer(batches, page_size=2) as server:
        client = _client(server)
        keys = client.list_explanation_batches("gemma-2-2b", "12-gemmascope-res-16k")
        assert [k.rsplit("-", 1)[1] for k in keys] == ["0.jsonl.gz", "1.jsonl.gz", "2.jsonl.gz", "10.jsonl.gz",
                                                       "11.jsonl.gz"]
        assert server.hits.count("/") == 3  # three pages of two
        records = [r for k in keys for _, r in client.iter_batch(k)]
    assert [r["index"] for r in records][:4] == ["0", "1", "2", "3"] and len(records) == 15


def test_retries_429_then_succeeds() -> None:
    key = f"{PREFIX}batch-0.jsonl.gz"
    with NeuronpediaServer({key: _records(0, 2)}, faults={f"/{key}": [429, 503]}) as server:
        assert len(list(_client(server).iter_batch(key))) == 2
        assert server.hits.count(f"/{key}") == 3


def test_persistent_500_fails_naming_the_url() -> None:
    key = f"{PREFIX}batch-0.jsonl.gz"
    with NeuronpediaServer({key: _records(0, 2)}, faults={f"/{key}": [500] * 10}) as server:
        with pytest.raises(NeuronpediaError, match=r"batch-0.jsonl.gz failed after 3 attempts: HTTP 500"):
            list(_client(server, retries=2).iter_batch(key))


def test_truncated_gzip_and_malformed_lines_fail() -> None:
    good = gzip.compress(b'{"index": "1", "description": "x"}\n' * 200)
    truncated = good[: len(good) // 2]
    malformed = gzip.compress(b'{"index": "1", "description": "x"}\n{not json\n')
    with NeuronpediaServer({"a/batch-0.jsonl.gz": truncated, "a/batch-1.jsonl.gz": malformed}) as server:
        client = _client(server)
        with pytest.raises(NeuronpediaError, match="truncated or not gzip"):
            list(client.iter_batch("a/batch-0.jsonl.gz"))
        with pytest.raises(NeuronpediaError, match="batch-1.jsonl.gz line 2 is not JSON"):
            list(client.iter_batch("a/batch-1.jsonl.gz"))


def test_bad_lines_can_be_skipped_and_reported_one_by_one() -> None:
    lines = b'{"index": "1", "description": "x"}\n{not json\n[1, 2]\n\xff\xfe\n{"index": "2", "description": "y"}\n'
    with NeuronpediaServer({"a/batch-0.jsonl.gz": gzip.compress(lines)}) as server:
        bad: list[tuple[int, str]] = []
        records = list(_client(server).iter_batch("a/batch-0.jsonl.gz",
                                                  on_bad_line=lambda n, why: bad.append((n, why))))
    assert [(n, r["index"]) for n, r in records] == [(1, "1"), (5, "2")]
    assert [n for n, _ in bad] == [2, 3, 4]
    assert bad[0][1].startswith("is not JSON") and bad[1][1] == "is not a JSON object"
    assert bad[2][1].startswith("is not UTF-8 text")


def test_timeouts_are_retried_then_reported() -> None:
    key = f"{PREFIX}batch-0.jsonl.gz"
    with NeuronpediaServer({key: _records(0, 2)}, faults={f"/{key}": [0], "/": [0, 0]}) as server:
        client = _client(server, retries=1, timeout_s=0.3)
        assert len(list(client.iter_batch(key))) == 2  # one stall, then an answer
        with pytest.raises(NeuronpediaError, match=r"failed after 2 attempts: ReadTimeout"):
            client.list_explanation_batches("gemma-2-2b", "12-gemmascope-res-16k")


def test_api_feature_with_key() -> None:
    feature = {"modelId": "gemma-2-2b", "index": "5", "explanations": [{"description": "five"}]}
    with NeuronpediaServer({}, api_key="k", features={"gemma-2-2b/12-gemmascope-res-16k/5": feature}) as server:
        assert _client(server, api_key="k").feature("gemma-2-2b", "12-gemmascope-res-16k", 5) == feature
        with pytest.raises(NeuronpediaError, match="HTTP 401"):
            _client(server).feature("gemma-2-2b", "12-gemmascope-res-16k", 5)
        with pytest.raises(NeuronpediaError, match="HTTP 404"):
            _client(server, api_key="k").feature("gemma-2-2b", "12-gemmascope-res-16k", 6)
    assert json.dumps(feature)


SECRET = "np-secret-4f1c9a"


def test_api_key_goes_to_the_api_origin_only_not_s3_nor_redirect_targets() -> None:
    key, path = f"{PREFIX}batch-0.jsonl.gz", "/api/feature/gemma-2-2b/12-gemmascope-res-16k/7"
    feature = {"modelId": "gemma-2-2b", "index": "7"}
    with NeuronpediaServer({key: _records(0, 2)}) as s3, \
            NeuronpediaServer({}, features={"gemma-2-2b/12-gemmascope-res-16k/7": feature}) as elsewhere, \
            NeuronpediaServer({}, api_key=SECRET, features={"gemma-2-2b/12-gemmascope-res-16k/5": feature},
                              redirects={path: elsewhere.url + path}) as api:
        client = NeuronpediaResource(s3_url=s3.url, api_url=api.url, api_key=SECRET, backoff_s=0.01).client()
        assert client.list_explanation_batches("gemma-2-2b", "12-gemmascope-res-16k") == [key]
        assert len(list(client.iter_batch(key))) == 2
        assert client.feature("gemma-2-2b", "12-gemmascope-res-16k", 5) == feature  # answered by the API
        assert client.feature("gemma-2-2b", "12-gemmascope-res-16k", 7) == feature  # 302 to another origin
    assert [p for p, _ in s3.received] == ["/", f"/{key}"]
    assert all("x-api-key" not in headers for _, headers in s3.received)
    assert [h.get("x-api-key") for _, h in api.received] == [SECRET, SECRET]
    assert [p for p, _ in elsewhere.received] == [path]
    assert all("x-api-key" not in headers for _, headers in elsewhere.received)


def test_key_is_not_in_errors_logs_or_repr(caplog: pytest.LogCaptureFixture) -> None:
    path = "/api/feature/gemma-2-2b/12-gemmascope-res-16k/5"
    caplog.set_level(logging.DEBUG)
    with NeuronpediaServer({}, api_key="the-right-key", faults={path: [503]}) as server:
        resource = _resource(server, api_key=SECRET, retries=1)
        with pytest.raises(NeuronpediaError, match="HTTP 401") as failure:
            resource.client().feature("gemma-2-2b", "12-gemmascope-res-16k", 5)
    assert [h.get("x-api-key") for _, h in server.received] == [SECRET, SECRET]  # sent, and echoed back
    assert "wrong key ***" in str(failure.value) and SECRET not in str(failure.value)
    assert "answered HTTP 503" in caplog.text and SECRET not in caplog.text
    assert SECRET not in repr(resource) and SECRET not in repr(resource.client().api)
