"""vantage6 5.x as a third job source (issue 21): the stand-in identity server and the HQ
5.0.3 sandbox so far; the node itself follows (docs/v6-5x-plan.md)."""
