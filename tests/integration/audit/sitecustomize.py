"""Loaded by the coordinator process in the distributed test (through PYTHONPATH).

It denies every open, listdir and scandir of a path under PRIMIA_TEST_FORBIDDEN (the hospitals'
data folders) and, at exit, writes to PRIMIA_TEST_AUDIT_LOG the denied paths plus the opened paths
under PRIMIA_TEST_WATCH (the coordinator's own test set: proof the hook was live). The tests run as
root, where file modes would not keep the coordinator out."""

import atexit
import os
import sys

_forbidden = tuple(p for p in os.environ.get("PRIMIA_TEST_FORBIDDEN", "").split(os.pathsep) if p)
_watch = os.environ.get("PRIMIA_TEST_WATCH", "")
_denied: list = []
_watched: list = []
_EVENTS = {"open", "os.listdir", "os.scandir"}


def _under(path: str, root: str) -> bool:
    return bool(root) and (path == root or path.startswith(root + os.sep))


def _hook(event: str, args: tuple) -> None:
    if event not in _EVENTS or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    full = os.path.abspath(os.fsdecode(args[0]))
    if any(_under(full, r) for r in _forbidden):
        _denied.append(f"{event} {full}")
        raise PermissionError(f"the coordinator may not read hospital data: {full}")
    if _under(full, _watch):
        _watched.append(f"{event} {full}")


def _report() -> None:
    with open(os.environ["PRIMIA_TEST_AUDIT_LOG"], "w") as fh:
        fh.writelines(f"denied\t{d}\n" for d in _denied)
        fh.writelines(f"watched\t{w}\n" for w in _watched)


if _forbidden and os.environ.get("PRIMIA_TEST_AUDIT_LOG"):
    atexit.register(_report)
    sys.addaudithook(_hook)
