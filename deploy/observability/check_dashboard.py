#!/usr/bin/env python3
"""Checks dashboard.json (and, with --rules, the alert expressions of alerts.yml) against the
metrics the scheduler and the workers export: every query may name only those metrics, with their
own labels and, where the labels' values are a fixed set, only those values. Python stdlib only.

    python3 check_dashboard.py dashboard.json [--rules alerts.yml]

Exit status 0 when every query passes, 1 otherwise (each problem printed on its own line).
"""

import json
import re
import sys

KIND = {"generations", "fashion", "cuisine"}
ANY = None  # a label whose values are not a fixed set

# The metrics as exported (prometheus_client appends _total to counters); `histogram` ones also
# have _bucket (with `le`), _sum and _count. README.md lists the same table.
COUNTERS_AND_GAUGES = {
    "rapid_requests_accepted_total": {"kind": KIND},
    "rapid_jobs_enqueued_total": {"kind": KIND},
    "rapid_requests_rejected_total": {"reason": {"busy", "quota", "invalid", "unauthorized"}},
    "rapid_requests_cancelled_total": {},
    "rapid_queue_depth": {},
    "rapid_lane_depth": {"tenant": ANY, "class": {"interactive", "batch"}},
    "rapid_callbacks_total": {"outcome": {"delivered", "retried", "dead_lettered"}},
    "rapid_worker_jobs_total": {
        "outcome": {"succeeded", "failed", "cancelled", "retried", "dead_lettered", "requeued"}
    },
    "rapid_worker_busy": {},
    "rapid_worker_ready": {},
    "rapid_worker_stalls_total": {},
}
HISTOGRAMS = {
    "rapid_http_request_duration_seconds": {"route": ANY, "method": ANY, "status": ANY},
    "rapid_worker_queue_wait_seconds": {"priority": {"interactive", "batch"}},
    "rapid_worker_stage_seconds": {
        "stage": {"text_encoder", "unet", "vae", "upscale", "mark", "encode", "upload"}
    },
}
# Labels Prometheus adds to every scraped series (static targets and the Kubernetes example).
TARGET_LABELS = {"job": {"rapid-scheduler", "rapid-worker"}, "instance": ANY, "namespace": ANY,
                 "pod": ANY, "node": ANY}

METRICS = {}
for name, labels in COUNTERS_AND_GAUGES.items():
    METRICS[name] = dict(labels)
for name, labels in HISTOGRAMS.items():
    METRICS[name + "_bucket"] = dict(labels, le=ANY)
    METRICS[name + "_sum"] = dict(labels)
    METRICS[name + "_count"] = dict(labels)
for labels in METRICS.values():
    labels.update(TARGET_LABELS)
# Prometheus' own per-target series; alert rules may use it, the dashboard does not need it.
BUILTIN = {"up": dict(TARGET_LABELS)}

LABEL_NAMES = {label for labels in METRICS.values() for label in labels}

FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "delta",
    "deriv", "floor", "group", "histogram_quantile", "holt_winters", "idelta", "increase",
    "irate", "label_join", "label_replace", "last_over_time", "max", "max_over_time", "min",
    "min_over_time", "predict_linear", "quantile", "quantile_over_time", "rate", "resets",
    "round", "scalar", "sort", "sort_desc", "stddev", "stdvar", "sum", "sum_over_time", "time",
    "timestamp", "topk", "vector",
}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
OPERATORS = {"and", "or", "unless", "bool", "offset", "atan2"}

TOKEN = re.compile(
    r"""\s+
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<range>\[[^\]]*\])
    | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|0x[0-9a-fA-F]+|[Ii]nf|NaN)(?![\w:])
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<matchop>=~|!~|!=|==|>=|<=|=)
    | (?P<punct>[(){},+\-*/%^<>@])
    """,
    re.VERBOSE,
)


