import sys
from pathlib import Path

import pytest

# Test modules share helpers across folders (test_cpp_example uses test_trt's fake export,
# test_trt test_check's precision graphs): every test folder is on the path, whatever order
# pytest collects them in (their basenames are unique).
for _folder in sorted(p for p in Path(__file__).parent.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))

import torch  # noqa: E402

from eventspd_export.data.synthetic import random_queries, synthetic_window  # noqa: E402
from helpers import skip_or_fail  # noqa: E402
from model_def import EventSPD, get_config  # noqa: E402


@pytest.fixture(scope="session")
def tiny_cfg():
    return get_config("tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_cfg):
    return EventSPD(tiny_cfg, seed=0).eval()


@pytest.fixture(scope="session")
def tiny_events(tiny_cfg):
    return synthetic_window(tiny_cfg, 5000, seed=3)


@pytest.fixture(scope="session")
def tiny_pre(tiny_model, tiny_events):
    with torch.inference_mode():
        return tiny_model.precompute(tiny_events)


@pytest.fixture()
def tiny_queries(tiny_cfg):
    return random_queries(tiny_cfg, 7, seed=4)


# ---- TensorRT-RTX (real engine builds without a GPU) ----------------------------------------------
# `make test` installs TensorRT-RTX and points TENSORRT_INCLUDE at TensorRT 11.1's headers; CI also
# sets EVENTSPD_REQUIRE_TENSORRT_RTX=1, which turns these skips into failures so a CI run can never
# pass while silently skipping the engine builds.

@pytest.fixture(scope="session")
def rtx_runtime():
    from model_def.errors import UserError
    from eventspd_export.runtime.trt_flavour import load_runtime

    try:
        return load_runtime("tensorrt-rtx")
    except UserError as exc:
        skip_or_fail(str(exc))


@pytest.fixture(scope="session")
def tensorrt_include():
    from plugins.trt_build import include_from_env

    inc, why = include_from_env((11,), "the TensorRT-RTX tests (TensorRT-RTX 1.7 loads only plugins built against "
                                       "TensorRT 11 headers)")
    if inc is None:
        skip_or_fail(f"{why}: set it to TensorRT 11.x's include/ folder (`make test` uses "
                     "../shared/third_party/tensorrt-11.1/include)")
    return inc


@pytest.fixture(scope="session")
def rtx_plugin_library(tmp_path_factory, rtx_runtime, tensorrt_include):
    """libeventspd_plugins.so built here for TensorRT-RTX (TensorRT 11.1 headers + libtensorrt_rtx)."""
    from plugins.trt_build import PluginBuildError, build_plugins

    # Two of the default six CUDA architectures (plugins/CMakeLists.txt), which halves the build
    # (80 s -> 36 s here): TensorRT-RTX's build phase runs no kernel, and the kernels' only
    # architecture branch (event_splat's vector atomics, __CUDA_ARCH__ >= 900) is compiled both
    # ways: 75 below it and 120 (an RTX target) above. sm_80 and sm_90 are compiled, with -Werror,
    # by tests/plugins/test_plugins_compile.py::test_nvcc_compiles; `build-plugins` builds all six.
    try:
        return build_plugins(build_dir=tmp_path_factory.mktemp("plugin-build"), runtime="tensorrt-rtx",
                             include_dir=tensorrt_include, cuda_architectures="75;120", log=lambda msg: None)
    except PluginBuildError as exc:
        if "failed (exit" in str(exc):  # cmake or the compiler broke on our sources: a real failure
            raise
        skip_or_fail(f"cannot build the plugin library here: {exc}")
