import sys
from pathlib import Path
import pytest
sys.path.insert(0, str(Path(__file__).parents[1] / "service"))
from test_deploy_image_commands import *  # noqa
from small_bundles import write_tiny_bundle

@pytest.fixture(scope="module")
def image_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("c")
    write_tiny_bundle(cache / "bundles" / "yamnet", name="yamnet")
    return cache
