"""Property-based tests (hypothesis) for the code that turns untrusted input into what backends get:
``core.GenParams`` (values from the Gradio API or HTTP), ``AppRuntime.check_request`` (the caps at the
edge) and the failure/blank helpers of ``history`` (round trips of the history itself are in
tests/test_history.py); and for what a hosted server or a user's file sends back: ``Retry-After``
headers, error text that may quote the key, ``PRICE_FILE`` prices.
"""

from __future__ import annotations

import json
import math
import unicodedata
import urllib.parse

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from llm_levels import history as H
from llm_levels.backends.openai_budget import retry_after
from llm_levels.backends.openai_errors import MAX_SERVER_TEXT, sanitize
from llm_levels.config import Settings
from llm_levels.core import PARAM_SPECS, BackendError, GenParams, Message, Usage
from llm_levels.pricing import Price, PriceTable, estimate_cost

NUMERIC = [s for s in PARAM_SPECS.values()]

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)


def valid_value(spec):
    """A value inside the spec's range, of the spec's kind."""
    if spec.value_type is int:
        hi = int(spec.maximum) if spec.maximum is not None else 2**31 - 1
        return st.integers(int(spec.minimum), hi)
    return st.floats(spec.minimum, spec.maximum, allow_nan=False)


valid_params = st.fixed_dictionaries({}, optional={s.name: valid_value(s) for s in NUMERIC})


@given(valid_params)
def test_valid_values_are_accepted_and_round_trip(values):
    p = GenParams.from_dict(values)
    for name, v in values.items():
        assert getattr(p, name) == v
    assert GenParams.from_dict(p.to_dict()) == p


@given(valid_params)
def test_numbers_as_strings_mean_the_same(values):
    as_text = {k: repr(v) for k, v in values.items()}
    assert GenParams.from_dict(as_text) == GenParams.from_dict(values)


@given(st.dictionaries(st.sampled_from([s.name for s in NUMERIC] + ["stop", "bogus"]), json_values, max_size=5))
def test_any_json_either_validates_or_is_one_clear_error(data):
    """Whatever a client sends: valid GenParams, or a BackendError naming each bad field, one line."""
    try:
        p = GenParams.from_dict(data)
    except BackendError as e:
        msg = str(e)
        assert msg.startswith("Invalid settings: ") and "\n" not in msg and e.status == 400
        named = [k for k in data if k in msg]
        assert named, (data, msg)
        return
    for s in NUMERIC:
        v = getattr(p, s.name)
        if v is None:
            assert s.nullable
            continue
        assert not isinstance(v, bool) and math.isfinite(v)
        assert s.minimum <= v <= s.maximum if s.maximum is not None else s.minimum <= v
        assert isinstance(v, int) if s.value_type is int else isinstance(v, float)


@given(st.sampled_from(NUMERIC), st.floats(allow_nan=True, allow_infinity=True))
def test_out_of_range_or_non_finite_numbers_are_refused_with_the_field_named(spec, x):
    inside = math.isfinite(x) and spec.minimum <= x and (spec.maximum is None or x <= spec.maximum)
    assume(not inside)
    with pytest.raises(BackendError, match=spec.name):
        GenParams.from_dict({spec.name: x})


@given(
    st.sampled_from([s for s in NUMERIC if s.value_type is int]),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
)
def test_whole_number_settings_refuse_fractions(spec, x):
    with pytest.raises(BackendError, match=f"{spec.name} must be a whole number"):
        GenParams.from_dict({spec.name: x})


# ------------------------------------------------------------------------------ the app's edge
RUNTIME = None


