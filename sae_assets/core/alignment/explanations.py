"""Neuronpedia explanation records -> one explanation per feature, by a documented rule.

Neuronpedia's exports hold every explanation ever made for a feature (several explainer models and
methods, re-runs). One is kept per feature:

1. the explanation type earliest in ``preferred_types`` (unlisted types after all listed ones), then
2. the explainer model earliest in ``preferred_models`` (likewise), then
3. the newest (``createdAt``, ISO-8601; missing sorts oldest), then the one read last.

``n_alternatives`` counts the other explanations the feature had.

A malformed export record (:func:`normalize`: no integer index, a description that is not non-empty text) is
skipped and counted by :class:`RecordTally`, up to the run's ``max_malformed_fraction``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from sae_assets.core.common.json_values import json_kind

EXPLANATION_COLUMNS = ["feature", "description", "explanation_type", "explainer_model", "source", "n_alternatives"]


MAX_INDEX = 2**31 - 1
"""Feature indices are stored as int32."""
TEXT_FIELDS = {"typeName": "explanation_type", "explanationModelName": "explainer_model", "createdAt": "created_at"}
"""Optional record fields kept as text: Neuronpedia's name -> column."""
EXAMPLES_KEPT = 5


class MalformedRecord(ValueError):
    """An export record without a usable index or description: ``where`` it is, what the ``problem`` is, and its
    ``kind`` (the problem without the record's values, to count records by)."""

    def __init__(self, where: str, problem: str, kind: str | None = None) -> None:
        super().__init__(f"{where}: {problem}")
        self.where, self.problem, self.kind = where, problem, kind or problem


def _bad_field(where: str, name: str, index: int | None, record: dict[str, Any], wanted: str) -> MalformedRecord:
    value = record.get(name)
    got, kind = (json_kind(value, shown=True), json_kind(value)) if name in record else ("missing", "missing")
    of = f" of feature {index}" if index is not None else ""
    return MalformedRecord(where, f"'{name}'{of} is {got}, not {wanted}", f"'{name}' is {kind}")


def _index(record: dict[str, Any], where: str) -> int:
    raw = record.get("index")
    if raw is None or isinstance(raw, bool | float | list | dict):
        raise _bad_field(where, "index", None, record, "an integer")
    try:
        index = int(str(raw).strip())
    except ValueError as err:
        raise MalformedRecord(where, f"'index' is {str(raw)[:40]!r}, not an integer", "'index' is not an integer"
                              ) from err
    if not 0 <= index <= MAX_INDEX:
        raise MalformedRecord(where, f"'index' {index} is not a feature index (0 to {MAX_INDEX})",
                              "'index' is out of range")
    return index


def normalize(record: Any, where: str) -> dict[str, Any]:
    """One export (or API) record as a row of ``neuronpedia_explanations``; raises :class:`MalformedRecord`
    saying what is wrong: no integer ``index``, a ``description`` that is not non-empty text (a number, null, a
    list, an object, blank), or ``typeName`` / ``explanationModelName`` / ``createdAt`` neither text nor null."""
    if not isinstance(record, dict):
        raise MalformedRecord(where, f"the record is {json_kind(record, shown=True)}, not an object",
                              f"the record is {json_kind(record)}")
    index = _index(record, where)
    description = record.get("description")
    if not isinstance(description, str):
        raise _bad_field(where, "description", index, record, "text")
    if not description.strip():
        raise MalformedRecord(where, f"'description' of feature {index} is blank", "'description' is blank")
    for name in TEXT_FIELDS:
        if record.get(name) is not None and not isinstance(record[name], str):
            raise _bad_field(where, name, index, record, "text")
    return {"feature": index, "description": description.strip(), "explanation_type": record.get("typeName"),
            "explainer_model": record.get("explanationModelName"), "created_at": record.get("createdAt") or ""}


class TooManyMalformed(ValueError):
    """More records were malformed than the run allows; the message gives the counts and an example."""


@dataclass
class RecordTally:
    """Export records read and those skipped as malformed: counts by what was wrong, and the first few skipped
    (where + what) as examples. :meth:`keep` normalizes one record; :meth:`check` fails a run past its limit."""

    read: int = 0
    skipped: int = 0
    problems: Counter[str] = field(default_factory=Counter)
    """What was wrong, without the record's values (e.g. ``'description' is a number``) -> records."""
    examples: list[str] = field(default_factory=list)
    """``<where>: <what was wrong>`` of the first skipped records (at most ``EXAMPLES_KEPT``)."""

    def keep(self, record: Any, where: str) -> dict[str, Any] | None:
        """The normalized record, or None (counted) when it is malformed."""
        try:
            self.read += 1
            return normalize(record, where)
        except MalformedRecord as err:
            self._skip(err)
            return None

    def skip(self, where: str, problem: str, kind: str) -> None:
        """Count a record that could not be parsed at all (e.g. an export line that is not JSON) as malformed."""
        self.read += 1
        self._skip(MalformedRecord(where, problem, kind))

    def _skip(self, err: MalformedRecord) -> None:
        self.skipped += 1
        self.problems[err.kind] += 1
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append(str(err))

    @property
    def fraction(self) -> float:
        return self.skipped / self.read if self.read else 0.0

    def summary(self) -> str:
        """``k of n records (p%) malformed: <kind> (count), ...; e.g. <where>: <what>`` (the first skipped)."""
        kinds = ", ".join(f"{kind} ({count})" for kind, count in self.problems.most_common())
        first = f"; e.g. {self.examples[0]}" if self.examples else ""
        return f"{self.skipped} of {self.read} records ({self.fraction:.2%}) malformed: {kinds}{first}"

    def check(self, max_fraction: float) -> None:
        """Raise :class:`TooManyMalformed` when more than ``max_fraction`` of the records read were malformed."""
        if self.skipped and self.fraction > max_fraction:
            raise TooManyMalformed(f"{self.summary()}. That is more than max_malformed_fraction = {max_fraction:g} "
                                   "allows: check the export (or the source ids in the catalog), or raise "
                                   "max_malformed_fraction in the run config to skip them.")


def choose_explanations(records: Iterable[dict[str, Any]], source: str, preferred_types: Sequence[str] = (),
                        preferred_models: Sequence[str] = ()) -> pl.DataFrame:
    """Normalized records -> one row per feature (``EXPLANATION_COLUMNS``), sorted by feature."""
    frame = pl.DataFrame(list(records), schema={"feature": pl.Int64, "description": pl.String,
                                                "explanation_type": pl.String, "explainer_model": pl.String,
                                                "created_at": pl.String})
    type_rank = {t: i for i, t in enumerate(preferred_types)}
    model_rank = {m: i for i, m in enumerate(preferred_models)}
    ranked = frame.with_row_index("read_order").with_columns(
        pl.col("explanation_type").replace_strict(type_rank, default=len(type_rank), return_dtype=pl.Int32)
        .alias("type_rank"),
        pl.col("explainer_model").replace_strict(model_rank, default=len(model_rank), return_dtype=pl.Int32)
        .alias("model_rank"),
    )
    best = (ranked.sort(["feature", "type_rank", "model_rank", "created_at", "read_order"],
                        descending=[False, False, False, True, True])
            .group_by("feature", maintain_order=True)
            .agg(pl.all().first(), pl.len().alias("n")))
    return best.select(
        pl.col("feature").cast(pl.Int32), "description", "explanation_type", "explainer_model",
        pl.lit(source).alias("source"), (pl.col("n") - 1).cast(pl.Int32).alias("n_alternatives"),
    ).sort("feature")
