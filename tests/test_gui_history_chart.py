"""The services pane's history chart (issue 20, part 7): real widgets, offscreen; the bars are
checked in the grabbed image, pixel columns against the figures given."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage

from dss_console.core.history import Bar, ServiceHistory
from dss_console.engine.engine import ServiceView
from dss_console.gui.history_chart import (
    FAILED_COLOUR,
    NO_SELECTION,
    SUCCEEDED_COLOUR,
    HistoryChart,
    bar_words,
    nice_ceiling,
    run_time_words,
)
from dss_console.gui.services_pane import ServicesPane

HOURS = tuple(Bar(succeeded=i % 5, failed=(1 if i % 7 == 3 else 0)) for i in range(24))
DAYS = tuple(Bar(succeeded=(0 if i == 10 else 20 + i), failed=i % 4) for i in range(30))
HISTORY = ServiceHistory(service="ASHS-PMC-T1", hours=HOURS, days=DAYS,
                         median_run_s_day=312.0, median_run_s_month=4000.0)
EMPTY = ServiceHistory(service="Quiet", hours=(Bar(0, 0),) * 24, days=(Bar(0, 0),) * 30,
                       median_run_s_day=None, median_run_s_month=None)


def chart_shown(qtbot, history: ServiceHistory | None) -> HistoryChart:
    chart = HistoryChart()
    qtbot.addWidget(chart)
    chart.resize(480, 180)
    chart.set_history(history)
    chart.show()
    qtbot.waitExposed(chart)
    return chart


def is_colour(image: QImage, x: int, y: int, colour: QColor) -> bool:
    return image.pixelColor(x, y).rgb() == colour.rgb()


def column_heights(chart: HistoryChart) -> list[tuple[int, int]]:
    """(green, red) pixels in the middle column of each bar's slot, read from the image."""
    image = chart.canvas.grab().toImage()
    plot = chart.canvas.plot_rect()
    count = len(chart.bars())
    slot = plot.width() / count
    heights = []
    for index in range(count):
        x = plot.left() + int((index + 0.4) * slot)
        green = sum(is_colour(image, x, y, SUCCEEDED_COLOUR)
                    for y in range(plot.top(), plot.bottom() + 1))
        red = sum(is_colour(image, x, y, FAILED_COLOUR)
                  for y in range(plot.top(), plot.bottom() + 1))
        heights.append((green, red))
    return heights


def expected_heights(chart: HistoryChart) -> list[tuple[int, int]]:
    plot_height = chart.canvas.plot_rect().height()
    bars = chart.bars()
    top = nice_ceiling(max(b.succeeded + b.failed for b in bars))
    return [(round(plot_height * b.succeeded / top),
             round(plot_height * (b.succeeded + b.failed) / top)
             - round(plot_height * b.succeeded / top)) for b in bars]


def assert_drawn(chart: HistoryChart) -> None:
    drawn = column_heights(chart)
    for index, ((green, red), (want_green, want_red)) in enumerate(
            zip(drawn, expected_heights(chart), strict=True)):
        assert abs(green - want_green) <= 1 and abs(red - want_red) <= 1, (
            f"bar {index}: drawn {green} green / {red} red px, figures say "
            f"{want_green} / {want_red} ({chart.bars()[index]})")


def test_the_bars_are_the_historys_hours_in_green_and_red(qtbot) -> None:
    chart = chart_shown(qtbot, HISTORY)
    assert chart.bars() == HOURS and chart.message() == ""
    assert_drawn(chart)
    heights = column_heights(chart)
    # Honest about zeros and about the colours: bar 0 (0 / 0) is empty, bar 3 has red on top.
    assert heights[0] == (0, 0)
    assert heights[3][0] > 0 and heights[3][1] > 0
    assert all(red == 0 for (_, red), bar in zip(heights, HOURS, strict=True) if not bar.failed)
    assert chart.median.text() == (
        f"{sum(b.succeeded for b in HOURS)} succeeded, {sum(b.failed for b in HOURS)} failed "
        "in the last day; median run time 5 min 12 s")


