"""Sequential seeds in `study run`: the protocol block, the look scheduler on a synthetic store
(against SequentialDesign.replay called directly), and the store events."""

from __future__ import annotations

import numpy as np
import pytest
from protocoltools import tiny_protocol_dict, write_protocol

from analysis.sequential import SequentialDesign
from study.errors import ProtocolError
from study.protocol import load_protocol
from study.results import RunResult
from study.scheduler.looks import logged_decisions, record_decisions, store_plan
from study.spec import expand
from study.store import Store

EFFECT = {"none": 0.0, "big": 0.10, "zero": 0.0}  # big: decided at look 1; zero: runs to the end


def _protocol(tmp_path, **sequential):
    data = tiny_protocol_dict(seeds={"start": 0, "count": 6}, store=str(tmp_path / "s.sqlite"))
    data["models"] = [{"name": f"m{i - 1}", "source": "builtin:minilm-l6", "num_hidden_layers": i}
                      for i in (1, 2)]
    data["maskers"] = [{"name": "none", "kind": "none"},
                       {"name": "big", "kind": "random-token", "rate": 0.3},
                       {"name": "zero", "kind": "random-token", "rate": 0.1}]
    data["sequential"] = sequential or {"looks": [3, 6], "spending": "obf", "futility": True}
    return load_protocol(write_protocol(tmp_path, data))


def _value(spec) -> float:
    rng = np.random.default_rng([spec.seed, len(spec.model["name"]), spec.model["num_hidden_layers"],
                                 len(spec.masker["name"])])
    base = 0.6 + 0.01 * spec.seed + 0.02 * spec.model["num_hidden_layers"]
    noise = 0.01 if spec.masker["name"] == "zero" else 1e-4  # big - none: t in the hundreds
    return base + EFFECT[spec.masker["name"]] + noise * rng.standard_normal()


def _record(store, spec) -> None:
    v = _value(spec)
    store.record_result(RunResult(
        run_id=spec.run_id, primary_metric="macro_f1", final_metrics={"macro_f1": v},
        epochs=[{"epoch": 1, "train_loss": 1.0, "metrics": {"macro_f1": v}}], predictions=[],
        wall_time_s=1.0, train_time_s=1.0, train_examples_per_s=1.0, realised_mask_rate=None,
        fingerprints={}, masker_stats={}, env={}, masker_state={}))


