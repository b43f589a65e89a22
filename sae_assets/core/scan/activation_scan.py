"""One pass of a language model + SAE over a corpus: statistics, examples and co-occurrence at once.

Documents (BOS + tokens, truncated to ``context_size``) are grouped into padded batches of at most
``batch_tokens`` tokens (sorted by length within chunks of documents, so little is padding), run up
to the SAE's hook only, encoded once, and fed to three streaming accumulators. Memory is bounded by
the batch and the accumulators, never by the corpus. On CUDA out-of-memory the batch is halved and
retried, and later batches stay at the smaller size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import polars as pl
import torch

from sae_assets.core.common.heap import retained_heap
from sae_assets.core.common.progress import Progress, Report
from sae_assets.core.scan.activation_examples import ExampleCollector, ExampleConfig
from sae_assets.core.scan.cooccurrence import CooccurrenceCounter, window_presence
from sae_assets.core.scan.document_peaks import document_peaks, worth_compiling
from sae_assets.core.scan.encode import CheckedEncoder
from sae_assets.core.scan.example_table import examples_frame
from sae_assets.core.scan.feature_profiles import DocumentProfiles
from sae_assets.core.scan.feature_stats import FeatureStatsAccumulator, ReconstructionSummary

log = logging.getLogger(__name__)
Document = tuple[int, list[int]]  # (doc_index, token ids starting with BOS)


class HookModel(Protocol):
    def hook_activations(self, tokens: torch.Tensor, hook_name: str) -> torch.Tensor: ...


@dataclass(frozen=True)
class ScanConfig:
    context_size: int = 1024
    """Tokens per document, BOS included (SFAL: 1,024); longer documents are truncated."""
    window: int = 256
    """Co-occurrence window k (SFAL: 256); each document's trailing remainder is dropped."""
    batch_tokens: int = 8192
    """Padded tokens per forward pass (halved automatically on CUDA out-of-memory)."""
    activation_threshold: float = 0.0
    """A feature is active on a token when its activation exceeds this."""
    reconstruction_sample: int = 256
    """Tokens per batch (uniformly drawn) on which the SAE's reconstruction is decoded for explained
    variance; 0 decodes every token."""
    seed: int = 0
    """Seeds the ``reconstruction_sample`` draw."""
    examples: ExampleConfig = field(default_factory=ExampleConfig)
    chunk_documents: int = 512
    """Documents read ahead and sorted by length before batching."""
    profile_documents: int = 1024
    """Documents (``doc_index`` below this) whose per-feature activation mass is kept as activation profiles."""


@dataclass
class ScanResult:
    feature_stats: pl.DataFrame
    examples: pl.DataFrame
    cooccurrence: CooccurrenceCounter
    """The counts; its ``record_batches()`` are the table, one block of feature rows at a time."""
    profiles: pl.DataFrame
    """One row per feature: its activation mass in each of ``profile_documents`` (corpus order)."""
    profile_documents: list[int]
    reconstruction: ReconstructionSummary
    n_documents: int
    n_windows: int
    n_docs_with_window: int
    seconds: float
    batch_tokens: int
    """Batch size in tokens at the end (smaller than configured after an out-of-memory back-off)."""


def document_batches(documents: Iterable[Document], batch_tokens: Callable[[], int],
                     chunk: int) -> Iterator[list[Document]]:
    """Greedy padded batches (``len(batch) * longest <= batch_tokens``) within length-sorted chunks."""
    def flush(buffer: list[Document]) -> Iterator[list[Document]]:
        buffer.sort(key=lambda d: -len(d[1]))
        batch: list[Document] = []
        for doc in buffer:
            longest = len(batch[0][1]) if batch else len(doc[1])
            if batch and (len(batch) + 1) * longest > batch_tokens():
                yield batch
                batch = []
            batch.append(doc)
        if batch:
            yield batch

    buffer: list[Document] = []
    for doc in documents:
        buffer.append(doc)
        if len(buffer) >= chunk:
            yield from flush(buffer)
            buffer = []
    if buffer:
        yield from flush(buffer)


