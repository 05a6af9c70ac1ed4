"""The benchmark report, pure logic (no GPU, no processes): parse what the benchmark
programs print, gather the figures of every run, compute the ratios to native, evaluate
the targets, and render the JSON document and the Markdown table.

Program output (benchmarks/programs/bench.h):

    RESULT <case> <metric> <value> <unit>
    PARAM <name> <value>
    CHECK <case> <value>
    INFO <key> <value...>
    ERROR <case> <message...>
    DONE <failures>

A *ratio* is always Orion's figure divided by the native one, measured in the same
suite run: for rates (GB/s, launches/s) below 1 means slower than native, for times
(µs, ms, s) above 1 means slower.
"""
from __future__ import annotations

import math
import re
import signal
import statistics
from dataclasses import dataclass, field
from typing import Iterable

MODES = ("native", "shm", "tcp")
ORION_MODES = ("shm", "tcp")
MODE_TITLES = {"native": "native", "shm": "Orion shm", "tcp": "Orion tcp"}

# The one figure of each case the Markdown table shows (all go to the JSON).
HEADLINE_METRICS = frozenset({"launches_per_s", "latency_us", "bandwidth", "time_ms",
                              "wall_s", "process_wall_s"})
# Cases whose repeated runs are summarised by their best (min) value, not the median.
BEST_OF_CASES = frozenset({"first_call"})

SECTIONS = (
    ("launch", "Kernel launches (empty kernel)"),
    ("roundtrip", "Synchronous round trips"),
    ("memcpy", "Copies: cudaMemcpy / cudaMemcpyAsync"),
    ("alloc", "Allocation"),
    ("first_call", "Time to the first CUDA call (vGPU allocation included)"),
    ("gemm_bound", "Application: GPU-bound (fp32 matrix multiplication)"),
    ("launch_bound", "Application: launch-bound (training loop of small kernels)"),
)

UNIT_DISPLAY = {"us": "µs"}

_LINE = re.compile(r"^(RESULT|PARAM|CHECK|INFO|ERROR|DONE)\b\s*(.*)$")


@dataclass
class Parsed:
    """What one run of a benchmark program printed."""
    results: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)
    done: int | None = None     # failures the DONE line reported; None: no DONE line


def parse_output(text: str) -> Parsed:
    """Parse a program's stdout. Lines that are not protocol lines are ignored;
    malformed protocol lines become errors of case "parse"."""
    out = Parsed()
    for raw in text.splitlines():
        m = _LINE.match(raw.strip())
        if not m:
            continue
        kind, rest = m.group(1), m.group(2).split()
        if kind == "RESULT":
            value = _number(rest[2]) if len(rest) == 4 else None
            if value is None:
                out.errors.append(("parse", f"malformed line: {raw.strip()}"))
                continue
            out.results[(rest[0], rest[1])] = (value, rest[3])
        elif kind == "PARAM" and len(rest) == 2:
            out.params[rest[0]] = rest[1]
        elif kind == "CHECK" and len(rest) == 2:
            out.checks[rest[0]] = rest[1]
        elif kind == "INFO" and rest:
            out.info[rest[0]] = " ".join(rest[1:])
        elif kind == "ERROR" and rest:
            out.errors.append((rest[0], " ".join(rest[1:])))
        elif kind == "DONE" and len(rest) == 1 and rest[0].isdigit():
            out.done = int(rest[0])
        else:
            out.errors.append(("parse", f"malformed line: {raw.strip()}"))
    return out


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def better(unit: str) -> str | None:
    """'higher' for rates, 'lower' for times, None for counts and the like."""
    if unit.endswith("/s"):
        return "higher"
    if unit in ("us", "ms", "s", "ns"):
        return "lower"
    return None


def ratio(orion: float | None, native: float | None) -> float | None:
    if orion is None or native is None or native == 0:
        return None
    return orion / native


# ---------------------------------------------------------------------------- targets

