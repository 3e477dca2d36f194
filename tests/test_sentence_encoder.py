"""models/sentence_encoder.py: the BERT encoder written without transformers, checked against the corpus's
independent export of paraphrase-MiniLM-L3-v2 (same architecture, 3 layers) and then exported with
all-MiniLM-L6-v2's weights."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch  # a test dependency (make test installs it), as are the weights' packages: missing ones fail
from conftest import CORPUS
from onnx import numpy_helper

from edgeq.io.session import session as ort_session
from models.sentence_encoder import BertConfig, SentenceEncoder, build, export

L3 = CORPUS / "paraphrase_minilm_l3"
L3_POOLED = "461"  # the corpus model's mean-pooled embedding output
L3_PREFIX = "model.0.auto_model."  # sentence-transformers' Transformer module, around the BertModel


def _eval_rows() -> dict[str, np.ndarray]:
    if not L3.is_dir():
        pytest.skip(f"the corpus is not at {CORPUS} (set EDGEQ_CORPUS to its folder)")
    return dict(np.load(L3 / "eval.npz"))


def _embed(module: torch.nn.Module, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()


def _l3_state_dict(model: onnx.ModelProto, module: SentenceEncoder) -> dict[str, torch.Tensor]:
    """The module's parameters from the L3 export's initializers. The exporter renamed the Linear weights
    (onnx::MatMul_470, ...) and stored them as [in, out] for MatMul: they are taken in the order of the MatMul
    nodes that read them, which is the order of the module's Linears, and the node's scope confirms each pair."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    state = {k.removeprefix(L3_PREFIX): torch.tensor(v) for k, v in inits.items() if k.startswith(L3_PREFIX)}
    weight_nodes = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    linears = [name for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(weight_nodes) == len(linears) == 18
    for node, name in zip(weight_nodes, linears, strict=True):
        # e.g. /model/model.0/auto_model/encoder/layer.0/attention/self/query/MatMul_output_0
        scope = node.output[0].split("/auto_model/")[1].rsplit("/", 1)[0]
        assert scope.replace("/", ".") == name, (node.output[0], name)
        state[f"{name}.weight"] = torch.tensor(inits[node.input[1]].T)
    # the export holds position ids as a Constant node (0..511), not an initializer
    state["embeddings.position_ids"] = module.embeddings.position_ids
    return state


@pytest.mark.slow
def test_encoder_matches_the_corpus_paraphrase_minilm_l3_export():
    rows = _eval_rows()
    model = onnx.load(L3 / "model.onnx")
    module = SentenceEncoder(BertConfig(num_hidden_layers=3))
    module.load_state_dict(_l3_state_dict(model, module), strict=True)
    module.eval()
    reference = ort_session(model)
    samples = len(rows["input_ids"])
    # the case's protocol: one [1, 64] call per sentence
    expected = np.concatenate(
        [reference.run([L3_POOLED], {k: v[i : i + 1] for k, v in rows.items()})[0] for i in range(samples)]
    )
    # torch takes the 200 rows at once (each row's padding is masked out of attention and pooling): row by row
    # is several times slower on a loaded 2-core machine and gave the same values
    worst = float(np.abs(_embed(module, **rows) - expected).max())
    assert worst < 1e-5, worst


@pytest.mark.slow
def test_all_minilm_l6_exports_to_one_opset_14_file_that_matches_torch(tmp_path):
    rows = _eval_rows()  # the corpus case's ids: all-MiniLM-L6-v2 has the same bert-base-uncased vocabulary
    path = export(tmp_path / "all_minilm_l6.onnx")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # self-contained: no external data file
    model = onnx.load(path)
    assert model.opset_import[0].version == 14
    ops = Counter(n.op_type for n in model.graph.node)
    # 13 LayerNorms (embeddings + 2 per layer), decomposed at opset 14: two ReduceMeans, one Pow and one Sqrt each
    assert "LayerNormalization" not in ops and (ops["ReduceMean"], ops["Pow"], ops["Sqrt"]) == (26, 13, 13)
    assert (ops["MatMul"], ops["Softmax"], ops["Erf"]) == (48, 6, 6)

    module, _ = build()
    runner = ort_session(path)
    worst = 0.0
    for index in range(4):
        feeds = {k: v[index : index + 1] for k, v in rows.items()}
        worst = max(worst, float(np.abs(runner.run(None, feeds)[0] - _embed(module, **feeds)).max()))
    # dynamic axes: a batch of 8 cut to its longest sentence
    length = int(rows["attention_mask"][:8].sum(1).max())
    feeds = {k: np.ascontiguousarray(v[:8, :length]) for k, v in rows.items()}
    got = runner.run(None, feeds)[0]
    assert got.shape == (8, 384)
    worst = max(worst, float(np.abs(got - _embed(module, **feeds)).max()))
    assert worst < 1e-4, worst
