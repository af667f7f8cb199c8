"""The tools on the Universal Transformer: recording, explain's ponder map, the explorer's ponder map, the CLI."""
import json
import re

import torch

from gnn_transformer import graphs
from gnn_transformer.analysis.recording import record
from gnn_transformer.cli import main
from gnn_transformer.explain import explain
from gnn_transformer.explorer import explore
from gnn_transformer.variants import GraphUniversalTransformer


def model_and_batch():
    torch.manual_seed(4)
    model = GraphUniversalTransformer(12, d_model=8, nhead=2, num_steps=3, dim_feedforward=16, dropout=0.0,
                                      halting_bias_init=-1.0).eval()
    with torch.no_grad():
        for stack in (model.encoder, model.decoder):
            torch.nn.init.normal_(stack.halting.linear.weight, std=3.0)
    batch = graphs.seq2seq_batch([torch.tensor([3, 4, 5, 6, 7])], [torch.tensor([0, 3, 4, 9])])
    return model, batch


def test_recording_sees_the_shared_attention_once_per_step():
    model, batch = model_and_batch()
    with record(model) as recording:
        model(batch)
    kinds = [(entry.kind, entry.layer) for entry in recording.attention]
    assert kinds == [("encoder self", 0)] * 3 + [("decoder self", 0), ("cross", 0)] * 3


def test_explain_shows_the_ponder_map_of_each_side():
    model, batch = model_and_batch()
    out = model.run(batch)
    explanation = explain(model, batch)
    for side, ponder in (("encoder", out.source_ponder), ("decoder", out.target_ponder)):
        table = explanation.stage(f"{side}.ponder").table("ponder map")
        assert table.column("steps") == ponder.steps.tolist()
        assert table.columns[-3:] == ["p1", "p2", "p3"]
    assert len(set(out.source_ponder.steps.tolist() + out.target_ponder.steps.tolist())) > 1
    # the first step's halting probability, by hand: the shared layer on embedding + P^1
    x = model.src_embed(batch["src"].x) + model.encoder.coordinates(batch["src"].position, 1)
    h1 = model.encoder.layers[0](x, graphs.complete([5]))
    p1 = explanation.stage("encoder.ponder").table("ponder map").column("p1")
    assert torch.allclose(torch.tensor(p1), model.encoder.halting(h1).detach(), atol=1e-6)
    assert "1+1 layers shared by 3 steps" in explanation.heading and "ponder map" in explanation.text()


def test_the_explorer_page_carries_the_ponder_map():
    model, batch = model_and_batch()
    out = model.run(batch)
    page = explore(model, batch)
    assert page.data["ponder"] == {"max_steps": 3, "source": out.source_ponder.steps.tolist(),
                                   "target": out.target_ponder.steps.tolist()}
    json.dumps(page.data, allow_nan=False)
    assert 'id="ponder-panel"' in page.html() and "drawPonder" in page.html()
    assert explore().data["ponder"] is None  # the paper's model does not ponder


def test_explain_and_explore_a_trained_universal_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "reverse", "--architecture", "universal", "--num-steps", "2", "--d-model", "16",
                 "--nhead", "2", "--dim-feedforward", "32", "--no-progress", "--threads", "1", "--steps", "1",
                 "--num-train", "32", "--num-test", "4", "--batch-size", "8", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["explain", "--checkpoint", str(run), "--source", "1 2 3"]) == 0
    text = capsys.readouterr().out
    assert "Encoder ponder map" in text and "Decoder ponder map" in text
    page = tmp_path / "page.html"
    assert main(["explore", "--checkpoint", str(run), "--out", str(page)]) == 0
    blob = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', page.read_text(), re.S)
    ponder = json.loads(blob.group(1))["ponder"]
    assert ponder["max_steps"] == 2 and all(1 <= steps <= 2 for steps in ponder["source"] + ponder["target"])
