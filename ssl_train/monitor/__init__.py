"""Drift monitoring for deployed models against the reference profile saved with them (ssl_train.run.profile).

    inputs.py      run/inputs.py's folders and arrays, worded for a reference (checked up front, streamed)
    statistics.py  pure math: MMD, KS + FDR, PSI, chi-squared, BBSE, CBPE
    detector.py    the decision per window and overall; sliding-window time series
    pipeline.py    `monitor`: reference + inputs → drift.png, drift.json (what `ssl-monitor` runs)
    report.py      the console verdict; plot.py the PNG
    callbacks.py   training hooks: save the profile; warn when the unlabeled pool and labeled set differ
"""
