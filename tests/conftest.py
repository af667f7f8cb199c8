import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

CUDA = torch.cuda.is_available()

# Without a GPU the fused backend's Triton kernels run on CPU tensors through Triton's
# interpreter.  Triton reads the variable when the kernels are defined, which happens when
# the backend is first used (gnn_transformer.backends.fused is imported lazily), i.e. after this.
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def devices():
    """cpu always; cuda where present (as a skipped parameter elsewhere)."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture
def charlm_run(tmp_path):
    """A run folder holding one checkpoint of an untrained charlm-style model (window 4), as train saves it."""
    pytest.importorskip("safetensors")
    from gnn_transformer.tasks import CharCorpus, python_help_text
    from gnn_transformer.tasks.runs import build_model
    from gnn_transformer.training.checkpoint import save_checkpoint

    vocabulary = CharCorpus(python_help_text()).vocab
    hp = dict(d_model=8, nhead=2, num_layers=2, dim_feedforward=16, dropout=0.0)
    model = build_model("decoder", (len(vocabulary),), hp)
    config = {"task": "charlm", "kind": "decoder", "vocab_sizes": [len(vocabulary)], "model": hp,
              "vocabulary": vocabulary.symbols, "attention_window": 4}
    save_checkpoint(tmp_path / "checkpoints", model=model, optimizer=None, step=3, config=config)
    return tmp_path


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium for the explorer's page tests, one per session (Playwright's sync API runs once)."""
    from gnn_transformer.explorer.browser import find_chromium, launch_chromium

    required = os.environ.get("GNN_TRANSFORMER_REQUIRE_BROWSER") == "1"
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "playwright is not installed (pip install 'gnn-transformer[browser]')"
    if problem is None and find_chromium() is None:
        problem = "no Chromium found (Debian: apt-get install chromium; or set GNN_TRANSFORMER_CHROMIUM)"
    if problem is not None:
        if required:
            pytest.fail(f"GNN_TRANSFORMER_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)
    with sync_playwright() as playwright:
        launched = launch_chromium(playwright)
        yield launched
        launched.close()
