"""``cronmesh node`` counting its JSON decodings and encodings, by document and calling site.

    python -m bench.decodecount OUT.json node --etcd ...   (the arguments of ``cronmesh``)
    python -m bench.decodecount --show OUT.json --per 3000  (a table, per unit of work)

The launcher of ``bench.profnode``, counting instead of profiling: SIGUSR1 starts counting,
SIGUSR2 stops and writes OUT.json, so only a measurement window is counted. Counted: pydantic's
``model_validate_json``, ``model_validate``, ``model_dump_json`` and ``model_dump`` (by model),
``json.loads`` / ``json.dumps`` and the etcd client's ``KV.from_pb``, each by its calling site
(module, function, line; through a wrapper such as ``cluster.store.get_run``, two frames), with
the thread CPU it took (each call costs ~1 µs more while counted). The benchmarks start it in place
of the profiler with ``BENCH_PROFILER=bench.decodecount`` and their ``--profile`` option::

    BENCH_PROFILER=bench.decodecount python -m bench.e2eprobe --jobs 300 --profile
    BENCH_PROFILER=bench.decodecount python -m bench.shardbench --profile DIR ...

(``e2eprobe`` copies the file to ``bench/results/e2eprobe-<tree>-<jobs>.prof``). docs/benchmarks.md,
"Decoding on the per-run path", has the tables this gave.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any

Key = tuple[str, str, str]  # (decode | encode, what, site)
counts: Counter[Key] = Counter()
spent: Counter[Key] = Counter()
state = {"on": False}
THROUGH = ("json", "pydantic", "cluster.store", "bench.decodecount")  # wrappers: one frame more


def site() -> str:
    frame: FrameType | None = sys._getframe(2)
    parts: list[str] = []
    while frame is not None and len(parts) < 3:
        module = str(frame.f_globals.get("__name__", "?"))
        parts.append(f"{module}.{frame.f_code.co_name}:{frame.f_lineno}")
        if not module.startswith(THROUGH):
            break
        frame = frame.f_back
    return " < ".join(parts)


def counted(kind: str, what: Callable[[Any], str], call: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kw: Any) -> Any:
        if not state["on"]:
            return call(*args, **kw)
        t = time.thread_time()
        try:
            return call(*args, **kw)
        finally:
            key = (kind, what(args[0]), site())
            counts[key] += 1
            spent[key] += time.thread_time() - t

    return wrapper


def install() -> None:
    # json first: modules imported after it (structlog's renderer) bind the counted functions
    json.loads = counted("decode", lambda _: "json.loads", json.loads)  # type: ignore[assignment]
    json.dumps = counted("encode", lambda _: "json.dumps", json.dumps)  # type: ignore[assignment]
    import pydantic

    from cluster.etcd import types

    model = pydantic.BaseModel
    for name, kind in (("model_validate_json", "decode"), ("model_validate", "decode")):
        plain = getattr(model, name).__func__
        wrapped = counted(kind, lambda cls, n=name: f"{cls.__name__}.{n}", plain)
        setattr(model, name, classmethod(wrapped))
    for name in ("model_dump_json", "model_dump"):
        plain = getattr(model, name)
        setattr(model, name, counted("encode", lambda m, n=name: f"{type(m).__name__}.{n}", plain))
    from_pb = types.KV.from_pb.__func__  # type: ignore[attr-defined]
    types.KV.from_pb = classmethod(counted("decode", lambda _: "KV.from_pb", from_pb))  # type: ignore[method-assign,assignment]


def rows() -> list[dict[str, Any]]:
    return [
        {"dir": k[0], "what": k[1], "site": k[2], "n": n, "cpu_s": round(spent[k], 6)}
        for k, n in counts.most_common()
    ]


def show(path: str, per: float) -> None:
    print("| direction | what | site | per unit | µs per call |\n|---|---|---|---|---|")
    for r in json.load(open(path)):
        us = r["cpu_s"] * 1e6 / max(r["n"], 1)
        print(f"| {r['dir']} | {r['what']} | {r['site']} | {r['n'] / per:.3f} | {us:.1f} |")


def main() -> int:
    if sys.argv[1:2] == ["--show"]:
        ap = argparse.ArgumentParser(prog="python -m bench.decodecount --show")
        ap.add_argument("path")
        ap.add_argument("--per", type=float, default=1.0, help="units of work (runs, ticks)")
        args = ap.parse_args(sys.argv[2:])
        show(args.path, args.per)
        return 0
    out, argv = sys.argv[1], sys.argv[2:]
    write = json.dumps  # before install(): the dump itself is not counted

    def start(signum: int, frame: FrameType | None) -> None:
        counts.clear()
        spent.clear()
        state["on"] = True

    def stop(signum: int, frame: FrameType | None) -> None:
        state["on"] = False
        with open(out, "w") as fh:
            fh.write(write(rows(), indent=1))

    install()
    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from nodes.cli.main import main as cronmesh

    return cronmesh(argv)


if __name__ == "__main__":
    sys.exit(main())
