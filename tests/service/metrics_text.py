"""Reading the /metrics text the way Prometheus would, for assertions."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample (0 when absent), e.g. sample(text, "earshot_batch_size_count", model="tiny")."""
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name and all(item.labels.get(k) == v for k, v in labels.items()):
                return item.value
    return 0.0


def names(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}
