"""Serve a checkpoint behind an OpenAI-compatible API.

    python -m easylm_imitate.serve --checkpoint=DIR --port=8000 [--host=127.0.0.1]
        [--model_name=NAME] [--max_batch=16] [--max_prompt_tokens=2048] [--max_tokens_limit=1024]
        [--max_prompt_bytes=0]
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
flags.DEFINE_string("mesh", None, "Device mesh, e.g. 'dp:1,fsdp:-1,tp:1' (default: one device).")
flags.DEFINE_enum("rules", "fsdp_tp", ["fsdp", "fsdp_tp", "replicated"], "Parameter sharding rules on the mesh.")
flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Compute dtype (default: the checkpoint's).")


def main(argv):
    """Load the checkpoint and serve until interrupted."""
    del argv
    from easylm_imitate.inference.server import Limits, serve_checkpoint

    limits = Limits(max_prompt_tokens=FLAGS.max_prompt_tokens, max_tokens=FLAGS.max_tokens_limit,
                    max_batch=FLAGS.max_batch, wait_ms=FLAGS.batch_wait_ms,
                    max_prompt_bytes=FLAGS.max_prompt_bytes or None)
    serve_checkpoint(FLAGS.checkpoint, host=FLAGS.host, port=FLAGS.port, model_name=FLAGS.model_name,
                     mesh=FLAGS.mesh, rules=FLAGS.rules, dtype=FLAGS.dtype, limits=limits)


def run():
    """Console entry point (`easylm-serve`)."""
    app.run(main)


if __name__ == "__main__":
    run()
