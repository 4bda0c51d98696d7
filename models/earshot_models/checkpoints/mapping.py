"""Key mapping from a foreign checkpoint layout to ours, with every key and shape checked.

A converter is a list of rules. Each rule matches one of *our* state-dict keys (a regex) and
names the source key(s) that make it (templates expanded with the regex groups). Several source
keys are concatenated along dim 0: that is how split q/k/v become one fused qkv projection.
Walking our model's keys in order gives errors that name the first missing or mismatching
*source* key, in the checkpoint's own terms; source keys no rule used are then reported as
unexpected, unless they match `ignore` (weights the reference keeps but never uses).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from earshot_models.checkpoints.io import CheckpointError


@dataclass(frozen=True)
class Rule:
    ours: str  # regex over our key, fully matched
    theirs: tuple[str, ...]  # source keys, as re.Match.expand templates (\1, \2, ...)


def module_shapes(make: Callable[..., torch.nn.Module], *args: Any) -> dict[str, torch.Size]:
    """The keys and shapes of make(*args).state_dict(), built on the meta device (no memory, no init):
    what a converted checkpoint must hold."""
    with torch.device("meta"):
        module = make(*args)
    return {key: tensor.shape for key, tensor in module.state_dict().items()}


def convert_state_dict(
    source: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Size],
    rules: Sequence[Rule],
    where: str,
    ignore: str | None = None,
) -> dict[str, torch.Tensor]:
    """Our state dict (float tensors in float32) built from `source`; CheckpointError naming the
    first missing source key, the first whose shape does not fit, or the first unexpected one."""
    converted: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, shape in expected.items():
        match, rule = _match(key, rules)
        names = [match.expand(template) for template in rule.theirs]
        part_shape = (shape[0] // len(names), *shape[1:])
        parts = []
        for name in names:
            if name not in source:
                raise CheckpointError(f"{where}: missing key {name!r} (needed for {key})")
            tensor = source[name]
            if tuple(tensor.shape) != tuple(part_shape):
                raise CheckpointError(
                    f"{where}: key {name!r} has shape {list(tensor.shape)}, expected {list(part_shape)}"
                )
            parts.append(tensor)
            used.add(name)
        merged = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        converted[key] = merged.float() if merged.is_floating_point() else merged
    ignored = re.compile(ignore) if ignore else None
    unexpected = [name for name in source if name not in used and not (ignored and ignored.fullmatch(name))]
    if unexpected:
        raise CheckpointError(
            f"{where}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected key(s) in all); "
            "the checkpoint does not fit this model"
        )
    return converted


def _match(key: str, rules: Sequence[Rule]) -> tuple[re.Match[str], Rule]:
    for rule in rules:
        match = re.fullmatch(rule.ours, key)
        if match:
            return match, rule
    raise AssertionError(f"no conversion rule for our key {key!r}")  # a bug in a converter, not in the file
