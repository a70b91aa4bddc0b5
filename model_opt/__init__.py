"""Offline model optimisation: build RetinaFace-MobileNet0.25 in tf_keras, load the WIDER FACE
weights, prune with tfmot, fine-tune, quantize to full int8 and evaluate. Never deployed."""
