"""Face stack: detection (YuNet), alignment (ArcFace 5-point template), identity encoders."""
from .align import align_faces, paste_back, template
from .detect import Detections, FaceDetector

__all__ = ["Detections", "FaceDetector", "align_faces", "paste_back", "template"]
