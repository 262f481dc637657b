"""Turn rendered examples into fixed-size training rows.

An example is (ids, mask) from a chat template: `mask[i] == 1` where token i is one the
model must learn to produce. It becomes next-token pairs (inputs = ids[:-1], targets =
ids[1:], weights = mask[1:]). Pairs longer than the row are split into row-sized pieces;
pieces are packed into rows with segment ids (1, 2, ...; 0 = padding) and positions that
restart at 0 in each segment, so packed examples never attend to each other.

`extra` arrays given per token of an example (the target's top-K for distillation, see
data/target_logprobs.py: shape [len(ids), ...]) follow the targets: row slot i holds the
extra of token ids[i + 1], zeros in padding.
"""

from __future__ import annotations

import dataclasses

import numpy as np

FIELDS = ("inputs", "targets", "weights", "segment_ids", "positions")


@dataclasses.dataclass
class PackStats:
    """Counts from splitting and packing."""

    examples: int = 0
    pieces: int = 0
    split_examples: int = 0
    dropped_pieces_without_loss: int = 0
    rows: int = 0
    tokens: int = 0
    loss_tokens: int = 0

    def fill_ratio(self, seq_length: int) -> float:
        """Fraction of row slots holding real tokens."""
        return self.tokens / max(self.rows * seq_length, 1)


def next_token_pieces(ids, mask, seq_length: int, stats: PackStats, extra: dict | None = None):
    """Split one example into (inputs, targets, weights, extras) pieces of at most `seq_length`.

    `extra`: name -> per-token array [len(ids), ...], shifted and cut like the targets."""
    ids = np.asarray(ids, np.int32)
    mask = np.asarray(mask, np.float32)
    inputs, targets, weights = ids[:-1], ids[1:], mask[1:]
    shifted = {k: np.asarray(v)[1:] for k, v in (extra or {}).items()}
    stats.examples += 1
    if len(inputs) > seq_length:
        stats.split_examples += 1
    pieces = []
    for start in range(0, len(inputs), seq_length):
        w = weights[start:start + seq_length]
        if not w.any():
            stats.dropped_pieces_without_loss += 1
            continue
        cut = slice(start, start + seq_length)
        pieces.append((inputs[cut], targets[cut], w, {k: v[cut] for k, v in shifted.items()}))
    stats.pieces += len(pieces)
    return pieces


def pack_pieces(pieces, seq_length: int, pad_id: int, stats: PackStats) -> dict[str, np.ndarray]:
    """Pack pieces into rows in the given order (a piece goes in the current row if it fits).

    Every piece must carry the same extras (as `next_token_pieces` gives them)."""
    rows: list[list] = []
    current: list = []
    used = 0
    for piece in pieces:
        if used + len(piece[0]) > seq_length and current:
            rows.append(current)
            current, used = [], 0
        current.append(piece)
        used += len(piece[0])
    if current:
        rows.append(current)
    n = len(rows)
    out = {
        "inputs": np.full((n, seq_length), pad_id, np.int32),
        "targets": np.full((n, seq_length), pad_id, np.int32),
        "weights": np.zeros((n, seq_length), np.float32),
        "segment_ids": np.zeros((n, seq_length), np.int32),
        "positions": np.zeros((n, seq_length), np.int32),
    }
    for name, value in (pieces[0][3] if pieces else {}).items():
        out[name] = np.zeros((n, seq_length, *value.shape[1:]), value.dtype)
    for r, row in enumerate(rows):
        offset = 0
        for segment, (inp, tgt, w, extra) in enumerate(row, start=1):
            k = len(inp)
            sl = slice(offset, offset + k)
            out["inputs"][r, sl], out["targets"][r, sl], out["weights"][r, sl] = inp, tgt, w
            for name, value in extra.items():
                out[name][r, sl] = value
            out["segment_ids"][r, sl] = segment
            out["positions"][r, sl] = np.arange(k)
            offset += k
    stats.rows += n
    stats.tokens += int((out["segment_ids"] > 0).sum())
    stats.loss_tokens += int(out["weights"].sum())
    return out
