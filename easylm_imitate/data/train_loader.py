"""Training-side data: canonical JSONL -> template -> packed rows -> a resumable,
per-host iterator of global-batch slices (grain).

Rows are shuffled with the run's seed (a fresh order each epoch). Process i of n reads
rows i, i+n, i+2n, ... of that order, so the n per-host slices of step k together hold
exactly the rows of the single-process global batch k. The iterator state
(`{"next_index": k}`) is saved with each checkpoint, so a resumed run sees the batches it
would have seen.
"""

from __future__ import annotations

import dataclasses
import math
import os

import grain
import numpy as np

from easylm_imitate.data.packing import PackStats, next_token_pieces, pack_pieces
from easylm_imitate.data.schema import RecordError, validate_record
from easylm_imitate.fileio import LineError, iter_jsonl


class DataError(ValueError):
    """Training data that cannot be used at all (missing, empty, nothing to learn)."""


@dataclasses.dataclass
class LoadedRows:
    """Packed rows plus what happened on the way: rejects (with file, line, reason) and stats."""

    rows: dict[str, np.ndarray]
    rejects: list[dict]
    stats: PackStats

    @property
    def num_rows(self) -> int:
        """Number of packed rows."""
        return len(self.rows["inputs"])


def render_file(path: str, tokenizer, template, seq_length: int, seed: int, pad_id: int,
                distill=None) -> LoadedRows:
    """Read canonical records from a JSONL file, render, split and pack them.

    Bad records (invalid JSON, schema errors such as an unknown role, no assistant turn)
    are rejected with file, line and reason; an empty or all-bad file is a DataError.
    With `distill` (the training config's `distill` section, alpha > 0) rows also carry the
    target's top-K from each record's `meta.target_logprobs` (see train/distill.py): a
    record whose target tokens do not reproduce its rendered tokens is rejected, and target
    tokens the tokenizer does not have are a DataError (another tokenizer).
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: training file not found")
    from easylm_imitate.data import target_logprobs as tlp
    from easylm_imitate.data.templates import TemplateError
    from easylm_imitate.train import distill as distill_lib

    try:
        distilling = distill_lib.enabled(distill)
    except ValueError as e:  # a bad config.distill value: one line, as the other data errors
        raise DataError(str(e)) from None

    pieces, rejects = [], []
    stats = PackStats()
    for line, obj in iter_jsonl(path):
        if isinstance(obj, LineError):
            rejects.append(obj.as_reject())
            continue
        try:
            record = validate_record(obj)
            ids, mask = template.render(record, tokenizer)
            extra = None
            if distilling:
                extra = distill_lib.row_extras(*tlp.align(record, ids, mask, tokenizer, int(distill.top_k)), mask,
                                               float(distill.alpha))
        except tlp.TokenizerMismatch as e:
            raise DataError(f"{path}:{line}: {e}") from None
        except (RecordError, TemplateError) as e:
            rejects.append({"file": path, "line": line, "reason": str(e)})
            continue
        except tlp.AlignmentError as e:
            rejects.append({"file": path, "line": line, "id": record["id"], "reason": f"record {record['id']!r}: {e}"})
            continue
        pieces.extend(next_token_pieces(ids, mask, seq_length, stats, extra))
    if not pieces:
        detail = f"; {len(rejects)} records rejected, first: {rejects[0]['reason']}" if rejects else ""
        raise DataError(f"{path}: no usable training examples{detail}")
    order = np.random.default_rng(seed).permutation(len(pieces))
    rows = pack_pieces([pieces[i] for i in order], seq_length, pad_id, stats)
    return LoadedRows(rows, rejects, stats)


class _RowSource:
    """Random-access source of packed rows for grain."""

    def __init__(self, rows: dict[str, np.ndarray]):
        self._rows = rows
        self._n = len(rows["inputs"])

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in self._rows.items()}


def batch_iterator(rows: dict[str, np.ndarray], global_batch: int, total_steps: int, seed: int,
                   process_index: int = 0, process_count: int = 1):
    """A grain iterator over this host's slice of each global batch, for `total_steps` steps."""
    n = len(rows["inputs"])
    if global_batch % process_count:
        raise DataError(f"batch_size {global_batch} is not divisible by {process_count} processes")
    epochs = max(1, math.ceil(total_steps * global_batch / n))
    ds = grain.MapDataset.source(_RowSource(rows)).shuffle(seed=seed).repeat(epochs)
    ds = ds[process_index::process_count].batch(global_batch // process_count, drop_remainder=True)
    return iter(ds.to_iter_dataset())


def first_rows(rows: dict[str, np.ndarray], max_rows: int) -> dict[str, np.ndarray]:
    """The first `max_rows` rows (all of them when `max_rows` is 0), e.g. to bound an eval set."""
    if max_rows < 0:
        raise DataError(f"config.eval_max_rows: must be >= 0 (0 = all rows), got {max_rows}")
    return {k: v[:max_rows] for k, v in rows.items()} if max_rows else rows


def eval_batches(rows: dict[str, np.ndarray], batch: int):
    """Fixed-order batches covering every eval row once (the last is padded with empty rows)."""
    n = len(rows["inputs"])
    for start in range(0, n, batch):
        chunk = {k: v[start:start + batch] for k, v in rows.items()}
        short = batch - len(chunk["inputs"])
        if short:
            chunk = {k: np.concatenate([v, np.zeros((short, *v.shape[1:]), v.dtype)]) for k, v in chunk.items()}
        yield chunk
