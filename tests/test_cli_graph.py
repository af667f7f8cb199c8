import pytest

from gnn_transformer.cli import main


@pytest.mark.parametrize("pattern, options, expected", [
    ("window", ["--radius", "3"], "16 nodes, 100 edges (6.25 per query), maximum path length 5 layers"),
    ("complete", ["--causal"], "16 nodes, 136 edges"),
    ("star", ["--n", "8", "--batch", "2"], "18 nodes, 78 edges"),
    ("rows", ["--height", "3", "--width", "4", "--text-length", "2"], "14 nodes"),
    ("strided", ["--stride", "4", "--part", "local", "--causal"], "70 edges (4.38 per query), maximum path length 4"),
])
def test_graph_prints_the_pattern(capsys, pattern, options, expected):
    assert main(["graph", pattern, *options]) == 0
    assert expected in capsys.readouterr().out


def test_graph_draws_png_and_svg(tmp_path, capsys):
    assert main(["graph", "bigbird", "--n", "12", "--out", str(tmp_path / "bigbird.png")]) == 0
    assert (tmp_path / "bigbird.png").stat().st_size > 5000
    assert main(["graph", "grid-window", "--causal", "--out", str(tmp_path / "image.svg")]) == 0
    assert (tmp_path / "image.svg").read_text().startswith("<?xml")
    edge_list = tmp_path / "tree.txt"
    edge_list.write_text("0 1\n1 2\n1 3\n")
    assert main(["graph", "edgelist", "--file", str(edge_list), "--out", str(tmp_path / "tree.png")]) == 0
    assert "4 nodes, 10 edges" in capsys.readouterr().out


def test_graph_rejects_bad_options(capsys):
    for argv, message in ((["graph", "window", "--radius", "-1"], "argument --radius: expected an integer >= 0"),
                          (["graph", "edgelist"], "--file"),
                          (["graph", "window", "--out", "pattern.jpg"], "must end in .png or .svg")):
        with pytest.raises(SystemExit) as exit:
            main(argv)
        assert exit.value.code == 2 and message in capsys.readouterr().err