@dataclass(frozen=True)
class Target:
    """A goal for one figure in one Orion mode: `kind` "ratio" compares Orion / native
    with `value`, "absolute" compares Orion's own figure (in `unit`)."""
    case: str
    metric: str
    mode: str
    kind: str          # "ratio" | "absolute"
    op: str            # ">=" | "<="
    value: float
    unit: str = ""

    def text(self) -> str:
        sign = "≥" if self.op == ">=" else "≤"
        if self.kind == "ratio":
            return f"{self.mode} {sign} {self.value:g}x"
        return f"{self.mode} {sign} {self.value:g} {UNIT_DISPLAY.get(self.unit, self.unit)}"

    def evaluate(self, record: dict) -> tuple[float | None, bool | None]:
        """(the figure compared, met?) for a case record of `Collector.document`;
        (None, None) when it was not measured."""
        if self.kind == "ratio":
            actual = (record.get("ratio") or {}).get(self.mode)
        else:
            actual = (record.get(self.mode) or {}).get("value")
        if actual is None:
            return None, None
        met = actual >= self.value if self.op == ">=" else actual <= self.value
        return actual, met


def default_targets() -> list[Target]:
    """The performance targets (shared/DESIGN.md, Performance), as ratios against native
    measured in the same run unless absolute."""
    t: list[Target] = []
    for api in ("memcpy", "memcpyasync"):
        for direction in ("h2d", "d2h"):
            pinned = f"{api}_{direction}_pinned_64MiB"
            pageable = f"{api}_{direction}_pageable_64MiB"
            t.append(Target(pinned, "bandwidth", "shm", "ratio", ">=", 0.95))
            t.append(Target(pageable, "bandwidth", "shm", "ratio", ">=", 1.0))
            t.append(Target(pinned, "bandwidth", "tcp", "absolute", ">=", 3.0, "GB/s"))
            t.append(Target(pageable, "bandwidth", "tcp", "absolute", ">=", 3.0, "GB/s"))
    for case in ("launch_async_1stream", "launch_async_4streams"):
        t.append(Target(case, "launches_per_s", "shm", "ratio", ">=", 0.5))
    for case in ("roundtrip_memcpy_d2h_4B", "roundtrip_memcpy_d2h_4B_pinned",
                 "roundtrip_stream_sync_idle", "roundtrip_event_query"):
        t.append(Target(case, "latency_us", "shm", "absolute", "<=", 20.0, "us"))
    t.append(Target("gemm_bound", "wall_s", "shm", "ratio", "<=", 1.03))
    t.append(Target("launch_bound", "wall_s", "shm", "ratio", "<=", 1.5))
    t.append(Target("first_call", "time_ms", "shm", "ratio", "<=", 1.5))
    return t


# -------------------------------------------------------------------------- collector

def aggregate(values: list[float], how: str) -> float | None:
    if not values:
        return None
    return min(values) if how == "min" else statistics.median(values)


