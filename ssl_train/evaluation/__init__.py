"""`ssl-eval`: how good, how calibrated, how robust and how private a trained model is, with a report.

One concept per module; each computes from predictions (pure functions of
arrays), `pipeline.py` runs the model and assembles eval.json and report.html.
"""
