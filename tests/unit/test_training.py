"""Local rounds, FedAvg and model selection learn on synthetic images (in-process, fake store)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from primia.config import parse_federation_config
from primia.data.synthetic import make_synthetic, write_image_folder
from primia.errors import DataError
from primia.federation import coordinator as co
from primia.federation.hospital import load_local_data, run_local_round
from primia.federation.strategy import FedAvg, StrategyState
from primia.store.checkpoints import CheckpointStore
from primia.training.centralized import CentralizedTrainer
from primia.training.loops import class_weights
from tests.fakes import MemoryObjectStore
from tests.helpers import make_keyring


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("fed")
    for k, site in enumerate(["h1", "h2", "test"]):
        write_image_folder(make_synthetic(60, 2, 32, seed=k, noise=0.1), root / site)
    return parse_federation_config({
        "federation_id": "unit", "rounds": 3, "seed": 0, "class_names": ["class0", "class1"],
        "data": {"image_size": 32, "val_fraction": 0.2},
        "training": {"batch_size": 16, "lr": 0.01},
        "privacy": {"mode": "off"},  # differential privacy has tests of its own (test_dp_*.py)
        "hospitals": [{"name": s, "data": {"path": str(root / s)}} for s in ("h1", "h2")],
        "test_data": {"path": str(root / "test")},
    })


def test_federated_rounds_learn_and_are_deterministic(cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ring = make_keyring(tmp_path)

    def run() -> tuple[float, dict[str, np.ndarray]]:
        store = CheckpointStore(MemoryObjectStore(), "unit", ring)
        ref = store.put_weights(0, co.initial_weights(cfg))
        store.commit(0, {"global.safetensors": ref})  # hospitals train only on committed, signed models
        for r in range(1, cfg.rounds + 1):
            results = [run_local_round(h, r, ref, cfg, store) for h in cfg.hospitals]
            assert all(res.num_examples == len(load_local_data(h, cfg).train)
                       for res, h in zip(results, cfg.hospitals, strict=True))
            new, _ = co.aggregate(FedAvg(), r, store.get_weights(ref), results, lambda _: store, StrategyState())
            ref = store.put_weights(r, new)
            store.commit(r, {"global.safetensors": ref})
        w = store.get_weights(ref)
        return co.evaluate(cfg, w, co.load_test_set(cfg)).metrics["mcc"], w

    torch.set_num_threads(1)
    mcc1, w1 = run()
    mcc2, w2 = run()
    assert mcc1 > 0.6, f"federated model did not learn the synthetic task (MCC {mcc1:.3f})"
    assert all(np.array_equal(w1[k], w2[k]) for k in w1), "same seeds must give the same weights"


def test_validation_is_held_out_by_group(cfg) -> None:  # type: ignore[no-untyped-def]
    local = load_local_data(cfg.hospitals[0], cfg)
    assert not set(local.train.groups) & set(local.val.groups)
    assert 0.1 < len(local.val) / (len(local.val) + len(local.train)) < 0.35


def test_centralized_trainer_uses_union(cfg) -> None:  # type: ignore[no-untyped-def]
    trainer = CentralizedTrainer(cfg)
    total = sum(len(load_local_data(h, cfg).train) for h in cfg.hospitals)
    result = trainer.run_epoch(1)
    assert result.num_examples == total and trainer.epochs == cfg.rounds


def test_selection_keeps_best() -> None:
    sel = co.Selection()
    from primia.messages import CheckpointRef

    refs = [CheckpointRef("b", f"k{i}", "s", i) for i in range(3)]
    for i, v in enumerate([0.2, 0.7, 0.5]):
        sel.offer(i, v, refs[i])
    assert sel.best_round == 1 and sel.best_ref == refs[1]


def test_class_weights() -> None:
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    assert w[2] == 0 and w[1] == pytest.approx(3 * w[0])


def test_wrong_class_count_is_named(cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = cfg.model_copy(update={"class_names": None, "model": cfg.model.model_copy(update={"num_classes": 3})})
    with pytest.raises(DataError, match="hospital h1: data has 2 classes .* model.num_classes is 3"):
        load_local_data(bad.hospitals[0], bad)


def test_a_hospital_refuses_weights_that_are_not_a_committed_signed_global_model(cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A validation (or training) request on weights the coordinator never committed - an oracle for
    any weights it likes - is refused before the hospital reads its data."""
    from primia.errors import IntegrityError

    store = CheckpointStore(MemoryObjectStore(), "unit", make_keyring(tmp_path))
    committed = store.put_weights(0, co.initial_weights(cfg))
    store.commit(0, {"global.safetensors": committed})
    probe = store.put_weights(0, {k: v * 0 for k, v in co.initial_weights(cfg).items()})  # not in the manifest
    with pytest.raises(IntegrityError, match="is not the committed global.safetensors of round 0"):
        run_local_round(cfg.hospitals[0], 1, probe, cfg, store, train=False)
    unsigned = store.put_weights(5, co.initial_weights(cfg))  # a round nobody committed
    with pytest.raises(IntegrityError, match="round 5 of unit is not committed by a signed manifest"):
        run_local_round(cfg.hospitals[0], 6, unsigned, cfg, store, train=False)


