"""Per-decision latency of the ML veto next to a bare ``predict_proba`` on the same model, in one run.

    .venv/bin/python bench/ml_inference.py                  # 2000 decisions
    .venv/bin/python bench/ml_inference.py --decisions 5000

A seeded random-walk market (hourly bars, session daily bars) of the traded root and every
reference root feeds ``StreamingFeatures`` as a worker would. The veto classifier
(``ml.training.make_classifier``) is fitted on the first half of the sessions, wrapped in
the ``VetoModel`` that serving returns, and timed on the second half:

* feature update: one bar into the incremental features;
* veto decision: ``values()`` + ``VetoModel.decide`` (features already current);
* veto step: the decision plus the feature updates of every bar that ended with the daily bar;
* bare predict: ``predict_proba`` on a ready 1×n array, same model, same rows.

Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import sklearn

from ml.features import OPTIONAL_REFERENCES, REQUIRED_REFERENCES, StreamingFeatures, feature_set
from ml.serving import VetoModel
from ml.training import make_classifier

T = TypeVar("T")
SYMBOL = "CL"
HOURS_PER_SESSION = 23


BarTuple = tuple[str, str, float, float, float]


def session_bars(rng: np.random.Generator, roots: list[str], sessions: int) -> list[list[BarTuple]]:
    """Per session: the hourly bars then, at the close, the daily bars of every root (root, tf, high, low, close)."""
    price = dict.fromkeys(roots, 100.0)
    out = []
    for _ in range(sessions):
        hourly, highs, lows = [], dict.fromkeys(roots, -np.inf), dict.fromkeys(roots, np.inf)
        for _ in range(HOURS_PER_SESSION):
            for root in roots:
                o = price[root]
                c = o * float(np.exp(rng.normal(0, 0.002)))
                h, lo = max(o, c) * (1 + abs(rng.normal(0, 0.001))), min(o, c) * (1 - abs(rng.normal(0, 0.001)))
                hourly.append((root, "hourly", h, lo, c))
                highs[root], lows[root], price[root] = max(highs[root], h), min(lows[root], lo), c
        daily = [(root, "daily", highs[root], lows[root], price[root]) for root in roots]
        out.append(hourly + daily)
    return out


def timed(fn: Callable[[], T]) -> tuple[T, int]:
    t0 = time.perf_counter_ns()
    value = fn()
    return value, time.perf_counter_ns() - t0


def figures(name: str, ns: list[int]) -> str:
    q = statistics.quantiles(ns, n=100)
    return f"{name:<44} p50 {q[49] / 1000:8.1f} µs   p99 {q[98] / 1000:8.1f} µs   ({len(ns)} samples)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=2000, help="timed decisions (sessions), default 2000")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    roots = [SYMBOL, *REQUIRED_REFERENCES, *OPTIONAL_REFERENCES[:1]]  # VIX fed; PL, 6E, 6J defaulted
    fs = feature_set(SYMBOL, roots)
    warm = 300
    market = session_bars(rng, roots, warm + args.decisions)

    sf = StreamingFeatures(fs)
    rows = []
    for bars in market[:warm]:
        for bar in bars:
            sf.update(*bar)
        if sf.ready:
            rows.append([sf.values()[n] for n in fs.names])
    x = np.array(rows, dtype=float)
    estimator = make_classifier(0.1).fit(x, rng.integers(0, 2, len(x)))
    model = VetoModel("bench_CL", "1", estimator, fs.names, 0.5, trained_sklearn=sklearn.__version__)

    update_ns: list[int] = []
    decide_ns: list[int] = []
    step_ns: list[int] = []
    bare_ns: list[int] = []
    for bars in market[warm:]:
        for bar in bars[: -len(roots)]:
            _, ns = timed(lambda bar=bar: sf.update(*bar))
            update_ns.append(ns)
        t0 = time.perf_counter_ns()
        for bar in bars[-len(roots):]:
            sf.update(*bar)
        t1 = time.perf_counter_ns()
        decision = model.decide(sf.values())
        t2 = time.perf_counter_ns()
        decide_ns.append(t2 - t1)
        step_ns.append(t2 - t0)
        row = np.array([decision.features[n] for n in fs.names], dtype=float).reshape(1, -1)
        _, ns = timed(lambda row=row: estimator.predict_proba(row))
        bare_ns.append(ns)

    print(f"ML veto inference: {len(fs.names)} features ({len(fs.defaulted)} defaulted), "
          f"{type(estimator[-1]).__name__} in a Pipeline, scikit-learn {sklearn.__version__}, "
          f"Python {sys.version.split()[0]}")
    print(figures("feature update (one bar)", update_ns))
    print(figures("veto decision (values + decide)", decide_ns))
    print(figures(f"veto step ({len(roots)} daily bars + decision)", step_ns))
    print(figures("bare predict_proba (same model, same rows)", bare_ns))
    overhead = statistics.median(decide_ns) - statistics.median(bare_ns)
    print(f"veto decision overhead over bare predict_proba at p50: {overhead / 1000:.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
