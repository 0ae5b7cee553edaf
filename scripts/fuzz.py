"""Fuzz docread's intake: N seeded mutations of valid PDFs and images through open + render.

    python scripts/fuzz.py --n 10000 --seed 0 [--out FOLDER]

Prints files/s, the outcomes by error code, and every exception that escaped intake (exit 1 if
any did). The seed builders and mutators live in tests/kit/fuzz.py, shared with tests/test_fuzz.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from kit import fuzz  # noqa: E402

from docread.intake import Limits  # noqa: E402

LIMITS = Limits(max_pixels=4_000_000, timeout_s=10)  # as in tests/test_fuzz.py
SLOW_S = 2.0  # files slower than this are listed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="mutated files to run (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed, the same files")
    parser.add_argument("--out", type=Path, help="keep the files here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        return run(args.n, args.seed, args.out)
    with tempfile.TemporaryDirectory(prefix="docread-fuzz-") as folder:
        return run(args.n, args.seed, Path(folder))


def run(n: int, seed: int, folder: Path) -> int:
    seeds = fuzz.build_seeds()
    outcomes: Counter[str] = Counter()
    escapes: list[tuple[str, str]] = []
    slow: list[tuple[str, float]] = []
    start = time.perf_counter()
    for name, data in fuzz.mutations(seeds, n, seed):
        path = folder / name
        path.write_bytes(data)
        began = time.perf_counter()
        try:
            outcomes.update(fuzz.check_file(str(path), LIMITS))
        except Exception:  # noqa: BLE001  an escape is what this script exists to find and list
            escapes.append((str(path), traceback.format_exc(limit=-3).strip().splitlines()[-1]))
        took = time.perf_counter() - began
        if took > SLOW_S:
            slow.append((str(path), took))
    elapsed = time.perf_counter() - start
    print(f"files: {n} from {len(seeds)} seeds (seed {seed}) in {elapsed:.1f} s: {n / elapsed:.0f} files/s")
    print("outcomes (pages ok, or the error code of a file or page):")
    for code, count in outcomes.most_common():
        print(f"  {code:<15} {count}")
    print(f"slowest file over {SLOW_S:g} s: {len(slow)}" + "".join(f"\n  {p} {t:.1f} s" for p, t in slow[:10]))
    print(f"escaped exceptions: {len(escapes)}")
    for path, line in escapes[:50]:
        print(f"  {path}: {line}")
    return 1 if escapes else 0


if __name__ == "__main__":
    sys.exit(main())
