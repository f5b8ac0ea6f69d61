"""`ssl-audit`: check a dataset before training on it: duplicates and leakage, class balance, label noise, bad files.

`scan.py` streams every image once into compact per-image records; the checks
(`duplicates.py`, `labels.py`) are functions of those records; `pipeline.py`
assembles audit.json and audit.html.
"""
