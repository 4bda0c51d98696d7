"""The default model on an AVX2 CPU without VNNI, emulated with qemu-user (`qemu-x86_64 -cpu Haswell`).

The rest of the suite holds on any CPU because it compares against machine-independent references;
this test is the one place that runs the real thing on the other kind of CPU, whatever CI's machine
is: qemu's CPU model has AVX2 and FMA but no AVX-512 or VNNI, so ONNX Runtime picks its AVX2
kernels, saturating u8s8 ones included. It checks that the runner notices (the measured saturation
check), serves the same integers as here, and that the bundle's probe catches the int8 weights run
on the saturating kernels. Skipped where qemu-user is not installed (`.ci/run` installs it).
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from earshot.engine.runner import RunnerConfig
from earshot.engine.self_test import cosine_rows, open_runner, read_probe

QEMU = shutil.which("qemu-x86_64")
pytestmark = [
    pytest.mark.slow,  # a model served under emulation: about half a minute
    pytest.mark.skipif(
        QEMU is None or platform.machine() != "x86_64", reason="needs qemu-user (qemu-x86_64) on an x86-64 machine"
    ),
]

CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np, onnx, onnxruntime
    from earshot import bundle as bundle_format
    from earshot.engine import int8
    from earshot.engine.runner import RunnerConfig
    from earshot.engine.self_test import open_runner, read_probe, cosine_rows

    loaded = bundle_format.load(sys.argv[1])
    runner, result = open_runner(loaded, RunnerConfig(("cpu",), 1, 2, Path(sys.argv[2])))
    probe = read_probe(loaded)
    served = runner.run(probe.waveform, probe.num_samples)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    as_exported = onnxruntime.InferenceSession(str(loaded.model_path), options, providers=["CPUExecutionProvider"])
    raw = as_exported.run(["embedding"], {"waveform": probe.waveform})[0]
    np.save(sys.argv[2] + "/served.npy", served.embedding)
    print(json.dumps({
        "saturates": int8.u8s8_kernels_saturate(),
        "self_test": result.to_json(),
        "int8_weights_on_these_kernels_min_cosine": float(cosine_rows(raw, probe.embedding).min()),
    }))
    """
)


def test_the_default_model_on_emulated_avx2_serves_the_same_integers(yamnet_bundle, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    out = tmp_path / "child"
    out.mkdir()
    completed = subprocess.run(
        [QEMU, "-cpu", "Haswell", sys.executable, str(script), str(yamnet_bundle.path), str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["saturates"] is True  # AVX2 without VNNI: VPMADDUBSW's int16 pair sums
    self_test = report["self_test"]
    assert self_test["status"] == "passed" and "u8 form" in self_test["arithmetic"], self_test
    # the same graph's int8 weights on those kernels: the probe catches it (measured 0.80 on window 2)
    assert report["int8_weights_on_these_kernels_min_cosine"] < self_test["tolerance"]
    # and what the emulated AVX2 runner serves is what this machine's runner serves, integer for integer
    here, _ = open_runner(yamnet_bundle, RunnerConfig(("cpu",), 1, 2, tmp_path / "cache"))
    probe = read_probe(yamnet_bundle)
    local = here.run(probe.waveform, probe.num_samples).embedding
    emulated = np.load(out / "served.npy")
    assert cosine_rows(local, emulated).min() >= 0.99999
    np.testing.assert_allclose(emulated, local, rtol=0, atol=1e-5)
