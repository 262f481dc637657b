"""The fine-tuning loop: data, sharded state, jitted step, checkpoints, metrics, signals."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import time

import jax
from tqdm import tqdm

import easylm_imitate
from easylm_imitate import parallel
from easylm_imitate.checkpoint import CheckpointError
from easylm_imitate.data import train_loader
from easylm_imitate.fileio import write_json_atomic, write_jsonl_atomic
from easylm_imitate.lora import adapters as lora_adapters
from easylm_imitate.lora import run as lora_run_lib
from easylm_imitate.train import metrics as metrics_lib
from easylm_imitate.train import integrity, peak_flops, resume, run_checkpoint, run_lock, state as state_lib
from easylm_imitate.train.nonfinite import NonFiniteError, NonFiniteGuard
from easylm_imitate.train.host_memory import keep_freed_host_memory
from easylm_imitate.train.preemption import StopRequest
from easylm_imitate.train.step import eval_step


# Failures `train` explains in one line (the binary prints them without a traceback).
RUN_ERRORS = (CheckpointError, run_lock.RunLockError, NonFiniteError, train_loader.DataError,
              lora_adapters.LoraConfigError)


@dataclasses.dataclass
class TrainResult:
    """What a finished (or interrupted) run reports."""

    final_step: int
    history: list[dict]
    interrupted: bool = False


def load_tokenizer(config):
    """The tokenizer named by `config.tokenizer`, else the one saved with `init_from`."""
    from easylm_imitate import model_names  # names as every binary takes them; one-line errors

    return model_names.load_tokenizer(config.tokenizer or config.init_from, "--config.tokenizer")


def _git_commit() -> str | None:
    """The commit of the code being run, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(__file__), capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_run_info(workdir: str, config, cfg, tokenizer) -> None:
    """Resolved config, package version, git commit and the tokenizer, into the workdir."""
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    write_json_atomic(os.path.join(workdir, "config.json"), json.loads(config.to_json_best_effort()))
    write_json_atomic(os.path.join(workdir, "run_info.json"), {
        "package_version": easylm_imitate.__version__, "git_commit": _git_commit(), "jax_version": jax.__version__,
        "devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
        "processes": jax.process_count(), "model": cfg.to_dict(), "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    tok_dir = os.path.join(workdir, "tokenizer")
    if not os.path.isdir(tok_dir):
        tokenizer.save_pretrained(tok_dir)


def _pad_id(tokenizer) -> int:
    """Token id used for padding rows."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if tid is not None:
            return int(tid)
    return 0


def load_data(config, tokenizer, workdir: str, log=print):
    """(train rows, eval rows or None); rejects go to WORKDIR/rejects.jsonl with counts printed."""
    from easylm_imitate.data.templates import get_template

    template = get_template(config.data.template)
    pad = _pad_id(tokenizer)
    train = train_loader.render_file(config.data.train_file, tokenizer, template, config.seq_length, config.seed, pad,
                                     config.distill)
    rejects = list(train.rejects)
    evals = None
    if config.data.eval_file:
        evals = train_loader.render_file(config.data.eval_file, tokenizer, template, config.seq_length, 0, pad,
                                         config.distill)
        rejects += evals.rejects
        all_rows = evals.num_rows
        evals = dataclasses.replace(evals, rows=train_loader.first_rows(evals.rows, config.eval_max_rows))
        tokens, loss_tokens, _ = metrics_lib.batch_token_counts(evals.rows)
        limited = f" (first {evals.num_rows} of {all_rows}: eval_max_rows)" if evals.num_rows < all_rows else ""
        log(f"eval set: {evals.num_rows} rows{limited} of {config.seq_length} tokens, {tokens} tokens "
            f"({int(loss_tokens)} loss tokens), {-(-evals.num_rows // config.batch_size)} batches per eval")
    if jax.process_index() == 0:
        write_jsonl_atomic(os.path.join(workdir, "rejects.jsonl"), rejects)
    s = train.stats
    log(f"data: {s.examples} examples -> {s.rows} rows of {config.seq_length} tokens "
        f"({s.fill_ratio(config.seq_length):.0%} full, {s.loss_tokens} loss tokens); "
        f"{len(rejects)} records rejected (see rejects.jsonl)")
    return train, evals


def train(config, workdir: str, log=print) -> TrainResult:
    """Run (or resume) the training run described by `config` in `workdir`; RunLockError when
    another trainer holds `workdir` (see `run_lock`)."""
    dist = config.distributed
    parallel.initialize_distributed(dist.coordinator_address or None, dist.num_processes or None,
                                    None if dist.process_id < 0 else dist.process_id)
    with run_lock.RunLock(workdir, jax.process_index()):
        return _train(config, workdir, log)


def _train(config, workdir: str, log) -> TrainResult:
    """`train` once the run directory's lock is held."""
    mesh = parallel.make_mesh(config.mesh)
    if config.reuse_host_memory and jax.default_backend() == "cpu":
        keep_freed_host_memory()
    tokenizer = load_tokenizer(config)
    cfg = state_lib.model_config(config)
    os.makedirs(workdir, exist_ok=True)
    train_rows, eval_rows = load_data(config, tokenizer, workdir, log)
    if jax.process_index() == 0:  # the loss mask as trained on, so a wrong template shows before step 1
        from easylm_imitate.data.inspect import packed_row_preview

        log(packed_row_preview(train_rows.rows, tokenizer))
    total_steps = config.total_steps or max(1, train_rows.num_rows // config.batch_size)
    if config.batch_size % config.grad_accum_steps:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by grad_accum_steps {config.grad_accum_steps}")
    parallel.check_batch_fits_mesh(config.batch_size, config.grad_accum_steps, mesh)
    write_run_info(workdir, config, cfg, tokenizer)

    lora_run = None
    if lora_adapters.enabled(config):  # LoRA: the adapters are the trained `params` (see easylm_imitate/lora)
        lora_run = lora_run_lib.setup(config, cfg, total_steps, mesh, workdir, log)
        optimizer, schedule, lay = lora_run.optimizer, lora_run.schedule, lora_run.lay
    else:
        optimizer, schedule = state_lib.build_optimizer(config, cfg, total_steps)
        lay = state_lib.layout(cfg, optimizer, mesh, config.sharding_rules)
    mgr = run_checkpoint.manager(workdir, config.save_every_steps, config.keep_checkpoints or None)

    start, data_state, tokens_seen = 0, None, 0
    guard = NonFiniteGuard(config.nonfinite)
    data_fp = integrity.data_fingerprint(train_rows.rows, config.seed)
    with jax.set_mesh(mesh):
        resumed = resume.resume(mgr, workdir, lay, optimizer, data_fp, log)
        if resumed is not None:
            state, start, data_state = resumed.state, resumed.step, resumed.data_state
            tokens_seen = int(resumed.meta.get("tokens_seen", 0))
            log(f"resuming from step {start} ({mgr.directory})")
        else:
            if lora_run is not None:
                params = lora_run.init_params(config.seed)
            else:
                params = (state_lib.params_from(config.init_from, lay) if config.init_from
                          else state_lib.fresh_params(cfg, config.seed, lay))
            state = state_lib.initial_state(params, optimizer, lay)
            log(f"starting at step 0 from {config.init_from or 'random init'}: {cfg.num_params() / 1e6:.1f}M params")

    batches = train_loader.batch_iterator(train_rows.rows, config.batch_size, total_steps, config.seed,
                                          jax.process_index(), jax.process_count())
    if data_state is not None:
        batches.set_state(data_state)
    batch_shardings = {k: parallel.batch_sharding(mesh) for k in train_rows.rows}
    if lora_run is not None:
        step_fn, eval_fn = lora_run.train_step_fn(config.grad_accum_steps, guard.skip), lora_run.eval_fn()
    else:
        step_fn = state_lib.jit_train_step(lay, optimizer, schedule, config.grad_accum_steps, mesh,
                                         config.sharding_rules, guard.skip)
        eval_fn = jax.jit(functools.partial(eval_step, lay.graphdef),
                          in_shardings=(lay.params_shardings, batch_shardings))

    peak = peak_flops.peak_flops_per_device(config.peak_flops_per_device, config.model.dtype)
    throughput = metrics_lib.Throughput(cfg.flops_per_token(config.seq_length), peak, jax.device_count(), log)
    logger = metrics_lib.Logger(workdir, config.tensorboard, start, log)
    log(f"mesh {dict(mesh.shape)}, {total_steps} steps of {config.batch_size}x{config.seq_length} tokens; "
        f"MFU against {peak.flops / 1e12:.4g} TFLOP/s per device ({peak.source})")

    def meta(step):
        return {"step": step, "tokens_seen": tokens_seen, "model": cfg.to_dict(), "data_fingerprint": data_fp,
                "config": json.loads(config.to_json_best_effort()), **(lora_run.meta() if lora_run else {})}

    def evaluate(step):
        if eval_rows is None:
            return
        sums = {"loss_sum": 0.0, "count": 0.0, "correct": 0.0}
        with jax.set_mesh(mesh), tqdm(total=eval_rows.num_rows, desc=f"eval at step {step}", unit="row", leave=None,
                                      disable=jax.process_index() != 0, dynamic_ncols=True, file=sys.stderr) as rows_bar:
            for chunk in train_loader.eval_batches(eval_rows.rows, config.batch_size):
                out = jax.device_get(eval_fn(state.params, parallel.global_batch_from_host(
                    {k: v[parallel.host_batch_slice(config.batch_size)] for k, v in chunk.items()}, mesh)))
                sums = {k: sums[k] + float(out[k]) for k in sums}
                rows_bar.update(min(config.batch_size, rows_bar.total - rows_bar.n))
        count = max(sums["count"], 1.0)
        scalars = {"eval_loss": sums["loss_sum"] / count, "eval_accuracy": sums["correct"] / count}
        logger.write(step, scalars, kind="eval")
        log(f"step {step}: eval loss {scalars['eval_loss']:.4f}, accuracy {scalars['eval_accuracy']:.3f}")

    if start == 0:
        evaluate(0)  # the starting point, so the eval curve shows what training bought
    last_saved = start if start in mgr.all_steps() else None  # a stop before any step saves nothing new

    def save(step, force):
        nonlocal last_saved
        guard.settle()
        if run_checkpoint.save(mgr, step, state.params, state.opt_state, batches.get_state(), meta(step),
                               force=force):
            last_saved = step

    def off_the_clock():
        """Leave what follows out of the throughput window, once the steps dispatched so far are done."""
        jax.block_until_ready(state)
        return throughput.paused()

    stop = StopRequest()
    stop.install()
    interrupted = False
    step = start
    bar = tqdm(total=total_steps, initial=start, desc="train", unit="step", disable=jax.process_index() != 0,
               dynamic_ncols=True, file=sys.stderr)
    try:
        with jax.set_mesh(mesh):
            while step < total_steps:
                if stop.should_stop(step - start):  # the same answer on every process
                    log(f"stop requested (SIGTERM/SIGINT): saving step {step} and stopping; "
                        "rerun the same command to resume")
                    if last_saved != step:
                        save(step, force=True)
                    interrupted = True
                    break
                local = next(batches)
                counts = metrics_lib.batch_token_counts(local, jax.process_count())
                batch = parallel.global_batch_from_host(local, mesh)
                state, step_metrics = step_fn(state, batch)
                step += 1
                guard.observe(step, step_metrics)  # NonFiniteError at the first NaN/inf (nonfinite=stop)
                mgr.check_saved()  # a failed asynchronous save is reported now, not at the next save
                throughput.step(*counts)
                tokens_seen += config.batch_size * config.seq_length
                if step % config.log_every_steps == 0 or step == total_steps or step == start + 1:
                    scalars = guard.log_scalars({k: float(v) for k, v in jax.device_get(step_metrics).items()})
                    scalars.update(throughput.report())
                    if step == start + 1:  # its time is mostly compilation
                        for key in metrics_lib.TIMING_KEYS:
                            scalars.pop(key)
                    logger.write(step, scalars)
                    rates = ({"tok/s": f"{scalars['tokens_per_s']:.4g}", "mfu": f"{scalars['mfu']:.1%}"}
                             if "mfu" in scalars else {})
                    bar.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['learning_rate']:.2e}", **rates)
                bar.update(1)
                if step % config.save_every_steps == 0 or step == total_steps:
                    with off_the_clock():
                        save(step, force=step == total_steps)
                if config.eval_every_steps and step % config.eval_every_steps == 0 and step != total_steps:
                    with off_the_clock():
                        evaluate(step)
        if not interrupted and not (step == start and logger.logged(step, "eval")):
            evaluate(step)  # a rerun of a finished run keeps the final eval it logged
    finally:
        bar.close()
        try:  # waits for the last save; a failure already on its way is the one reported
            mgr.close(quiet=sys.exc_info()[1] is not None)
        finally:
            logger.close()
            stop.restore()
    return TrainResult(step, logger.history, interrupted)
