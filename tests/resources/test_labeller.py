from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from sae_assets.core.labels.labelling import Window, label_messages, parse_label
from sae_assets.resources.device import DeviceResource
from sae_assets.resources.embedder import EmbedderResource
from sae_assets.resources.labeller import LabellerResource
from tests.chat_server import ChatServer


def _labeller(url: str, **kw) -> LabellerResource:
    return LabellerResource(backend="openai", model="served-model", base_url=url, api_key="sk-test",
                            backoff_s=0.01, device=DeviceResource(device="cpu"), **kw)


def test_openai_backend_retries_then_answers() -> None:
    server = ChatServer([429, 503, 200])
    try:
        [reply] = _labeller(server.url).client().chat([[{"role": "user", "content": "hi"}]], max_tokens=8)
    finally:
        server.close()
    assert reply.error is None and reply.text == "Label: echo 2"
    path, auth, body = server.requests[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test"
    assert body["model"] == "served-model" and body["max_tokens"] == 8 and len(server.requests) == 3


def test_openai_backend_reports_errors_per_item() -> None:
    server = ChatServer([500, 500, 500, 400, 299])
    try:
        client = _labeller(server.url, retries=2, concurrency=1).client()
        conversations = [[{"role": "user", "content": str(i)}] for i in range(3)]
        exhausted, bad_request, malformed = client.chat(conversations, max_tokens=8)
    finally:
        server.close()
    assert exhausted.text is None and "HTTP 500" in exhausted.error and "after 3 attempts" in exhausted.error
    assert bad_request.text is None and "HTTP 400" in bad_request.error
    assert malformed.text is None and "malformed reply" in malformed.error


def test_concurrent_requests_keep_their_order() -> None:
    server = ChatServer([])
    try:
        client = _labeller(server.url, concurrency=4).client()
        replies = client.chat([[{"role": "user", "content": "x" * n}] for n in range(1, 13)], max_tokens=8)
    finally:
        server.close()
    assert [r.text for r in replies] == [f"Label: echo {n}" for n in range(1, 13)]


def test_unreachable_endpoint_is_an_error_not_a_label() -> None:
    client = _labeller("http://127.0.0.1:9/v1", retries=1, timeout_s=2).client()
    [reply] = client.chat([[{"role": "user", "content": "hi"}]], max_tokens=8)
    assert reply.text is None and "ConnectionError" in reply.error


def test_bearer_token_goes_to_the_endpoint_origin_only() -> None:
    elsewhere = ChatServer([])
    endpoint = ChatServer([], redirect_to=elsewhere.url)  # 307: the POST is repeated at the other origin
    try:
        [reply] = _labeller(endpoint.url).client().chat([[{"role": "user", "content": "hi"}]], max_tokens=8)
    finally:
        endpoint.close()
        elsewhere.close()
    assert reply.error is None and reply.text == "Label: echo 2"  # answered by the redirect target
    assert [(p, auth) for p, auth, _ in endpoint.requests] == [("/v1/chat/completions", "Bearer sk-test")]
    assert [(p, auth) for p, auth, _ in elsewhere.requests] == [("/v1/chat/completions", None)]


def test_token_is_not_in_errors_logs_or_repr(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = ChatServer([401, 500, 500])  # error bodies echo the Authorization header they got
    try:
        resource = _labeller(server.url, retries=1, concurrency=1)
        rejected, exhausted = resource.client().chat([[{"role": "user", "content": str(i)}] for i in range(2)], 8)
    finally:
        server.close()
    assert [auth for _, auth, _ in server.requests] == ["Bearer sk-test"] * 3
    assert "HTTP 401" in rejected.error and "Bearer ***" in rejected.error and "sk-test" not in rejected.error
    assert "HTTP 500" in exhausted.error and "sk-test" not in exhausted.error
    assert "sk-test" not in caplog.text and "sk-test" not in repr(resource)


def test_openai_backend_needs_a_url() -> None:
    with pytest.raises(ValueError, match="needs base_url"):
        LabellerResource(backend="openai", device=DeviceResource(device="cpu")).client()


@pytest.mark.slow
def test_local_smollm2_labels_offline() -> None:
    client = LabellerResource(device=DeviceResource(device="cpu"), batch_size=2).client()
    windows = [Window([" in", " 1999", ","], [0, 3.0, 0]), Window([" since", " 2004"], [0, 2.5])]
    prompts = [label_messages(windows), label_messages(windows[:1]), label_messages(windows[1:])]
    replies = client.chat(prompts, max_tokens=12)
    assert len(replies) == 3 and all(r.error is None and r.text for r in replies)
    labels = [parse_label(r.text) for r in replies]
    assert all(0 < len(label.split()) <= 9 for label in labels)


def test_local_batches_share_their_opening_and_reply_as_one_at_a_time() -> None:
    """Prompts of different lengths in one call: batched longest first with the common opening run once, the
    replies are those of each prompt generated alone, in the caller's order; the length measure is tokens."""
    windows = [Window([" in", " 1999", ","], [0, 3.0, 0]), Window([" since", " 2004"], [0, 2.5]),
               Window([" the", " 12th", " of", " May"], [0, 0, 0, 1.5])]
    prompts = [label_messages(windows[:1]), label_messages(windows), label_messages(windows[1:2]),
               label_messages(windows[1:])]
    client = LabellerResource(device=DeviceResource(device="cpu"), batch_size=3).client()
    lengths = client.prompt_lengths(prompts)  # type: ignore[attr-defined]
    assert lengths[1] == max(lengths) and len(set(lengths)) == 4
    shared = client.chat(prompts, max_tokens=10)
    client.share_prefix = False  # type: ignore[attr-defined]
    padded = client.chat(prompts, max_tokens=10)
    client.batch_size = 1  # type: ignore[attr-defined]
    alone = client.chat(prompts, max_tokens=10)
    assert [r.text for r in shared] == [r.text for r in padded] == [r.text for r in alone]
    assert all(r.error is None and r.text for r in shared)


@pytest.mark.slow
def test_local_labeller_and_embedder_under_bf16_autocast() -> None:
    """precision bfloat16 reaches both models: the labeller still writes labels, the embedder's float32 vectors stay
    unit length and within bf16 rounding of its float32 ones (cosine > 0.99)."""
    device = DeviceResource(device="cpu")
    client = LabellerResource(device=device, batch_size=2).client(torch.bfloat16)
    assert client.compute_dtype == torch.bfloat16  # type: ignore[attr-defined]
    windows = [Window([" in", " 1999", ","], [0, 3.0, 0]), Window([" since", " 2004"], [0, 2.5])]
    replies = client.chat([label_messages(windows)], max_tokens=12)
    assert replies[0].error is None and 0 < len(parse_label(replies[0].text or "").split()) <= 9
    embedder = EmbedderResource(device=device)
    texts = ["years and dates", " in 1999, the city", "a list of chemical elements"]
    full, mixed = embedder.encode(texts), embedder.encode(texts, compute_dtype=torch.bfloat16)
    assert mixed.dtype == np.float32 and np.allclose(np.linalg.norm(mixed, axis=1), 1, atol=1e-4)
    assert ((full * mixed).sum(axis=1) > 0.99).all() and not np.array_equal(full, mixed)
