"""SSL algorithms: one file each, subclassing `base.SSLAlgorithm` and owning only their loss."""
