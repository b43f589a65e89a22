from __future__ import annotations

import polars as pl
import pytest
import torch

from sae_assets.core.sae.decoder import decoder_frame, decoder_matrix


def test_decoder_frame_round_trip() -> None:
    w = torch.randn(7, 5)
    frame = decoder_frame(w)
    assert frame.schema == pl.Schema({"feature": pl.Int32, "decoder": pl.List(pl.Float32),
                                      "decoder_norm": pl.Float32})
    assert frame["feature"].to_list() == list(range(7))
    torch.testing.assert_close(torch.from_numpy(frame["decoder_norm"].to_numpy()), w.norm(dim=1))
    assert torch.equal(decoder_matrix(frame.reverse()), w)


def test_decoder_frame_rejects_vectors() -> None:
    with pytest.raises(ValueError, match=r"\[d_sae, d_in\]"):
        decoder_frame(torch.randn(5))
