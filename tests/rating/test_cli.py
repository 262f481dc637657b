"""eval/rate.py: --help lists the subcommands and flags; bad input gives a clear error."""

from rating.rating_helpers import rate_cli, write_pairs


def test_help_lists_subcommands_and_flags():
    top = rate_cli("--help").stdout
    assert all(cmd in top for cmd in ("serve", "invite", "results", "export"))
    serve = rate_cli("serve", "--help").stdout
    for flag in ("--pairs", "--db", "--reference", "--model", "--ratings_per_item", "--host", "--port", "--admin_token"):
        assert flag in serve
    assert "--n" in rate_cli("invite", "--help").stdout


def test_errors_name_the_problem(tmp_path):
    db = str(tmp_path / "r.sqlite")
    proc = rate_cli("results", f"--db={db}", check=False)
    assert proc.returncode == 2 and "no study yet" in proc.stderr
    bad = write_pairs(tmp_path / "bad.jsonl", ['{"id": 1, "prompt": "p", "outputs": {"m": "x"}}'])
    proc = rate_cli("invite", f"--db={db}", f"--pairs={bad}", "--reference=t", check=False)
    assert proc.returncode == 2 and f"{bad}: no usable record" in proc.stderr and "no reference system 't'" in proc.stderr
    proc = rate_cli("invite", f"--db={db}", f"--pairs={tmp_path / 'missing.jsonl'}", "--reference=t", check=False)
    assert proc.returncode == 2 and "pairs file not found" in proc.stderr


def test_invite_prints_one_link_per_line(tmp_path):
    db = str(tmp_path / "r.sqlite")
    pairs = write_pairs(tmp_path / "p.jsonl", [{"id": 1, "prompt": "p", "outputs": {"m": "x", "t": "y"}}])
    out = rate_cli("invite", f"--db={db}", f"--pairs={pairs}", "--reference=t", "--n=5", "--base_url=https://r.example/").stdout
    links = out.splitlines()
    assert len(links) == 5 and len(set(links)) == 5
    assert all(l.startswith("https://r.example/rate/") and len(l) > len("https://r.example/rate/") + 20 for l in links)
