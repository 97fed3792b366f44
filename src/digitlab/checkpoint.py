"""Weights and training state on disk: safetensors (never pickles) with JSON beside or inside.

- `save_weights`/`load_weights`: a trained network as `<name>.safetensors` plus `config.json`
  (the dataclass it is rebuilt from) and optional `metadata.json`.
- `save_state`/`load_state`: everything a resumed run needs (networks, Adam moments, progress)
  in one safetensors file whose metadata holds the JSON, written atomically.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from digitlab.errors import DataError
from digitlab.files import atomic_write_bytes, atomic_write_json, read_json_object


def save_weights(
    module: torch.nn.Module,
    folder: str | Path,
    name: str,
    kind: str,
    config,
    metadata: dict | None = None,
) -> Path:
    """`<name>.safetensors` + config.json (the dataclass `config`, tagged `kind`) + optional
    metadata.json in `folder`, each written atomically; returns the folder."""
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic_write_bytes(folder / f"{name}.safetensors", save(state, {"format": "pt"}))
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
    atomic_write_json(folder / "config.json", {"model": kind, **cfg})
    if metadata is not None:
        atomic_write_json(folder / "metadata.json", metadata)
    return folder


def load_weights(folder: str | Path, name: str, kind: str, config_cls, build, hint: str):
    """Rebuild a network from config.json (via `build(config)`) and load its weights."""
    folder = Path(folder)
    cfg_path, weights = folder / "config.json", folder / f"{name}.safetensors"
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DataError(f"{folder} {what}: give the folder of a saved {kind} ({hint})")
    if not cfg_path.is_file():
        raise DataError(f"{cfg_path} is missing: {folder} is not a saved {kind} ({hint})")
    raw = read_json_object(cfg_path)
    # The config says what the folder holds: named before a missing weights file is (a saved
    # CNN's folder given where a generator is wanted once said only that a file was missing).
    other = raw.pop("model", kind)
    if other != kind:
        raise DataError(f"{folder} holds a saved {other} model, not a {kind} ({hint})")
    if not weights.is_file():
        raise DataError(f"{weights} is missing: {folder} is not a saved {kind} ({hint})")
    known = {f.name: f for f in fields(config_cls)}
    unknown = set(raw) - set(known)
    if unknown:
        raise DataError(f"{cfg_path} has unknown keys {sorted(unknown)}")
    raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    try:
        module = build(config_cls(**raw))
    except (TypeError, ValueError, RuntimeError, ArithmeticError) as exc:
        raise DataError(f"{cfg_path} holds settings no {kind} can be built from ({exc})") from exc
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{weights} is not a readable safetensors file ({exc})") from exc
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        # The first line is only "Error(s) in loading state_dict for ...:"; the next says what.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = " ".join(lines[:2])[:300]
        raise DataError(f"{weights} does not match {cfg_path}: {detail}") from exc
    # A network with NaN or infinite weights answers NaN for every input (a damaged file once
    # printed "nan%" predictions with exit code 0).
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise DataError(f"{weights} holds weights that are not finite numbers ({bad[0]}, ...)")
    return module


def save_state(
    path: str | Path,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    meta: dict[str, Any],
) -> None:
    """Networks and optimizers under their names, `meta` as JSON; one atomic file."""
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in modules.items():
        for k, v in module.state_dict().items():
            tensors[f"{prefix}.{k}"] = v.detach().cpu().contiguous()
    groups = {}
    for prefix, opt in optimizers.items():
        sd = opt.state_dict()
        groups[prefix] = sd["param_groups"]
        for idx, st in sd["state"].items():
            for name, value in st.items():
                tensors[f"{prefix}.{idx}.{name}"] = (
                    torch.as_tensor(value).detach().cpu().contiguous()
                )
    payload = {**meta, "param_groups": groups}
    atomic_write_bytes(path, save(tensors, {"digitlab": json.dumps(payload)}))


def load_state(path: str | Path) -> dict[str, Any]:
    """Read what `save_state` wrote: its `meta`, the tensors under "_tensors" (for `restore`).

    A damaged file is a DataError."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["digitlab"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError, TypeError) as exc:
        raise DataError(
            f"{path} is not a readable digitlab checkpoint ({exc}); delete it to start over"
        ) from exc
    if not isinstance(meta, dict):
        raise DataError(f"{path} is not a readable digitlab checkpoint; delete it to start over")
    return meta | {"_tensors": tensors}


def restore(
    meta: dict[str, Any],
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> None:
    """Load what `load_state` read into `modules` and `optimizers`, by their names."""
    tensors = meta["_tensors"]
    for prefix, module in modules.items():
        n = len(prefix) + 1
        module.load_state_dict({k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
    for prefix, opt in optimizers.items():
        state: dict = {}
        for key, value in tensors.items():
            if key.startswith(prefix + "."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"][prefix]})
        _match_layouts(opt)


def _match_layouts(opt: torch.optim.Optimizer) -> None:
    """Give each parameter's state tensors (Adam's moments) the parameter's own strides.

    They are saved contiguous; a channels-last weight's moments then come back in the other
    memory format. The for-loop optimizers index element by element and do not mind, but
    PyTorch's fused Adam walks parameter, gradient and moments as flat memory: a resumed run
    updated its weights with mismatched moments (weights 6e-3 off a run never stopped).
    """
    for group in opt.param_groups:
        for p in group["params"]:
            for name, value in opt.state.get(p, {}).items():
                if (
                    torch.is_tensor(value)
                    and value.shape == p.shape
                    and value.stride() != p.stride()
                ):
                    opt.state[p][name] = torch.empty_like(p, dtype=value.dtype).copy_(value)
