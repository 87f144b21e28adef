"""The job's progress line, without Ray: its text, its modes, its pace."""

from __future__ import annotations

import io
import os
import time

import pytest

from pipeline.contract.settings import RunSettings
from pipeline.execute import progress_line
from pipeline.execute.progress_line import (
    ProgressLine,
    duration,
    progress_text,
    resolve_mode,
    terminal_width,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_line_has_rows_written_of_the_total_percent_rate_eta_and_set_aside_rows():
    assert progress_text(1200, 3000, 350.0, set_aside=3) == (
        "bulkinfer: 1,200 of 3,000 rows written (40%), 350 rows/s, ETA 5s, 3 rows set aside"
    )
    assert progress_text(1200, 3000, 12.25) == (
        "bulkinfer: 1,200 of 3,000 rows written (40%), 12.2 rows/s, ETA 2m27s"
    )


def test_without_a_total_the_line_has_rows_and_rate_only():
    assert progress_text(1200, None, 350.0) == "bulkinfer: 1,200 rows written, 350 rows/s"
    assert progress_text(0, None, None) == "bulkinfer: 0 rows written"


def test_the_final_line_has_no_eta():
    assert progress_text(2950, 3000, 100.0, done=True) == (
        "bulkinfer: 2,950 of 3,000 rows written (98%), 100 rows/s"
    )


def test_durations_are_short():
    assert [duration(s) for s in (0.4, 42, 185, 7620)] == ["0s", "42s", "3m05s", "2h07m"]


def test_auto_is_a_bar_on_a_terminal_and_log_lines_otherwise():
    assert resolve_mode("auto", Tty()) == "bar"
    assert resolve_mode("auto", io.StringIO()) == "log"
    assert resolve_mode("off", Tty()) == "off"


def test_run_progress_takes_modes_and_the_old_booleans():
    assert RunSettings().progress == "auto"
    assert RunSettings(progress=True).progress == "auto"
    assert RunSettings(progress=False).progress == "off"
    assert RunSettings(progress="log").progress == "log"
    with pytest.raises(ValueError):
        RunSettings(progress="loud")
    assert RunSettings().ray_logs is False


def test_log_mode_prints_a_line_when_the_count_changed_and_the_final_count():
    clock, out = Clock(), io.StringIO()
    line = ProgressLine("log", lambda: (0, 0, {}), total=30, stream=out, clock=clock)
    line.start = lambda: None  # no thread: the test draws
    clock.now += 2
    line.show(10, 0)
    line.show(10, 0)  # unchanged: not printed again
    clock.now += 2
    line.show(20, 1)
    clock.now += 2
    line.finish(30, 1)
    assert out.getvalue().splitlines() == [
        "bulkinfer: 10 of 30 rows written (33%), 5.0 rows/s, ETA 4s",
        "bulkinfer: 20 of 30 rows written (67%), 5.0 rows/s, ETA 2s, 1 rows set aside",
        "bulkinfer: 30 of 30 rows written (100%), 5.0 rows/s, 1 rows set aside",
    ]


def test_bar_mode_redraws_in_place_and_ends_with_a_newline(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    clock, out = Clock(), Tty()
    line = ProgressLine("auto", lambda: (0, 0, {}), total=None, stream=out, clock=clock)
    clock.now += 1
    line.show(1000, 0)
    line.show(5, 0)
    line.finish(7, 0)
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    # A shorter line blanks the rest of the longer one before it.
    assert "\rbulkinfer: 5 rows written, 5.0 rows/s      \r" in text


def test_a_resumed_job_counts_from_the_rows_already_written():
    clock, out = Clock(), io.StringIO()
    line = ProgressLine(
        "log", lambda: (0, 0, {}), total=100, start_rows=60, stream=out, clock=clock
    )
    clock.now += 4
    line.finish(40, 0)
    # rows/s is this run's: 40 rows in 4 s.
    assert out.getvalue() == "bulkinfer: 100 of 100 rows written (100%), 10.0 rows/s\n"


def test_off_prints_nothing():
    out = Tty()
    line = ProgressLine("off", lambda: (5, 0, {}), total=10, stream=out)
    line.start()
    line.finish(10, 0)
    line.stop()
    assert out.getvalue() == ""


def test_the_thread_polls_and_a_failing_poll_is_skipped(monkeypatch):
    monkeypatch.setattr(progress_line, "LOG_EVERY_S", 0.01)
    answers = iter([RuntimeError("ledger busy"), (1, 0, {}), (2, 0, {})])

    def poll():
        answer = next(answers, (2, 0, {}))
        if isinstance(answer, Exception):
            raise answer
        return answer

    out = io.StringIO()
    line = ProgressLine("log", poll, total=2, stream=out)
    line.start()
    deadline = time.monotonic() + 5
    while out.getvalue().count("\n") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    line.finish(2, 0)
    counts = [ln.split()[1] for ln in out.getvalue().splitlines()]
    assert counts[:2] == ["1", "2"] and counts[-1] == "2"


def test_a_stage_that_counts_tokens_shows_them_and_the_cost_so_far():
    text = progress_text(
        1200,
        3000,
        350.0,
        amounts={"prompt_tokens": 40_000, "completion_tokens": 8_210, "cost": 0.04125},
    )
    assert text == (
        "bulkinfer: 1,200 of 3,000 rows written (40%), 350 rows/s, ETA 5s, 48,210 tokens, "
        "cost 0.04125"
    )


LLM = {"prompt_tokens": 40_000, "completion_tokens": 8_210, "cost": 0.04125}


def test_a_line_too_wide_drops_set_aside_then_tokens_then_cost_then_rate():
    def fit(width: int) -> str:
        text = progress_text(1200, 3000, 350.0, set_aside=3, amounts=LLM, width=width)
        assert len(text) <= width
        return text

    count = "bulkinfer: 1,200 of 3,000 rows written (40%)"
    assert fit(200) == (
        f"{count}, 350 rows/s, ETA 5s, 3 rows set aside, 48,210 tokens, cost 0.04125"
    )
    assert fit(100) == f"{count}, 350 rows/s, ETA 5s, 48,210 tokens, cost 0.04125"
    assert fit(79) == f"{count}, 350 rows/s, ETA 5s, cost 0.04125"
    assert fit(70) == f"{count}, 350 rows/s, ETA 5s"
    assert fit(60) == f"{count}, ETA 5s"  # rows, percent and ETA are the last to go


def test_a_narrow_terminal_shortens_the_count_before_cutting_between_words():
    def fit(width: int) -> str:
        return progress_text(1200, 3000, 350.0, set_aside=3, amounts=LLM, width=width)

    assert fit(45) == "bulkinfer: 1,200/3,000 rows (40%), ETA 5s"
    assert fit(40) == "1,200/3,000 rows (40%), ETA 5s"
    assert fit(25) == "1,200/3,000 rows (40%)"
    assert fit(20) == "1,200/3,000 rows"  # cut between words, never inside one
    assert progress_text(1200, None, 350.0, width=30) == "bulkinfer: 1,200 rows written"


def test_a_line_that_fits_is_unchanged():
    assert progress_text(1200, 3000, 350.0, set_aside=3, width=84) == progress_text(
        1200, 3000, 350.0, set_aside=3
    )


def test_an_llm_line_on_80_columns_keeps_rows_percent_and_eta():
    text = progress_text(
        123_456,
        1_000_000,
        41.5,
        set_aside=1_234,
        amounts={"prompt_tokens": 52_000_000, "completion_tokens": 9_000_000, "cost": 123.456},
        width=79,
    )
    assert text == "bulkinfer: 123,456 of 1,000,000 rows written (12%), 41.5 rows/s, ETA 5h52m"


def test_the_terminal_width_is_columns_else_80(monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    assert terminal_width(Tty()) == 120
    monkeypatch.delenv("COLUMNS")
    monkeypatch.setattr(
        progress_line.shutil, "get_terminal_size", lambda fallback: os.terminal_size(fallback)
    )
    assert terminal_width(Tty()) == 80  # no file behind it, no terminal on stdout


def test_bar_mode_fits_the_terminal_and_log_mode_keeps_the_whole_line(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    clock = Clock()
    bar, log = Tty(), io.StringIO()
    for mode, out in (("bar", bar), ("log", log)):
        line = ProgressLine(mode, lambda: (0, 0, {}), total=3000, stream=out, clock=clock)
        line.amounts = LLM
        clock.now += 4
        line.show(1200, 3)
        line.finish(3000, 3)
    drawn = bar.getvalue().replace("\n", "\r").split("\r")
    assert max(len(d) for d in drawn) <= 59, drawn  # one column spare
    assert "\rbulkinfer: 1,200 of 3,000 rows written (40%), ETA 6s" in bar.getvalue()
    assert "48,210 tokens, cost 0.04125" in log.getvalue().splitlines()[0]
