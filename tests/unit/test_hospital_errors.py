"""What a hospital's failed run tells the coordinator: protocol and roster reasons as they are, but of a
data error only its kind - its message names the hospital's folders and class names."""

from __future__ import annotations

import pytest

import flows.local_training as lt
from primia.errors import DataError
from primia.secure.plan import ProtocolViolation

ARGS = (1, None, {"federation_id": "f"}, "nonce")


def test_a_data_error_leaves_only_its_kind(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def fail(*_: object) -> None:
        raise DataError("image folder /srv/st-marys/patients-2024: sub-folders ['tumour'] are not among the classes")

    monkeypatch.setattr(lt, "_answer", fail)
    with pytest.raises(lt.HospitalError) as info:
        lt.local_training.fn(*ARGS)
    assert "/srv/st-marys" not in str(info.value) and "tumour" not in str(info.value)
    assert "(DataError); the details stay in the hospital's own agent log" in str(info.value)
    assert info.value.__suppress_context__  # not chained into the traceback Prefect records either
    assert "/srv/st-marys/patients-2024" in capsys.readouterr().err  # but the hospital's own log has it


def test_protocol_reasons_pass_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise ProtocolViolation("h1: the plan has 2 parties, fewer than this hospital's floor of 3: refused")

    monkeypatch.setattr(lt, "_answer", refuse)
    with pytest.raises(ProtocolViolation, match="fewer than this hospital's floor of 3"):
        lt.local_training.fn(*ARGS)
