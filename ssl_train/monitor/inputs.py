"""What `ssl-monitor` reads: the run layer's inputs (ssl_train/run/inputs.py), worded for a reference profile.

Arrays are taken as documented for ssl-monitor, N×C×H×W float pixels in [0, 1] (ssl-predict also reads uint8
and channels-last arrays); image folders are decoded and scaled as anywhere else.
"""

from __future__ import annotations

from ssl_train.run import inputs


class Inputs(inputs.Inputs):
    """Folders of images or .npy/.pt arrays of N×C×H×W float pixels, checked against the reference model."""

    against = "reference"
    model = "the reference model"
    resize_option = "monitor.resize"
    image_arrays = False
