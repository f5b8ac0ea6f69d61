"""Drift monitoring for deployed models against the reference profile saved with them (ssl_train.run.profile).

    inputs.py      folders of images or .npy/.pt arrays, checked up front and streamed in chunks
    statistics.py  pure math: MMD, KS + FDR, PSI, chi-squared, BBSE, CBPE
    detector.py    the decision per window and overall; sliding-window time series
    pipeline.py    `monitor`: reference + inputs → drift.png, drift.json (what `ssl-monitor` runs)
    report.py      the console verdict; plot.py the PNG
    callbacks.py   training hooks: save the profile; warn when the unlabeled pool and labeled set differ
"""