def test_look_scheduler_on_a_synthetic_store(tmp_path):
    p = _protocol(tmp_path)
    specs = expand(p)
    by_id = {s.run_id: s for s in specs}
    with Store(p.store_path) as store:
        store.register(specs)
        plan = store_plan(p, specs, store)
        # look 1: the first 3 seeds of every masker in both cells
        assert plan.look == 0 and {by_id[r].seed for r in plan.needed} == {0, 1, 2}
        assert len(plan.needed) == 2 * 3 * 3 and not plan.decisions and not plan.stopped
        for r in plan.needed:
            _record(store, by_id[r])
        plan = store_plan(p, specs, store)
        # independent: the design on the differences of the first 3 seeds, the whole family
        design = SequentialDesign((3, 6), 0.05, "obf", None, True)
        diffs = {(m, t): np.array([_value(s) - _value(b) for s, b in _pairs(specs, m, t, range(3))])
                 for m in ("m0", "m1") for t in ("big", "zero")}
        ref = design.replay(diffs)
        assert {k: v for k, v in ref.items() if v[0] != "continue"} == {
            ("m0", "big"): ("better", 3), ("m1", "big"): ("better", 3)}
        assert {(c[1], c[2]): (d.decision, d.n_pairs, d.look) for c, d in plan.decisions.items()} == {
            ("m0", "big"): ("better", 3, 1), ("m1", "big"): ("better", 3, 1)}
        d = plan.decisions[("tweets", "m0", "big", "none")]
        assert d.estimate == pytest.approx(diffs[("m0", "big")].mean())
        # look 2: seeds 3-5 of zero and of its baseline only; big's later seeds stopped
        assert plan.look == 1
        assert sorted((by_id[r].masker["name"], by_id[r].seed) for r in plan.needed) == sorted(
            (m, s) for m in ("none", "zero") for s in (3, 4, 5) for _cell in range(2))
        assert {(by_id[r].masker["name"], by_id[r].seed) for r in plan.stopped} == {
            ("big", s) for s in (3, 4, 5)} and len(plan.stopped) == 6
        assert len(record_decisions(store, plan)) == 2 and record_decisions(store, plan) == []
        for r in plan.needed[:4]:  # a look half done: the plan is the rest of it
            _record(store, by_id[r])
        assert store_plan(p, specs, store).needed == plan.needed[4:]
        for r in plan.needed[4:]:
            _record(store, by_id[r])
        final = store_plan(p, specs, store)
        assert final.finished and len(final.decisions) == 4
        full = {(m, t): np.array([_value(s) - _value(b) for s, b in _pairs(specs, m, t, range(6))])
                for m in ("m0", "m1") for t in ("big", "zero")}
        for (m, t), (dec, n) in design.replay(full).items():
            got = final.decisions[("tweets", m, t, "none")]
            assert (got.decision, got.n_pairs) == (dec, n)
        assert {got.look for c, got in final.decisions.items() if c[2] == "zero"} == {2}
        record_decisions(store, final)
        events = logged_decisions(store.events())
    assert len(events) == 4 and set(events.decision) <= {"better", "futile", "equivalent"}
    assert events.set_index(["model", "treatment"]).loc[("m0", "big"), "look"] == 1


def _pairs(specs, model, treatment, seeds):
    by = {(s.model["name"], s.masker["name"], s.seed): s for s in specs}
    return [(by[(model, treatment, k)], by[(model, "none", k)]) for k in seeds]


@pytest.mark.parametrize("block, where, words", [
    ({"looks": [3, 3]}, "sequential.looks[1]", "strictly increasing"),
    ({"looks": [1, 4]}, "sequential.looks[0]", "at least 2"),
    ({"looks": [3, 9]}, "sequential.looks[1]", "protocol has 6"),
    ({"looks": [3, 6], "spending": "linear"}, "sequential.spending", "not allowed"),
    ({"looks": [3, 6], "stop": True}, "sequential.stop", "unknown key"),
])
def test_bad_sequential_blocks_are_refused(tmp_path, block, where, words):
    with pytest.raises(ProtocolError) as e:
        _protocol(tmp_path, **block)
    assert where in str(e.value) and words in str(e.value)


def test_sequential_block_is_not_part_of_run_ids(tmp_path):
    a = {s.run_id for s in expand(_protocol(tmp_path, looks=[3, 6]))}
    b = {s.run_id for s in expand(_protocol(tmp_path, looks=[2, 4, 6], spending="pocock"))}
    assert a == b


def test_report_states_the_design_and_where_each_comparison_stopped(tmp_path):
    from pypdf import PdfReader

    from study.report import write_report

    p = _protocol(tmp_path)
    specs = expand(p)
    by_id = {s.run_id: s for s in specs}
    with Store(p.store_path) as store:
        store.register(specs)
        while not (plan := store_plan(p, specs, store)).finished:
            for r in plan.needed:
                _record(store, by_id[r])
    out = write_report(p, tmp_path / "r.pdf")
    text = "\n".join(pg.extract_text() for pg in PdfReader(out).pages)
    boundary = SequentialDesign((3, 6), 0.05, "obf").boundaries(4)[0]["p_boundary"]
    for part in ("Sequential design", "Where each comparison stopped", "Stopped at look", "Naive",
                 "biased toward larger effects", f"{boundary:.2g}", "(6 run(s))"):
        assert part in text, part
    big = plan.decisions[("tweets", "m0", "big", "none")]
    assert big.decision == "better" and f"{big.estimate * 100:.2f}" in text  # its naive estimate
