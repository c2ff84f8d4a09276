"""Parse and validate the hyperparameters (all strings, as SageMaker passes them).

Every name the built-in algorithm documents is known here; each one is either honoured, or
accepted with a logged note "accepted, no effect here: ...", or refused with a
``ClientError`` (see the table in the package docstring). Unknown names are refused.
This module imports neither torch nor numpy.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ClientError

OPTIMIZERS = ("sgd", "nag", "adam", "rmsprop")
AUGMENTATIONS = ("crop", "crop_color", "crop_color_transform")
IMAGENET_DEPTHS = (18, 34, 50, 101, 152, 200)
CIFAR_DEPTHS = (20, 32, 44, 56, 110)
MIN_SIDE, MAX_SIDE = 16, 1024

# Our defaults for the optional names. They differ from the built-in's where the built-in's
# (ResNet-152 at 224 px, 30 epochs of plain SGD at batch 32) are impractical on a CPU; the
# package docstring lists both.
DEFAULTS: dict[str, object] = {
    "image_shape": (3, 32, 32),
    "epochs": 40,
    "learning_rate": 0.2,
    "mini_batch_size": 128,
    "optimizer": "nag",
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "beta_1": 0.9,
    "beta_2": 0.999,
    "eps": 1e-8,
    "gamma": 0.9,
    "lr_scheduler_factor": 0.1,
    "lr_scheduler_step": None,
    "num_layers": None,
    "augmentation_type": None,
    "early_stopping": False,
    "early_stopping_min_epochs": 10,
    "early_stopping_patience": 5,
    "early_stopping_tolerance": 0.0,
    "checkpoint_frequency": None,
    "top_k": None,
    "resize": None,
    "use_pretrained_model": 0,
    "precision_dtype": "float32",
    "multi_label": 0,
    "use_weighted_loss": 0,
    "kv_store": None,
    "seed": 0,
}
REQUIRED = ("num_classes", "num_training_samples")
# Names SageMaker itself may add (automatic model tuning): accepted, logged, no effect.
PASSTHROUGH = ("_tuning_objective_metric",)
KNOWN = (*REQUIRED, *DEFAULTS, *PASSTHROUGH)


@dataclass(frozen=True)
class Hyperparameters:
    num_classes: int
    num_training_samples: int
    image_shape: tuple[int, int, int]
    epochs: int
    learning_rate: float
    mini_batch_size: int
    optimizer: str
    momentum: float
    weight_decay: float
    beta_1: float
    beta_2: float
    eps: float
    gamma: float
    lr_scheduler_factor: float
    lr_scheduler_step: tuple[int, ...] | None
    num_layers: int | None
    augmentation_type: str | None
    early_stopping: bool
    early_stopping_min_epochs: int
    early_stopping_patience: int
    early_stopping_tolerance: float
    checkpoint_frequency: int | None
    top_k: int | None
    resize: int | None
    seed: int
    explicit: frozenset[str] = field(default_factory=frozenset)
    notes: tuple[str, ...] = ()

    @property
    def architecture(self) -> str:
        if self.num_layers is None:
            return "fastnet"
        if self.num_layers in IMAGENET_DEPTHS:
            return f"resnet-{self.num_layers}"
        return f"cifar-resnet-{self.num_layers}"

    def as_dict(self) -> dict[str, object]:
        out = {}
        for name in self.__dataclass_fields__:
            if name in ("explicit", "notes"):
                continue
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out


def _bad(name: str, raw: str, rule: str) -> ClientError:
    return ClientError(f"Invalid value for hyperparameter '{name}': {raw!r} ({rule})")


def _int(name: str, raw: str, lo: int | None = None, hi: int | None = None, rule: str = "") -> int:
    text = raw.strip()
    try:
        value = int(text)
    except ValueError:
        try:
            as_float = float(text)
        except ValueError:
            as_float = math.nan
        if not math.isfinite(as_float) or not as_float.is_integer():
            raise _bad(name, raw, rule) from None
        value = int(as_float)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _bad(name, raw, rule)
    return value


def _float(name: str, raw: str, lo: float, hi: float, rule: str, *, open_lo: bool = False,
           open_hi: bool = False) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise _bad(name, raw, rule) from None
    if not math.isfinite(value):
        raise _bad(name, raw, rule)
    if value < lo or value > hi or (open_lo and value == lo) or (open_hi and value == hi):
        raise _bad(name, raw, rule)
    return value


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip()
    if value not in choices:
        raise _bad(name, raw, "must be one of " + ", ".join(choices))
    return value


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise _bad(name, raw, "must be True or False")


def _flag(name: str, raw: str) -> int:
    return _int(name, raw, 0, 1, "must be 0 or 1")


def _image_shape(raw: str) -> tuple[int, int, int]:
    rule = (f"must be 'channels,height,width' with channels 1 or 3 and height and width "
            f"integers in [{MIN_SIDE}, {MAX_SIDE}], e.g. '3,32,32'")
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise _bad("image_shape", raw, rule)
    c, h, w = (int(p) for p in parts)
    if c not in (1, 3) or not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise _bad("image_shape", raw, rule)
    return c, h, w


def _steps(raw: str) -> tuple[int, ...]:
    rule = "must be a comma-separated list of increasing positive integers, e.g. '10,20'"
    parts = [p.strip() for p in raw.split(",")]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise _bad("lr_scheduler_step", raw, rule)
    steps = tuple(int(p) for p in parts)
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise _bad("lr_scheduler_step", raw, rule)
    return steps


def _num_layers(raw: str) -> int:
    rule = (f"must be one of {', '.join(map(str, IMAGENET_DEPTHS))} (ImageNet-style ResNet) or "
            f"{', '.join(map(str, CIFAR_DEPTHS))} or another 6n+2 depth up to 164 "
            "(CIFAR-style ResNet); leave it unset for our fast default network")
    value = _int("num_layers", raw, rule=rule)
    if value in IMAGENET_DEPTHS:
        return value
    if 8 <= value <= 164 and (value - 2) % 6 == 0:
        return value
    raise _bad("num_layers", raw, rule)


_UNIT = "must be a float in [0, 1]"


def parse(raw: Mapping[str, object]) -> Hyperparameters:
    """Validate ``hyperparameters.json`` content; raise ``ClientError`` on the first problem."""
    if not isinstance(raw, Mapping):
        raise ClientError("hyperparameters.json must hold a JSON object of name: string")
    given: dict[str, str] = {}
    for name, value in raw.items():
        if name not in KNOWN:
            close = difflib.get_close_matches(name, KNOWN, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ClientError(f"Unknown hyperparameter '{name}'{hint}")
        if isinstance(value, bool):
            value = str(value)
        elif isinstance(value, int | float):
            value = repr(value)
        if not isinstance(value, str):
            raise _bad(name, str(value), "hyperparameter values must be strings")
        given[name] = value
    for name in REQUIRED:
        if name not in given:
            raise ClientError(f"Missing required hyperparameter '{name}'")

    v: dict[str, object] = dict(DEFAULTS)
    notes: list[str] = []
    pos = "must be a positive integer"
    v["num_classes"] = _int("num_classes", given["num_classes"], 2, 100_000,
                            "must be an integer >= 2")
    v["num_training_samples"] = _int("num_training_samples", given["num_training_samples"], 1,
                                     rule=pos)
    parsers = {
        "image_shape": _image_shape,
        "epochs": lambda s: _int("epochs", s, 1, 100_000, pos),
        "learning_rate": lambda s: _float("learning_rate", s, 0.0, 1.0, _UNIT),
        "mini_batch_size": lambda s: _int("mini_batch_size", s, 1, 65_536, pos),
        "optimizer": lambda s: _choice("optimizer", s, OPTIMIZERS),
        "momentum": lambda s: _float("momentum", s, 0.0, 1.0, _UNIT),
        "weight_decay": lambda s: _float("weight_decay", s, 0.0, 1.0, _UNIT),
        "beta_1": lambda s: _float("beta_1", s, 0.0, 1.0, "must be a float in [0, 1)",
                                   open_hi=True),
        "beta_2": lambda s: _float("beta_2", s, 0.0, 1.0, "must be a float in [0, 1)",
                                   open_hi=True),
        "eps": lambda s: _float("eps", s, 0.0, 1.0, "must be a float in (0, 1]", open_lo=True),
        "gamma": lambda s: _float("gamma", s, 0.0, 1.0, _UNIT),
        "lr_scheduler_factor": lambda s: _float("lr_scheduler_factor", s, 0.0, 1.0, _UNIT),
        "lr_scheduler_step": _steps,
        "num_layers": _num_layers,
        "augmentation_type": lambda s: _choice("augmentation_type", s, AUGMENTATIONS),
        "early_stopping": lambda s: _bool("early_stopping", s),
        "early_stopping_min_epochs": lambda s: _int("early_stopping_min_epochs", s, 1, rule=pos),
        "early_stopping_patience": lambda s: _int("early_stopping_patience", s, 1, rule=pos),
        "early_stopping_tolerance": lambda s: _float("early_stopping_tolerance", s, 0.0, 1.0,
                                                     _UNIT),
        "checkpoint_frequency": lambda s: _int("checkpoint_frequency", s, 1, rule=pos),
        "top_k": lambda s: _int("top_k", s, 2, rule="must be an integer larger than 1"),
        "resize": lambda s: _int("resize", s, 1, 8192, pos),
        "use_pretrained_model": lambda s: _flag("use_pretrained_model", s),
        "precision_dtype": lambda s: _choice("precision_dtype", s, ("float32", "float16")),
        "multi_label": lambda s: _flag("multi_label", s),
        "use_weighted_loss": lambda s: _flag("use_weighted_loss", s),
        "kv_store": lambda s: _choice("kv_store", s, ("dist_sync", "dist_async")),
        "seed": lambda s: _int("seed", s, 0, 2**32 - 1, "must be an integer in [0, 4294967295]"),
    }
    for name, parser in parsers.items():
        if name in given:
            v[name] = parser(given[name])

    # Cross-checks that need several values.
    c, h, w = v["image_shape"]  # type: ignore[misc]
    if v["checkpoint_frequency"] is not None and v["checkpoint_frequency"] > v["epochs"]:
        raise _bad("checkpoint_frequency", given["checkpoint_frequency"],
                   f"must be a positive integer no greater than epochs={v['epochs']}")
    if v["top_k"] is not None and v["top_k"] > v["num_classes"]:
        raise _bad("top_k", given["top_k"],
                   f"must be larger than 1 and at most num_classes={v['num_classes']}")
    if v["resize"] is not None and v["resize"] < max(h, w):
        raise _bad("resize", given["resize"],
                   f"must be at least the image_shape height and width ({h}x{w}): images are "
                   "resized so that their shorter side is this long, then center-cropped")
    if v["use_pretrained_model"] == 1:
        raise ClientError("Invalid value for hyperparameter 'use_pretrained_model': '1' "
                          "(pretrained weights cannot be downloaded here: localaws trains "
                          "offline; use 0)")
    if v["multi_label"] == 1:
        raise ClientError("Invalid value for hyperparameter 'multi_label': '1' (multi-label "
                          "classification is not supported by localaws' image-classification; "
                          "use 0)")
    if v["num_layers"] in IMAGENET_DEPTHS and min(h, w) < 32:
        raise _bad("num_layers", given["num_layers"],
                   "ImageNet-style depths need image_shape height and width of at least 32")

    # Accepted, but with no effect here: say so instead of ignoring silently.
    def note(name: str, why: str) -> None:
        if name in given:
            notes.append(f"accepted, no effect here: {name}={given[name]!r} ({why})")

    opt = v["optimizer"]
    if opt not in ("sgd", "nag"):
        note("momentum", f"used by sgd and nag only, optimizer is {opt}")
        note("weight_decay", f"used by sgd and nag only, optimizer is {opt}")
    if opt != "adam":
        note("beta_1", f"used by adam only, optimizer is {opt}")
        note("beta_2", f"used by adam only, optimizer is {opt}")
    if opt not in ("adam", "rmsprop"):
        note("eps", f"used by adam and rmsprop only, optimizer is {opt}")
    if opt != "rmsprop":
        note("gamma", f"used by rmsprop only, optimizer is {opt}")
    if v["lr_scheduler_step"] is None:
        note("lr_scheduler_factor", "used only together with lr_scheduler_step")
    else:
        late = [s for s in v["lr_scheduler_step"] if s >= v["epochs"]]  # type: ignore[union-attr]
        if late:
            notes.append(f"lr_scheduler_step: steps {late} are not before the last epoch "
                         f"(epochs={v['epochs']}) and have no effect")
    if not v["early_stopping"]:
        for name in ("early_stopping_min_epochs", "early_stopping_patience",
                     "early_stopping_tolerance"):
            note(name, "used only when early_stopping=True")
    if v["use_weighted_loss"] == 1:
        note("use_weighted_loss", "used only with multi_label=1")
    if v["precision_dtype"] == "float16":
        note("precision_dtype", "training runs in float32 on the CPU")
    note("kv_store", "distributed training only; localaws trains on one machine")
    note("_tuning_objective_metric", "set by automatic model tuning; we report all metrics")

    fields = {k: v[k] for k in Hyperparameters.__dataclass_fields__ if k in v}
    return Hyperparameters(**fields, explicit=frozenset(given), notes=tuple(notes))
