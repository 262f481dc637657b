"""Serve a checkpoint behind an OpenAI-compatible API.

    python -m easylm_imitate.serve --checkpoint=DIR --port=8000 [--host=127.0.0.1]
        [--model_name=NAME] [--max_batch=16] [--max_prompt_tokens=2048] [--max_tokens_limit=1024]
        [--max_prompt_bytes=0] [--max_queue=64]
        [--warmup [--warmup_prompt_tokens=128,512] [--warmup_max_tokens=N,...]]
        [--mesh=dp:1,fsdp:-1,tp:1] [--rules=fsdp_tp] [--dtype=bfloat16]
"""

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Parameter checkpoint or training run directory.", required=True)
flags.DEFINE_string("host", "127.0.0.1", "Interface to listen on.")
flags.DEFINE_integer("port", 8000, "TCP port.", lower_bound=1, upper_bound=65535)
flags.DEFINE_string("model_name", None, "Model id clients send (default: the checkpoint directory's name).")
flags.DEFINE_integer("max_batch", 16, "Most generation rows run together in one batch.", lower_bound=1)
flags.DEFINE_float("batch_wait_ms", 5.0, "How long to collect concurrent requests into a batch.", lower_bound=0)
flags.DEFINE_integer("max_prompt_tokens", 2048, "Longest prompt accepted (tokens).", lower_bound=1)
flags.DEFINE_integer("max_tokens_limit", 1024, "Largest max_tokens accepted.", lower_bound=1)
flags.DEFINE_integer("max_prompt_bytes", 0, "Largest text prompt accepted before tokenising it (UTF-8 bytes); "
                     "0: max_prompt_tokens times the longest vocabulary token's bytes.", lower_bound=0)
flags.DEFINE_integer("max_queue", 64, "Most requests waiting for the model beyond the running batch; more get "
                     "429 with Retry-After.", lower_bound=1)
flags.DEFINE_bool("warmup", False, "Compile greedy generation before serving, for 1 and --max_batch rows at each "
                  "--warmup_prompt_tokens and --warmup_max_tokens (otherwise the first request of each shape "
                  "waits for its compile).")
flags.DEFINE_list("warmup_prompt_tokens", ["128", "512"], "Prompt lengths (tokens) --warmup compiles for.")
flags.DEFINE_list("warmup_max_tokens", None, "Reply lengths (max_tokens) --warmup compiles for "
                  "(default: --max_tokens_limit, what a chat request without max_tokens gets).")
flags.DEFINE_string("mesh", None, "Device mesh, e.g. 'dp:1,fsdp:-1,tp:1' (default: one device).")
flags.DEFINE_enum("rules", "fsdp_tp", ["fsdp", "fsdp_tp", "replicated"], "Parameter sharding rules on the mesh.")
flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Compute dtype (default: the checkpoint's).")


def main(argv):
    """Load the checkpoint and serve until interrupted."""
    del argv
    from easylm_imitate.inference.server import Limits, serve_checkpoint

    limits = Limits(max_prompt_tokens=FLAGS.max_prompt_tokens, max_tokens=FLAGS.max_tokens_limit,
                    max_batch=FLAGS.max_batch, wait_ms=FLAGS.batch_wait_ms,
                    max_prompt_bytes=FLAGS.max_prompt_bytes or None, max_queue=FLAGS.max_queue)
    warmup = None
    if FLAGS.warmup:
        warmup = (_lengths("warmup_prompt_tokens", FLAGS.warmup_prompt_tokens),
                  _lengths("warmup_max_tokens", FLAGS.warmup_max_tokens or [str(FLAGS.max_tokens_limit)]))
    serve_checkpoint(FLAGS.checkpoint, host=FLAGS.host, port=FLAGS.port, model_name=FLAGS.model_name,
                     mesh=FLAGS.mesh, rules=FLAGS.rules, dtype=FLAGS.dtype, limits=limits, warmup=warmup)


def _lengths(name: str, values: list[str]) -> list[int]:
    """Positive integers from a list flag, or a one-line error naming the flag."""
    lengths = [int(v) for v in values if v.strip().isdigit()]
    if not lengths or len(lengths) != len(values) or min(lengths) < 1:
        raise SystemExit(f"serve: --{name}: expected positive integers, got {','.join(values)!r}")
    return lengths


def run():
    """Console entry point (`easylm-serve`)."""
    app.run(main)


if __name__ == "__main__":
    run()