def test_the_toggle_shows_the_month_by_day(qtbot) -> None:
    chart = chart_shown(qtbot, HISTORY)
    qtbot.mouseClick(chart.month_button, Qt.MouseButton.LeftButton)
    assert chart.month_button.isChecked() and not chart.day_button.isChecked()
    assert chart.bars() == DAYS
    assert len(column_heights(chart)) == 30
    assert_drawn(chart)
    assert column_heights(chart)[10][0] == 0  # the day without a success
    assert chart.median.text().endswith("in the last 30 days; median run time 1 h 06 min")
    qtbot.mouseClick(chart.day_button, Qt.MouseButton.LeftButton)
    assert chart.bars() == HOURS


def test_an_empty_history_says_so_and_draws_no_bar(qtbot) -> None:
    chart = chart_shown(qtbot, EMPTY)
    assert chart.message() == "No jobs ended in the last day"
    image = chart.canvas.grab().toImage()
    coloured = [(x, y) for x in range(image.width()) for y in range(image.height())
                if image.pixelColor(x, y).rgb() in (SUCCEEDED_COLOUR.rgb(), FAILED_COLOUR.rgb())]
    assert coloured == []
    assert chart.median.text() == "0 succeeded, 0 failed in the last day"  # no median
    chart.show_span("month")
    assert chart.message() == "No jobs ended in the last 30 days"
    chart.set_history(None)
    assert chart.message() == "No history for this service yet"


def test_run_time_words() -> None:
    assert [run_time_words(s) for s in (0.6, 42, 60, 312, 3599.6, 7500)] == [
        "0 s", "42 s", "1 min", "5 min 12 s", "59 min 59 s", "2 h 05 min"]


def test_a_bars_tooltip_says_when_and_how_many(qtbot) -> None:
    chart = chart_shown(qtbot, HISTORY)
    ok, failed = chart.canvas.bar_rects()[3]
    assert chart.canvas.bar_at(failed.center()) == 3 and chart.canvas.bar_at(ok.center()) == 3
    assert bar_words("day", 3, 24, HOURS[3]) == "20–21 h ago: 3 succeeded, 1 failed"
    assert bar_words("day", 23, 24, Bar(2, 0)) == "In the last hour: 2 succeeded, 0 failed"
    assert bar_words("month", 28, 30, Bar(1, 1)) == "1 day ago: 1 succeeded, 1 failed"


def view(name: str, service_hash: str) -> ServiceView:
    return ServiceView(service_hash=service_hash, name=name, version="1.0", command=None,
                       auto=False, running=0)


def test_the_services_pane_charts_the_selected_service(qtbot) -> None:
    pane = ServicesPane()
    qtbot.addWidget(pane)
    pane.set_logged_in(True)
    pane.set_services([view("ASHS-PMC-T1", "a" * 40), view("Quiet", "b" * 40)])
    pane.show()
    pane.table.clearSelection()
    assert pane.history_chart.message() == NO_SELECTION
    # The ledger's figures by service name (as the engine's ledger_stats keys them); a
    # service's hash is no key.
    pane.show_histories({"b" * 40: HISTORY})
    pane.select_service("b" * 40)
    assert pane.history_chart.history() is None
    pane.show_histories({"ASHS-PMC-T1": HISTORY, "Quiet": EMPTY})
    pane.select_service("a" * 40)
    assert pane.history_chart.history() == HISTORY
    assert pane.history_chart.title.text() == "History of ASHS-PMC-T1"
    pane.select_service("b" * 40)
    assert pane.history_chart.history() == EMPTY
    assert pane.history_chart.message() == "No jobs ended in the last day"
    pane.show_histories({})
    assert pane.history_chart.message() == "No history for this service yet"
    pane.set_logged_in(False)
    assert pane.history_chart.history() is None
