"""The self-contained HTML report of a run folder: data shaping, figures, the page."""
