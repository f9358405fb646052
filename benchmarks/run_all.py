"""Run every benchmark in this folder (`make bench`); each prints its own ratio against a baseline."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path


def main() -> None:
    folder = Path(__file__).parent
    for info in sorted(pkgutil.iter_modules([str(folder)]), key=lambda item: item.name):
        if info.name.startswith("bench_"):
            print(f"\n=== benchmarks.{info.name}")
            importlib.import_module(f"benchmarks.{info.name}").main([])


if __name__ == "__main__":
    main()
