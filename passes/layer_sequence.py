"""Run a QDQ model layer by layer, as the sequential passes (bias correction, AdaRound) need it, without rerunning
the model's prefix for every layer.

Those passes change one layer at a time and measure a layer only after every layer upstream of it has been changed
(its input then carries the upstream changes). Changing a layer changes only what is downstream of it, so every
layer whose upstream layers are done is measured in one go, a "wave" (a chain such as MobileNetV2 still has one wave
per layer). A wave does not rerun the model from its input: the tensors at the cut between the part of the graph
that is final (every layer upstream of it is done) and the rest are kept for all samples, as the integers behind
their DequantizeLinear where there is one, so a wave runs only the nodes between the cut and its layers.

Cost: about two runs of the model over the data (a wave's layers run again in the next wave, with their changes)
plus one small onnxruntime session per wave, instead of one prefix run per layer (quadratic in depth).
Memory: the data (read once) and the cut's tensors, for every sample (MobileNetV2 at 64 samples: 38 MB of input,
then at most ~80 MB of uint8 in a QDQ model; float32 in a float model).

Two sequences over models with the same layer names (a QDQ model and its clipped reference) given the same waves
stay in step: ``next_wave`` of one, ``run`` on both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.data import CalibrationData
from edgeq.io.session import budget_batch, fixed_batch_size, session


def input_batches(data: CalibrationData, model: ir.Model) -> dict[str, list[np.ndarray]]:
    """DATA read once, as LayerSequence takes it: graph input name -> batches sized for MODEL."""
    batches: dict[str, list[np.ndarray]] = {v.name: [] for v in model.graph.inputs if not v.is_initializer()}
    for batch in data.batches(fixed_batch_size(model) or budget_batch(model, 64)):
        for name, arrays in batches.items():
            arrays.append(batch[name])
    return batches


class LayerSequence:
    """MODEL's layers (nodes named LAYER_NAMES) in waves, fed by INPUTS: graph input name -> list of batches."""

    def __init__(
        self,
        model: ir.Model,
        layer_names: Sequence[str],
        inputs: dict[str, list[np.ndarray]],
        *,
        optimization: str = "basic",
    ):
        model.graph.sort()
        self.model = model
        self.optimization = optimization
        wanted = set(layer_names)
        self.layers = {node.name: node for node in model.graph if node.name in wanted}
        self.upstream = _upstream_layers(model.graph, set(self.layers.values()))
        self.cache = dict(inputs)
        self.batches = len(next(iter(inputs.values())))
        self.values = {v.name: v for v in model.graph.inputs} | {
            v.name: v for node in model.graph for v in node.outputs
        }
        self.done: set[ir.Node] = set()
        self.final: set[ir.Node] = set()  # nodes whose outputs are final: every layer upstream of them is done

    @property
    def pending(self) -> bool:
        return len(self.done) < len(self.layers)

    def next_wave(self) -> list[str]:
        """The layers not done whose upstream layers all are, in graph order."""
        return [
            name
            for name, node in self.layers.items()
            if node not in self.done and self.upstream[node] <= self.done
        ]

    def run(self, wave: Sequence[str], names: Sequence[str], consume: Callable[[list[np.ndarray]], None]) -> None:
        """Run the nodes between the cut and the WAVE's layers, calling CONSUME with the tensors NAMES (outputs of
        those nodes, or graph inputs) for each batch in turn; then the wave is done: changes the caller makes to
        its layers afterwards reach the later waves."""
        wave_nodes = {self.layers[name] for name in wave}
        segment_nodes = _ancestors(list(wave_nodes), self.final)
        # DequantizeLinear nodes are rerun, not cached, so that the cut holds their (narrower) integer inputs
        newly_final = {n for n in segment_nodes if n not in wave_nodes and n.op_type != "DequantizeLinear"}
        cut = [
            v.name
            for n in newly_final
            for v in n.outputs
            if any(c not in self.final and c not in newly_final for c in v.consumers())
        ]
        produced = {v.name for n in segment_nodes for v in n.outputs}
        outputs = [name for name in dict.fromkeys([*names, *cut]) if name in produced]
        segment_inputs = {v.name for n in segment_nodes for v in n.inputs if v is not None} & self.cache.keys()
        runner = self._session(segment_nodes, sorted(segment_inputs), outputs) if outputs else None
        new_cut: dict[str, list[np.ndarray]] = {name: [] for name in cut}
        for i in range(self.batches):
            feeds = {n: self.cache[n][i] for n in segment_inputs}
            results = dict(zip(outputs, runner.run(outputs, feeds), strict=True)) if runner else {}
            consume([results[name] if name in results else self.cache[name][i] for name in names])
            for name, arrays in new_cut.items():
                arrays.append(results[name])
        self.done |= wave_nodes
        self.final |= newly_final
        self.final |= {
            n
            for n in segment_nodes - wave_nodes
            if all(c in self.final for v in n.outputs for c in v.consumers())
        }
        self.cache.update(new_cut)
        for name in [n for n in self.cache if all(c in self.final for c in self.values[n].consumers())]:
            del self.cache[name]

    def _session(self, nodes: set[ir.Node], inputs: list[str], outputs: list[str]):
        return segment_session(
            self.model, nodes, [self.values[n] for n in inputs], [self.values[n] for n in outputs], self.optimization
        )


def _upstream_layers(graph: ir.Graph, layer_nodes: set[ir.Node]) -> dict[ir.Node, set[ir.Node]]:
    """For every node (GRAPH topologically sorted), the layer nodes upstream of it."""
    upstream: dict[ir.Node, set[ir.Node]] = {}
    for node in graph:
        above: set[ir.Node] = set()
        for value in node.inputs:
            producer = value.producer() if value is not None else None
            if producer is not None:
                above |= upstream[producer] | ({producer} & layer_nodes)
        upstream[node] = above
    return upstream


def _ancestors(targets: list[ir.Node], stop: set[ir.Node]) -> set[ir.Node]:
    """TARGETS and every node they depend on, not crossing nodes in STOP (their outputs are cached)."""
    found: set[ir.Node] = set()
    pending = list(targets)
    while pending:
        node = pending.pop()
        if node in found or node in stop:
            continue
        found.add(node)
        pending.extend(v.producer() for v in node.inputs if v is not None and v.producer() is not None)
    return found


def segment_session(
    model: ir.Model, nodes: set[ir.Node], inputs: list[ir.Value], outputs: list[ir.Value], optimization: str = "basic"
):
    """An onnxruntime session over NODES of MODEL, fed by INPUTS, computing OUTPUTS."""
    # Only the segment is serialized (the whole model, once per wave, cost MobileNetV2 more than running it).
    kept = [node for node in model.graph if node in nodes]
    constants = {
        v.name: v.const_value for node in kept for v in node.inputs if v is not None and v.const_value is not None
    }
    graph = onnx.helper.make_graph(
        [ir.serde.serialize_node(node) for node in kept],
        "segment",
        [_value_info(v) for v in inputs],
        [_value_info(v) for v in outputs],
        initializer=[ir.serde.serialize_tensor(tensor) for tensor in constants.values()],
    )
    opsets = [onnx.helper.make_opsetid(domain, version) for domain, version in model.opset_imports.items()]
    segment = onnx.helper.make_model(graph, opset_imports=opsets, ir_version=model.ir_version)
    return session(segment, optimization=optimization)


def _value_info(value: ir.Value) -> onnx.ValueInfoProto:
    if value.dtype is None:
        return onnx.helper.make_empty_tensor_value_info(value.name)
    return onnx.helper.make_tensor_value_info(value.name, value.dtype.value, None)
