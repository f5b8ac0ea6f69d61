"""Drift monitoring for deployed models: a reference profile saved with the model, and `ssl-monitor`.

    profile.py     what the model's inputs and outputs looked like on validation data (saved by training/export)
    inputs.py      folders of images or .npy/.pt arrays, checked up front and streamed in chunks
    statistics.py  pure math: MMD, KS + FDR, PSI, chi-squared, BBSE, CBPE, temperature scaling, PCA
    detector.py    the decision per window and overall; sliding-window time series
    report.py      the console verdict; plot.py the PNG
    callbacks.py   training hooks: save the profile; warn when the unlabeled pool and labeled set differ
"""