def _pad(batch: list[Document], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    longest = max(len(ids) for _, ids in batch)
    tokens = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    for row, (_, ids) in enumerate(batch):
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    lengths = torch.tensor([len(ids) for _, ids in batch])
    return torch.tensor([i for i, _ in batch]), tokens, lengths


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


class Scanner:
    def __init__(self, model: HookModel, hook_name: str, sae: Any, cfg: ScanConfig, device: torch.device,
                 report: Report | None = None, expected_tokens: int = 0) -> None:
        self.model, self.hook_name, self.sae, self.cfg, self.device = model, hook_name, sae, cfg, device
        self.report = report or log.info
        d_sae, d_in = int(sae.cfg.d_sae), int(sae.cfg.d_in)
        self.stats = FeatureStatsAccumulator(d_sae, d_in, device, cfg.activation_threshold)
        self.examples = ExampleCollector(d_sae, cfg.examples, device)
        self.cooc = CooccurrenceCounter(d_sae, device)
        self.profiles = DocumentProfiles(d_sae, cfg.profile_documents, device)
        self.batch_tokens = cfg.batch_tokens
        self.n_docs_with_window = 0
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.encode = CheckedEncoder(sae)
        self.compiled_peaks = worth_compiling(expected_tokens, d_sae)

    @torch.inference_mode()
    def _encode(self, tokens: torch.Tensor,
                lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Latents ``[b, seq, d_sae]`` (zero at BOS and padding), hook activations with their reconstructions
        ``[n, d_in]`` on a uniform sample of the real tokens, and the number of real tokens."""
        acts = self.model.hook_activations(tokens, self.hook_name)  # [b, seq, d_in]
        pos = torch.arange(tokens.shape[1], device=acts.device)
        valid = (pos >= 1) & (pos < lengths.to(acts.device).unsqueeze(1))  # BOS and padding out
        x = acts[valid].to(self.device, torch.float32)  # [n_valid, d_in]
        latents = self.encode(x)  # [n_valid, d_sae]
        feats = latents.new_zeros((*tokens.shape, latents.shape[-1]))
        feats[valid.to(self.device)] = latents
        sample = self.cfg.reconstruction_sample
        if 0 < sample < x.shape[0]:
            idx = torch.randperm(x.shape[0], generator=self.generator, device="cpu")[:sample].to(self.device)
            x, latents = x[idx], latents[idx]
        return feats, x, self.sae.decode(latents), int(valid.sum())

    @torch.inference_mode()
    def _accumulate(self, doc_index: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                    feats: torch.Tensor, x: torch.Tensor, x_hat: torch.Tensor, n_valid: int) -> None:
        # [b, d_sae] each document's maximum and where; [d_sae] tokens above the threshold
        peak, peak_pos, n_active = document_peaks(feats, self.cfg.activation_threshold, self.compiled_peaks)
        doc_sum = feats.sum(dim=1)  # [b, d_sae] each document's activation mass, shared by stats and profiles
        self.stats.add(feats, peak, doc_sum, n_valid, x, x_hat, n_active)
        self.profiles.add(doc_index, doc_sum)
        self.examples.add(doc_index, tokens.to(self.device), lengths.to(self.device), feats, peak, peak_pos)
        presence = [window_presence(feats[row, 1 : int(n)], self.cfg.window, self.cfg.activation_threshold)
                    for row, n in enumerate(lengths.tolist())]
        self.n_docs_with_window += sum(p.shape[0] > 0 for p in presence)
        self.cooc.add(torch.cat(presence))

    def process(self, batch: list[Document], pad_id: int) -> None:
        """Accumulate one batch; a CUDA out-of-memory in the forward or the encode (before any accumulator
        changed) halves the batch and retries it."""
        doc_index, tokens, lengths = _pad(batch, pad_id)
        try:
            encoded = self._encode(tokens, lengths)
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not _is_oom(err):
                raise
            if len(batch) == 1:
                raise RuntimeError(f"Out of memory on a single document of {len(batch[0][1])} tokens: "
                                   "lower context_size or use a larger device.") from err
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.batch_tokens = max(1, self.batch_tokens // 2)
            self.report(f"Out of memory on a batch of {len(batch)} documents; batch size halved to "
                        f"{self.batch_tokens:,} tokens and retried.")
            half = len(batch) // 2
            self.process(batch[:half], pad_id)
            self.process(batch[half:], pad_id)
            return
        self._accumulate(doc_index, tokens, lengths, *encoded)


def run_scan(model: HookModel, hook_name: str, sae: Any, documents: Iterable[Document], expected_tokens: int,
             pad_id: int, cfg: ScanConfig, device: torch.device, token_strings: Callable[[list[int]], list[str]],
             report: Report | None = None) -> ScanResult:
    """Scan ``documents`` (``(doc_index, [BOS, ...])``) and build the four tables (co-occurrence as
    its counter, whose record batches are written block by block).

    ``expected_tokens`` (an estimate of the tokens the documents hold) only drives progress and ETA.
    """
    if cfg.window < 1 or cfg.context_size < 2:
        raise ValueError("window must be >= 1 and context_size >= 2")
    start = time.perf_counter()
    scanner = Scanner(model, hook_name, sae, cfg, device, report, expected_tokens)
    progress = Progress(f"scan at {hook_name}", expected_tokens, "tokens", report)
    seen = 0
    with retained_heap():  # each batch's forward and latents reuse the last one's memory instead of faulting it in
        for batch in document_batches(documents, lambda: scanner.batch_tokens, cfg.chunk_documents):
            scanner.process(batch, pad_id)
            seen += len(batch)
            progress.advance(sum(len(ids) for _, ids in batch))
    progress.finish()
    if seen == 0:
        raise ValueError("The corpus gave no documents to scan.")
    if scanner.cooc.n_windows == 0:
        raise ValueError(
            f"No document has a full co-occurrence window: every one of the {seen} documents is shorter "
            f"than {cfg.window} tokens after BOS (context_size {cfg.context_size}). Lower `window` or "
            "use a corpus with longer documents."
        )
    return ScanResult(
        feature_stats=scanner.stats.to_frame(),
        examples=examples_frame(scanner.examples, token_strings),
        cooccurrence=scanner.cooc,
        profiles=scanner.profiles.to_frame(),
        profile_documents=scanner.profiles.documents,
        reconstruction=scanner.stats.summary(),
        n_documents=seen,
        n_windows=scanner.cooc.n_windows,
        n_docs_with_window=scanner.n_docs_with_window,
        seconds=time.perf_counter() - start,
        batch_tokens=scanner.batch_tokens,
    )
