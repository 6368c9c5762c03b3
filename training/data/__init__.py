"""Dataset readers. Every reader returns a `FaceSet` of `FaceSample`s in FER2013 class order."""

from training.data.samples import CLASSES, FaceSample, FaceSet

__all__ = ["CLASSES", "FaceSample", "FaceSet"]
