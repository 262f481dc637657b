"""Several processes on one journal: a request in flight is claimed (a lease with owner and
expiry), so no two processes send it; leases of dead or silent owners are taken over."""

import json
import os
import socket
import subprocess
import sys
import time

from easylm_imitate.imitation.journal import Journal, owner_id
from easylm_imitate.testing import OpenAIStub


def _collect_cmd(stub, prompts, out, journal):
    return [sys.executable, "-m", "easylm_imitate.imitation.collect", f"--base_url={stub.base_url}", "--model=stub",
            f"--prompts={prompts}", f"--out={out}", f"--journal={journal}", "--api_key_env=", "--noprogress",
            "--max_in_flight=4"]


def test_two_collectors_started_together_send_each_prompt_once(tmp_path):
    n = 120
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"id{i}", "prompt": f"prompt {i}"}) + "\n" for i in range(n)))
    journal = tmp_path / "shared.journal"
    with OpenAIStub(responder=lambda body: "reply to " + body["messages"][-1]["content"], delay=0.03) as stub:
        procs = [subprocess.Popen(_collect_cmd(stub, prompts, tmp_path / f"{name}.jsonl", journal),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in "ab"]
        outputs = [p.communicate(timeout=180) for p in procs]
        counts = stub.prompt_counts(outcome=None)
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    assert counts == {f"prompt {i}": 1 for i in range(n)}  # every prompt sent exactly once in all
    sent = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert all(s["records"] == n for s in sent)
    reports = [json.loads((tmp_path / f"{name}.jsonl.report.json").read_text()) for name in "ab"]
    assert sum(r["client"]["sent"] for r in reports) == n
    for name in "ab":
        records = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        assert [r["id"] for r in records] == [f"id{i}" for i in range(n)]
        assert all(r["turns"][-1]["text"] == f"reply to prompt {i}" for i, r in enumerate(records))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_claims_are_exclusive_until_released_answered_expired_or_their_owner_dies(tmp_path):
    path = tmp_path / "j.journal"
    a, b = Journal(path), Journal(path)
    me, other = owner_id(), owner_id()
    try:
        assert a.claim("k1", me, lease_seconds=60) == "claimed"
        assert a.claim("k1", me, lease_seconds=60) == "claimed"  # renewing one's own claim
        assert b.claim("k1", other, lease_seconds=60) == "busy"
        a.release("k1", me)
        assert b.claim("k1", other, lease_seconds=60) == "claimed"
        b.put_success("k1", "m", {"messages": []}, ["t"], {"prompt_tokens": 1, "completion_tokens": 1}, ["stop"])
        assert a.claim("k1", me, lease_seconds=60) == "done"

        # A lease whose owner stopped renewing it expires and is taken over.
        silent = f"{socket.gethostname()}-elsewhere:1:0"
        assert a.claim("k2", silent, lease_seconds=0.2) == "claimed"
        assert b.claim("k2", other, lease_seconds=60) == "busy"
        time.sleep(0.3)
        assert b.claim("k2", other, lease_seconds=60) == "claimed"

        # A lease held by a dead process of this host is taken over at once.
        dead = f"{socket.gethostname()}:{_dead_pid()}:0"
        assert a.claim("k3", dead, lease_seconds=3600) == "claimed"
        assert b.claim("k3", other, lease_seconds=60) == "claimed"

        # Renewal keeps a lease alive past its first expiry.
        assert a.claim("k4", me, lease_seconds=0.3) == "claimed"
        time.sleep(0.2)
        a.renew(me, lease_seconds=60)
        time.sleep(0.2)
        assert b.claim("k4", other, lease_seconds=60) == "busy"
        assert os.getpid() == int(me.split(":")[-2])
    finally:
        a.close()
        b.close()


_OPEN_TOGETHER = """
import multiprocessing as mp, os, sys
from easylm_imitate.imitation.journal import Journal

def open_journal(path, barrier, results):
    barrier.wait()
    try:
        Journal(path)
        results.put("ok")
    except Exception as e:
        results.put(repr(e))

if __name__ == "__main__":
    rounds, n = int(sys.argv[2]), 16
    for r in range(rounds):
        path = os.path.join(sys.argv[1], f"round{r}.journal")
        barrier, results = mp.Barrier(n), mp.Queue()
        procs = [mp.Process(target=open_journal, args=(path, barrier, results)) for _ in range(n)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join()
        print(next((o for o in outcomes if o != "ok"), "ok"))
"""


def test_processes_opening_a_new_journal_at_once_all_get_it(tmp_path):
    """Sixteen processes open one fresh journal at the same instant, 60 times over: none is told it
    is locked (sqlite skips its busy handler when switching to WAL, so opening retries)."""
    proc = subprocess.run([sys.executable, "-c", _OPEN_TOGETHER, str(tmp_path), "60"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["ok"] * 60, proc.stdout
