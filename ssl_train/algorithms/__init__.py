"""SSL algorithms: one file each, subclassing `base.SSLAlgorithm` and owning only their loss.

`alignment` is a part an algorithm can hold (FixMatch's distribution alignment), not an algorithm.
"""
