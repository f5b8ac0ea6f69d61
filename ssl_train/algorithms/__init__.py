"""SSL algorithms: one file each, subclassing `base.SSLAlgorithm` and owning only their loss.

The parts that methods share and swap (`part.Part`): `masking` (which pseudo-labels count, and how much) and
`alignment` (class reweighting of the weak view); `distributed.gather_all` is how their state sees the global
batch. FlexMatch, FreeMatch, SoftMatch and UDA are `fixmatch.FixMatch` with other parts (conf/algorithm/).
"""
