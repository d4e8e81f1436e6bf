"""The "under the hood" data shaping: JSON views without secrets, token pieces, metric rows."""

import json

from llm_levels.core import Reply, Usage
from llm_levels.inspection import (
    API_METRIC_COLUMNS,
    HIDDEN,
    LOCAL_METRIC_COLUMNS,
    api_metrics_row,
    local_metrics_row,
    memory_snapshot,
    memory_text,
    request_view,
    response_view,
    scrub,
    to_jsonable,
    token_view,
    visible_piece,
)
from llm_levels.metrics import TurnMetrics
from llm_levels.redaction import redact

KEY = "sk-test-SECRET-123456"


def test_openai_response_objects_become_plain_json():
    from openai.types.chat import ChatCompletion

    obj = ChatCompletion.model_validate(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
    )
    data = to_jsonable(obj)
    assert data["choices"][0]["message"]["content"] == "hi" and data["usage"]["prompt_tokens"] == 3
    json.dumps(data)  # JSON-safe


def test_secret_fields_are_hidden_and_strings_redacted():
    req = {
        "model": "m",
        "api_key": KEY,
        "headers": {"Authorization": f"Bearer {KEY}"},
        "messages": [{"role": "user", "content": f"my key is {KEY}"}],
    }
    shown = scrub(req, lambda s: redact(s, [KEY]))
    assert shown["api_key"] == HIDDEN and shown["headers"]["Authorization"] == HIDDEN
    assert KEY not in json.dumps(shown) and "my key is" in shown["messages"][0]["content"]
    assert request_view(None) is None and response_view(None) is None


def test_long_streams_keep_first_and_last_chunks():
    chunks = [{"i": i} for i in range(200)]
    shown = response_view(chunks, max_chunks=60)
    assert len(shown) == 61 and shown[0] == {"i": 0} and shown[-1] == {"i": 199}  # the last one has the usage
    assert "140 more chunks" in shown[50]["note"]
    assert response_view(chunks[:5]) == chunks[:5]


def test_token_view_marks_invisible_characters_and_caps_long_prompts():
    assert visible_piece("\n") == "↵" and visible_piece("a\tb") == "a⇥b" and visible_piece("") == "∅"
    assert visible_piece(" the") == "␣the"
    pairs, summary = token_view([(1, "<|im_start|>"), (9690, "user"), (198, "\n")])
    assert pairs == [("<|im_start|>", "1"), ("user", "9690"), ("↵", "198")] and "3 tokens" in summary
    many = [(i, f"t{i}") for i in range(1000)]
    pairs, summary = token_view(many, cap=100)
    assert len(pairs) == 101 and pairs[0] == ("t0", "0") and pairs[-1] == ("t999", "999")
    assert pairs[50][1] is None and "900 tokens not shown" in pairs[50][0] and "1,000 tokens" in summary


def test_metric_rows_match_their_columns():
    m = TurnMetrics.from_reply(Reply("x", Usage(10, 5), "stop", 0.25, 1.25), backend="b", model="m")
    row = api_metrics_row(1, m, "$0.000001")
    assert dict(zip(API_METRIC_COLUMNS, row)) == {
        "Turn": 1,
        "Model": "m",
        "In tokens": 10,
        "Out tokens": 5,
        "TTFT (s)": 0.25,
        "Total (s)": 1.25,
        "Tokens/s": 4.0,
        "Cost": "$0.000001",
    }
    unknown = TurnMetrics.from_reply(Reply("", None, None, None, 0.5))
    assert api_metrics_row(2, unknown, "unknown")[2:5] == ["–", "–", "–"]
    local = dict(zip(LOCAL_METRIC_COLUMNS, local_metrics_row(1, m, {"rss_mb": 1023.6, "cuda_mb": None})))
    assert local["RSS (MB)"] == 1024 and local["CUDA (MB)"] == "–" and local["Model"] == "m"
    named = dict(zip(LOCAL_METRIC_COLUMNS, local_metrics_row(2, m, {}, model="m · llama.cpp")))
    assert named["Model"] == "m · llama.cpp" and named["RSS (MB)"] == "–"


def test_memory_snapshot_reads_this_process():
    mem = memory_snapshot("cpu")
    assert mem["rss_mb"] is not None and mem["rss_mb"] > 10 and mem["cuda_mb"] is None
    assert memory_text(mem).startswith("RSS ") and "CUDA" not in memory_text(mem)
    assert memory_text({"rss_mb": 1234.4, "cuda_mb": 56.0}) == "RSS 1,234 MB · CUDA 56 MB"
    assert memory_text({}) == "memory unknown"


def test_the_module_no_longer_shadows_the_standard_library():
    import inspect

    import llm_levels.inspection

    assert hasattr(inspect, "signature") and llm_levels.inspection.__name__ == "llm_levels.inspection"
