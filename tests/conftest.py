"""Shared fixtures: an offline, empty HF cache and tiny random checkpoints built once a session."""

import os
import tempfile

# Before transformers / huggingface_hub are imported anywhere: no network, a private cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="docread-hf-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DOCREAD_CACHE", tempfile.mkdtemp(prefix="docread-cache-"))  # quantized copies: not the user's
# Workers share the cores: torch in each worker, and in each process a test starts (python -m docread, a
# server, Ray's readers), takes its share of threads, not all of them (pytest_configure sets the workers').
THREADS = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))

import gc  # noqa: E402

import pytest  # noqa: E402

# The cyclic garbage collector runs after 50,000 net allocations, not 700: each young collection walks what
# torch's Python objects left, about 1,400 of them in 50 in-process tests (5-6% of their CPU); with this, 20.
gc.set_threshold(50_000, 20, 20)

try:  # on a shared, loaded machine Hypothesis's own input generation looks slow: no fault of the code tested
    from hypothesis import HealthCheck
    from hypothesis import settings as hypothesis_settings

    hypothesis_settings.register_profile("docread", deadline=None, suppress_health_check=[HealthCheck.too_slow])
    hypothesis_settings.load_profile("docread")
except ImportError:  # the test extra brings it; without it the property tests are not collected either
    pass

from docread.intake.pdf import import_pymupdf  # noqa: E402
from docread.testing import build_tiny_llava  # noqa: E402

import_pymupdf()  # as docread imports it (without the layout analyser), before a test module's `import pymupdf`

COST = {"slow": 10, "system": 5}  # a test's rough weight by its marks (any other: 1; `weight(n)` overrides)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Skip `cuda` tests without a GPU; under pytest-xdist give each module its own group unless it names
    one (one worker builds its module-scoped model, server or Ray once), heaviest groups first (by marks),
    so the two workers finish together."""
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    cost: dict[str, int] = {}
    for item in items:
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(skip)
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__ if item.module else item.nodeid))
        group = item.get_closest_marker("xdist_group").args[0]
        weight = item.get_closest_marker("weight")  # a test that knows its cost better than its marks do
        weights = [w for mark, w in COST.items() if item.get_closest_marker(mark)]
        cost[group] = cost.get(group, 0) + (weight.args[0] if weight else max(weights, default=1))
    items.sort(key=lambda item: -cost[item.get_closest_marker("xdist_group").args[0]])  # stable: file order kept


def pytest_runtest_setup(item):
    """`@pytest.mark.needs("mod", ...)`: skip unless each module imports (as `pytest.importorskip`), checked
    when a test runs, not at collection, so a worker imports ray, bitsandbytes or mcp only for its own tests."""
    for mark in item.iter_markers("needs"):
        for name in mark.args:
            pytest.importorskip(name)


def pytest_configure(config):
    """Workers share the cores: torch in each takes its share of threads, not all of them."""
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        import torch

        torch.set_num_threads(THREADS)


@pytest.fixture(scope="module")
def forkserver():
    """kit.forked's server, started when a module that forks `docread` begins: it imports meanwhile."""
    from kit.forked import warm

    warm()


@pytest.fixture(scope="session", autouse=True)
def ocr_once_per_image():
    """rapidocr, the third-party OCR engine, runs once a session per distinct image: it is deterministic, and
    many tests read the same small pages (which its detector scales up to 736 pixels a side, about half a
    second each). docread's own OCR code (`ocr_words`: the spaces, lines, confidences) runs every time."""
    import copy
    import hashlib
    import importlib.util

    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        yield
        return
    from rapidocr_onnxruntime import RapidOCR

    run, results = RapidOCR.__call__, {}

    def once(self, image, *args, **kwargs):
        if not hasattr(image, "tobytes") or args:  # a path or bytes, or positional options: not memoised
            return run(self, image, *args, **kwargs)
        key = (hashlib.sha1(image.tobytes()).digest(), image.shape, str(image.dtype), tuple(sorted(kwargs.items())))
        if key not in results:
            results[key] = run(self, image, **kwargs)
        return copy.deepcopy(results[key])

    RapidOCR.__call__ = once
    yield
    RapidOCR.__call__ = run


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory):
    """A llava-hf LLaVA-1.5-format checkpoint folder (config, safetensors, tokenizer, processor)."""
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"), kind="llava")


@pytest.fixture(scope="session")
def tiny_llava_next(tmp_path_factory):
    """A llava-hf LLaVA-1.6 (llava_next) checkpoint folder."""
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava-next"), kind="llava_next", seed=1)


_READERS: dict = {}


@pytest.fixture
def reuse_loaded_models(monkeypatch):
    """In-process CLI runs load each (model, options) once a session: `docread.loading.load` (what the
    CLI's `load_reader` calls) returns the reader an earlier run loaded with the same arguments. The
    command still runs every step after the load. Runs with an adapter always load for real."""
    import docread.loading

    real = docread.loading.load

    def load(model=None, *, adapter=None, device="auto", quant="auto", offline=None, global_view=None):
        if adapter is not None:
            return real(model, adapter=adapter, device=device, quant=quant, offline=offline, global_view=global_view)
        key = (str(model), device, quant, offline, global_view)
        if key not in _READERS:
            _READERS[key] = real(model, device=device, quant=quant, offline=offline, global_view=global_view)
        return _READERS[key]

    monkeypatch.setattr(docread.loading, "load", load)


@pytest.fixture(scope="session")
def tiny_reader(tiny_llava):
    """One `docread.load(tiny_llava, device="cpu", quant="none")` for the tests that only read with it."""
    import docread

    return docread.load(str(tiny_llava), device="cpu", quant="none")


@pytest.fixture(scope="session")
def speed_run():
    """`docread bench speed --synthetic tiny --json` once a session, in a process of its own (kit.forked: its
    tests are in kit.forked's group): its stdout must be the JSON alone even for what native code writes to
    file descriptor 1 (tests/test_speed.py checks the figures, tests/test_bench_files.py the stdout). The
    start-up it times runs real processes of their own."""
    from kit.forked import Forked

    args = ["bench", "speed", "--synthetic", "tiny", "--pages", "1", "--questions", "2"]
    args += ["--repeats", "1", "--max-new-tokens", "4", "--json"]  # one timed run after the warm-up, a few tokens
    run = Forked(args, env=dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1"))
    run.wait(300)
    return run


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    """Garbage collected once, then what is left frozen: pytest's unraisable-exception check collects five
    times more as a worker ends, and the interpreter once more at exit, each a walk over every object torch and
    transformers made (about half a second each on the 2-core machine; the last worker's end is the suite's)."""
    gc.collect()
    gc.freeze()
