"""EleutherAI's lm-evaluation-harness, run unchanged against our server.

Its `local-completions` model (what users point at an OpenAI-style endpoint) must read the
same per-item log-likelihoods, argmaxes and generations from our server as its `hf` model
reads from the Hugging Face export of the same checkpoint. The checkpoint is tiny and
EOS-prone, so many scored continuations are followed by end-of-sequence as the greedy next
token: lm-eval asks for one generated token and drops it (`token_logprobs[ctxlen:-1]`), so a
server that leaves a generated EOS out of `logprobs` loses the continuation's last token.
"""

import json
import os
import textwrap

import numpy as np
import pytest
import torch
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager
from support.eos_model import save_eos_prone_checkpoint

import easylm_imitate
from easylm_imitate.convert.hf_checkpoint import checkpoint_to_hf_dir
from easylm_imitate.inference.engine import Engine
from easylm_imitate.inference.server import create_app, running_server

MODEL = "tiny-eos"
QUESTIONS = [
    ("Q: What color is the sky?\nA:", [" blue", " green", " red", " black"], 0),
    ("Q: What is the capital of France?\nA:", [" Paris", " Rome", " Lima", " Oslo"], 0),
    ("Q: How many legs does a cat have?\nA:", [" four", " two", " six", " eight"], 0),
    ("Q: Which animal barks?\nA:", [" the dog", " the cat", " a fish", " a bird"], 0),
    ("Q: What do bees make?\nA:", [" honey", " milk", " silk", " wax"], 0),
    ("Question: 2 + 2 = ?\nAnswer:", [" 4", " 5", " 22", " 3"], 0),
    ("The opposite of hot is", [" cold", "Z 18", " wet", "Z"], 0),  # "Z 18" and "Z" are greedy
    ("A week has seven", [" days", " hours", " years", " weeks"], 0),
]
DOCUMENTS = [
    "The quick brown fox jumps over the lazy dog.",
    "One two three four five six seven eight nine ten.",
    "Rain fell on the hills all night, and by morning the river had risen.",
    "The capital of France is Paris",
    "Q: What color is the sky?\nA: blue",
    "Bees make honey. Cows give milk. Spiders spin silk.",
]
PROMPTS = ["Q: What color is the sky?\nA:", "Once upon a time", "The list: one, two,", "Hello"]
UNTIL = ["\n\n", "Q:", "Question:", "###"]  # lm-eval appends the EOS string: 5 stop strings


def write_tasks(root) -> str:
    """Three lm-eval tasks over JSON files: multiple choice, rolling perplexity, generation."""
    data = {
        "mc": [{"question": q, "choices": c, "answer": a} for q, c, a in QUESTIONS],
        "rolling": [{"text": t} for t in DOCUMENTS],
        "gen": [{"prompt": p} for p in PROMPTS],
    }
    for name, rows in data.items():
        with open(os.path.join(root, f"{name}.json"), "w") as f:
            json.dump(rows, f)
    common = textwrap.dedent("""\
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {path}
          cache_dir: {cache}
        test_split: test
        """)
    specs = {
        "tiny_eos_mc": """
            output_type: multiple_choice
            doc_to_text: "{{question}}"
            doc_to_choice: "{{choices}}"
            doc_to_target: "{{answer}}"
            target_delimiter: ""
            metric_list:
              - metric: acc
            """,
        "tiny_eos_rolling": """
            output_type: loglikelihood_rolling
            doc_to_text: ""
            doc_to_target: "{{text}}"
            metric_list:
              - metric: word_perplexity
            """,
        "tiny_eos_gen": f"""
            output_type: generate_until
            doc_to_text: "{{{{prompt}}}}"
            doc_to_target: ""
            generation_kwargs:
              until: {json.dumps(UNTIL)}
              max_gen_toks: 12
              do_sample: false
            metric_list:
              - metric: exact_match
            """,
    }
    for (task, spec), name in zip(specs.items(), data):
        with open(os.path.join(root, f"{task}.yaml"), "w") as f:
            data_file, cache = os.path.join(root, f"{name}.json"), os.path.join(root, "cache")
            f.write(f"task: {task}\n" + common.format(path=data_file, cache=cache) + textwrap.dedent(spec))
    return str(root)


