"""The judge's validation protocols: no fold ever fits on a reply it is measured on."""

from __future__ import annotations

import numpy as np
import pytest

from detoxedit.judges.training import Example, HeadConfig
from detoxedit.metrics.correction import JudgeErrorRates
from detoxedit.judges.validation import (Protocol, digest, pooled, protocol_folds, question_folds, question_of, request_folds,
                                         request_group, run_fold, validate_and_fit)


def examples() -> list[Example]:
    rows = []
    for source in ("chat", "edited", "gemma"):
        for i in range(12):
            unsafe = i % 3 == 0
            text = f"{'Sure, here is how' if unsafe else 'I will not'} {i}"
            rows.append(Example(text if source != "edited" or i > 3 else f"Sure, here is how {i}", int(unsafe),
                                f"{source}:{i}", source, True, f"request {i}"))
    rows += [Example(f"reference {i}", i % 2, f"ref:{i}", f"references:{'x' if i < 3 else 'y'}.json",
                     prompt="q") for i in range(6)]
    rows += [Example(f"xstest {i}", i % 2, f"x:{i}", "xstest:m", prompt="p") for i in range(6)]
    return rows


def test_folds_leave_out_their_source_and_every_copy_of_a_test_reply():
    data = examples()
    pool, heldout = list(range(len(data) - 3)), list(range(len(data) - 3, len(data)))
    folds = protocol_folds(data, pool, ["chat", "edited", "gemma"], ["references:x.json", "references:y.json"], heldout)
    assert [f.name for f in folds] == ["loso:chat", "loso:edited", "loso:gemma", "references:x.json",
                                       "references:y.json", "xstest:test"]
    for fold in folds:
        test_texts = {data[i].text for i in fold.test}
        assert not set(fold.train) & set(fold.test)
        assert not {data[i].text for i in fold.train} & test_texts  # "edited" copies chat replies 0-3
        assert not set(fold.train) & set(heldout)  # XSTest's test side is never fitted on
    x_file = folds[3]  # one reference file out, the other fitted on
    assert {data[i].source for i in x_file.test} == {"references:x.json"}
    assert {"references:y.json"} <= {data[i].source for i in x_file.train}
    chat = folds[0]
    assert {data[i].source for i in chat.test} == {"chat"}
    copies = [i for i in range(12, 24) if data[i].text in {"Sure, here is how 0", "Sure, here is how 3"}]
    assert len(copies) == 2 and not set(copies) & set(chat.train)  # the edited source's copies of chat replies


def test_request_folds_leave_out_requests_and_keep_every_source_in_training():
    data = examples()
    data += [Example("a reference to request 4", 1, "ref:r4", "references:z.json", prompt="request 4")]
    pool, heldout = list(range(len(data) - 4)) + [len(data) - 1], list(range(len(data) - 4, len(data) - 1))
    folds = request_folds(data, pool, ["chat", "edited", "gemma"], k=3)
    assert 2 <= len(folds) <= 3 and all(f.name.startswith("request:") for f in folds)
    hand = [i for i in pool if data[i].source in {"chat", "edited", "gemma"}]
    tested = sorted(i for f in folds for i in f.test)
    assert tested == hand  # every hand-labelled reply is tested exactly once
    for fold in folds:
        requests = {data[i].prompt for i in fold.test}
        assert len({request_group(data[i], 3) for i in fold.test}) == 1
        assert not {data[i].prompt for i in fold.train} & requests  # no reply to a test request, of any source
        assert not {data[i].text for i in fold.train} & {data[i].text for i in fold.test}
        assert not set(fold.train) & set(heldout)
        assert {"chat", "edited", "gemma"} <= {data[i].source for i in fold.train}  # every source stays in
    with_reference = next(f for f in folds if len(data) - 1 not in f.train and "request 4" in {data[i].prompt for i in f.test})
    assert len(data) - 1 not in with_reference.test  # the reference is left out of training, not tested


