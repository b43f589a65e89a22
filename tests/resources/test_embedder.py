import numpy as np

from sae_assets.resources.device import DeviceResource
from sae_assets.resources.embedder import EmbedderResource, load_embedder, token_lengths

# character length and token length disagree: digits are a token each, long words few
TEXTS = ["1 2 3 4 5 6 7 8 9 10 11 12", "extraordinarily magnificent", "a b c d e f", "the cat",
         "internationalization considerations", "7 8 9", "dog"]


def test_encode_batches_by_tokens_and_keeps_the_callers_order(monkeypatch) -> None:
    """Batches hold texts of similar token length (longest first), rows come back in the caller's order and equal
    sentence-transformers' own encode of each text alone."""
    embedder = EmbedderResource(device=DeviceResource(device="cpu"), batch_size=2)
    model = load_embedder(embedder.model, "cpu")
    lengths = token_lengths(model, TEXTS)
    assert lengths == [len(model.tokenizer(t)["input_ids"]) for t in TEXTS]
    alone = np.stack([model.encode([t], normalize_embeddings=True)[0] for t in TEXTS])
    batches: list[list[str]] = []
    encode = model.encode

    def spy(texts, **kwargs):
        batches.append(list(texts))
        return encode(texts, **kwargs)

    monkeypatch.setattr(model, "encode", spy)
    vectors = embedder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    assert np.allclose(vectors, alone, atol=1e-5)
    sizes = [[lengths[TEXTS.index(t)] for t in batch] for batch in batches]
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    assert [n for batch in sizes for n in batch] == sorted(lengths, reverse=True)
    assert embedder.encode([]).shape == (0, 384)
    encoder = embedder.encoder()  # what feature_labels hands the core: encode and the lengths it batches by
    assert encoder.lengths(TEXTS) == lengths and np.array_equal(encoder(TEXTS), vectors)
