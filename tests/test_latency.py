"""edgeq.measure.latency on a fake clock: exact latency rows, the alternation plan, and A/B ratios of known latencies.

Each fake run advances the clock edgeq.measure.latency reads (``perf_counter``) by a scripted number of milliseconds, so every figure is known in
advance: the percentiles are numpy's linear interpolation of the scripted times, and an A/B ratio is the median
over rounds of the per-round ratio of mean latencies, unmoved by a round a burst of load hit.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.measure import latency


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def run(self, milliseconds):
        """A Run that takes the next of MILLISECONDS on each call (one number: always that long)."""
        steps = iter(milliseconds) if isinstance(milliseconds, list) else None

        def call():
            self.now += (next(steps) if steps else milliseconds) / 1e3

        return call


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(latency, "perf_counter", fake)
    return fake


def test_timed_runs_skip_warmup_and_row_is_exact(clock):
    times = [float(t) for t in range(1, 101)]  # 1 .. 100 ms
    with latency.progress_bar(110, "test", progress=False) as bar:
        measured = latency.timed_runs(clock.run([1000.0] * 10 + times), runs=100, warmup=10, bar=bar)
    assert measured == pytest.approx(times)  # the ten 1-second warm-up runs are not timed
    row = latency.latency_stats(measured)
    assert row["runs"] == 100 and row["min"] == pytest.approx(1) and row["max"] == pytest.approx(100)
    # numpy's linear interpolation on 1..100: the q-th percentile is 1 + 0.99 q
    assert (row["p50"], row["p90"], row["p99"]) == pytest.approx((50.5, 90.1, 99.01))
    assert row["mean"] == pytest.approx(50.5) and row["stdev"] == pytest.approx(np.std(times, ddof=1))
    assert row["spread"] == pytest.approx((90.1 - 10.9) / 50.5)
    assert latency.latency_stats([3.0]) == {
        "runs": 1, "p50": 3.0, "p90": 3.0, "p99": 3.0, "mean": 3.0, "min": 3.0, "max": 3.0, "stdev": 0.0,
        "spread": 0.0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("runs", "plan"), [(1, (1, 1)), (9, (9, 1)), (20, (10, 2)), (50, (10, 5)), (100, (20, 5)), (23, (11, 2))]
)
def test_alternation_plan(runs, plan):
    rounds, per_round = latency.alternation_plan(runs)
    assert (rounds, per_round) == plan
    assert per_round <= latency.ROUND_RUNS_MAX and rounds * per_round <= runs


def test_alternate_ratio_is_the_median_of_round_ratios(clock):
    """A takes 2 ms and B 1 ms, except in two rounds where a burst of load makes A take 20 ms: the median
    ratio stays 2 while the ratio of the overall means would not."""
    rounds, per_round = latency.alternation_plan(20)
    slow_rounds = {3, 7}
    a_times = [2.0] * 3 + [20.0 if r in slow_rounds else 2.0 for r in range(rounds) for _ in range(per_round)]
    calls = []

    def make(name, times):
        run = clock.run(times)

        def traced():
            calls.append(name)
            run()

        return lambda threads: (traced, f"{name} runtime")

    result = latency.alternate(
        "A", make("a", a_times), "B", make("b", 1.0), threads=[1], runs=20, warmup=3
    )
    assert "".join(calls) == "aaabbb" + ("a" * per_round + "b" * per_round) * rounds
    (row,) = result["rows"]
    assert row["ratio"] == pytest.approx(2.0)
    assert np.mean(a_times[3:]) / 1.0 > 3  # what the overall means would have said
    assert row["ratio_p10"] == pytest.approx(2.0) and row["ratio_p90"] == pytest.approx(20.0)
    assert row["a_ms"]["runs"] == row["b_ms"]["runs"] == rounds * per_round
    assert row["b_ms"]["p50"] == pytest.approx(1.0) and row["a_ms"]["max"] == pytest.approx(20.0)
    assert result["a"] == {"artifact": "A", "runtime": "a runtime"}
    text = latency.format_alternation(result)
    assert f"{rounds} rounds of {per_round} run(s)" in text and "2.000" in text
