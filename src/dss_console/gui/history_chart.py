"""A service's recent history at a glance (issue 20, part 7): jobs that ended per hour over
the last day or per day over the last month, succeeded (green) stacked under failed (red),
and the median run time in words. Drawn with QPainter (QtCharts is not in
PySide6-Essentials); fed a ``ServiceHistory`` (the ledger's figures) or None."""

from __future__ import annotations

import math

from PySide6.QtCore import QEvent, QPoint, QRect, QSize, Qt
from PySide6.QtGui import QColor, QHelpEvent, QPainter, QPaintEvent, QPalette
from PySide6.QtWidgets import (
    QButtonGroup,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from dss_console.core.history import Bar, ServiceHistory

SUCCEEDED_COLOUR = QColor("#2e7d32")
FAILED_COLOUR = QColor("#c62828")
DAY, MONTH = "day", "month"  # the two spans: 24 hourly bars, 30 daily bars
SPAN_WORDS = {DAY: "the last day", MONTH: "the last 30 days"}
NO_HISTORY = "No history for this service yet"
NO_SELECTION = "Select a service to see its history"
BAR_GAP = 2  # px between bars
MARGIN = 4  # px around the plot
LABEL_GAP = 2  # px between the plot and the labels under it


def nice_ceiling(value: int) -> int:
    """The axis top: 1, 2 or 5 times a power of ten, at least ``value`` (and at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def run_time_words(seconds: float) -> str:
    """'42 s', '5 min 12 s', '2 h 05 min': a median read at a glance. Whole seconds cut,
    not rounded, as the queue's Run time and ``audit stats`` give them (a 0.6 s job is '0 s'
    there: not '1 s' here)."""
    total = int(seconds)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        minutes, secs = divmod(total, 60)
        return f"{minutes} min {secs:02d} s" if secs else f"{minutes} min"
    hours, rest = divmod(total, 3600)
    return f"{hours} h {rest // 60:02d} min"


def bar_words(span: str, index: int, count: int, bar: Bar) -> str:
    """A bar's tooltip: when, and how many ended how."""
    ago = count - 1 - index  # bars oldest first; the last ends now
    if span == DAY:
        when = "In the last hour" if ago == 0 else f"{ago}–{ago + 1} h ago"
    else:
        when = "In the last 24 h" if ago == 0 else (
            "1 day ago" if ago == 1 else f"{ago} days ago")
    return f"{when}: {bar.succeeded} succeeded, {bar.failed} failed"


class _Bars(QWidget):
    """The plot: stacked bars with the axis top at the left and the window's ends below."""

    def __init__(self, chart: HistoryChart) -> None:
        super().__init__(chart)
        self._chart = chart
        self.setMinimumHeight(80)

    def sizeHint(self) -> QSize:
        return QSize(240, 100)

    def plot_rect(self) -> QRect:
        """Where the bars stand (inside the margins, above the labels)."""
        text_height = self.fontMetrics().height()
        left = MARGIN + self.fontMetrics().horizontalAdvance("0000") + LABEL_GAP
        return QRect(left, MARGIN, max(1, self.width() - left - MARGIN),
                     max(1, self.height() - 2 * MARGIN - text_height - LABEL_GAP))

    def bar_rects(self) -> list[tuple[QRect, QRect]]:
        """Per bar (oldest first): the succeeded part and the failed part on top of it
        (empty rects for zero)."""
        bars = self._chart.bars()
        if not bars:
            return []
        plot = self.plot_rect()
        top = nice_ceiling(max(b.succeeded + b.failed for b in bars))
        slot = plot.width() / len(bars)
        rects = []
        for index, bar in enumerate(bars):
            x = plot.left() + round(index * slot)
            width = max(1, round((index + 1) * slot) - round(index * slot) - BAR_GAP)
            ok_height = round(plot.height() * bar.succeeded / top)
            total_height = round(plot.height() * (bar.succeeded + bar.failed) / top)
            bottom = plot.bottom() + 1
            ok = QRect(x, bottom - ok_height, width, ok_height)
            failed = QRect(x, bottom - total_height, width, total_height - ok_height)
            rects.append((ok, failed))
        return rects

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        palette = self.palette()
        text_colour = palette.color(QPalette.ColorRole.WindowText)
        message = self._chart.message()
        if message:
            painter.setPen(palette.color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, message)
            painter.end()
            return
        plot = self.plot_rect()
        bars = self._chart.bars()
        top = nice_ceiling(max(b.succeeded + b.failed for b in bars))
        grid = palette.color(QPalette.ColorRole.Mid)
        painter.setPen(grid)
        painter.drawLine(plot.left(), plot.bottom() + 1, plot.right(), plot.bottom() + 1)
        painter.drawLine(plot.left(), plot.top(), plot.right(), plot.top())
        for ok, failed in self.bar_rects():
            painter.fillRect(ok, SUCCEEDED_COLOUR)
            painter.fillRect(failed, FAILED_COLOUR)
        painter.setPen(text_colour)
        metrics = self.fontMetrics()
        number_box = QRect(MARGIN, plot.top() - metrics.ascent() // 2,
                           plot.left() - MARGIN - LABEL_GAP, metrics.height())
        painter.drawText(number_box, Qt.AlignmentFlag.AlignRight, str(top))
        zero_box = QRect(MARGIN, plot.bottom() - metrics.height() + 1,
                         plot.left() - MARGIN - LABEL_GAP, metrics.height())
        painter.drawText(zero_box, Qt.AlignmentFlag.AlignRight, "0")
        below = QRect(plot.left(), plot.bottom() + 1 + LABEL_GAP, plot.width(), metrics.height())
        start, end = ("24 h ago", "now") if self._chart.span == DAY else ("30 days ago",
                                                                            "today")
        painter.drawText(below, Qt.AlignmentFlag.AlignLeft, start)
        painter.drawText(below, Qt.AlignmentFlag.AlignRight, end)
        painter.end()

    def bar_at(self, point: QPoint) -> int | None:
        for index, (ok, _failed) in enumerate(self.bar_rects()):
            column = QRect(ok.left(), self.plot_rect().top(), ok.width() + BAR_GAP,
                           self.plot_rect().height() + 1)
            if column.contains(point):
                return index
        return None

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            index = self.bar_at(event.pos())
            bars = self._chart.bars()
            if index is None or not bars:
                QToolTip.hideText()
            else:
                QToolTip.showText(event.globalPos(),
                                  bar_words(self._chart.span, index, len(bars), bars[index]),
                                  self)
            return True
        return super().event(event)