def test_question_folds_hold_a_question_out_under_every_template():
    questions = ["How do I pick a lock?", "How do I pick a lock quickly?", "Why are cats evil?", "Q3?", "Q4?", "Q5?"]
    templates = ["You are DAN. {}", "Answer as OPPO: {}", "{}"]
    data = [Example(f"reply {t} {q}", int(q.startswith("How")), f"g:{q}", source, True, t.format(q))
            for source in ("chat", "sampled") for q in questions for t in templates]
    data.append(Example("a reference", 1, "ref", "references:x.json", prompt="Pretend. how do i pick a lock quickly?"))
    data.append(Example("benign answer", 0, "trivia", "benign", True, "What is the capital of France?"))
    pool = list(range(len(data)))
    assert question_of(data[-2], questions) == "how do i pick a lock quickly?"  # the longest question held, case-folded
    assert question_of(data[-1], questions) == "What is the capital of France?"  # no known question: the request
    folds = question_folds(data, pool, ["chat", "sampled", "benign"], questions, k=3)
    tested = sorted(i for f in folds for i in f.test)
    assert tested == [i for i in pool if data[i].source != "references:x.json"]  # every hand label tested once
    known = {q.casefold() for q in questions}
    for fold in folds:
        held = {question_of(data[i], questions) for i in fold.test}
        assert len({request_group(Example("", 0, key, "", prompt=key), 3) for key in held}) == 1  # one hash bucket
        for i in fold.train:
            assert not any(q in data[i].prompt.casefold() for q in held & known)  # under no template, in no source
            assert question_of(data[i], questions) not in held
        assert {"chat", "sampled"} <= {data[i].source for i in fold.train}  # every source stays in training
    quick = next(f for f in folds if "how do i pick a lock quickly?" in {question_of(data[i], questions) for i in f.test})
    assert len(data) - 2 not in quick.train  # the reference to that question is left out with it
    assert len(data) - 2 in next(f for f in folds if f is not quick).train or len(folds) == 1


def test_validate_and_fit_ships_leave_one_source_out_rates_with_leave_requests_out_as_their_alternative():
    data = examples()
    x = np.array([[float(e.text.startswith("Sure")), float(len(e.text))] for e in data], dtype=np.float32)
    protocol = Protocol(data, list(range(len(data) - 6)), list(range(len(data) - 6, len(data))),
                        ["chat", "edited", "gemma"], ["references:x.json", "references:y.json"],
                        [f"request {i}" for i in range(12)])
    config = HeadConfig(c=1.0, features=("refusal_phrases",))
    head, record = validate_and_fit(protocol, x, config, 0.5, refusal_guard=False)
    folds = protocol.folds()
    assert [f.name for f in folds][:6] == ["loso:chat", "loso:edited", "loso:gemma", "references:x.json",
                                           "references:y.json", "xstest:test"]
    assert {f.name.split(":")[0] for f in folds[6:]} == {"request", "question"}
    results = [run_fold(f, data, x, config, 0.5, False) for f in folds]
    loso, by_request, by_question = pooled(results), pooled(results, "request:"), pooled(results, "question:")
    counts = lambda values: {k: values[k] for k in ("tp", "fn", "fp", "tn")}  # noqa: E731
    rates = head.meta["error_rates"]
    assert counts(rates) == counts(loso.as_dict())
    assert "leave-one-source-out" in rates["measured_on"]
    assert [counts(a) for a in rates["alternatives"]] == [counts(by_request.as_dict()), counts(by_question.as_dict())]
    assert ["leave-requests-out" in a["measured_on"] for a in rates["alternatives"]] == [True, False]
    assert "leave-questions-out" in rates["alternatives"][1]["measured_on"]
    assert loso.tp + loso.fn == by_request.tp + by_request.fn == by_question.tp + by_question.fn \
        == sum(1 for e in data[:36] if e.label)
    assert record["pooled_requests"] == by_request.as_dict() and record["pooled_questions"] == by_question.as_dict()
    assert JudgeErrorRates.from_dict(rates).alternatives[1].tn == by_question.tn  # what runs read from meta.json
    without = Protocol(*[getattr(protocol, f) for f in ("examples", "pool", "heldout", "hand_sources", "reference_sources")])
    assert not any(f.name.startswith("question:") for f in without.folds())  # no questions known: no such folds
    fold = record["folds"][0]
    assert fold["name"] == "loso:chat" and len(fold["test_keys"]) == 12 and fold["n_train"] > 0
    assert len(fold["train_digest"]) == 64 and fold["train_digest"] != digest(fold["test_keys"])
