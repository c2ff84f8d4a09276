"""Training: ``python -m localaws.algorithms.image_classification train --ml-root DIR``.

Reads ``DIR/input``, writes ``DIR/model`` and ``DIR/output`` (see the package docstring).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import platform
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import FORMAT_VERSION
from .data import Split, load_data
from .errors import AlgorithmError, AlgorithmFailure, ClientError, Stopped
from .hyperparameters import Hyperparameters, parse
from .model import Exported, FastNet, build

Log = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """Training details that are not hyperparameters of the built-in (fixed, documented)."""

    label_smoothing: float = 0.2
    lookahead_k: int = 5  # FastNet only; 0 turns lookahead off
    lookahead_alpha: float = 0.5
    warmup: float = 0.2  # fraction of the steps (default schedule only)
    translate: int = 2  # pixels for a 32 px side, scaled with the image size
    decay_norm: bool = True  # weight decay also on BatchNorm and bias parameters
    eval_batch: int = 500


RECIPE = Recipe()


def log_line(message: str) -> None:
    stamp = datetime.now().strftime("%m/%d/%Y %H:%M:%S")
    print(f"[{stamp} INFO] {message}", flush=True)


# ---------------------------------------------------------------------------------- helpers


def cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _normalise(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (pixels.float() * (1.0 / 255.0) - mean) / std


def _flip_translate(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if pad <= 0:
        return x
    h, w = x.shape[2:]
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen).tolist()
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w]
                        for i, (dy, dx) in enumerate(offsets)])


def _colour(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random hue/saturation/lightness shifts on RGB in [0, 1] (crop_color).

    An RGB approximation of the built-in's HSL ranges: hue rotated by up to +-72 degrees
    (+-36 on OpenCV's 0-180 hue scale), saturation and lightness shifted by up to +-50/255.
    """
    n = x.shape[0]
    if x.shape[1] == 3:
        theta = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(72)
        cos, sin = torch.cos(theta), torch.sin(theta)
        # Rotation about the grey axis (Rodrigues' formula with axis (1,1,1)/sqrt(3)).
        a = (1 - cos) / 3
        b = sin / math.sqrt(3)
        rot = torch.stack([
            torch.stack([cos + a, a - b, a + b], -1),
            torch.stack([a + b, cos + a, a - b], -1),
            torch.stack([a - b, a + b, cos + a], -1),
        ], -2)  # n, 3, 3
        x = torch.einsum("nij,njhw->nihw", rot, x)
        grey = x.mean(dim=1, keepdim=True)
        sat = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * (100 / 255)
        x = grey + (x - grey) * sat
    light = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * (50 / 255)
    return (x + light).clamp(0, 1)