class _Exchange:
    """A hospital's secure-aggregation side whose key exchange waits for `go` (or fails)."""

    def __init__(self, fail: bool = False) -> None:
        import threading

        self.go, self.done, self.fail, self.digest = threading.Event(), threading.Event(), fail, ""

    def prepare(self) -> None:
        from primia.secure.protocol import SecAggAbort

        try:
            if not self.go.wait(20):
                raise AssertionError("the exchange was not run beside the hospital's own work")
            if self.fail:
                raise SecAggAbort("the coordinator aborted at stage share")
        finally:
            self.done.set()

    def bind_model(self, weights_digest: str) -> None:
        self.digest = weights_digest

    def submit(self, vector: np.ndarray, weight_bound: int, extra: dict[str, object] | None = None) -> None:
        raise AssertionError("never reached in these tests")


def test_the_key_exchange_runs_beside_the_model_download_and_the_data_read(
        cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The exchange waits for the data read here: run before it, as it used to be, this would hang."""
    from primia.federation import hospital as hosp
    from primia.secure.protocol import SecAggAbort

    store = CheckpointStore(MemoryObjectStore(), "unit", make_keyring(tmp_path))
    ref = store.put_weights(0, co.initial_weights(cfg))
    store.commit(0, {"global.safetensors": ref})
    exchange, trained = _Exchange(fail=True), []
    read = hosp.load_local_data

    def load(*a: object) -> object:
        exchange.go.set()  # the data read lets the exchange finish
        return read(*a)  # type: ignore[arg-type]

    monkeypatch.setattr(hosp, "load_local_data", load)
    monkeypatch.setattr(hosp, "train_epochs", lambda *a, **k: trained.append(1) or 0.0)
    with pytest.raises(SecAggAbort, match="aborted at stage share"):
        run_local_round(cfg.hospitals[0], 1, ref, cfg, store, secure=exchange)  # type: ignore[arg-type]
    assert exchange.digest and not trained  # it checked the model; a failed exchange: no training, no privacy spent


@pytest.mark.parametrize("fails", [False, True])
def test_a_failure_of_the_hospitals_own_work_waits_for_the_exchange(
        fails: bool, caplog: pytest.LogCaptureFixture) -> None:
    """Shares that went out make a hospital recoverable: its run does not end with the exchange half done;
    and an exchange that failed as well is said, not lost behind the hospital's own error."""
    import threading

    from primia.errors import IntegrityError
    from primia.federation.hospital import preparing

    exchange = _Exchange(fail=fails)
    threading.Timer(0.3, exchange.go.set).start()
    with pytest.raises(IntegrityError), preparing(exchange):  # type: ignore[arg-type]
        raise IntegrityError("the global model is not committed")
    assert exchange.done.is_set()
    assert ("key exchange failed too: the coordinator aborted" in caplog.text) == fails
