"""A language model wrapped by TransformerLens, read only up to the hook an SAE is trained on.

Loading (hub, local directory, or GGUF shipped inside a Python package) lives in
``sae_assets.resources.language_model``; this module holds the loaded model and its forward pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import torch

_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.")
_BYTE_PIECE = re.compile(r"^<0x[89A-Fa-f][0-9A-Fa-f]>$")
"""A SentencePiece byte-fallback piece of a non-ASCII byte (0x80 to 0xFF)."""


def hook_layer(hook_name: str) -> int:
    """The block index a hook sits in (``blocks.4.hook_resid_post`` -> 4)."""
    match = _BLOCK_HOOK.match(hook_name)
    if match is None:
        raise ValueError(f"Hook {hook_name!r} is not inside a transformer block ('blocks.<n>.<hook>').")
    return int(match.group(1))


NormKind = Literal["layer", "rms"]
_NORM_KINDS: dict[str, NormKind] = {"LN": "layer", "LNPre": "layer", "RMS": "rms", "RMSPre": "rms"}


@dataclass(frozen=True)
class Unembedding:
    """The model's unembedding and the final norm in front of it, as loaded (nothing folded).

    ``w_u [d_model, vocab]``; ``norm_scale [d_model]``: the final norm's elementwise scale as it multiplies the
    normalized residual (Gemma's RMSNorm: ``1 + w``), None where the norm has no weight (none, or already folded);
    ``norm_kind``: ``layer`` (LayerNorm: also subtracts the mean over d_model), ``rms`` or None (no final norm).
    """

    w_u: torch.Tensor
    norm_scale: torch.Tensor | None
    norm_kind: NormKind | None


@dataclass
class LanguageModel:
    """A TransformerLens model (``TransformerBridge`` or ``HookedTransformer``) and its tokenizer."""

    name: str
    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype

    @property
    def d_model(self) -> int:
        return int(self.model.cfg.d_model)

    @property
    def n_layers(self) -> int:
        return int(self.model.cfg.n_layers)

    @property
    def bos_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        if bos is None:
            bos = self.tokenizer.eos_token_id
        if bos is None:
            raise ValueError(f"Tokenizer of {self.name} has neither a BOS nor an EOS token.")
        return int(bos)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of one document, without BOS."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def token_strings(self, ids: list[int]) -> list[str]:
        """Each token id decoded on its own (spaces kept), for display in example windows: a function of the id
        alone (the scan maps the distinct ids of all its windows at once), so a window's strings joined give back
        its text wherever no character is split across tokens.

        SentencePiece's byte-fallback tokens are where one is: Gemma spells a character its vocabulary lacks (a
        no-break space, ``𝔘``) as its UTF-8 bytes, one token each (``<0xC2>`` ``<0xA0>``). Alone, each of the 128
        non-ASCII byte tokens decodes to the same U+FFFD; they are shown as their piece (``<0xC2>``) instead,
        which names the byte, so the strings stay distinct and a window's bytes can be read back. A byte token of
        an ASCII byte decodes to its character (``<0x0D>``: a carriage return) and is kept so."""
        strings = []
        for i in ids:
            text = self.tokenizer.decode([i])
            if text == "\ufffd":
                piece = self.tokenizer.convert_ids_to_tokens(i)
                if isinstance(piece, str) and _BYTE_PIECE.match(piece):
                    text = piece
            strings.append(text)
        return strings

    def unembedding(self) -> Unembedding:
        """``W_U [d_model, vocab]`` and the final norm's weight, from a ``TransformerBridge`` (the HF model's
        ``lm_head.weight`` transposed and ``model.norm.weight``, tied embeddings included) or a
        ``HookedTransformer`` (``W_U``, ``ln_final.w``). Tensors on the model's device, in its dtype."""
        cfg = self.model.cfg
        w_u = self.model.W_U
        kind = _NORM_KINDS.get(str(getattr(cfg, "normalization_type", None)))
        weight = getattr(getattr(self.model, "ln_final", None), "w", None) if kind is not None else None
        scale = None
        if isinstance(weight, torch.Tensor):
            scale = weight.detach()
            if getattr(cfg, "rmsnorm_uses_offset", False):  # Gemma: x / rms(x) * (1 + w)
                scale = 1.0 + scale
        return Unembedding(w_u=w_u.detach(), norm_scale=scale, norm_kind=kind)

    def check_hook(self, hook_name: str) -> None:
        layer = hook_layer(hook_name)
        if layer >= self.n_layers:
            raise ValueError(f"Hook {hook_name!r} is past the last layer of {self.name} "
                             f"({self.n_layers} layers).")
        if hook_name not in self.model.hook_dict:
            raise ValueError(f"Hook {hook_name!r} does not exist in {self.name}.")

    @torch.inference_mode()
    def hook_activations(self, tokens: torch.Tensor, hook_name: str) -> torch.Tensor:
        """Run ``tokens [batch, seq]`` up to ``hook_name`` only; returns ``[batch, seq, d_model]``.

        The forward stops after the hook's block, so the cost is that of the first layers only.
        """
        cache_out: dict[str, torch.Tensor] = {}

        def keep(act: torch.Tensor, hook: Any) -> torch.Tensor:
            cache_out["act"] = act.detach()
            return act

        self.model.run_with_hooks(
            tokens.to(self.device),
            fwd_hooks=[(hook_name, keep)],
            stop_at_layer=hook_layer(hook_name) + 1,
            return_type=None,
        )
        return cache_out["act"]