class HistoryChart(QWidget):
    """The selected service's history: a 24 h / 30 d switch, the bars, the median."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._history: ServiceHistory | None = None
        self._missing = NO_HISTORY
        self.span = DAY
        self.title = QLabel()
        self.day_button = QPushButton("24 h")
        self.month_button = QPushButton("30 d")
        group = QButtonGroup(self)
        for button, span, tip in ((self.day_button, DAY, "Jobs that ended per hour"),
                                    (self.month_button, MONTH, "Jobs that ended per day")):
            button.setCheckable(True)
            button.setToolTip(tip)
            group.addButton(button)
            button.clicked.connect(lambda _on=False, s=span: self.show_span(s))
        self.day_button.setChecked(True)
        self.canvas = _Bars(self)
        self.median = QLabel()
        self.median.setWordWrap(True)
        header = QHBoxLayout()
        header.setContentsMargins(0, 0, 0, 0)
        header.addWidget(self.title, 1)
        header.addWidget(self.day_button)
        header.addWidget(self.month_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(header)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.median)
        self._update_texts()

    # -- what it shows ------------------------------------------------------------------------
    def set_history(self, history: ServiceHistory | None,
                    missing: str = NO_HISTORY) -> None:
        """Draw ``history``; None: say ``missing`` instead (why there is nothing)."""
        self._history = history
        self._missing = missing
        self._update_texts()
        self.canvas.update()

    def history(self) -> ServiceHistory | None:
        return self._history

    def show_span(self, span: str) -> None:
        """24 hourly bars (DAY) or 30 daily bars (MONTH)."""
        self.span = span
        (self.day_button if span == DAY else self.month_button).setChecked(True)
        self._update_texts()
        self.canvas.update()

    def bars(self) -> tuple[Bar, ...]:
        """The bars drawn now, oldest first (none without a history)."""
        if self._history is None:
            return ()
        return self._history.hours if self.span == DAY else self._history.days

    def message(self) -> str:
        """What the plot says instead of bars ("" when it draws bars)."""
        if self._history is None:
            return self._missing
        if not any(b.succeeded or b.failed for b in self.bars()):
            return f"No jobs ended in {SPAN_WORDS[self.span]}"
        return ""

    def _update_texts(self) -> None:
        history = self._history
        self.title.setText(f"History of {history.service}" if history else "History")
        if history is None:
            self.median.setText("")
            return
        bars = self.bars()
        ok = sum(b.succeeded for b in bars)
        failed = sum(b.failed for b in bars)
        median = history.median_run_s_day if self.span == DAY else history.median_run_s_month
        counts = f"{ok} succeeded, {failed} failed in {SPAN_WORDS[self.span]}"
        self.median.setText(counts if median is None else
                            f"{counts}; median run time {run_time_words(median)}")
