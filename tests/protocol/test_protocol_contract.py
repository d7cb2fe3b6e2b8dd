"""The protocol's models, topic rules and the examples in docs/protocol.md."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from argentic.errors import InvalidTopicError, MalformedMessageError
from argentic.protocol import (
    MESSAGE_ADAPTER,
    Answer,
    Message,
    Question,
    ToolCall,
    Topics,
    matches,
    new_id,
    parse_message,
    shared,
    topic_level,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def doc_examples() -> list[dict[str, object]]:
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(), flags=re.S)
    return [json.loads(block) for block in blocks]


def test_every_documented_example_is_a_valid_message_of_its_type() -> None:
    examples = doc_examples()
    documented_types = {example["type"] for example in examples}
    for example in examples:
        message = parse_message(json.dumps(example))
        assert message.type == example["type"]
        assert message.id == example["id"]
    # every message type of the protocol has an example
    schema = MESSAGE_ADAPTER.json_schema()
    all_types = {ref.split("/")[-1] for ref in schema["discriminator"]["mapping"].values()}
    assert len(documented_types) == len(all_types)


def test_minimal_hand_written_question_gets_an_id_and_timestamp() -> None:
    question = parse_message(b'{"type": "question", "text": "hi", "reply_to": "argentic/clients/me/inbox"}')
    assert isinstance(question, Question)
    assert question.id and question.ts > 0 and question.v == 1


def test_ids_are_unique_hex_and_sort_in_the_order_they_were_made() -> None:
    made = []
    for _ in range(3):
        made += [new_id() for _ in range(1000)]
        time.sleep(0.002)  # ids of one millisecond share their first 12 digits; the rest is random
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"[0-9a-f]{32}", made_id) for made_id in made)
    stamps = [made_id[:12] for made_id in made]
    assert stamps == sorted(stamps)
    assert made[0][:12] < made[-1][:12]
    assert abs(int(made[-1][:12], 16) / 1000 - time.time()) < 60
    # 80 random bits each: the last 20 digits of ids made in one millisecond differ
    assert len({made_id[12:] for made_id in made}) == len(made)
    assert Question(text="q", reply_to="argentic/clients/me/inbox").id[:12] >= made[-1][:12]


def test_round_trip_keeps_every_field() -> None:
    call = ToolCall(tool="calculator", arguments={"x": 1}, reply_to="ns/clients/a/inbox", correlation_id="c")
    assert parse_message(call.to_json()) == call


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"type": "nope"}', "not an argentic message"),
        (b'{"type": "question"}', "text"),
    ],
)
def test_malformed_payloads_raise_a_clear_error(payload: bytes, fragment: str) -> None:
    with pytest.raises(MalformedMessageError, match=fragment):
        parse_message(payload)


def test_oversized_payload_is_refused_before_parsing() -> None:
    with pytest.raises(MalformedMessageError, match="exceeds the limit"):
        parse_message(b'{"type": "question", "text": "' + b"x" * 100 + b'"}', max_bytes=50)


def test_parsing_as_a_given_model_rejects_other_types() -> None:
    with pytest.raises(MalformedMessageError, match="Answer"):
        parse_message(Question(text="hi").to_json(), Answer)


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "a#", "$SYS", "x\x00y", "z" * 129])
def test_topic_levels_refuse_wildcards_separators_and_reserved_names(bad: str) -> None:
    with pytest.raises(InvalidTopicError):
        topic_level(bad)
    with pytest.raises(InvalidTopicError):
        Topics("argentic").agent_questions(bad)


def test_reply_to_with_a_wildcard_is_rejected() -> None:
    with pytest.raises(MalformedMessageError):
        parse_message(b'{"type": "question", "text": "hi", "reply_to": "argentic/clients/#"}')


def test_topic_builders_follow_the_contract() -> None:
    topics = Topics("argentic")
    assert topics.agent_questions("assistant") == "argentic/agents/assistant/questions"
    assert topics.agent_events("assistant", "q1") == "argentic/agents/assistant/events/q1"
    assert matches(topics.agent_events_all("assistant"), topics.agent_events("assistant", "q1"))
    assert topics.tool_service("svc") == "argentic/tools/services/svc"
    assert topics.tool_calls("calculator") == "argentic/tools/calculator/calls"
    assert topics.client_inbox("me") == "argentic/clients/me/inbox"
    assert topics.video_offer("door") == "argentic/video/door/offer"
    assert (
        shared(topics.tool_calls("calculator"), "workers") == "$share/workers/argentic/tools/calculator/calls"
    )


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/#", "a/b/c", True),
        ("a/#", "a", True),
        ("a/+", "a/b/c", False),
        ("a/b", "a/b/c", False),
        ("$share/g/a/+", "a/b", True),
    ],
)
def test_wildcard_matching(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected


def test_expiry() -> None:
    message = Message(type="x", expires_at=100.0)
    assert message.expired(now=101.0)
    assert not message.expired(now=99.0)
