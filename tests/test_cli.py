import subprocess
import sys

import pytest

from gnn_transformer import equivalence
from gnn_transformer.cli import main

SMALL = ["--d-model", "16", "--nhead", "4", "--num-encoder-layers", "2", "--num-decoder-layers", "2",
         "--dim-feedforward", "32", "--no-progress"]


@pytest.mark.parametrize("extra", [[], ["--norm-first", "--dtype", "float32", "--activation", "gelu"]])
def test_check_prints_parity_table_and_passes(capsys, extra):
    assert main(["check", *SMALL, *extra]) == 0
    out = capsys.readouterr().out
    for module in ("GraphMultiheadAttention", "GraphTransformerEncoderLayer", "GraphTransformerDecoder",
                   "GraphTransformer ", "GraphTransformerModel (logits)"):
        assert module in out
    assert "complete + causal + bipartite" in out and "FAIL" not in out
    assert "15/15 comparisons within tolerance" in out


def test_check_exits_non_zero_on_a_mismatch(capsys, monkeypatch):
    """Break the graph attention's scale: every row that runs attention must fail."""
    from gnn_transformer.core.attention import GraphMultiheadAttention

    monkeypatch.setattr(GraphMultiheadAttention, "_scale", lambda self: 1.0)
    assert main(["check", *SMALL]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH GraphMultiheadAttention" in out and "FAIL" in out


def test_check_rejects_bad_options():
    with pytest.raises(SystemExit, match="not divisible"):
        main(["check", "--d-model", "10", "--nhead", "4"])


def test_format_table_lines_up():
    rows = equivalence.run_suite(equivalence.CheckConfig(d_model=8, nhead=2, num_encoder_layers=1,
                                                         num_decoder_layers=1, dim_feedforward=8))
    table = equivalence.format_table(rows).splitlines()
    assert table[0].startswith("module") and set(table[1]) <= {"-", " "}
    assert len(table) == len(rows) + 2


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "gnn_transformer", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "check" in result.stdout


def test_a_missing_extra_is_named(monkeypatch):
    """Without matplotlib, drawing a pattern says which extra to install (no traceback)."""
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(SystemExit, match=r"needs matplotlib: pip install 'gnn-transformer\[viz\]'"):
        main(["graph", "window", "--n", "6", "--out", "unused.png"])
