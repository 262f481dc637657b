"""Held-out loss: mean negative log-likelihood per token of the target's replies to held-out
prompts under a model, with the chat template the model was trained with.

    python -m easylm_imitate.experiment.heldout_loss --checkpoint=RUN_OR_CKPT \\
        --data=BUILD/eval_prompts.jsonl --template=paper --out=heldout_loss.json

--data is a responses file (canonical records or {id, prompt, response}); only the reply's
tokens count, as in training. Writes a results file (benchmark heldout_loss; metrics loss,
perplexity, tokens) like the eval/ binaries.
"""

from __future__ import annotations

import math

from absl import app, flags

from easylm_imitate.evaluation import cli, results

cli.define_output_flags()
cli.define_limit_flag("prompts of --data")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Converted checkpoint or training run directory.",
                                  required=True)
_DATA = flags.DEFINE_string("data", None, "Prompts with the target's replies (JSONL).", required=True)
_TEMPLATE = flags.DEFINE_string("template", "paper", "Chat template the model was trained with: paper | chatml | "
                                "tokenizer.")
_MODEL_NAME = flags.DEFINE_string("model_name", None, "Name recorded in the results (default: the checkpoint).")
FLAGS = flags.FLAGS


def heldout_loss(model, tokenizer, records: list[dict], template_name: str) -> tuple[dict, list[dict]]:
    """(metrics, per-record rows): loss summed over reply tokens / their count. Sequences
    longer than the model's context are cut to it (the cut is counted in the metrics)."""
    from easylm_imitate.data.templates import get_template
    from easylm_imitate.inference.scoring import Scorer

    rendered = get_template(template_name).render_batch(records, tokenizer)
    limit = model.cfg.max_position_embeddings
    cut = sum(1 for ids, _ in rendered if len(ids) > limit)
    rendered = [(ids[:limit], mask[:limit]) for ids, mask in rendered]
    scores = Scorer(model).score([ids for ids, _ in rendered])
    total, count, rows = 0.0, 0, []
    for record, (ids, mask), s in zip(records, rendered, scores):
        weights = mask[1:]
        nll = -sum(float(lp) for lp, w in zip(s.logprobs, weights) if w)
        n = sum(weights)
        total, count = total + nll, count + n
        rows.append({"id": record["id"], "nll": nll, "tokens": n})
    if count == 0:
        raise results.NothingScored("no reply token to score")
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count, "truncated": cut}, rows


@cli.evaluation_main("heldout_loss")
def main(argv) -> int:
    """Score --data under --checkpoint and write the results file."""
    del argv
    import easylm_imitate
    from easylm_imitate.evaluation import responses

    reference, rejects = responses.load_responses(_DATA.value)
    items = list(reference.values())[:FLAGS.limit] if FLAGS.limit else list(reference.values())
    records = [{"id": r.id, "turns": [{"role": m["role"], "text": m["content"]} for m in r.messages]
                + [{"role": "assistant", "text": r.response}]} for r in items]
    model, tokenizer = easylm_imitate.load(_CHECKPOINT.value)
    metrics, rows = heldout_loss(model, tokenizer, records, _TEMPLATE.value)
    record = results.make_results("heldout_loss", _MODEL_NAME.value or _CHECKPOINT.value,
                                  {"data": _DATA.value, "template": _TEMPLATE.value, "limit": FLAGS.limit},
                                  metrics, n=len(rows))
    return cli.conclude(FLAGS, record, rows, rejects=rejects)


if __name__ == "__main__":
    app.run(main)
