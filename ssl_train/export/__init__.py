"""Deployable models from a run checkpoint (`ssl-export`) and distilled students (`ssl-distill`).

    artifact.py     the parity check every artifact passes before it gets its name (ssl_train.io.write_atomic)
    torchscript.py  fp32 TorchScript: scripted (traced when it does not script), frozen, parity-checked
    quantize.py     int8: FX post-training static quantization calibrated on unlabeled data
    pt2.py          torch.export program with a dynamic batch dimension; ONNX as an optional extra
    measure.py      accuracy, macro-F1, ECE on the test split; CPU latency
    card.py         metadata.json and MODEL_CARD.md from the measurements
    pipeline.py     `export_checkpoint`: all of the above for one checkpoint (loaded by ssl_train.run.checkpoint)
    distill.py      `distill`: a student trained from a frozen teacher (ssl_train.algorithms.distillation), compared
                    with it and exported
"""
