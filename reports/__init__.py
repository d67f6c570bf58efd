"""Reports: the results contract's tables, the paper's numbers beside ours, figures, and the
Markdown, HTML and LaTeX renderings of one document.

May import: `decodiff.datasets.files` (atomic writes); never `decodiff.models` or `decodiff.harness`.
"""
