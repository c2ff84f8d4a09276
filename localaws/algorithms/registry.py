"""Which local algorithm runs a SageMaker training or inference image.

SageMaker picks the code to run from a container image URI; localaws has no containers, so it
maps the image URI to a Python module that implements the algorithm's command line:

    python -m <module> train --ml-root DIR
    python -m <module> serve --model-dir DIR --host 127.0.0.1 --port N

Built in: the ``image-classification`` image of any region and partition
(``<account>.dkr.ecr.<region>.amazonaws.com[.cn]/image-classification:1`` or ``:latest``).

More images can be mapped with the environment variable ``LOCALAWS_EXTRA_ALGORITHMS`` of the
localaws server: either inline JSON or the path of a JSON file, holding a map from the exact
image URI to a module name, or to ``{"module": "...", "path": "/dir/added/to/PYTHONPATH"}``.
Tests use it to plug in a tiny fake algorithm.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

EXTRA_ALGORITHMS_ENV = "LOCALAWS_EXTRA_ALGORITHMS"

_ECR_IMAGE = re.compile(
    r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repo>[a-z0-9][a-z0-9._/-]*)(?::(?P<tag>[A-Za-z0-9._-]+))?$"
)
# repository name -> (module, accepted tags)
_BUILTIN = {
    "image-classification": ("localaws.algorithms.image_classification", {None, "1", "latest"}),
}
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


class UnknownAlgorithm(LookupError):
    """The image names nothing localaws can run; ``str()`` is the reason shown to users."""


@dataclass(frozen=True)
class Algorithm:
    image: str
    module: str
    pythonpath: tuple[str, ...] = ()

    def train_command(self, ml_root: Path | str) -> list[str]:
        return [sys.executable, "-m", self.module, "train", "--ml-root", str(ml_root)]

    def serve_command(self, model_dir: Path | str, host: str, port: int) -> list[str]:
        return [sys.executable, "-m", self.module, "serve", "--model-dir", str(model_dir),
                "--host", host, "--port", str(port)]

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for the child: unbuffered output, the module importable."""
        env = dict(os.environ if base is None else base)
        paths = [*self.pythonpath, _PROJECT_ROOT]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def installed(self) -> bool:
        """Whether ``python -m <module>`` can run, without importing the module itself."""
        parent, _, last = self.module.rpartition(".")
        try:
            if self.pythonpath:  # a module outside our tree: look for it on its own path
                base = Path(self.pythonpath[0], *self.module.split("."))
                return base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return False
        if spec is None:
            return False
        if spec.submodule_search_locations:  # a package: needs __main__.py
            return any(Path(p, "__main__.py").is_file() for p in spec.submodule_search_locations)
        return True


def _extra_algorithms() -> dict[str, Algorithm]:
    raw = os.environ.get(EXTRA_ALGORITHMS_ENV, "").strip()
    if not raw:
        return {}
    try:
        data = json.loads(raw if raw.startswith("{") else Path(raw).read_text())
    except (OSError, ValueError) as exc:
        raise UnknownAlgorithm(f"{EXTRA_ALGORITHMS_ENV} is not a JSON map: {exc}") from exc
    out = {}
    for image, spec in data.items():
        if isinstance(spec, str):
            out[image] = Algorithm(image, spec)
        else:
            path = spec.get("path")
            out[image] = Algorithm(image, spec["module"], (str(path),) if path else ())
    return out


def resolve(image: str | None) -> Algorithm:
    """The algorithm for a training or inference image; raises UnknownAlgorithm."""
    image = (image or "").strip()
    extra = _extra_algorithms()
    if image in extra:
        return extra[image]
    match = _ECR_IMAGE.match(image)
    if match:
        builtin = _BUILTIN.get(match["repo"])
        if builtin and match["tag"] in builtin[1]:
            return Algorithm(image, builtin[0])
    raise UnknownAlgorithm(f"{image or '(no image)'} is not an algorithm localaws can run")
