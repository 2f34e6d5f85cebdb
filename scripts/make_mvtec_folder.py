"""Write the small MVTec AD-style dataset of ``pkdgan.data.mvtec_synthetic`` (digit "fabric",
scratch / stain / patch defects with masks), for the README's inspection walk-through.

    python scripts/make_mvtec_folder.py data/fabric [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pkdgan.data.mvtec_synthetic import make_mvtec_folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder to create (must not exist)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.out.exists():
        p.error(f"{a.out} exists; choose a new folder")
    print(make_mvtec_folder(a.out, a.seed))


if __name__ == "__main__":
    main()
