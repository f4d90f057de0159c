"""fiva: Facial Image and Video Anonymization by identity replacement (FIVA, Rosberg et al.).

    from fiva import Anonymizer
    out = Anonymizer().anonymize_image(rgb_uint8)
    Anonymizer().anonymize_video("in.mp4", "out.mp4")
"""
__version__ = "0.1.0"


def __getattr__(name):  # lazy: training machines need not have the video stack
    if name in ("Anonymizer", "AnonymizeConfig"):
        from .anonymize import frame

        return getattr(frame, name)
    raise AttributeError(name)


__all__ = ["Anonymizer", "AnonymizeConfig", "__version__"]
