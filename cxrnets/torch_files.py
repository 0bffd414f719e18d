"""Loading a PyTorch file from elsewhere safely (``torch.load(..., weights_only=True)``: a pickled file can run
code), and saying what a file that does not load is instead: empty, a git-LFS pointer, a plain pickle, a whole
pickled model, not a PyTorch file at all, or truncated. Torch's own messages for these name none of them, and
some advise switching safe loading off."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from cxrnets.errors import CxrError

ZIP_MAGIC = b"PK\x03\x04"  # how torch.save's format (a zip archive) starts
PICKLE_MAGIC = b"\x80"  # how a pickle (protocol 2 or later) starts, torch's legacy format (before PyTorch 1.6, or
# _use_new_zipfile_serialization=False) among them: that one pickles this number first, in its opening bytes
LEGACY_MAGIC = torch.serialization.MAGIC_NUMBER.to_bytes(10, "little")
GIT_LFS_POINTER = b"version https://git-lfs"

COPY_AGAIN = "a copy, download or save that did not finish? copy the file again"


class UnreadableFile(CxrError):
    """A file ``load_safely`` cannot load: ``what`` it is instead (a phrase that follows "is"), and what to do."""

    def __init__(self, name: str, what: str, remedy: str):
        super().__init__(f"{name}: {what}: {remedy}")
        self.what = what


def load_safely(path: str | Path, kind: str, instead: str, name: str | None = None, mmap: bool = False,
                whole_model: str = "") -> Any:
    """What the PyTorch file ``path`` holds, loaded with ``torch.load(weights_only=True)`` onto the CPU (its tensors
    memory-mapped where ``mmap`` and the file is in torch's zip format: the legacy format cannot be mapped).

    Where it does not load, UnreadableFile naming the file (as ``name`` says; ``path`` by default) and what it is
    instead of a ``kind`` (what the caller reads: "checkpoint", "state dict"): for a file of another kind it says
    to pass ``instead`` (what to pass: "a study's weights/<trial id>.pt or ..."), for a whole pickled model also
    ``whole_model`` (how to save a model of one's own), for a damaged copy to copy it again.
    """
    name = name or str(path)
    try:
        with open(path, "rb") as file:
            start = file.read(64)
    except OSError as error:
        raise UnreadableFile(name, f"not readable ({error.strerror or error})", "check the path and its "
                             "permissions") from error
    if not start:
        raise UnreadableFile(name, f"an empty file (0 bytes), not a {kind}", COPY_AGAIN)
    if start.startswith(GIT_LFS_POINTER):
        raise UnreadableFile(name, "a git-LFS pointer, not the file it stands for",
                             "run git lfs pull in its repository (or download the file itself) and pass it again")
    if start.startswith(PICKLE_MAGIC) and LEGACY_MAGIC not in start:
        raise UnreadableFile(name, f"a Python pickle (as pickle.dump writes: a study's tuner.pkl, say), not a "
                             f"PyTorch {kind}", f"pass {instead}")
    zipped = start.startswith(ZIP_MAGIC)
    try:
        with warnings.catch_warnings():
            # torch warns of any pickle protocol but 2, which its own legacy format may use too
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipped)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ... on a bad file
        refused = re.search(r"GLOBAL (\S+)", str(error)) if isinstance(error, pickle.UnpicklingError) else None
        if refused:  # the file is whole, but pickles an object of a class, which weights_only does not build
            raise UnreadableFile(name, f"a pickled {refused[1]} (a whole model saved with torch.save(model)?), not "
                                 "the model's weights", f"pass {instead}" + (f"; {whole_model}" if whole_model else
                                                                             "")) from error
        if not zipped and not start.startswith(PICKLE_MAGIC):
            raise UnreadableFile(name, f"not a PyTorch {kind} (it starts with {start[:24]!r})",
                                 f"pass {instead}") from error
        # torch's first sentence says what failed; the rest is advice, some of it wrong here
        reason = str(error).strip().splitlines()[0].split(". ")[0].rstrip(".") if str(error).strip() else ""
        raise UnreadableFile(name, f"not a readable {kind} (truncated or corrupt: {reason or type(error).__name__})",
                             COPY_AGAIN) from error