def runtime():
    global RUNTIME
    if RUNTIME is None:
        from llm_levels.runtime import AppRuntime

        RUNTIME = AppRuntime(Settings(max_new_tokens_cap=300, max_prompt_chars=500, requests_per_minute=100_000))
    return RUNTIME


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["user", "assistant"]), st.text(max_size=200)), min_size=0, max_size=5),
    st.dictionaries(st.sampled_from([s.name for s in NUMERIC]), json_values, max_size=4),
)
def test_check_request_returns_capped_params_or_one_clear_error(turns, raw):
    """Never anything but valid params within the caps, or a BackendError that says what to change."""
    messages = [Message(r, t) for r, t in turns]
    try:
        p = runtime().check_request("prop-session", messages, raw)
    except BackendError as e:
        assert "\n" not in str(e) and e.status in (400, 429)
        return
    assert isinstance(p, GenParams) and p.max_new_tokens <= 300
    # The last message is the user's, or an answer to continue right after one (prefill of the assistant turn).
    last_user = messages[-1] if messages[-1].role == "user" else messages[-2]
    assert last_user.role == "user" and last_user.content.strip()
    assert sum(len(m.content) for m in messages) <= 500


# ----------------------------------------------------------------------------------- history
turn_text = st.text(max_size=60)
history_items = st.lists(
    st.one_of(turn_text.map(H.user), turn_text.map(H.assistant), turn_text.map(lambda t: H.note(t))), max_size=6
)


@given(history_items, st.text(max_size=80), st.sampled_from(["server", "timeout", "stream_cut"]), st.text(max_size=60))
def test_a_failure_keeps_the_history_and_only_a_visible_partial(hist, message, kind, partial):
    out = H.failure(list(hist), message, kind, partial)
    assert out[: len(hist)] == list(hist)  # nothing before is changed or lost
    assert H.is_note(out[-1]) and out[-1]["content"] == message and out[-1]["metadata"]["log"] == kind
    # The note is never sent to the model; the partial answer is (it is what the user saw).
    kept = list(hist) + ([H.assistant(partial)] if partial.strip() else [])
    assert H.to_messages(out) == H.to_messages(kept)
    assert out[-1]["metadata"]["title"] == (H.CUT_TITLE if partial.strip() else H.ERROR_TITLE)


@given(st.text())
def test_blank_means_nothing_visible(text):
    visible = [c for c in text if not c.isspace() and unicodedata.category(c) != "Cf"]
    assert H.is_blank(text) == (not visible)
    if not H.is_blank(text):
        assert text.strip()  # so core.check_conversation agrees: a non-blank message is never "empty"


# ------------------------------------------------------------------- hosted servers and price files
@given(st.dictionaries(st.sampled_from(["retry-after", "retry-after-ms", "x-other"]), st.text(max_size=40), max_size=3))
def test_any_retry_after_header_is_a_sane_wait_or_none(headers):
    wait = retry_after(headers)
    assert wait is None or (math.isfinite(wait) and wait >= 0)


KEY = "sk-proj-Abc123_def456-GHI789jkl"


@given(st.text(max_size=200), st.text(max_size=200), st.sampled_from(["raw", "quoted", "json", "bearer"]))
def test_a_servers_error_text_never_shows_the_key(before, after, how):
    shown = {
        "raw": KEY,
        "quoted": urllib.parse.quote(KEY, safe=""),
        "json": json.dumps(KEY)[1:-1],
        "bearer": f"Bearer {KEY}",
    }[how]
    out = sanitize(before + shown + after, KEY)
    assert KEY not in out and "\n" not in out and len(out) <= MAX_SERVER_TEXT


@given(st.integers(0, 10**9), st.integers(0, 10**9), st.floats(0, 1e4), st.floats(0, 1e4))
def test_a_price_file_price_is_linear_in_the_tokens(n_in, n_out, p_in, p_out):
    table = PriceTable({"mine": Price(p_in, p_out)})
    cost = table.estimate("mine", Usage(n_in, n_out))
    assert cost == pytest.approx((n_in * p_in + n_out * p_out) / 1e6)
    assert cost >= 0 and table.estimate("mine", Usage(n_in, n_out), local=True) == 0.0


@settings(max_examples=30)
@given(st.integers(0, 10**7), st.integers(0, 10**7))
def test_a_list_price_adds_up_over_input_and_output(n_in, n_out):
    whole = estimate_cost("gpt-4o-mini", Usage(n_in, n_out))
    parts = estimate_cost("gpt-4o-mini", Usage(n_in, 0)) + estimate_cost("gpt-4o-mini", Usage(0, n_out))
    assert whole == pytest.approx(parts) and whole >= 0