def per_item(results: dict) -> dict:
    """task -> [per document: its filtered responses] in document order."""
    out = {}
    for task, samples in results["samples"].items():
        out[task] = [s["filtered_resps"] for s in sorted(samples, key=lambda s: s["doc_id"])]
    return out


def evaluate(model: str, model_args: dict, tasks_dir: str, tasks: list[str]) -> dict:
    """Run lm-eval in this process on `tasks`; returns `per_item` of its samples."""
    results = simple_evaluate(model=model, model_args=model_args, tasks=tasks,
                              task_manager=TaskManager(include_path=tasks_dir), log_samples=True,
                              batch_size=1)
    return per_item(results)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(torch model, tokenizer, checkpoint dir, HF export dir, tasks dir, server URL)."""
    root = tmp_path_factory.mktemp("lm_eval")
    hf, ckpt = save_eos_prone_checkpoint(root / "ckpt")
    export = checkpoint_to_hf_dir(ckpt, root / "hf")
    tasks = root / "tasks"
    tasks.mkdir()
    model, tokenizer = easylm_imitate.load(ckpt)
    with running_server(create_app(Engine(model, tokenizer), MODEL)) as url:
        yield hf, tokenizer, ckpt, export, write_tasks(tasks), url


def both_backends(setup, tasks: list[str]) -> tuple[dict, dict]:
    """(local-completions against our server, hf on the export): per-item results of `tasks`."""
    _, _, ckpt, export, tasks_dir, url = setup
    ours = evaluate("local-completions", {
        "model": MODEL, "base_url": url + "/v1/completions", "tokenizer_backend": "huggingface",
        "tokenizer": os.path.join(ckpt, "tokenizer"), "max_retries": 1}, tasks_dir, tasks)
    reference = evaluate("hf", {"pretrained": export, "dtype": "float32", "device": "cpu"}, tasks_dir, tasks)
    return ours, reference


def greedy_is_eos(hf, tokenizer, text: str) -> bool:
    """Whether end-of-sequence is the model's greedy next token after `text`."""
    with torch.no_grad():
        logits = hf(torch.tensor([tokenizer.encode(text, add_special_tokens=False)])).logits[0, -1]
    return int(logits.argmax()) == tokenizer.eos_token_id


def test_loglikelihoods_and_argmaxes_match_the_hf_backend(setup):
    hf, tokenizer = setup[:2]
    # The items exercise the end-of-sequence case: some scored texts end where EOS is greedy.
    ends = [greedy_is_eos(hf, tokenizer, q + c) for q, choices, _ in QUESTIONS for c in choices]
    docs_end = [greedy_is_eos(hf, tokenizer, d) for d in DOCUMENTS]
    assert 0 < sum(ends) < len(ends) and 0 < sum(docs_end) < len(docs_end)

    ours, reference = both_backends(setup, ["tiny_eos_mc", "tiny_eos_rolling"])
    greedy_seen = False
    for task in ("tiny_eos_mc", "tiny_eos_rolling"):
        assert len(ours[task]) == len(reference[task]) > 0
        for doc, (got, want) in enumerate(zip(ours[task], reference[task])):
            if task == "tiny_eos_mc":  # one (log-likelihood, is_greedy) per choice
                assert [g for _, g in got] == [g for _, g in want], f"{task} document {doc}: is_greedy"
                greedy_seen |= any(g for _, g in got)
                got, want = [ll for ll, _ in got], [ll for ll, _ in want]
            got_ll, want_ll = np.asarray(got, float), np.asarray(want, float)
            np.testing.assert_allclose(got_ll, want_ll, rtol=0, atol=1e-4, err_msg=f"{task} document {doc}")
            assert np.argmax(got_ll) == np.argmax(want_ll), f"{task} document {doc}"
    assert greedy_seen


def test_generations_with_five_stop_strings_match_the_hf_backend(setup):
    ours, reference = both_backends(setup, ["tiny_eos_gen"])
    assert ours["tiny_eos_gen"] == reference["tiny_eos_gen"]
    assert any(r == [""] for r in ours["tiny_eos_gen"])  # some generations end at once with EOS
