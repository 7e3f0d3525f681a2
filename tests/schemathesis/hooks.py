"""Schemathesis hooks: the server's few rules that OpenAPI cannot state.

The document (`/api/openapi.json`) states every constraint JSON Schema can express. Seven
rules relate a value to another value or to the clock, or round a number, which JSON
Schema cannot do; the descriptions in the document say them in words, and these hooks
keep generated requests inside them, changing only the values that break them (so a
negative case stays negative):

- a reading's `ts` is at most 24 h (`ingest.max_future`) after its arrival;
- a series query's `from` is not after its `to` (which defaults to now), and its `step`
  comes to at least 1 ms once rounded;
- a sensor's rules have unique effective names, and a threshold's `min` <= `max`; a
  duration rule's stages come in order within its window, and its expansion fits 32 rules;
- a list's `cursor` is opaque, one the server gave out in a `next` link: a generated
  one is dropped (an empty one, which means the first page, is kept);
- an InfluxDB write's body is line protocol, a grammar JSON Schema cannot state (nor that
  its timestamps must fit the `precision` parameter): generated text is replaced by a
  valid line without a timestamp, so the fuzzer exercises the parameters and keys; bad
  bodies are covered by crates/vigia/tests/line_protocol.rs and the decoder's property
  tests;
- a product's `keep_below` is shorter than its `discard_after`;
- a price import's body is CSV whose rows the server checks: generated text is replaced
  by one valid row (bad files: crates/vigia/tests/prices.rs).
- a robot create names a module that exists (`echo`), its input carries no control
  characters at any depth, an idempotency key is not reused with another body, and `?wait`
  stays within the fuzzer's request timeout (see `robot_creates_run_on_echo`).

They are `map_case` hooks because Schemathesis applies only case hooks in its coverage
phase. Loaded through `SCHEMATHESIS_HOOKS` by `run.sh`.
"""

import re
import time

import schemathesis

DAY_MS = 24 * 3_600_000
# The latest `ts` the document allows (9999-12-31T23:59:59.999Z); past it a case is
# negative on purpose and stays as it is.
TS_MAX = 253_402_300_799_999
# Room for the time between generating a case and the server reading it.
MARGIN_MS = 3_600_000

RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?"
    r"(?:[Zz]|([+-])(\d{2}):(\d{2}))$"
)

# Unicode White_Space, what Rust's `str::trim` removes (Python's `strip` removes more).
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(
    chr(c) for c in range(0x2000, 0x200B)
) + "\u2028\u2029\u202f\u205f\u3000"


