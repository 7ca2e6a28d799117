"""Spend as people would rather see it: a line climbing toward the budget, and the burn rate.

`terminal_chart` draws it with plotext (text, for `lsstctl cost NAME --plot`); `png_chart`
writes the same chart as an image with matplotlib (`--png FILE`, the `png` extra). Both
take the API's GET /clusters/{name}/cost/history answer.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any


def series(history: dict[str, Any]) -> tuple[list[float], list[float], list[float], str]:
    """Time since the first measurement (minutes under two hours, else hours), spend (USD) and
    burn (USD/h) at each point, and the time axis' label."""
    points = history.get("points") or []
    if not points:
        return [], [], [], ""
    start = datetime.fromisoformat(points[0]["at"])
    seconds = [(datetime.fromisoformat(p["at"]) - start).total_seconds() for p in points]
    unit, per = ("minutes", 60) if seconds[-1] < 2 * 3600 else ("hours", 3600)
    elapsed = [s / per for s in seconds]
    label = f"{unit} since {start.strftime('%Y-%m-%d %H:%M')} UTC"
    return elapsed, [float(p["spend_usd"]) for p in points], [float(p["burn_usd_per_hour"]) for p in points], label


def _title(history: dict[str, Any]) -> str:
    return f"{history['cluster']} (generation {history['generation']}, {history['state']}): spend against its budget"


def terminal_chart(history: dict[str, Any], width: int | None = None, height: int = 20) -> str:
    """The chart as text (plotext), ready to print."""
    import plotext as plt

    hours, spend, burn, label = series(history)
    plt.clear_figure()
    plt.plotsize(width or 100, height)
    plt.theme("clear")
    plt.title(_title(history))
    budget = float(history["budget_usd"])
    ends = [hours[0], hours[-1]] if len(hours) > 1 else [0.0, 1.0]
    plt.plot(ends, [budget, budget], label=f"budget ${budget:,.2f}", marker="-")
    plt.plot(hours, spend, label="spend (USD)", marker="braille")
    plt.plot(hours, burn, label="burn (USD/h, right)", marker="dot", yside="right")
    plt.xlabel(label)
    plt.ylim(0, max(budget, *spend) * 1.05, yside="left")
    text: str = plt.build()
    return text


def png_chart(history: dict[str, Any], path: Path) -> Path:
    """The same chart as a PNG image (matplotlib, no display needed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot
    except ImportError:
        from lsstctl.cli.client import CliError

        raise CliError("--png needs matplotlib: pip install 'lsstctl[png]'", 2) from None
    hours, spend, burn, label = series(history)
    figure, left = pyplot.subplots(figsize=(9, 4.5), dpi=110)
    budget = float(history["budget_usd"])
    left.axhline(budget, color="tab:red", linestyle="--", label=f"budget ${budget:,.2f}")
    left.plot(hours, spend, color="tab:blue", label="spend (USD)")
    left.set_xlabel(label)
    left.set_ylabel("USD")
    left.set_ylim(0, max([budget, *spend]) * 1.08)
    right = left.twinx()
    right.plot(hours, burn, color="tab:orange", alpha=0.7, label="burn (USD/h)")
    right.set_ylabel("USD per hour")
    right.set_ylim(bottom=0)
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles=handles, loc="lower right")
    left.set_title(_title(history))
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)
    return path
