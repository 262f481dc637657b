"""Rehearse a multi-host launch on one machine: start N local training processes, each with
its own fake CPU devices, joined by `jax.distributed` over loopback.

    python -m easylm_imitate.train.rehearse --num_processes=2 --devices_per_process=4 -- \\
        --config=configs/smoke.py --workdir=/tmp/rehearsal

Every process runs the same command a pod host would, so sharding, per-host data slices,
collective checkpointing and resumption are exercised before paying for a pod.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

from absl import app, flags

_NUM = flags.DEFINE_integer("num_processes", 2, "Processes (stand-ins for hosts).")
_DEVICES = flags.DEFINE_integer("devices_per_process", 4, "Fake CPU devices per process.")
_TIMEOUT = flags.DEFINE_integer("timeout", 1800, "Seconds before all processes are killed.")


def free_port() -> int:
    """A free TCP port on loopback for the coordinator."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pump(stream, prefix: str, sink) -> None:
    """Copy a process's output line by line with a host prefix."""
    for line in iter(stream.readline, ""):
        sink.write(f"[host {prefix}] {line}")
        sink.flush()


def start(train_args: list[str], num_processes: int = 2, devices_per_process: int = 4,
          sink=sys.stdout) -> list[subprocess.Popen]:
    """Start `python -m easylm_imitate.train TRAIN_ARGS` as `num_processes` joined processes
    whose output goes to `sink` line by line, prefixed with the host number."""
    address = f"127.0.0.1:{free_port()}"
    procs = []
    for i in range(num_processes):
        env = dict(os.environ, JAX_PLATFORMS="cpu",
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
        cmd = [sys.executable, "-m", "easylm_imitate.train", *train_args,
               f"--config.distributed.coordinator_address={address}",
               f"--config.distributed.num_processes={num_processes}", f"--config.distributed.process_id={i}"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        proc.pump = threading.Thread(target=_pump, args=(proc.stdout, str(i), sink), daemon=True)
        proc.pump.start()
        procs.append(proc)
    return procs


def wait(procs: list[subprocess.Popen], timeout: float) -> list[int | None]:
    """Exit codes of processes from `start`, waiting at most `timeout` seconds in all; any
    still running then is killed and reported as None."""
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=max(deadline - time.monotonic(), 0.01)))
            except subprocess.TimeoutExpired:
                codes.append(None)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for proc in procs:
            proc.pump.join(timeout=5)
    return codes


def launch(train_args: list[str], num_processes: int = 2, devices_per_process: int = 4, timeout: int = 1800,
           sink=sys.stdout) -> list[int | None]:
    """Run `python -m easylm_imitate.train TRAIN_ARGS` as `num_processes` joined processes; return
    their exit codes (None for one killed after `timeout` seconds)."""
    return wait(start(train_args, num_processes, devices_per_process, sink), timeout)


def main(argv):
    """Launch the processes with the arguments after `--`."""
    codes = launch(argv[1:], _NUM.value, _DEVICES.value, _TIMEOUT.value)
    print(f"exit codes: {codes} (None: still running after --timeout, killed)")
    failed = [124 if c is None else c for c in codes if c != 0]
    raise SystemExit(max(failed, key=abs) if failed else 0)


if __name__ == "__main__":
    app.run(main)