def now_ms():
    return time.time_ns() // 1_000_000


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def epoch_ms(value):
    """The instant a `ts`, `from` or `to` names, in epoch ms; None if it names none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if not isinstance(value, str):
        return None
    try:
        return int(value)  # a query string's epoch milliseconds
    except ValueError:
        pass
    m = RFC3339.match(value)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    ms = days_from_civil(year, month, day) * 86_400_000
    ms += ((hour * 60 + minute) * 60 + second) * 1000
    if m.group(7):
        ms += int((m.group(7)[1:] + "000")[:3])
    if m.group(8):
        offset = (int(m.group(9)) * 60 + int(m.group(10))) * 60_000
        ms -= offset if m.group(8) == "+" else -offset
    return ms


def past_like(value):
    """A valid instant an hour ago, of the same JSON type as `value`."""
    ms = now_ms() - 3_600_000
    if isinstance(value, str):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))
    return ms


@schemathesis.hook("map_case").apply_to(method="POST", path="/api/v1/readings")
def readings_not_from_the_future(context, case):
    body = case.body
    rows = body if isinstance(body, list) else [body]
    limit = now_ms() + DAY_MS - MARGIN_MS
    for row in rows:
        if isinstance(row, dict) and "ts" in row:
            ms = epoch_ms(row["ts"])
            if ms is not None and limit < ms <= TS_MAX:
                row["ts"] = past_like(row["ts"])
    return case


STEP = re.compile(r"^([0-9]+\.?[0-9]*|\.[0-9]+)(ms|s|m|min|h|d)?$")
STEP_FACTOR = {"": 1, "ms": 1, "s": 1_000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def step_ms(text):
    """What `parse_duration_ms` makes of a step, or None if it is no step at all."""
    m = STEP.match(text) if isinstance(text, str) else None
    if m is None:
        return None
    ms = float(m.group(1)) * STEP_FACTOR[m.group(2) or ""]
    # Rust's `f64::round` rounds half away from zero; Python's `round` to even.
    return int(ms + 0.5) if ms < 9e15 else ms


@schemathesis.hook("map_case").apply_to(method="GET", path="/api/v1/sensors/{key}/readings")
def series_query_consistent(context, case):
    query = case.query
    if not isinstance(query, dict):
        return case
    ms = step_ms(query.get("step"))
    if ms is not None and not 1 <= ms <= 9e15:
        query["step"] = "1s"
    start = epoch_ms(query.get("from"))
    end = epoch_ms(query.get("to")) if "to" in query else now_ms() - MARGIN_MS
    if start is not None and end is not None and start > end:
        if "to" in query:
            query["from"], query["to"] = query["to"], query["from"]
        else:
            del query["from"]
    return case


# A duration rule's severity may be absent or null (the stages name it), or one of these.
SEVERITIES = (None, "warning", "critical")


def effective_name(rule):
    name = rule.get("name", "")
    if isinstance(name, str) and name.strip(WHITE_SPACE):
        return name
    metric = rule.get("metric", "temperature")
    base = f"{rule.get('kind')}-{rule.get('severity')}"
    return base if metric == "temperature" else f"{base}-{metric}"


@schemathesis.hook("map_case").apply_to(method="PUT", path="/api/v1/sensors/{key}")
def rules_consistent(context, case):
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("rules"), list):
        return case
    # Items that are not objects stay where they are: such a case is negative on purpose,
    # and dropping them would make it valid (ST201).
    rules = body["rules"]
    # A duration rule's stages relate to each other and to its window, and it expands into
    # one rule per stage (named `<name>-warning` / `<name>-critical`, within the 32 rules of
    # a sensor): give each the seed's two stages, a name of its own, and drop rules past 32
    # effective ones.
    effective = 0
    kept = []
    for i, rule in enumerate(rules):
        fields = ("warn_after", "critical_after", "window", "name")
        if not isinstance(rule, dict):
            cost = 1
        elif rule.get("kind") == "duration" and all(
            isinstance(rule.get(f, ""), str) for f in fields
        ) and rule.get("severity") in SEVERITIES:
            # Only well-typed rules are completed: a negative case (a wrong type, or a
            # severity outside the enum) stays negative.
            rule.pop("severity", None)
            rule["warn_after"], rule["critical_after"], rule["window"] = "2h", "4h", "24h"
            rule["name"] = f"duration-{i}"
            cost = 2
        elif rule.get("kind") == "duration":
            cost = 2
        else:
            cost = 1
        if effective + cost > 32:
            continue
        effective += cost
        kept.append(rule)
    body["rules"] = kept
    rules = [r for r in kept if isinstance(r, dict)]
    for rule in rules:
        lo, hi = rule.get("min"), rule.get("max")
        if rule.get("kind") in ("threshold", "duration") and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)
        ) and lo > hi:
            rule["min"], rule["max"] = hi, lo
    seen = set()
    for i, rule in enumerate(rules):
        name = effective_name(rule)
        n = i
        while name in seen:
            name = f"rule-{n}"
            n += 1
        if name != effective_name(rule):
            rule["name"] = name
        seen.add(name)
    return case


@schemathesis.hook("map_case").apply_to(method="POST", path="/api/v2/write")
def v2_write_body_is_line_protocol(context, case):
    return line_protocol_body(case)


@schemathesis.hook("map_case").apply_to(method="POST", path="/write")
def v1_write_body_is_line_protocol(context, case):
    return line_protocol_body(case)


def line_protocol_body(case):
    # An empty body is a negative case (minLength 1) and stays one.
    if isinstance(case.body, str) and case.body:
        case.body = f"temperature,sensor=schemathesis value={len(case.body)}\n"
    return case


def without_generated_cursor(case):
    query = case.query
    if isinstance(query, dict) and query.get("cursor"):
        del query["cursor"]
    return case


@schemathesis.hook("map_case").apply_to(method="GET", path="/api/v1/sensors")
def sensor_cursors_come_from_the_server(context, case):
    return without_generated_cursor(case)


@schemathesis.hook("map_case").apply_to(method="GET", path="/api/v1/alerts")
def alert_cursors_come_from_the_server(context, case):
    return without_generated_cursor(case)


@schemathesis.hook("map_case").apply_to(method="GET", path="/api/v1/dead-letters")
def dead_letter_cursors_come_from_the_server(context, case):
    return without_generated_cursor(case)


@schemathesis.hook("map_case").apply_to(method="GET", path="/api/v1/products")
def product_cursors_come_from_the_server(context, case):
    return without_generated_cursor(case)


@schemathesis.hook("map_case").apply_to(method="GET", path="/api/v1/prices")
def price_cursors_come_from_the_server(context, case):
    return without_generated_cursor(case)


LIMIT_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
LIMIT = re.compile(r"^([1-9][0-9]{0,4})(ms|s|m|h|d)$")


def limit_ms(value, default):
    if value is None:
        return default
    match = LIMIT.match(value) if isinstance(value, str) else None
    return int(match.group(1)) * LIMIT_UNITS[match.group(2)] if match else None


@schemathesis.hook("map_case").apply_to(method="PUT", path="/api/v1/products/{code}")
def product_limits_in_order(context, case):
    # `keep_below` must be shorter than `discard_after` (defaults 2h and 4h): when two
    # valid limits are not in order, they become the defaults' order, so a positive case
    # stays positive. An invalid limit is left alone (the case is negative on purpose).
    body = case.body
    if not isinstance(body, dict):
        return case
    keep = limit_ms(body.get("keep_below"), 2 * 3_600_000)
    discard = limit_ms(body.get("discard_after"), 4 * 3_600_000)
    if keep is not None and discard is not None and keep >= discard:
        body["keep_below"] = "1ms"
        body["discard_after"] = "99999d"
    return case


@schemathesis.hook("map_case").apply_to(method="POST", path="/api/v1/prices/import")
def price_import_body_is_csv(context, case):
    # The body is CSV with checked rows, which JSON Schema cannot state: generated text
    # becomes one valid row, so the fuzzer exercises the route's headers and keys. Bad
    # files are covered by crates/vigia/tests/prices.rs and the parser's unit tests. An
    # empty body is a negative case (minLength 1) and stays one.
    if isinstance(case.body, str) and case.body:
        case.body = (
            "product,currency,price_per_kg,valid_from,source\n"
            f"schemathesis,USD,{len(case.body)}.25,2026-01-01,fuzz\n"
        )
    return case


@schemathesis.hook("map_case").apply_to(method="GET", path="/api/v1/robots")
def robot_cursors_come_from_the_server(context, case):
    return without_generated_cursor(case)


# Robot inputs: JSON Schema cannot say "no control character in any string or property
# name, however deep" (the document says it in words); `idempotency_key` relates a body to
# the bodies sent before it with the same key (422 for another body), which no schema
# states either. So a generated create runs on `echo` (a registered module; the name's
# existence is state, not schema), its input loses control characters, its key is made
# unique to its body, and `?wait` is cut to 1 s to stay within the fuzzer's request timeout.
MODULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def without_controls(value, depth=0):
    if depth > 30:
        return None
    if isinstance(value, str):
        return CONTROL.sub("", value)
    if isinstance(value, list):
        return [without_controls(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {CONTROL.sub("", k): without_controls(v, depth + 1) for k, v in value.items()}
    return value


@schemathesis.hook("map_case").apply_to(method="POST", path="/api/v1/robots")
def robot_creates_run_on_echo(context, case):
    body = case.body
    # Only a name the document allows becomes `echo`: one outside the pattern is a negative
    # case and stays one.
    if isinstance(body, dict) and isinstance(body.get("module"), str) and MODULE_NAME.fullmatch(body["module"]):
        body["module"] = "echo"
    if isinstance(body, dict) and isinstance(body.get("input"), dict):
        body["input"] = without_controls(body["input"])
    key = body.get("idempotency_key") if isinstance(body, dict) else None
    # Only keys with room for the suffix (a too long key stays too long: negative).
    if isinstance(key, str) and 0 < len(key) <= 187:
        body["idempotency_key"] = f"{key}-{abs(hash(repr(sorted(body.items())))) % 10**12}"
    query = case.query
    if isinstance(query, dict) and isinstance(query.get("wait"), str) and re.fullmatch(r"([0-9]|[12][0-9]|30)s", query["wait"]):
        query["wait"] = "1s"
    return case


@schemathesis.hook("map_case").apply_to(method="POST", path="/api/v1/robots/{id}/complete")
def robot_outputs_have_no_control_characters(context, case):
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("output"), dict):
        body["output"] = without_controls(body["output"])
    return case


@schemathesis.hook("map_case").apply_to(method="GET", path="/api/v1/sensors/{key}/excursions")
def excursion_query_consistent(context, case):
    # Cursors come from the server; `from` after `to` is a 400 the schema cannot state
    # (both default to unbounded), so two valid instants out of order are swapped.
    case = without_generated_cursor(case)
    query = case.query
    if isinstance(query, dict) and "from" in query and "to" in query:
        start, end = epoch_ms(query.get("from")), epoch_ms(query.get("to"))
        if start is not None and end is not None and start > end:
            query["from"], query["to"] = query["to"], query["from"]
    return case
