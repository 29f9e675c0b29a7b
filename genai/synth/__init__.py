"""Synthetic training data for computer vision (no Ray, no FastAPI in here).

``data`` (labelled image folders in, ImageFolder out, Fashion-MNIST from Debian's files),
``diffusion`` (a class-conditional diffusion generator trained on the user's small set:
train, sample, image-to-image variants; ``training`` learns from an unlabelled ``pool`` too,
with ``pseudo``-labels whose threshold is cross-validated, and ``confidence`` filters samples
with the same classifier), ``quality`` (local FID/KID, precision/recall,
memorisation and class balance), ``formats`` (COCO and YOLO readers/writers),
``compose`` (copy-paste detection/segmentation sets), ``augment`` (label-preserving
augmentation and Real-ESRGAN-style degradations), ``cli`` (``genai synth ...``).
"""
