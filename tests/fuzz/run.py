"""Coverage-guided fuzzing of one target with atheris:
``python -m tests.fuzz.run TARGET [SECONDS [WORKDIR [RUNS SEED]]]`` (``--list`` names the targets).

Starts from the checked-in seed corpus (``tests/fuzz/corpus/TARGET``) and runs for SECONDS (10 by
default); a crash prints the input and exits non-zero. New inputs and crash files go to WORKDIR
(a fresh temporary folder by default, named on stderr). ``make fuzz`` runs every target for longer,
from a new random seed each time: that is the search. RUNS and SEED fix where the pass starts
and how long it runs (``make test``'s gate).
"""

from __future__ import annotations

import contextlib
import resource
import sys
import tempfile
from pathlib import Path

import atheris

# numba compiles streaming.kernels from its bytecode, which must stay free of atheris's hooks
PARSERS = ["streaming", "schemas", "models.npz", "models.kb.wire", "models.snapshot.jpeg"]
with atheris.instrument_imports(include=PARSERS, exclude=["streaming.kernels"]):
    from tests.fuzz.targets import TARGETS

CORPUS = Path(__file__).parent / "corpus"


def main() -> None:
    name = sys.argv[1]
    if name == "--list":
        print("\n".join(sorted(TARGETS)))
        return
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    fixed = [f"-runs={int(sys.argv[4])}", f"-seed={int(sys.argv[5])}"] if len(sys.argv) > 5 else []
    target = TARGETS[name]

    def one(data: bytes) -> None:
        with contextlib.suppress(target.expected):
            target.run(data)

    # new inputs and crash files go here, not into the checked-in corpus
    work = sys.argv[3] if len(sys.argv) > 3 else tempfile.mkdtemp(prefix=f"gopwatch-fuzz-{name}-")
    print(f"new inputs and crash files: {work}", file=sys.stderr)
    # libFuzzer measures peak RSS, which Linux carries over from the parent through fork and exec:
    # a child of a big process (pytest late in make test) starts "over" a fixed limit. The budget
    # is 2 GiB on top of what this process started with.
    inherited = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    args = [sys.argv[0], f"-max_total_time={seconds}", f"-rss_limit_mb={inherited + 2048}", "-max_len=65536",
            "-print_final_stats=1", f"-artifact_prefix={work}/", *fixed,
            work, str(CORPUS / name)]  # fmt: skip
    atheris.Setup(args, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