class Collector:
    """Every run's figures, by (case, metric) and mode; `document()` summarises them."""

    def __init__(self, targets: Iterable[Target] | None = None):
        self.targets = list(default_targets() if targets is None else targets)
        self.figures: dict[tuple[str, str], dict] = {}
        self.checks: dict[str, dict[str, list[str]]] = {}
        self.case_errors: dict[str, list[str]] = {}
        self.runs: list[dict] = []
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def add_result(self, program: str, mode: str, case: str, metric: str, value: float,
                   unit: str) -> None:
        fig = self.figures.setdefault((case, metric), {
            "program": program, "unit": unit, "modes": {}})
        fig["modes"].setdefault(mode, []).append(value)

    def add_run(self, program: str, mode: str, parsed: Parsed, *, rc: int | None,
                wall_s: float | None = None, timed_out: bool = False, args: Iterable[str] = (),
                repeat: int = 0, log: str | None = None, runtime: str | None = None,
                runtime_ok: bool | None = None) -> dict:
        """Record one run. `runtime_ok` False: the wrong libcudart.so.13 answered."""
        for (case, metric), (value, unit) in parsed.results.items():
            self.add_result(program, mode, case, metric, value, unit)
        for case, value in parsed.checks.items():
            self.checks.setdefault(case, {}).setdefault(mode, []).append(value)
        run_problems = []
        for case, message in parsed.errors:
            self.case_errors.setdefault(case, []).append(f"{mode}: {message}")
            run_problems.append(f"{case}: {message}")
        if timed_out:
            run_problems.append("timed out (killed)")
        elif rc is not None and rc < 0:
            run_problems.append(f"killed by {_signal_name(-rc)}")
        elif rc not in (0, None) and not parsed.errors:
            run_problems.append(f"exit status {rc} without an ERROR line")
        if not timed_out and rc is not None and parsed.done is None:
            run_problems.append("no DONE line: the program did not finish")
        if runtime_ok is False:
            run_problems.append(f"wrong CUDA runtime for mode {mode}: {runtime}")
        for p in run_problems:
            self.problems.append(f"{program} [{mode}#{repeat}]: {p}")
        run = {"program": program, "mode": mode, "repeat": repeat, "args": list(args),
               "rc": rc, "wall_s": wall_s, "timed_out": timed_out,
               "runtime": runtime, "params": dict(parsed.params),
               "problems": run_problems, "log": log}
        self.runs.append(run)
        return run

    def add_problem(self, text: str) -> None:
        """Something that failed: figures are missing or cannot be trusted."""
        self.problems.append(text)

    def add_warning(self, text: str) -> None:
        """Worth knowing, figures unaffected (e.g. a refused allocation, retried)."""
        self.warnings.append(text)

    def _check_problems(self) -> list[str]:
        out = []
        for case, by_mode in sorted(self.checks.items()):
            native = set(by_mode.get("native", []))
            for mode in ORION_MODES:
                got = set(by_mode.get(mode, []))
                if native and got and got != native:
                    out.append(f"{case}: checksum through Orion ({mode}) {sorted(got)} differs "
                               f"from native {sorted(native)}")
        return out

    def cases(self) -> list[dict]:
        records = []
        by_key = {(t.case, t.metric): [] for t in self.targets}
        for t in self.targets:
            by_key[(t.case, t.metric)].append(t)
        for (case, metric), fig in self.figures.items():
            how = "min" if case in BEST_OF_CASES else "median"
            rec = {"case": case, "metric": metric, "unit": fig["unit"],
                   "program": fig["program"], "better": better(fig["unit"]),
                   "headline": metric in HEADLINE_METRICS, "aggregate": how}
            for mode in MODES:
                values = fig["modes"].get(mode)
                rec[mode] = None if not values else {
                    "value": aggregate(values, how), "samples": values,
                    "median": statistics.median(values)}
            native = rec["native"]["value"] if rec["native"] else None
            rec["ratio"] = {m: (ratio(rec[m]["value"], native) if rec[m] and
                                rec["better"] is not None else None) for m in ORION_MODES}
            rec["targets"] = []
            for t in by_key.get((case, metric), []):
                actual, met = t.evaluate(rec)
                rec["targets"].append({"text": t.text(), "mode": t.mode, "kind": t.kind,
                                       "op": t.op, "value": t.value, "unit": t.unit,
                                       "actual": actual, "met": met})
            rec["errors"] = list(self.case_errors.get(case, []))
            records.append(rec)
        return records

    def document(self, environment: dict | None = None, meta: dict | None = None) -> dict:
        cases = self.cases()
        seen = {(c["case"], c["metric"]) for c in cases}
        targets = []
        for c in cases:
            for t in c["targets"]:
                targets.append({"case": c["case"], "metric": c["metric"], **t})
        for t in self.targets:   # targets of cases that produced nothing
            if (t.case, t.metric) not in seen:
                targets.append({"case": t.case, "metric": t.metric, "text": t.text(),
                                "mode": t.mode, "kind": t.kind, "op": t.op,
                                "value": t.value, "unit": t.unit, "actual": None,
                                "met": None})
        return {"schema": "orion-benchmarks/1", "environment": dict(environment or {}),
                "meta": dict(meta or {}), "cases": cases, "targets": targets,
                "runs": self.runs, "problems": self.problems + self._check_problems(),
                "warnings": list(self.warnings)}


# --------------------------------------------------------------------------- Markdown

def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    a = abs(value)
    if a >= 10000:
        text = f"{value:,.0f}"
    elif a >= 100:
        text = f"{value:.0f}"
    elif a >= 10:
        text = f"{value:.1f}"
    elif a >= 1:
        text = f"{value:.2f}"
    elif a == 0:
        text = "0"
    else:
        text = f"{value:.3g}"
        if abs(float(text)) >= 1:   # 0.9996 -> "1": keep the digits the 1-10 range has
            text = f"{value:.2f}"
    return f"{text} {UNIT_DISPLAY.get(unit, unit)}".strip()