def _affine(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random rotation (<= 10 deg), shear (<= 0.1) and aspect change (<= 0.25)."""
    n = x.shape[0]

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * 2 - 1) * limit

    angle, shear, aspect = uniform(math.radians(10)), uniform(0.1), 1 + uniform(0.25)
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx, sy = torch.sqrt(aspect), 1 / torch.sqrt(aspect)
    zeros = torch.zeros(n)
    # theta maps output coordinates to input coordinates: rotation @ shear @ scale
    m00 = (cos * sx)
    m01 = (cos * shear - sin) * sy
    m10 = (sin * sx)
    m11 = (sin * shear + cos) * sy
    theta = torch.stack([torch.stack([m00, m01, zeros], -1),
                         torch.stack([m10, m11, zeros], -1)], -2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


class Augment:
    def __init__(self, kind: str | None, image_shape: tuple[int, int, int], translate: int,
                 mean: torch.Tensor, std: torch.Tensor, gen: torch.Generator) -> None:
        self.kind = kind or "crop"
        side = min(image_shape[1:])
        self.pad = max(1, round(translate * side / 32)) if translate else 0
        self.mean, self.std, self.gen = mean, std, gen

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.kind == "crop":
            return _flip_translate(_normalise(pixels, self.mean, self.std), self.pad, self.gen)
        x = pixels.float() * (1.0 / 255.0)
        x = _colour(x, self.gen)
        if self.kind == "crop_color_transform":
            x = _affine(x, self.gen)
        return _flip_translate((x - self.mean) / self.std, self.pad, self.gen)


def _optimizer(hp: Hyperparameters, model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if hp.optimizer in ("sgd", "nag"):
        if recipe.decay_norm:
            groups = [{"params": params, "weight_decay": hp.weight_decay}]
        else:
            groups = [{"params": [p for p in params if p.ndim > 1],
                       "weight_decay": hp.weight_decay},
                      {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
        nesterov = hp.optimizer == "nag" and hp.momentum > 0
        return torch.optim.SGD(groups, lr=hp.learning_rate, momentum=hp.momentum,
                               nesterov=nesterov)
    if hp.optimizer == "adam":
        return torch.optim.Adam(params, lr=hp.learning_rate, betas=(hp.beta_1, hp.beta_2),
                                eps=hp.eps)
    return torch.optim.RMSprop(params, lr=hp.learning_rate, alpha=hp.gamma, eps=hp.eps)


def lr_multiplier(hp: Hyperparameters, recipe: Recipe, steps_per_epoch: int
                  ) -> Callable[[int], float]:
    """Learning-rate multiplier for optimizer step ``i`` (0-based)."""
    if hp.lr_scheduler_step is not None:
        marks = hp.lr_scheduler_step

        def stepped(i: int) -> float:
            epoch = i // steps_per_epoch  # 0-based; "after the 10th epoch" = from index 10
            return hp.lr_scheduler_factor ** sum(1 for m in marks if epoch >= m)

        return stepped
    total = hp.epochs * steps_per_epoch
    warm = max(1, round(recipe.warmup * total))

    def triangle(i: int) -> float:
        if i < warm:
            return (i + 1) / warm
        return max(0.0, (total - i) / max(1, total - warm))

    return triangle


class Lookahead:
    """Every k steps pull slow weights a fraction ``alpha`` towards the fast ones."""

    def __init__(self, model: nn.Module, k: int, alpha: float) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.slow = [p.detach().clone() for p in self.params]
        self.k, self.alpha, self.count = k, alpha, 0

    @torch.no_grad()
    def step(self, force: bool = False) -> None:
        self.count += 1
        if self.count < self.k and not force:
            return
        self.count = 0
        for p, s in zip(self.params, self.slow, strict=True):
            s.add_(p - s, alpha=self.alpha)
            p.copy_(s)


@torch.no_grad()
def evaluate(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
             std: torch.Tensor, batch: int, top_k: int | None) -> dict[str, float]:
    model.eval()
    correct = top = 0
    loss = 0.0
    for start in range(0, len(labels), batch):
        x = _normalise(pixels[start:start + batch], mean, std)
        x = x.contiguous(memory_format=torch.channels_last)
        y = labels[start:start + batch]
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        if top_k:
            top += (logits.topk(top_k, dim=1).indices == y[:, None]).any(1).sum().item()
    n = max(1, len(labels))
    out = {"accuracy": correct / n, "loss": loss / n}
    if top_k:
        out[f"top_k_accuracy_{top_k}"] = top / n
    return out


# ------------------------------------------------------------------------------- training


@dataclass
class Result:
    model: nn.Module
    mean: list[float]
    std: list[float]
    metrics: dict[str, float]
    epochs_run: int
    stopped_early: bool
    seconds: float
    history: list[dict[str, float]]
    recipe: Recipe = RECIPE


def fit(hp: Hyperparameters, train: Split, val: Split, log: Log = log_line,
        recipe: Recipe = RECIPE, checkpoint_dir: Path | None = None) -> Result:
    started = time.monotonic()
    torch.manual_seed(hp.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_flush_denormal(True)  # denormal floats make CPU kernels crawl
    gen = torch.Generator().manual_seed(hp.seed + 1)

    train_x = torch.from_numpy(train.pixels)
    train_y = torch.from_numpy(train.labels)
    val_x = torch.from_numpy(val.pixels)
    val_y = torch.from_numpy(val.labels)
    as_float = train.pixels.astype(np.float64) / 255.0
    mean_list = as_float.mean(axis=(0, 2, 3)).tolist()
    std_list = np.maximum(as_float.std(axis=(0, 2, 3)), 1e-3).tolist()
    del as_float
    mean = torch.tensor(mean_list, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(std_list, dtype=torch.float32).view(1, -1, 1, 1)

    model = build(hp)
    fast = isinstance(model, FastNet)
    if fast:
        sample = train_x[torch.randperm(len(train_x), generator=gen)[:5000]]
        model.init_whitening(_normalise(sample, mean, std))
    model = model.to(memory_format=torch.channels_last)  # faster convolutions on CPU
    n_params = sum(p.numel() for p in model.parameters())
    log(f"Network: {hp.architecture} with {n_params} parameters; image_shape="
        f"{','.join(map(str, hp.image_shape))}; {len(train_y)} training and {len(val_y)} "
        "validation images")

    optimizer = _optimizer(hp, model, recipe)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    n = len(train_y)
    batch = min(hp.mini_batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    multiplier = lr_multiplier(hp, recipe, steps_per_epoch)
    lookahead = Lookahead(model, recipe.lookahead_k, recipe.lookahead_alpha) \
        if fast and recipe.lookahead_k > 0 else None
    augment = Augment(hp.augmentation_type, hp.image_shape, recipe.translate, mean, std, gen)
    smoothing = recipe.label_smoothing if fast else 0.0

    history: list[dict[str, float]] = []
    best, best_epoch, stopped_early = -1.0, -1, False
    step = 0
    for epoch in range(hp.epochs):
        tick = time.monotonic()
        model.train()
        order = torch.randperm(n, generator=gen)
        correct = 0
        loss_sum = 0.0
        top_sum = 0
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            if len(idx) < 2 and start > 0:  # BatchNorm cannot train on one image
                continue
            x = augment(train_x[idx]).contiguous(memory_format=torch.channels_last)
            y = train_y[idx]
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * multiplier(step)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if lookahead is not None:
                lookahead.step()
            with torch.no_grad():
                correct += (logits.argmax(1) == y).sum().item()
                loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
                if hp.top_k:
                    hits = logits.topk(hp.top_k, dim=1).indices == y[:, None]
                    top_sum += hits.any(1).sum().item()
            if not math.isfinite(loss.item()):
                raise ClientError(f"Training diverged (loss is {loss.item()}) in epoch "
                                  f"{epoch}: lower learning_rate={hp.learning_rate}")
        if lookahead is not None:
            lookahead.step(force=True)
        row = {"train:accuracy": correct / n, "train:loss": loss_sum / n}
        log(f"Epoch[{epoch}] Train-accuracy={correct / n:.6f}")
        if hp.top_k:
            row[f"train:top_k_accuracy_{hp.top_k}"] = top_sum / n
            log(f"Epoch[{epoch}] Train-top_k_accuracy_{hp.top_k}={top_sum / n:.6f}")
        log(f"Epoch[{epoch}] Train-cross_entropy={loss_sum / n:.6f}")
        v = evaluate(model, val_x, val_y, mean, std, recipe.eval_batch, hp.top_k)
        row["validation:accuracy"] = v["accuracy"]
        row["validation:loss"] = v["loss"]
        log(f"Epoch[{epoch}] Time cost={time.monotonic() - tick:.3f}")
        log(f"Epoch[{epoch}] Validation-accuracy={v['accuracy']:.6f}")
        if hp.top_k:
            key = f"top_k_accuracy_{hp.top_k}"
            row[f"validation:{key}"] = v[key]
            log(f"Epoch[{epoch}] Validation-{key}={v[key]:.6f}")
        log(f"Epoch[{epoch}] Validation-cross_entropy={v['loss']:.6f}")
        history.append(row)

        if checkpoint_dir is not None and hp.checkpoint_frequency and \
                (epoch + 1) % hp.checkpoint_frequency == 0:
            path = checkpoint_dir / f"checkpoint-epoch-{epoch + 1:04d}.pt"
            torch.save(model.state_dict(), path)
            log(f"Saved checkpoint {path.name}")

        if hp.early_stopping:
            acc = v["accuracy"]
            improved = best < 0 or (acc - best) > hp.early_stopping_tolerance * max(best, 1e-12)
            if improved:
                best, best_epoch = acc, epoch
            elif (epoch + 1 >= hp.early_stopping_min_epochs
                  and epoch - best_epoch >= hp.early_stopping_patience):
                log(f"Early stopping after epoch {epoch}: validation accuracy did not improve "
                    f"for {epoch - best_epoch} epochs (best {best:.6f} at epoch {best_epoch})")
                stopped_early = True
                break

    model = model.to(memory_format=torch.contiguous_format)
    return Result(model.eval(), mean_list, std_list, dict(history[-1]), len(history),
                  stopped_early, time.monotonic() - started, history, recipe)


# --------------------------------------------------------------------------------- export


def export_onnx(result: Result, hp: Hyperparameters, path: Path, check: np.ndarray) -> float:
    """Write ``model.onnx`` (dynamic batch); return max |onnx - torch| on ``check`` pixels."""
    from torch.export import Dim

    for name in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    wrapper = Exported(result.model, result.mean, result.std).eval()
    example = torch.from_numpy(check[:2].astype(np.float32))
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (example,), str(path), dynamo=True,
                              input_names=["data"], output_names=["probabilities"],
                              dynamic_shapes={"data": {0: Dim("batch", min=1)}},
                              verbose=False, optimize=True, external_data=False)
    except Exception as exc:
        raise AlgorithmError(f"ONNX export failed: {exc}") from exc

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    data = check.astype(np.float32)
    got = session.run(None, {"data": data})[0]
    with torch.no_grad():
        want = wrapper(torch.from_numpy(data)).numpy()
    one = session.run(None, {"data": data[:1]})[0]
    diff = float(max(np.abs(got - want).max(), np.abs(one - want[:1]).max()))
    if not diff < 1e-4:
        raise AlgorithmError(f"ONNX check failed: outputs differ from torch by {diff:.3g}")
    return diff


def write_model(result: Result, hp: Hyperparameters, model_dir: Path, val: Split,
                log: Log) -> dict[str, object]:
    model_dir.mkdir(parents=True, exist_ok=True)
    tick = time.monotonic()
    check = val.pixels[:64] if len(val.pixels) else np.zeros((2, *hp.image_shape), np.uint8)
    if len(check) < 2:
        check = np.concatenate([check, check[:1] if len(check) else check])
    diff = export_onnx(result, hp, model_dir / "model.onnx", check)
    torch.save(result.model.state_dict(), model_dir / "model.pt")
    meta = {
        "format_version": FORMAT_VERSION,
        "algorithm": "image-classification",
        "architecture": hp.architecture,
        "num_layers": hp.num_layers,
        "num_classes": hp.num_classes,
        "image_shape": list(hp.image_shape),
        "preprocessing": {
            "resize": hp.resize,
            "color": "RGB" if hp.image_shape[0] == 3 else "L",
            "mean": result.mean,
            "std": result.std,
            "input_scale": "0-255",
            "normalisation_in_graph": True,
        },
        "onnx": {"file": "model.onnx", "input": "data", "output": "probabilities",
                 "layout": "NCHW", "dtype": "float32", "dynamic_batch": True,
                 "max_abs_diff_vs_torch": diff},
        "state_dict": "model.pt",
        "epochs": hp.epochs,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "metrics": result.metrics,
        "seed": hp.seed,
        "hyperparameters": hp.as_dict(),
        "recipe": asdict(result.recipe),
        "training_seconds": round(result.seconds, 3),
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch_version": torch.__version__,
    }
    (model_dir / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    log(f"Wrote model.onnx, model.pt and model.json to {model_dir} in "
        f"{time.monotonic() - tick:.2f} s (ONNX matches torch to {diff:.2g})")
    return meta


# ----------------------------------------------------------------------------------- main


def _stop(signum: int, _frame: object) -> None:
    raise Stopped(signum)


def _write_failure(ml_root: Path, reason: str) -> None:
    out = ml_root / "output"
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "failure").write_text(reason + "\n")
    except OSError:
        pass


def main(ml_root: Path | str, recipe: Recipe | None = None) -> int:
    ml_root = Path(ml_root)
    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    started = time.monotonic()
    try:
        threads = cpu_threads()
        torch.set_num_threads(threads)
        log_line(f"localaws image-classification: python {platform.python_version()}, torch "
                 f"{torch.__version__}, {threads} CPU threads, ml root {ml_root}")
        hp_path = ml_root / "input" / "config" / "hyperparameters.json"
        try:
            raw = json.loads(hp_path.read_text()) if hp_path.exists() else {}
        except (OSError, ValueError) as exc:
            raise ClientError(f"Cannot read hyperparameters.json: {exc}") from None
        hp = parse(raw)
        if recipe is not None and recipe != RECIPE:
            log_line(f"Recipe override: {asdict(recipe)}")
        effective = hp.as_dict()
        log_line("Hyperparameters (effective): " + json.dumps(effective, sort_keys=True))
        defaults = sorted(set(effective) - hp.explicit)
        if defaults:
            log_line("Defaults used for: " + ", ".join(defaults))
        for note in hp.notes:
            log_line(note)
        train_split, val_split = load_data(ml_root, hp, log_line)
        model_dir = ml_root / "model"
        model_dir.mkdir(parents=True, exist_ok=True)
        result = fit(hp, train_split, val_split, log_line, recipe or RECIPE,
                     checkpoint_dir=model_dir)
        write_model(result, hp, model_dir, val_split, log_line)
        out = ml_root / "output"
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result.metrics, indent=2) + "\n")
        m = result.metrics
        log_line(f"Training complete: {result.epochs_run} epochs"
                 f"{' (stopped early)' if result.stopped_early else ''} in "
                 f"{time.monotonic() - started:.1f} s; Train-accuracy="
                 f"{m['train:accuracy']:.6f}; Validation-accuracy={m['validation:accuracy']:.6f}")
        return 0
    except Stopped as stop:
        name = signal.Signals(stop.signum).name
        log_line(f"Received {name}: stopping training now (no model written)")
        return 128 + stop.signum
    except AlgorithmFailure as exc:
        reason = exc.reason()
        log_line(reason)
        _write_failure(ml_root, reason)
        return 1
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        reason = f"AlgorithmError: unexpected {type(exc).__name__}: {exc}"
        reason = " ".join(reason.split())
        log_line(reason)
        _write_failure(ml_root, reason)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