def tokens(expr):
    # Grafana's variables ($__rate_interval, ${x}) appear only inside ranges here; drop them
    # anywhere else so they are not read as names.
    expr = re.sub(r"\$\{?\w+\}?", "", expr)
    pos, out = 0, []
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read the query at {expr[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup:
            out.append((m.lastgroup, m.group(m.lastgroup)))
    return out


def unquote(s):
    return s[1:-1].replace('\\"', '"').replace("\\\\", "\\")


def check_value(metric, label, op, value, allowed, problems):
    if allowed is ANY or op in ("!=", "!~"):
        return
    if op == "=":
        values = [value]
    else:  # =~ : only a plain alternation (a|b|c) can be checked
        if not re.fullmatch(r"[\w\-|]+", value):
            return
        values = value.split("|")
    for v in values:
        if v not in allowed:
            problems.append(f"{metric}: {label}={v!r} is not one of {sorted(allowed)}")


def check_expr(expr, allow_builtin=False):
    """The problems with one PromQL expression (an empty list when it passes), and its metrics."""
    problems, seen = [], set()
    known = dict(METRICS, **(BUILTIN if allow_builtin else {}))
    try:
        toks = tokens(expr)
    except ValueError as e:
        return [str(e)], seen
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else (None, None)
        if kind != "ident":
            if kind == "punct" and text == "{":
                problems.append("a selector without a metric name ({...}) is not allowed")
            i += 1
            continue
        if text in GROUPING:
            i += 1
            if toks[i:i + 1] == [("punct", "(")]:
                i += 1
                while i < len(toks) and toks[i] != ("punct", ")"):
                    k, t = toks[i]
                    if k == "ident" and t not in LABEL_NAMES:
                        problems.append(f"`{text} (...)` names an unknown label {t!r}")
                    i += 1
                i += 1
            continue
        if text in OPERATORS:
            i += 1
            continue
        if text in FUNCTIONS and nxt in (("ident", "by"), ("ident", "without")):
            i += 1  # an aggregation with its grouping first: sum by (x) (...)
            continue
        if nxt == ("punct", "("):
            if text not in FUNCTIONS:
                problems.append(f"unknown function {text!r}")
            i += 1
            continue
        # A metric name.
        seen.add(text)
        labels = known.get(text)
        if labels is None:
            problems.append(f"unknown metric {text!r}")
        i += 1
        if toks[i:i + 1] == [("punct", "{")]:
            i += 1
            while i < len(toks) and toks[i] != ("punct", "}"):
                if toks[i] == ("punct", ","):
                    i += 1
                    continue
                try:
                    (k1, label), (k2, op), (k3, value) = toks[i:i + 3]
                except ValueError:
                    problems.append(f"{text}: cannot read its label matchers")
                    break
                if k1 != "ident" or k2 != "matchop" or k3 != "string":
                    problems.append(f"{text}: cannot read its label matchers")
                    break
                if labels is not None:
                    if label not in labels:
                        problems.append(f"{text} has no label {label!r}")
                    else:
                        check_value(text, label, op, unquote(value), labels[label], problems)
                i += 3
            i += 1
    return problems, seen


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def panel_queries(panels):
    for p in all_panels(panels):
        if p.get("type") == "row":
            continue
        targets = p.get("targets")
        if not targets:
            yield p, None, None
            continue
        for t in targets:
            yield p, t.get("expr"), t


def check_dashboard(path):
    problems = []
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        return [f"{path}: not valid JSON: {e}"], set()
    seen = set()
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no `datasource` template variable of type datasource (query: prometheus)")
    for panel, expr, target in panel_queries(dash.get("panels", [])):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        if target is None:
            problems.append(f"{where}: no queries")
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}" or \
                target.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{where}: its data source is not ${{datasource}}")
        if not expr:
            problems.append(f"{where}: a query without an expression")
            continue
        found, names = check_expr(expr)
        seen |= names
        problems += [f"{where}: {p}  [{expr}]" for p in found]
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
            if label not in LABEL_NAMES:
                problems.append(f"{where}: legend names an unknown label {label!r}")
    ids = [p.get("id") for p in all_panels(dash.get("panels", []))]
    if None in ids or len(set(ids)) != len(ids):
        problems.append("panel ids are missing or not unique")
    return problems, seen


def rule_expressions(path):
    """(line number, expression) of every `expr:` in a rules file, block scalars included."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(?:- )?expr:\s*(.*)$", lines[i])
        if not m:
            i += 1
            continue
        start, indent, rest = i + 1, len(m.group(1)), m.group(2).strip()
        if rest in ("|", ">", "|-", ">-"):
            body = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i].strip())
                i += 1
            yield start, " ".join(body)
        else:
            if rest[:1] in ("'", '"'):
                rest = rest[1:-1]
            yield start, rest
            i += 1


def self_test():
    """The checker must refuse what it is meant to catch."""
    bad = [
        "rate(rapid_queue_dept[5m])",
        'sum(rate(rapid_worker_jobs_total{outcome="dead_letterd"}[5m]))',
        'sum(rate(rapid_worker_jobs_total{outcome=~"succeeded|faild"}[5m]))',
        "sum by (tenat) (rapid_lane_depth)",
        'rapid_lane_depth{priority="interactive"}',
        "rat(rapid_requests_accepted_total[5m])",
        "up == 0",
        'histogram_quantile(0.99, sum by (le) (rate(rapid_worker_stage_seconds{stage="unet"}[5m])))',
        "rapid_requests_accepted[5m]",
    ]
    good = [
        'histogram_quantile(0.99, sum by (le, stage) (rate(rapid_worker_stage_seconds_bucket{stage="unet"}[$__rate_interval])))',
        "max by (tenant, class) (rapid_lane_depth) > 0",
        "(sum(rapid_worker_ready) or vector(0)) < 1",
    ]
    for e in bad:
        assert check_expr(e)[0], f"self-test: the checker accepted {e!r}"
    for e in good:
        assert not check_expr(e)[0], f"self-test: the checker refused {e!r}: {check_expr(e)[0]}"
    assert not check_expr("up == 0", allow_builtin=True)[0]


def main(argv):
    args = argv[1:]
    rules = None
    if "--rules" in args:
        i = args.index("--rules")
        rules = args[i + 1]
        del args[i:i + 2]
    if len(args) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    self_test()
    problems, seen = check_dashboard(args[0])
    if rules:
        for line, expr in rule_expressions(rules):
            found, _ = check_expr(expr, allow_builtin=True)
            problems += [f"{rules}:{line}: {p}  [{expr}]" for p in found]
    for p in problems:
        print(p)
    if problems:
        print(f"FAILED: {len(problems)} problem(s)")
        return 1
    print(f"{args[0]}: every query names only known metrics and labels ({len(seen)} metrics: {', '.join(sorted(seen))})")
    if rules:
        print(f"{rules}: {sum(1 for _ in rule_expressions(rules))} rule expressions, all on known metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
