import pytest

from gnn_transformer.cli import main


def test_complexity_prints_table_1_and_writes_plots(tmp_path, capsys):
    assert main(["experiment", "complexity", "--lengths", "8", "16", "32", "--d-model", "16", "--no-progress",
                 "--out", str(tmp_path), "--formats", "png", "svg"]) == 0
    out = capsys.readouterr().out
    assert "Self-Attention (restricted)" in out and "O(log_k n)" in out and "n=32" in out
    recurrent = next(line for line in out.splitlines() if line.startswith("Recurrent ") and "chain" in line)
    assert recurrent.split()[4:6] == ["32", "31"]  # sequential operations n, maximum path length n - 1
    for name in ("complexity.png", "complexity.svg", "complexity.txt"):
        assert (tmp_path / name).stat().st_size > 500
    with pytest.raises(SystemExit, match="at least 2"):
        main(["experiment", "complexity", "--lengths", "1", "4"])


def test_rank_collapse_prints_residuals(capsys):
    """The plot is tested with analysis.plot_rank_collapse and the writing of plots with 'complexity'."""
    assert main(["experiment", "rank-collapse", "--depth", "2", "--n", "8", "--sequences", "2", "--d-model", "16",
                 "--no-progress", "--norm", "l1,inf"]) == 0
    out = capsys.readouterr().out
    assert "attention + skip" in out and "transformer layer" in out and "L=2" in out and "l1,inf norm" in out
    with pytest.raises(SystemExit, match="not divisible"):
        main(["experiment", "rank-collapse", "--d-model", "10", "--nhead", "4"])