def format_ratio(r: float | None) -> str:
    if r is None:
        return "–"
    return f"{r:.2f}x" if r >= 0.01 else f"{r:.3g}x"


def _met(met: bool | None) -> str:
    return "–" if met is None else ("yes" if met else "**no**")


def _section_of(record: dict) -> str:
    return record["program"]


def render_markdown(doc: dict, title: str | None = None) -> str:
    env, meta = doc.get("environment", {}), doc.get("meta", {})
    lines = [f"# {title or 'Orion benchmarks'}", ""]
    facts = [("GPU", env.get("gpu_name")), ("driver", env.get("driver_version")),
             ("CUDA runtime", env.get("cuda_runtime")), ("commit", env.get("git_commit")),
             ("shim", env.get("shim_sha256", "")[:16] or None), ("host", env.get("hostname")),
             ("CPU", env.get("cpu")), ("date", meta.get("started")),
             ("mode", "quick sanity pass" if meta.get("quick") else "full"),
             ("suite time", f"{meta['duration_s']:.0f} s" if meta.get("duration_s") else None)]
    lines += [f"- {k}: {v}" for k, v in facts if v]
    if meta.get("incomplete"):
        lines.append(f"- **incomplete**: not run: {', '.join(meta['incomplete'])}")
    lines += ["",
              "Every figure is measured natively and through Orion in the same run, on the "
              "same GPU. *shm*: the client on the same host (ipc:// + shared memory); *tcp*: "
              "the client forced onto tcp:// over loopback (`ORION_ENABLE_NET=1`). "
              "Ratio = Orion / native: for rates below 1 is slower, for times above 1 is "
              "slower. Method: benchmarks/NOTES.md.", ""]

    targets = doc.get("targets", [])
    if targets:
        met = sum(1 for t in targets if t["met"])
        measured = sum(1 for t in targets if t["met"] is not None)
        lines += [f"## Targets: {met} of {measured} met"
                  + (f" ({len(targets) - measured} not measured)" if measured < len(targets)
                     else ""), "",
                  "| case | metric | target | measured | met? |", "|---|---|---|---|---|"]
        for t in targets:
            if t["actual"] is None:
                shown = "–"
            elif t["kind"] == "ratio":
                shown = format_ratio(t["actual"])
            else:
                shown = format_value(t["actual"], t["unit"])
            lines.append(f"| {t['case']} | {t['metric']} | {t['text']} | {shown} | "
                         f"{_met(t['met'])} |")
        lines.append("")

    records = [c for c in doc.get("cases", []) if c["headline"]]
    titles = dict(SECTIONS)
    order = [p for p, _ in SECTIONS] + sorted({_section_of(c) for c in records} - set(titles))
    for program in order:
        rows = [c for c in records if _section_of(c) == program]
        if not rows:
            continue
        lines += [f"## {titles.get(program, program)}", "",
                  "| case | metric | native | Orion shm | ratio | Orion tcp | ratio | target "
                  "| met? |", "|---|---|---|---|---|---|---|---|---|"]
        for c in rows:
            value = {m: (c[m] or {}).get("value") for m in MODES}
            tgt = " · ".join(t["text"] for t in c["targets"]) or ""
            met = " · ".join(_met(t["met"]) for t in c["targets"]) or ""
            lines.append(
                f"| {c['case']} | {c['metric']} | {format_value(value['native'], c['unit'])} | "
                f"{format_value(value['shm'], c['unit'])} | {format_ratio(c['ratio']['shm'])} | "
                f"{format_value(value['tcp'], c['unit'])} | {format_ratio(c['ratio']['tcp'])} | "
                f"{tgt} | {met} |")
        lines.append("")

    problems = doc.get("problems", [])
    lines += ["## Problems", ""]
    lines += [f"- {p}" for p in problems] if problems else ["none"]
    lines.append("")
    warnings = doc.get("warnings", [])
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    return "\n".join(lines)


def slug(text: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", (text or "").lower()).strip("-") or "unknown-gpu"


def result_stem(date: str, gpu_name: str, quick: bool = False) -> str:
    """File name (without extension) of a suite's results: <date>-<gpu slug>[-quick]."""
    return f"{date}-{slug(gpu_name)}" + ("-quick" if quick else "")
