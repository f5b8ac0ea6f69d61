"""Deployable models from a run checkpoint (`ssl-export`) and distilled students (`ssl-distill`).

    checkpoint.py   a run checkpoint back to its network and data module, or a clear error
    artifact.py     write to a temporary name, verify by loading back, then rename into place
    torchscript.py  fp32 TorchScript: scripted (traced when it does not script), frozen, parity-checked
    quantize.py     int8: FX post-training static quantization calibrated on unlabeled data
    pt2.py          torch.export program with a dynamic batch dimension; ONNX as an optional extra
    measure.py      accuracy, macro-F1, ECE on the test split; CPU latency
    card.py         metadata.json and MODEL_CARD.md from the measurements
    pipeline.py     `export_checkpoint`: all of the above for one checkpoint
    distill.py      `Distillation`: a student trained from a frozen teacher with the Hinton loss
"""
